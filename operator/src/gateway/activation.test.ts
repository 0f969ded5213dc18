import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { EddyFunction } from '../api/types.js';
import type { Platform } from '../platform/platform.js';
import { Dispatcher } from './dispatcher.js';
import { GatewayMetrics } from './metrics.js';

const fn: EddyFunction = {
  apiVersion: 'eddy.dev/v1alpha1',
  kind: 'Function',
  metadata: { namespace: 'default', name: 'hello', uid: 'hello-1' },
  spec: {},
};

/** A platform at zero whose activations answer as `activate` says. */
function platformAtZero(activate: () => Promise<void>): Platform {
  return {
    name: 'kubernetes',
    start: async () => undefined,
    scale: async () => undefined,
    activate,
    ready: () => [],
    counts: () => ({ desired: 0, ready: 0 }),
    onChange: () => () => undefined,
    unreachable: () => undefined,
  };
}

describe('activation from zero', () => {
  let stop: AbortController;
  let caller: AbortController;
  let logs: string[];

  beforeEach(() => {
    vi.useFakeTimers();
    stop = new AbortController();
    caller = new AbortController();
    logs = [];
  });

  afterEach(() => {
    caller.abort();
    stop.abort();
    vi.useRealTimers();
  });

  const invokeWith = (platform: Platform) => {
    const dispatcher = new Dispatcher({
      platform,
      metrics: new GatewayMetrics({ snapshot: () => [] }),
      log: (m) => logs.push(m),
    });
    dispatcher.start(stop.signal);
    void dispatcher
      .invoke(fn, {
        requestId: 'r-1',
        body: Buffer.from('{}'),
        headers: {},
        trigger: 'invoke',
        signal: caller.signal,
      })
      .catch(() => undefined);
  };

  it('counts an activation that never answers as failed and asks again while the invocation waits', async () => {
    let calls = 0;
    invokeWith(
      platformAtZero(() => {
        calls++;
        return new Promise<void>(() => undefined);
      }),
    );
    expect(calls).toBe(1);
    await vi.advanceTimersByTimeAsync(15_000);
    expect(logs).toEqual([
      'default/hello cannot be started: the platform did not answer within 15000 ms; trying again in 250 ms',
    ]);
    await vi.advanceTimersByTimeAsync(250);
    expect(calls).toBe(2);
  });

  it('backs off between failed activations, doubling up to 5 s', async () => {
    let calls = 0;
    invokeWith(
      platformAtZero(() => {
        calls++;
        return Promise.reject(new Error('etcdserver: request timed out'));
      }),
    );
    await vi.advanceTimersByTimeAsync(20_000);
    const waits = logs.map((m) => Number(/trying again in (\d+) ms/.exec(m)?.[1]));
    expect(waits.slice(0, 7)).toEqual([250, 500, 1000, 2000, 4000, 5000, 5000]);
    expect(calls).toBe(waits.length);
  });
});

describe('a function whose replicas cannot start', () => {
  /** A platform at zero whose replicas report `why` once `tell()` is called. */
  function failingPlatform(why: { initError?: Platform['initError']; cannotStart?: string }) {
    const listeners = new Set<(key: string) => void>();
    let told = false;
    const platform: Platform = {
      name: 'local',
      start: async () => undefined,
      scale: async () => undefined,
      activate: async () => undefined,
      ready: () => [],
      counts: () => ({ desired: 1, ready: 0 }),
      onChange: (l) => {
        listeners.add(l);
        return () => listeners.delete(l);
      },
      unreachable: () => undefined,
      initError: (key) => (told ? why.initError?.(key) : undefined),
      cannotStart: () => (told ? why.cannotStart : undefined),
    };
    const tell = () => {
      told = true;
      for (const l of listeners) l('default/hello');
    };
    return { platform, tell };
  }

  const invoke = (platform: Platform, stop: AbortController) => {
    const dispatcher = new Dispatcher({
      platform,
      metrics: new GatewayMetrics({ snapshot: () => [] }),
      log: () => undefined,
    });
    dispatcher.start(stop.signal);
    const call = () =>
      dispatcher.invoke(fn, {
        requestId: 'r-1',
        body: Buffer.from('{}'),
        headers: {},
        trigger: 'invoke',
      });
    return call;
  };

  it("answers waiting and later invocations with the handler's init error, as the replica would", async () => {
    const stop = new AbortController();
    const { platform, tell } = failingPlatform({
      initError: () => ({ errorType: 'Runtime.HandlerNotFound', errorMessage: 'index.nope' }),
    });
    const call = invoke(platform, stop);
    try {
      const waiting = call();
      tell();
      for (const res of [await waiting, await call()]) {
        expect(res.status).toBe(502);
        expect(res.functionError).toBe(true);
        expect(res.headers['x-eddy-function-error']).toBe('Unhandled');
        expect(JSON.parse(res.body.toString())).toEqual({
          errorType: 'Runtime.HandlerNotFound',
          errorMessage: 'index.nope',
        });
      }
    } finally {
      stop.abort();
    }
  });

  it('refuses waiting invocations with 503 and the reason when the platform cannot start it', async () => {
    const stop = new AbortController();
    const { platform, tell } = failingPlatform({
      cannotStart: "cannot make python3.11's environment: pip failed",
    });
    const call = invoke(platform, stop);
    try {
      const waiting = call().then(
        () => undefined,
        (err: unknown) => err,
      );
      tell();
      expect(await waiting).toMatchObject({
        status: 503,
        errorType: 'EddyActivationFailed',
        message:
          "default/hello cannot be started: cannot make python3.11's environment: pip failed",
      });
    } finally {
      stop.abort();
    }
  });
});
