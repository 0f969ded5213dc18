/**
 * A TCP proxy on 127.0.0.1 in front of a server (the test API server, TLS passing through) that
 * can stall: from `stall()` on, every connection open at that moment stays open and carries
 * nothing more, ever, as an API server that stopped answering or a network that drops packets
 * without a reset; connections made until `resume()` stall the same way. Connections made after
 * `resume()` work again.
 */
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { freePort } from './ports.js';

export interface StallProxy {
  /** http(s)://127.0.0.1:<port> with the scheme of the target. */
  url: string;
  stall(): void;
  resume(): void;
  stop(): Promise<void>;
}

export async function startStallProxy(target: string): Promise<StallProxy> {
  const upstream = new URL(target);
  const port = await freePort();
  let stalled = false;
  const open = new Set<{ client: Socket; server: Socket; stalled: boolean }>();
  const server: Server = createServer((client) => {
    const server = createConnection({
      host: upstream.hostname,
      port: Number(upstream.port),
    });
    const pair = { client, server, stalled };
    open.add(pair);
    // Bytes are read and dropped while stalled, so neither end sees back-pressure or a close.
    client.on('data', (chunk) => {
      if (!pair.stalled) server.write(chunk);
    });
    server.on('data', (chunk) => {
      if (!pair.stalled) client.write(chunk);
    });
    // A stalled connection hides even its end: the other side learns nothing, as over a network
    // that dropped it.
    const close = () => {
      if (pair.stalled) return;
      open.delete(pair);
      client.destroy();
      server.destroy();
    };
    client.on('close', close);
    server.on('close', close);
    client.on('error', close);
    server.on('error', close);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    url: `${upstream.protocol}//127.0.0.1:${port}`,
    stall() {
      stalled = true;
      for (const pair of open) pair.stalled = true;
    },
    resume() {
      stalled = false;
    },
    async stop() {
      for (const pair of open) {
        pair.client.destroy();
        pair.server.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
