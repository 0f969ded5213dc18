import { KubeConfig, type V1ConfigMap } from '@kubernetes/client-node';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { paginated, startInformer, type Resilient } from './informers.js';

const item = (i: number): V1ConfigMap => ({
  metadata: { name: `cm-${i}`, managedFields: [{ manager: 'x' }] },
});

describe('paginated', () => {
  it.each([
    ['_continue (typed lists)', (token: string) => ({ _continue: token })],
    ['continue (custom objects as plain JSON)', (token: string) => ({ continue: token })],
  ])('follows %s to the last page and drops managedFields', async (_what, meta) => {
    const calls: Array<string | undefined> = [];
    const list = paginated<V1ConfigMap>(async ({ limit, _continue }) => {
      calls.push(_continue);
      const start = _continue ? Number(_continue) : 0;
      const items = Array.from({ length: Math.min(limit, 5 - start) }, (_, i) => item(start + i));
      const end = start + items.length;
      return {
        items,
        metadata: { resourceVersion: '42', ...(end < 5 ? meta(String(end)) : {}) },
      };
    }, 2);
    const all = await list();
    expect(calls).toEqual([undefined, '2', '4']);
    expect(all.items.map((i) => i.metadata!.name)).toEqual([
      'cm-0',
      'cm-1',
      'cm-2',
      'cm-3',
      'cm-4',
    ]);
    expect(all.items.every((i) => i.metadata!.managedFields === undefined)).toBe(true);
    expect(all.metadata!.resourceVersion).toBe('42');
  });
});

/** What one start() of the fake does, as client-node 1.4's ListWatch would. */
type Outcome =
  | 'lists' // lists, watches, resolves
  | 'list fails' // emits 'connect', then 'error', and still resolves
  | 'rejects' // emits 'connect', then rejects (e.g. the credentials plugin failed)
  | 'busy' // emits 'connect', then the API server's 429 as 'error', and still resolves
  | { until: Promise<void> }; // emits 'connect', lists once `until` resolves

class FakeInformer {
  readonly starts: number[] = [];
  /** A watch is open. client-node's start() goes on from its list to a watch despite stop(). */
  watching = false;
  private readonly handlers = new Map<string, Array<(arg?: unknown) => void>>();

  constructor(private readonly outcomes: Outcome[]) {}

  on(verb: string, cb: (arg?: unknown) => void): void {
    this.handlers.set(verb, [...(this.handlers.get(verb) ?? []), cb]);
  }
  off(): void {}
  emit(verb: string, arg?: unknown): void {
    for (const cb of this.handlers.get(verb) ?? []) cb(arg);
  }

  async start(): Promise<void> {
    this.starts.push(Date.now());
    const outcome = this.outcomes.shift() ?? 'lists';
    // client-node says 'connect' before it lists, not after.
    this.emit('connect');
    if (outcome === 'list fails') return this.emit('error', new Error('connect ECONNREFUSED'));
    if (outcome === 'rejects') throw new Error('exec plugin: token expired');
    if (outcome === 'busy')
      return this.emit('error', Object.assign(new Error('Too Many Requests'), { statusCode: 429 }));
    if (typeof outcome === 'object') await outcome.until;
    this.emit('add', { metadata: { name: 'cm', resourceVersion: String(this.starts.length) } });
    this.watching = true;
  }
  async stop(): Promise<void> {
    this.watching = false;
  }
  list(): V1ConfigMap[] {
    return [];
  }
  get(): V1ConfigMap | undefined {
    return undefined;
  }
}

describe('startInformer', () => {
  let stop: AbortController;
  const logs: string[] = [];
  beforeEach(() => {
    vi.useFakeTimers();
    stop = new AbortController();
    logs.length = 0;
  });
  afterEach(() => {
    stop.abort();
    vi.useRealTimers();
  });

  const start = (fake: FakeInformer) =>
    startInformer<V1ConfigMap>(new KubeConfig(), {
      name: 'configmaps',
      path: '/api/v1/configmaps',
      list: async () => ({ items: [] }),
      onChange: () => undefined,
      log: (m) => logs.push(m),
      signal: stop.signal,
      makeInformer: () => fake as unknown as Resilient<V1ConfigMap>,
    });
  /** The watch of a running informer fails; returns when that happened. */
  const watchFails = (fake: FakeInformer) => {
    fake.emit('error', new Error('watch closed'));
    return Date.now();
  };
  const gapsAfter = (fake: FakeInformer, from: number) =>
    fake.starts.slice(1).map((t, i) => t - (i === 0 ? from : fake.starts[i]!));

  it('backs off 500, 1000, 2000 ms ... up to 30 s while restarts fail to list, though each says connect', async () => {
    const fake = new FakeInformer(['lists', ...Array<Outcome>(9).fill('list fails')]);
    await start(fake);
    const failed = watchFails(fake);
    await vi.advanceTimersByTimeAsync(200_000);

    expect(gapsAfter(fake, failed)).toEqual([
      500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000,
    ]);
    expect(logs.at(-1)).toMatch(
      /^configmaps watch failed \(connect ECONNREFUSED\); restarting in \d+ ms$/,
    );
  });

  it('retries a restart whose start() rejects, after the grown backoff', async () => {
    const fake = new FakeInformer(['lists', 'list fails', 'rejects', 'rejects', 'lists']);
    await start(fake);
    const failed = watchFails(fake);
    await vi.advanceTimersByTimeAsync(60_000);

    expect(gapsAfter(fake, failed)).toEqual([500, 1000, 2000, 4000]);
    expect(logs.some((l) => l.includes('exec plugin: token expired'))).toBe(true);
  });

  it('resets the backoff to 500 ms only once a restart has listed', async () => {
    const fake = new FakeInformer(['lists', 'list fails', 'list fails', 'list fails', 'lists']);
    await start(fake);
    const failed = watchFails(fake);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(gapsAfter(fake, failed)).toEqual([500, 1000, 2000, 4000]);

    const failedAgain = watchFails(fake);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(fake.starts.at(-1)! - failedAgain).toBe(500);
  });

  it('cancels a pending restart when the signal aborts', async () => {
    const fake = new FakeInformer(['lists']);
    await start(fake);
    watchFails(fake);
    expect(vi.getTimerCount()).toBe(1);

    stop.abort();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(fake.starts).toHaveLength(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('makes no more attempts once the signal aborts, and stops a start that was under way', async () => {
    let listed!: () => void;
    const slow: Outcome = { until: new Promise<void>((resolve) => (listed = resolve)) };
    const fake = new FakeInformer(['lists', 'list fails', slow]);
    await start(fake);
    watchFails(fake);
    await vi.advanceTimersByTimeAsync(500 + 1000);
    expect(fake.starts).toHaveLength(3);

    stop.abort();
    listed();
    await vi.advanceTimersByTimeAsync(0);
    expect(fake.watching).toBe(false);
    fake.emit('error', new Error('watch closed'));
    await vi.advanceTimersByTimeAsync(120_000);
    expect(fake.starts).toHaveLength(3);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('tries a first start the API server refused as busy (429) again, then serves', async () => {
    const fake = new FakeInformer(['busy', 'busy', 'lists']);
    const started = start(fake);
    await vi.advanceTimersByTimeAsync(5_000);
    await expect(started).resolves.toBe(fake);
    expect(fake.starts.slice(1).map((t, i) => t - fake.starts[i]!)).toEqual([500, 1000]);
    expect(logs[0]).toBe(
      'configmaps list or watch refused (Too Many Requests); trying again in 500 ms',
    );
  });

  it('rejects when the API server stays busy past the retries', async () => {
    const fake = new FakeInformer(Array<Outcome>(6).fill('busy'));
    const started = start(fake);
    const outcome = expect(started).rejects.toThrow('Too Many Requests');
    await vi.advanceTimersByTimeAsync(60_000);
    await outcome;
    expect(fake.starts).toHaveLength(6);
  });

  it('rejects when the first list fails, leaving no restart behind', async () => {
    const fake = new FakeInformer(['list fails']);
    await expect(start(fake)).rejects.toThrow('connect ECONNREFUSED');
    await vi.advanceTimersByTimeAsync(60_000);
    expect(fake.starts).toHaveLength(1);
  });
});
