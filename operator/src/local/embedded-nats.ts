/**
 * The local stack's event queue: a `nats-server` found on PATH, with JetStream, its store under
 * `.eddy/nats`, on loopback. Accepted asynchronous events, S3 notifications and schedule ticks
 * then survive a restart of the stack, as they do in a cluster.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as wait } from 'node:timers/promises';

const setpriv = '/usr/bin/setpriv';

export interface EmbeddedNats {
  url: string;
  stop(): Promise<void>;
}

/** A free loopback port, asked of the kernel. */
function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, host, () => {
      const { port } = probe.address() as { port: number };
      probe.close(() => resolve(port));
    });
  });
}

export async function startEmbeddedNats(o: {
  binary: string;
  directory: string;
  log: (line: string) => void;
  startTimeoutMs?: number;
}): Promise<EmbeddedNats> {
  await mkdir(o.directory, { recursive: true });
  const host = '127.0.0.1';
  const [port, monitorPort] = [await freePort(host), await freePort(host)];
  const args = [
    '--jetstream',
    '--store_dir',
    join(o.directory, 'jetstream'),
    '--addr',
    host,
    '--port',
    String(port),
    '--http_port',
    String(monitorPort),
    '--server_name',
    'eddy-local',
  ];
  // Where util-linux's setpriv is (Linux), the kernel ends nats-server when this process ends.
  const child: ChildProcess = existsSync(setpriv)
    ? spawn(setpriv, ['--pdeathsig', 'KILL', '--', o.binary, ...args], {
        stdio: ['ignore', 'pipe', 'pipe'],
      })
    : spawn(o.binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on('line', (line) => {
      lines.push(line);
      if (lines.length > 20) lines.shift();
      // nats-server is chatty at start; only its warnings and errors are worth a line here.
      if (/\[(WRN|ERR|FTL)\]/.test(line)) o.log(line);
    });
  }
  let exited: string | undefined;
  const gone = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exited = signal ?? String(code);
      resolve();
    }),
  );
  child.once('error', (err) => {
    exited = err.message;
  });
  const orphaned = () => child.kill('SIGKILL');
  process.once('exit', orphaned);
  const stop = async () => {
    process.off('exit', orphaned);
    if (exited === undefined) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await gone;
      clearTimeout(killer);
    }
  };
  const timeoutMs = o.startTimeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited !== undefined) {
      throw new Error(`nats-server (${o.binary}) ended (${exited}): ${lines.join(' / ')}`);
    }
    try {
      const res = await fetch(`http://${host}:${monitorPort}/healthz?js-enabled-only=true`, {
        signal: AbortSignal.timeout(1_000),
      });
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`nats-server (${o.binary}) was not ready within ${timeoutMs} ms`);
    }
    await wait(100);
  }
  return { url: `nats://${host}:${port}`, stop };
}
