import { describe, expect, it } from 'vitest';
import { compareResourceVersions, covers, RecentWrites, upToDate, withHash } from './apply.js';

describe('covers', () => {
  it('ignores what the server adds', () => {
    expect(covers({ a: 1, b: { c: 2, d: 3 }, e: 'x' }, { a: 1, b: { c: 2 } })).toBe(true);
  });

  it('sees a changed value, anywhere', () => {
    expect(covers({ a: { b: [{ c: 1 }] } }, { a: { b: [{ c: 2 }] } })).toBe(false);
    expect(covers({ a: 1 }, { a: 1, b: 2 })).toBe(false);
  });

  it("reads a field the client's models rename under the API's name too", () => {
    const desired = { ingress: [{ _from: [{ podSelector: { matchLabels: { a: 'b' } } }] }] };
    const watched = { ingress: [{ from: [{ podSelector: { matchLabels: { a: 'b' } } }] }] };
    expect(covers(watched, desired)).toBe(true);
    expect(covers(desired, desired)).toBe(true);
    const other = { ingress: [{ from: [{ podSelector: { matchLabels: { a: 'c' } } }] }] };
    expect(covers(other, desired)).toBe(false);
  });

  it('compares quantities by value', () => {
    expect(covers({ memory: '512Mi' }, { memory: '0.5Gi' })).toBe(true);
    expect(covers({ cpu: '1' }, { cpu: '1000m' })).toBe(true);
    expect(covers({ cpu: '1' }, { cpu: '999m' })).toBe(false);
  });

  it('matches named entries by name, whatever their order and whoever added others', () => {
    const live = {
      env: [
        { name: 'EXTRA', value: 'x' },
        { name: 'B', value: '2' },
        { name: 'A', value: '1' },
      ],
    };
    expect(
      covers(live, {
        env: [
          { name: 'A', value: '1' },
          { name: 'B', value: '2' },
        ],
      }),
    ).toBe(true);
    expect(covers(live, { env: [{ name: 'A', value: '9' }] })).toBe(false);
    expect(covers(live, { env: [{ name: 'C', value: '3' }] })).toBe(false);
  });

  it('compares other lists element by element', () => {
    expect(covers({ args: ['a', 'b'] }, { args: ['a', 'b'] })).toBe(true);
    expect(covers({ args: ['a', 'b', 'c'] }, { args: ['a', 'b'] })).toBe(false);
  });
});

describe('upToDate', () => {
  const desired = withHash({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: 'x', namespace: 'n' },
    data: { a: '1' },
  });

  it('is true for what an apply of the same object left', () => {
    const live = { ...desired, metadata: { ...desired.metadata, resourceVersion: '7', uid: 'u' } };
    expect(upToDate(live, desired)).toBe(true);
    // As an item of a list: without apiVersion and kind.
    const { apiVersion: _a, kind: _k, ...listed } = live;
    expect(upToDate(listed, desired)).toBe(true);
  });

  it('is false when the desired object changed, or someone changed the live one', () => {
    const changed = withHash({ ...desired, data: { a: '2' } });
    expect(upToDate(desired, changed)).toBe(false);
    const edited = { ...desired, data: { a: 'edited' } };
    expect(upToDate(edited, desired)).toBe(false);
    expect(upToDate(undefined, desired)).toBe(false);
  });
});

describe('compareResourceVersions', () => {
  it('orders versions as the integers they are, not as strings', () => {
    expect(compareResourceVersions('99', '100')).toBeLessThan(0);
    expect(compareResourceVersions('100', '99')).toBeGreaterThan(0);
    expect(compareResourceVersions('123', '123')).toBe(0);
  });

  it('declines versions that are not integers', () => {
    expect(compareResourceVersions('abc', '100')).toBeUndefined();
    expect(compareResourceVersions('100', undefined)).toBeUndefined();
  });
});

describe('RecentWrites', () => {
  const at = (resourceVersion: string) => ({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: 'x', namespace: 'n', resourceVersion },
  });
  let clock = 0;
  const writes = () => {
    clock = 0;
    return new RecentWrites(1_000, () => clock);
  };

  it('answers with its own write while the cache has an older version, or none', () => {
    const w = writes();
    w.remember('k', at('10'));
    expect(w.latest('k', at('9'))).toEqual(at('10'));
    expect(w.latest('k', undefined)).toEqual(at('10'));
  });

  it('trusts the cache once it shows that version or a newer one (an edit by someone else)', () => {
    const w = writes();
    w.remember('k', at('10'));
    expect(w.latest('k', at('11'))).toEqual(at('11'));
    // The write is forgotten then: whatever the cache says from now on is believed.
    expect(w.latest('k', at('9'))).toEqual(at('9'));
    w.remember('k', at('10'));
    expect(w.latest('k', at('10'))).toEqual(at('10'));
    expect(w.latest('k', undefined)).toBeUndefined();
  });

  it('keeps what it remembers without managedFields, as the caches do', () => {
    const w = writes();
    const written = at('10');
    w.remember('k', {
      ...written,
      metadata: { ...written.metadata, managedFields: [{ manager: 'eddy-operator' }] },
    });
    expect(w.latest('k', at('9'))).toEqual(written);
  });

  it('trusts the cache when the versions cannot be ordered', () => {
    const w = writes();
    w.remember('k', at('10'));
    expect(w.latest('k', at('v9'))).toEqual(at('v9'));
  });

  it('trusts the cache again after the longest lag it allows, and forgets old writes', () => {
    const w = writes();
    w.remember('old', at('10'));
    clock = 600;
    w.remember('k', at('12'));
    clock = 1_100;
    expect(w.latest('old', undefined)).toBeUndefined();
    expect(w.latest('k', undefined)).toEqual(at('12'));
    w.remember('other', at('13'));
    clock = 5_000;
    w.remember('new', at('14'));
    expect(w.size).toBe(1);
  });
});
