/**
 * The local stack's event queue: a `nats-server` found on PATH, with JetStream, its store under
 * `.eddy/nats`, on loopback. Accepted asynchronous events, S3 notifications and schedule ticks
 * then survive a restart of the stack, as they do in a cluster.
 */
import { mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as wait } from 'node:timers/promises';
import { startTiedProcess } from './tied-process.js';

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
  const proc = startTiedProcess({
    binary: o.binary,
    args,
    // nats-server is chatty at start; only its warnings and errors are worth a line here.
    onLine: (line) => {
      if (/\[(WRN|ERR|FTL)\]/.test(line)) o.log(line);
    },
  });
  const { lines, stop } = proc;
  const timeoutMs = o.startTimeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.exited() !== undefined) {
      throw new Error(`nats-server (${o.binary}) ended (${proc.exited()}): ${lines.join(' / ')}`);
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
