import type { V1ConfigMap } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { paginated } from './informers.js';

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
