/**
 * A real nats-server with JetStream per suite, its store in a temp dir. It can be killed and
 * started again on the same port and store, as a crash and restart would.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { goBinaries, goBinaryPath } from './components.js';
import { freePorts } from './ports.js';
import { startProcess, waitUntilReady, type ManagedProcess } from './proc.js';

export interface Nats {
  /** nats://127.0.0.1:<port> */
  url: string;
  /** The monitoring endpoint (http://127.0.0.1:<port>), /healthz?js-enabled-only=true. */
  monitor: string;
  process(): ManagedProcess;
  /** SIGKILL: what a crash looks like to clients. Resolves once it has exited. */
  kill(): Promise<void>;
  /** Starts it again on the same port and store; resolves once JetStream answers. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export async function startNats(options: { host?: string } = {}): Promise<Nats> {
  const host = options.host ?? '127.0.0.1';
  const dir = await mkdtemp(join(tmpdir(), 'eddy-nats-'));
  const [port, monitorPort] = (await freePorts(2)) as [number, number];
  const monitor = `http://127.0.0.1:${monitorPort}`;
  let starts = 0;
  const launch = async (): Promise<ManagedProcess> => {
    const proc = startProcess(
      'nats-server',
      goBinaryPath(goBinaries.natsServer),
      [
        '--jetstream',
        '--store_dir',
        join(dir, 'jetstream'),
        '--addr',
        host,
        '--port',
        String(port),
        '--http_port',
        String(monitorPort),
        '--server_name',
        'eddy-test',
      ],
      join(dir, `nats-server-${++starts}.log`),
    );
    try {
      await waitUntilReady(
        proc,
        async () =>
          (
            await fetch(`${monitor}/healthz?js-enabled-only=true`, {
              signal: AbortSignal.timeout(2_000),
            })
          ).ok,
        30_000,
      );
    } catch (err) {
      await proc.stop(1_000);
      throw err;
    }
    return proc;
  };
  let proc = await launch();
  return {
    url: `nats://${host}:${port}`,
    monitor,
    process: () => proc,
    async kill() {
      proc.child.kill('SIGKILL');
      await proc.exited;
      await proc.stop();
    },
    async restart() {
      proc = await launch();
    },
    async stop() {
      await proc.stop(5_000);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
