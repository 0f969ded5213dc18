/**
 * Where a test's handlers say they started and wait to be let go: a handler asks GET `url(name)`,
 * which resolves `started(name)` and is answered by `release(name, value)`. Tests wait on these
 * signals instead of sleeping.
 */
import { once } from 'node:events';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Holds {
  processes: [];
  url(name: string): string;
  started(name: string): Promise<void>;
  release(name: string, value?: string): void;
  stop(): Promise<void>;
}

export async function startHolds(): Promise<Holds> {
  const waiting = new Map<string, ServerResponse>();
  const arrived = new Map<string, () => void>();
  const server = createServer((req, res) => {
    const name = decodeURIComponent(req.url!.slice(1));
    waiting.set(name, res);
    arrived.get(name)?.();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    processes: [],
    url: (name) => `${base}/${encodeURIComponent(name)}`,
    started: (name) =>
      waiting.has(name)
        ? Promise.resolve()
        : new Promise<void>((resolve) => arrived.set(name, resolve)),
    release: (name, value = 'released') => waiting.get(name)!.end(value),
    async stop() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
