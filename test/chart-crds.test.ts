import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { projectRoot } from './harness/components.js';

describe('Helm chart CRDs', () => {
  it('are byte-for-byte the top-level crds/ (the single source of truth)', async () => {
    const top = join(projectRoot, 'crds');
    const chart = join(projectRoot, 'charts', 'eddy', 'crds');
    const files = (await readdir(top)).sort();
    expect(files.length).toBeGreaterThan(0);
    expect((await readdir(chart)).sort()).toEqual(files);
    for (const f of files) {
      const [a, b] = await Promise.all([
        readFile(join(top, f), 'utf8'),
        readFile(join(chart, f), 'utf8'),
      ]);
      expect(b, `charts/eddy/crds/${f} differs from crds/${f}: copy crds/${f} over it`).toBe(a);
    }
  });
});
