import { Registry } from 'prom-client';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { EddyFunction, FunctionSpec } from '../api/types.js';
import { MemoryFunctionStore } from '../functions.js';
import {
  keyOf,
  type FunctionKey,
  type Platform,
  type ReplicaCounts,
} from '../platform/platform.js';
import { createAutoscaler, type AutoscalerOptions } from './autoscaler.js';
import type { Decision } from './decide.js';
import type { FunctionLoad, LoadReport, LoadSource } from './load.js';

const hello = 'default/hello';

function fn(name: string, spec: FunctionSpec = {}, uid = `${name}-1`): EddyFunction {
  return {
    apiVersion: 'eddy.dev/v1alpha1',
    kind: 'Function',
    metadata: { namespace: 'default', name, uid },
    spec,
  };
}

/**
 * Replicas appear as soon as they are asked for; `failures` scale calls fail first; calls for
 * the functions in `hanging` never answer (as a stalled API server), ignoring their signal.
 */
class FakePlatform implements Pick<Platform, 'scale' | 'counts'> {
  readonly replicas = new Map<FunctionKey, number>();
  readonly calls: [FunctionKey, number][] = [];
  readonly hanging = new Set<FunctionKey>();
  failures = 0;

  async scale(f: EddyFunction, replicas: number): Promise<void> {
    this.calls.push([keyOf(f), replicas]);
    if (this.hanging.has(keyOf(f))) return new Promise<void>(() => undefined);
    if (this.failures > 0) {
      this.failures--;
      throw new Error('deployments.apps "hello" is forbidden');
    }
    this.replicas.set(keyOf(f), replicas);
  }

  counts(key: FunctionKey): ReplicaCounts {
    const n = this.replicas.get(key) ?? 0;
    return { desired: n, ready: n };
  }
}

/** One gateway's counters, integrating in-flight work over the (fake) clock. */
class FakeGateway {
  private readonly loads = new Map<FunctionKey, FunctionLoad>();
  private at = Date.now();

  /** `n` invocations start (and stay) in flight. */
  invoke(key: FunctionKey, n = 1): void {
    const load = this.load(key);
    load.requests += n;
    load.inFlight += n;
  }

  finish(key: FunctionKey): void {
    this.load(key).inFlight = 0;
  }

  /** The gateway holds `n` replicas a burst asked for (undefined: none). */
  hold(key: FunctionKey, n: number | undefined): void {
    const load = this.load(key);
    if (n === undefined) delete load.burstReplicas;
    else load.burstReplicas = n;
  }

  report(): LoadReport {
    this.advance();
    return Object.fromEntries([...this.loads].map(([key, load]) => [key, { ...load }]));
  }

  private load(key: FunctionKey): FunctionLoad {
    this.advance();
    let load = this.loads.get(key);
    if (!load) {
      load = { inFlight: 0, queued: 0, concurrencySeconds: 0, requests: 0 };
      this.loads.set(key, load);
    }
    return load;
  }

  private advance(): void {
    const now = Date.now();
    for (const l of this.loads.values())
      l.concurrencySeconds += ((l.inFlight + l.queued) * (now - this.at)) / 1000;
    this.at = now;
  }
}

describe('createAutoscaler', () => {
  let store: MemoryFunctionStore;
  let platform: FakePlatform;
  let gateway: FakeGateway;
  let logs: string[];
  let stop: AbortController;
  let running: Promise<void> | undefined;

  beforeEach(() => {
    vi.useFakeTimers();
    store = new MemoryFunctionStore();
    platform = new FakePlatform();
    gateway = new FakeGateway();
    logs = [];
    stop = new AbortController();
    running = undefined;
  });

  afterEach(async () => {
    stop.abort();
    await running;
    vi.useRealTimers();
  });

  function start(o: Partial<AutoscalerOptions> = {}): void {
    const load: LoadSource = async () => [gateway.report()];
    const autoscaler = createAutoscaler({
      store,
      platform,
      load,
      log: (m) => logs.push(m),
      ...o,
    });
    running = autoscaler.run(stop.signal);
  }

  it('scales a function up while invocations keep its replicas busy, asking once', async () => {
    store.set(fn('hello'));
    platform.replicas.set(hello, 1);
    start();
    gateway.invoke(hello, 3);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(platform.replicas.get(hello)).toBe(3);
    expect(platform.calls).toEqual([[hello, 3]]);
    expect(logs).toEqual(['default/hello: 1 -> 3 (panic 3.0/1 -> 3)']);
  });

  it('scales to zero after idleSeconds without invocations, and back up on a request', async () => {
    store.set(fn('hello', { scaling: { idleSeconds: 10 } }));
    platform.replicas.set(hello, 1);
    start();
    await vi.advanceTimersByTimeAsync(9_000);
    expect(platform.calls).toEqual([]);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(platform.calls).toEqual([[hello, 0]]);
    expect(logs).toEqual(['default/hello: 1 -> 0 (idle 10 s -> 0)']);

    gateway.invoke(hello);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(platform.replicas.get(hello)).toBe(1);
  });

  it('keeps the replicas a burst asked for until the gateway lets them go, then decides as before', async () => {
    store.set(fn('hello', { scaling: { idleSeconds: 600 } }));
    platform.replicas.set(hello, 1);
    start();
    // A minute and more of one invocation at a time: a full stable window recommending 1.
    gateway.invoke(hello, 1);
    await vi.advanceTimersByTimeAsync(71_900);
    expect(platform.calls).toEqual([]);

    // Just before a tick, a burst: the gateway asks for 4 at once and holds them. The tick's
    // windows barely see it, and the scale-down delay alone would go to 2.
    gateway.invoke(hello, 3);
    platform.replicas.set(hello, 4);
    gateway.hold(hello, 4);
    await vi.advanceTimersByTimeAsync(4_100);
    expect(platform.calls).toEqual([]);
    expect(platform.replicas.get(hello)).toBe(4);

    // Served: the gateway lets them go, and the autoscaler decides on its own windows again.
    gateway.finish(hello);
    gateway.hold(hello, undefined);
    await vi.advanceTimersByTimeAsync(70_000);
    expect(platform.replicas.get(hello)).toBeLessThan(4);
  });

  it('asks again on the next tick after a failing scale call, logging the failure once', async () => {
    store.set(fn('hello'));
    platform.replicas.set(hello, 1);
    platform.failures = 2;
    start();
    gateway.invoke(hello, 3);
    await vi.advanceTimersByTimeAsync(4_000);
    expect(platform.replicas.get(hello)).toBe(1);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(platform.replicas.get(hello)).toBe(3);
    expect(platform.calls).toEqual([
      [hello, 3],
      [hello, 3],
      [hello, 3],
    ]);
    expect(logs).toEqual([
      'default/hello: 1 -> 3 failed, retrying: deployments.apps "hello" is forbidden',
      'default/hello: 1 -> 3 (panic 3.0/1 -> 3)',
    ]);
  });

  it('keeps going when reading the load fails or hangs, and decides nothing blind', async () => {
    store.set(fn('hello', { scaling: { idleSeconds: 4 } }));
    platform.replicas.set(hello, 1);
    let reads = 0;
    start({
      load: (signal) => {
        reads++;
        if (reads === 1) return Promise.resolve([gateway.report()]);
        if (reads <= 3) return Promise.reject(new Error('connect ECONNREFUSED 10.0.0.7:8080'));
        if (reads <= 5) {
          return new Promise((_, reject) =>
            signal.addEventListener('abort', () => reject(signal.reason as Error)),
          );
        }
        return Promise.resolve([gateway.report()]);
      },
    });
    // Idle for longer than idleSeconds, but the autoscaler cannot see: it keeps the replica.
    await vi.advanceTimersByTimeAsync(12_000);
    expect(platform.calls).toEqual([]);
    expect(logs).toEqual([
      'reading the load failed, retrying: connect ECONNREFUSED 10.0.0.7:8080',
      'reading the load failed, retrying: no answer within 2000 ms',
    ]);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(logs.at(-2)).toBe('reading the load works again');
    expect(platform.calls).toEqual([[hello, 0]]);
  });

  it("scales other functions while one function's scale call hangs, asking that one again only after its deadline", async () => {
    const other = 'default/other';
    store.set(fn('hello'));
    store.set(fn('other'));
    platform.replicas.set(hello, 1);
    platform.replicas.set(other, 1);
    platform.hanging.add(hello);
    start({ scaleTimeoutMs: 5_000 });
    gateway.invoke(hello, 3);
    gateway.invoke(other, 3);
    await vi.advanceTimersByTimeAsync(4_000);
    expect(platform.replicas.get(other)).toBe(3);
    // One call for hello, still under way: not asked again meanwhile.
    expect(platform.calls.filter(([key]) => key === hello)).toEqual([[hello, 3]]);

    gateway.invoke(other, 3);
    await vi.advanceTimersByTimeAsync(4_000);
    // other goes on being scaled: its second change does not wait for hello's call either.
    expect(platform.replicas.get(other)).toBeGreaterThan(3);
    expect(logs).toContain('default/hello: 1 -> 3 failed, retrying: no answer within 5000 ms');
    expect(platform.calls.filter(([key]) => key === hello).length).toBe(2);

    platform.hanging.delete(hello);
    await vi.advanceTimersByTimeAsync(8_000);
    expect(platform.replicas.get(hello)).toBe(3);
  });

  it("scales nothing down while a gateway's load report is missing, and catches up after", async () => {
    store.set(fn('hello', { scaling: { idleSeconds: 4 } }));
    platform.replicas.set(hello, 2);
    let missing: string[] = [];
    const metrics = new Registry();
    const gauge = async () =>
      (await metrics.getSingleMetricAsString('eddy_autoscaler_missing_load_reports'))
        .split('\n')
        .at(-1);
    start({ load: async () => ({ reports: [gateway.report()], missing }), metrics });
    await vi.advanceTimersByTimeAsync(2_000);
    missing = ['http://10.0.0.8:8080'];
    // Idle for longer than idleSeconds as far as the present gateway can tell; the missing one
    // may be carrying all of hello's load: hello keeps its replicas.
    await vi.advanceTimersByTimeAsync(10_000);
    expect(platform.calls).toEqual([]);
    expect(logs).toEqual([
      'no load report from gateway http://10.0.0.8:8080: no function is scaled down until every gateway reports',
    ]);
    expect(await gauge()).toBe('eddy_autoscaler_missing_load_reports 1');

    missing = [];
    await vi.advanceTimersByTimeAsync(2_000);
    expect(logs).toContain('every gateway reports its load again');
    expect(platform.calls).toEqual([[hello, 0]]);
    expect(await gauge()).toBe('eddy_autoscaler_missing_load_reports 0');
  });

  it("forgets a deleted Function's windows and metrics", async () => {
    const metrics = new Registry();
    const decided = new Set<FunctionKey>();
    store.set(fn('hello'));
    store.set(fn('other'));
    platform.replicas.set(hello, 1);
    start({ metrics, onDecision: (key) => decided.add(key) });
    gateway.invoke(hello, 2);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(await metrics.getSingleMetricAsString('eddy_autoscaler_desired_replicas')).toContain(
      'eddy_autoscaler_desired_replicas{namespace="default",function="hello"} 2',
    );

    store.delete('default', 'hello');
    decided.clear();
    await vi.advanceTimersByTimeAsync(4_000);
    expect([...decided]).toEqual(['default/other']);
    expect(await metrics.getSingleMetricAsString('eddy_autoscaler_desired_replicas')).not.toContain(
      'function="hello"',
    );
  });

  it('starts a re-created Function afresh: its first replica stays for idleSeconds', async () => {
    const decisions: Decision[] = [];
    store.set(fn('hello', { scaling: { idleSeconds: 10 } }));
    platform.replicas.set(hello, 1);
    start({ onDecision: (_, d) => decisions.push(d) });
    await vi.advanceTimersByTimeAsync(8_000);
    store.delete('default', 'hello');
    store.set(fn('hello', { scaling: { idleSeconds: 10 } }, 'hello-2'));
    // The old one would have gone to zero at 10 s; the new one is first seen at 10 s.
    await vi.advanceTimersByTimeAsync(10_000);
    expect(platform.calls).toEqual([]);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(platform.calls).toEqual([[hello, 0]]);
    expect(decisions.at(-1)?.reason).toBe('idle 10 s -> 0');
  });

  it('stops on abort with no timer left running', async () => {
    store.set(fn('hello'));
    start();
    await vi.advanceTimersByTimeAsync(3_000);
    stop.abort();
    await running;
    expect(vi.getTimerCount()).toBe(0);
  });
});
