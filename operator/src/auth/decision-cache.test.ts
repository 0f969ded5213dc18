import { describe, expect, it } from 'vitest';
import { DecisionCache } from './decision-cache.js';

/** A cache of allow/deny answers with the gateway's bounds and a clock the test moves. */
function setup(maxEntries = 3) {
  let now = 1_000;
  const asked: string[] = [];
  const answers = new Map<string, boolean>();
  const cache = new DecisionCache<boolean>({
    maxEntries,
    ttlMs: (allowed) => (allowed ? 30_000 : 5_000),
    now: () => now,
  });
  const ask = (key: string) =>
    cache.get(key, () => {
      asked.push(key);
      return Promise.resolve(answers.get(key) ?? false);
    });
  return { cache, ask, asked, answers, advance: (ms: number) => (now += ms) };
}

describe('DecisionCache', () => {
  it('reuses an allow for 30 s and a deny for 5 s, then asks again', async () => {
    const t = setup();
    t.answers.set('alice', true);
    expect(await t.ask('alice')).toBe(true);
    expect(await t.ask('bob')).toBe(false);
    t.advance(4_999);
    expect(await t.ask('alice')).toBe(true);
    expect(await t.ask('bob')).toBe(false);
    expect(t.asked).toEqual(['alice', 'bob']);
    // The grant to bob arrives: seen once the deny has expired.
    t.answers.set('bob', true);
    t.advance(1);
    expect(await t.ask('bob')).toBe(true);
    // alice's grant is revoked: she keeps it until 30 s after it was asked, not a moment longer.
    t.answers.set('alice', false);
    t.advance(24_999);
    expect(await t.ask('alice')).toBe(true);
    t.advance(1);
    expect(await t.ask('alice')).toBe(false);
    expect(t.asked).toEqual(['alice', 'bob', 'bob', 'alice']);
  });

  it('keeps at most maxEntries, dropping the least recently used', async () => {
    const t = setup(3);
    for (const k of ['a', 'b', 'c']) t.answers.set(k, true);
    t.answers.set('d', true);
    await t.ask('a');
    await t.ask('b');
    await t.ask('c');
    await t.ask('a'); // a is now the most recent; b the least
    await t.ask('d');
    expect(t.cache.size).toBe(3);
    t.asked.length = 0;
    await t.ask('a');
    await t.ask('c');
    await t.ask('d');
    expect(t.asked).toEqual([]);
    await t.ask('b');
    expect(t.asked).toEqual(['b']);
    expect(t.cache.size).toBe(3);
  });

  it('shares one request between identical questions asked at once', async () => {
    let release!: (v: boolean) => void;
    let requests = 0;
    const cache = new DecisionCache<boolean>({ maxEntries: 10, ttlMs: () => 30_000 });
    const load = () => {
      requests++;
      return new Promise<boolean>((r) => (release = r));
    };
    const all = Promise.all([cache.get('k', load), cache.get('k', load), cache.get('k', load)]);
    release(true);
    expect(await all).toEqual([true, true, true]);
    expect(requests).toBe(1);
    expect(await cache.get('k', load)).toBe(true);
    expect(requests).toBe(1);
  });

  it('keeps no failure: the next question asks again', async () => {
    const cache = new DecisionCache<boolean>({ maxEntries: 10, ttlMs: () => 30_000 });
    let requests = 0;
    const failing = () => {
      requests++;
      return Promise.reject(new Error('API server unreachable'));
    };
    await expect(Promise.all([cache.get('k', failing), cache.get('k', failing)])).rejects.toThrow(
      'API server unreachable',
    );
    expect(requests).toBe(1);
    expect(await cache.get('k', () => Promise.resolve(true))).toBe(true);
    expect(cache.size).toBe(1);
  });

  it('counts an answer’s age from when it was asked, not when it came', async () => {
    let now = 0;
    let release!: (v: boolean) => void;
    const cache = new DecisionCache<boolean>({
      maxEntries: 10,
      ttlMs: () => 30_000,
      now: () => now,
    });
    const p = cache.get('k', () => new Promise<boolean>((r) => (release = r)));
    now = 10_000;
    release(true);
    await p;
    now = 29_999;
    expect(cache.peek('k')).toBe(true);
    now = 30_000;
    expect(cache.peek('k')).toBeUndefined();
  });
});
