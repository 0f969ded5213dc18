/**
 * A TCP proxy on 127.0.0.1 in front of a server (the test API server, TLS passing through) that
 * can stall: from `stall()` on, every connection open at that moment stays open and carries
 * nothing more, ever, as an API server that stopped answering or a network that drops packets
 * without a reset; connections made until `resume()` stall the same way. Connections made after
 * `resume()` work again.
 */
import { createServer as createHttpServer, type ServerResponse } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { freePort } from './ports.js';

/** The same identity as `kc`, talking to the API server at `server` (a proxy in front of it). */
export function kubeConfigVia(kc: KubeConfig, server: string): KubeConfig {
  const via = new KubeConfig();
  via.loadFromOptions({
    clusters: kc.clusters.map((c) => ({ ...c, server })),
    users: kc.users,
    contexts: kc.contexts,
    currentContext: kc.currentContext,
  });
  return via;
}

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

export interface RequestStallProxy {
  /** http://127.0.0.1:<port>: a plain-HTTP API server that needs no credentials. */
  url: string;
  /** Requests held so far (never answered). */
  held: string[];
  stop(): Promise<void>;
}

/**
 * An HTTP proxy to the test API server that authenticates as `kc`'s user (its client
 * certificate) and never answers the requests `stalls` picks: one API call hangs while every
 * other goes through. A client reaches it with `skipTLSVerify` and no credentials of its own.
 */
export async function startRequestStallProxy(
  kc: KubeConfig,
  stalls: (method: string, path: string) => boolean,
): Promise<RequestStallProxy> {
  const cluster = kc.getCurrentCluster()!;
  const user = kc.getCurrentUser()!;
  const target = new URL(cluster.server);
  const agent = new HttpsAgent({
    keepAlive: true,
    ca: Buffer.from(cluster.caData!, 'base64'),
    cert: Buffer.from(user.certData!, 'base64'),
    key: Buffer.from(user.keyData!, 'base64'),
  });
  const held: string[] = [];
  const pending = new Set<ServerResponse>();
  const server = createHttpServer((req, res) => {
    const call = `${req.method} ${req.url}`;
    if (stalls(req.method ?? 'GET', new URL(req.url ?? '/', 'http://x').pathname)) {
      held.push(call);
      pending.add(res);
      req.resume();
      return;
    }
    const upstream = httpsRequest(
      {
        host: target.hostname,
        port: target.port,
        method: req.method,
        path: req.url,
        headers: { ...req.headers, host: target.host },
        agent,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        // A watch's headers come before any event: pass them on at once.
        res.flushHeaders();
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  });
  const port = await freePort();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    url: `http://127.0.0.1:${port}`,
    held,
    async stop() {
      for (const res of pending) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      agent.destroy();
    },
  };
}
