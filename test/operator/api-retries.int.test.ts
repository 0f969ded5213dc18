/**
 * An API server that asks for another try (429 with Retry-After, as its priority and fairness
 * queues answer when full, often while it starts) gets one: the operator's API clients send the
 * request again after the wait, within the request's deadline. A plain HTTP server stands in for
 * the API server: a real one cannot be made to answer 429 on cue.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as k8s from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiRequestTimeout } from '../../operator/src/errors.js';
import { withRequestDeadlines } from '../../operator/src/request-deadlines.js';

let server: Server | undefined;

afterEach(async () => {
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

/** A server answering `busy` requests with 429 (Retry-After: 0), then a ConfigMap list. */
async function busyServer(
  busy: number,
  retryAfter = '0',
): Promise<{ url: string; seen: () => number }> {
  let seen = 0;
  server = createServer((req, res) => {
    seen++;
    req.resume();
    if (seen <= busy) {
      res.writeHead(429, { 'content-type': 'application/json', 'retry-after': retryAfter });
      res.end(
        JSON.stringify({ kind: 'Status', status: 'Failure', reason: 'TooManyRequests', code: 429 }),
      );
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ kind: 'ConfigMapList', apiVersion: 'v1', metadata: {}, items: [] }));
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, seen: () => seen };
}

function kubeConfig(url: string, timeoutMs: number): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'c', server: url, skipTLSVerify: true }],
    users: [{ name: 'u', token: 'token' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  return withRequestDeadlines(kc, timeoutMs);
}

describe('API requests the API server asks to try again', () => {
  it('are sent again after the wait it names, and the answer that follows is the one returned', async () => {
    const { url, seen } = await busyServer(3);
    const core = kubeConfig(url, 5_000).makeApiClient(k8s.CoreV1Api);
    const list = await core.listNamespacedConfigMap({ namespace: 'default' });
    expect(list.items).toEqual([]);
    expect(seen()).toBe(4);
  });

  it('give up at the request deadline when the API server keeps asking', async () => {
    const { url, seen } = await busyServer(Infinity, '1');
    const core = kubeConfig(url, 3_000).makeApiClient(k8s.CoreV1Api);
    await expect(core.listNamespacedConfigMap({ namespace: 'default' })).rejects.toBeInstanceOf(
      ApiRequestTimeout,
    );
    // Asked again each second until the deadline: at least once more, at most three times.
    expect(seen()).toBeGreaterThanOrEqual(2);
    expect(seen()).toBeLessThanOrEqual(4);
  });

  it('are not sent again for a 429 without Retry-After, nor for other errors', async () => {
    let seen = 0;
    server = createServer((req, res) => {
      seen++;
      req.resume();
      res.writeHead(seen === 1 ? 500 : 429, { 'content-type': 'application/json' });
      res.end('{}');
    });
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const core = kubeConfig(`http://127.0.0.1:${port}`, 5_000).makeApiClient(k8s.CoreV1Api);
    await expect(core.listNamespacedConfigMap({ namespace: 'default' })).rejects.toThrow();
    await expect(core.listNamespacedConfigMap({ namespace: 'default' })).rejects.toThrow();
    expect(seen).toBe(2);
  });
});
