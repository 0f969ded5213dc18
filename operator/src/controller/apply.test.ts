import { describe, expect, it } from 'vitest';
import { covers, upToDate, withHash } from './apply.js';

describe('covers', () => {
  it('ignores what the server adds', () => {
    expect(covers({ a: 1, b: { c: 2, d: 3 }, e: 'x' }, { a: 1, b: { c: 2 } })).toBe(true);
  });

  it('sees a changed value, anywhere', () => {
    expect(covers({ a: { b: [{ c: 1 }] } }, { a: { b: [{ c: 2 }] } })).toBe(false);
    expect(covers({ a: 1 }, { a: 1, b: 2 })).toBe(false);
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
