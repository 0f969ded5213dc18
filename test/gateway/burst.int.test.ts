/**
 * Bursts on the local platform, with real runtime processes: work queued beyond what the ready
 * and starting replicas take asks for the replicas it needs at once (no autoscaler tick), they
 * serve, and the gateway's load report holds them until they have (the autoscaler's side of the
 * hold: operator/src/autoscaler/autoscaler.test.ts).
 */
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync } from 'node:fs';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { keyOf } from '../../operator/src/platform/platform.js';
import { runtimeMain } from '../harness/runtime.js';
import { waitFor } from '../harness/wait.js';
import { inlineFunction, startStack, type Stack } from './stack.js';

let stack: Stack | undefined;
let gate: Gate | undefined;

beforeAll(() => {
  if (!existsSync(runtimeMain)) throw new Error(`${runtimeMain} is missing: run npm run build`);
});

afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail' && stack) {
    process.stderr.write(`--- stack log\n${stack.logs.slice(-200).join('\n')}\n`);
  }
  gate?.open();
  await stack?.stop();
  stack = undefined;
  await gate?.close();
  gate = undefined;
});

/** Handlers that call it wait until the test opens it; it remembers which processes called. */
interface Gate {
  url: string;
  /** The process ids of the handlers waiting or let through. */
  pids: Set<number>;
  open(): void;
  close(): Promise<void>;
}

async function startGate(): Promise<Gate> {
  const pids = new Set<number>();
  const held: ServerResponse[] = [];
  let opened = false;
  const server = createServer((req, res) => {
    pids.add(Number(new URL(req.url ?? '/', 'http://gate').searchParams.get('pid')));
    if (opened) res.end('go');
    else held.push(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    pids,
    open() {
      opened = true;
      for (const res of held.splice(0)) res.end('go');
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Waits at the gate when the event says so; answers with its process id. */
const gated = (url: string) => `export const handler = async (event) => {
  if (event.wait) {
    const res = await fetch(${JSON.stringify(url)} + '?pid=' + process.pid, { signal: AbortSignal.timeout(30000) });
    await res.text();
  }
  return { pid: process.pid };
};`;

const spec = { concurrency: 1, timeoutSeconds: 40, scaling: { maxReplicas: 4 } };

describe('a burst at one warm replica', () => {
  it('asks for the replicas the queued work needs at once, without an autoscaler tick, and they serve', async () => {
    gate = await startGate();
    // The autoscaler ticks once at the start and not again during the test.
    stack = await startStack([inlineFunction('burst', gated(gate.url), spec)], {
      autoscalerIntervalMs: 3_600_000,
    });
    const key = keyOf(stack.store.list()[0]!);
    const warm = await stack.invoke('burst', {});
    expect(warm.status).toBe(200);
    const warmPid = ((await warm.json()) as { pid: number }).pid;
    expect(stack.platform.counts(key)).toEqual({ desired: 1, ready: 1 });

    // Six at once, concurrency 1, maxReplicas 4: four replicas asked for, no more.
    const answers = Array.from({ length: 6 }, () => stack!.invoke('burst', { wait: true }));
    await waitFor('four replicas to run a handler each at once', async () =>
      gate!.pids.size === 4 ? true : undefined,
    );
    expect(gate.pids.has(warmPid)).toBe(true);
    expect(stack.platform.counts(key)).toEqual({ desired: 4, ready: 4 });
    // Held in the load report until each has served.
    expect(stack.eddy.gateway.load()[key]?.burstReplicas).toBe(4);

    gate.open();
    const done = await Promise.all(answers);
    expect(done.map((a) => a.status)).toEqual([200, 200, 200, 200, 200, 200]);
    const served = new Set(
      await Promise.all(done.map(async (a) => ((await a.json()) as { pid: number }).pid)),
    );
    expect(served).toEqual(gate.pids);
    expect(stack.eddy.gateway.load()[key]?.burstReplicas).toBeUndefined();
  });
});
