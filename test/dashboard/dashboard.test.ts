import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { buildDashboard, dashboardFile, dashboardJson } from '../../dashboards/eddy.js';

describe('the Grafana dashboard', () => {
  it('is committed as dashboards/eddy.ts generates it', async () => {
    const committed = await readFile(dashboardFile, 'utf8').catch(() => '');
    expect(
      committed === (await dashboardJson()),
      'charts/eddy/dashboards/eddy.json is stale: run `npm run dashboard` and commit it',
    ).toBe(true);
  });

  it('gives every panel a unique id and every query its own refId', () => {
    const panels = buildDashboard().panels ?? [];
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of panels) {
      if (p.type === 'row') continue;
      const targets = ('targets' in p ? (p.targets ?? []) : []) as Array<{ refId?: string }>;
      const refIds = targets.map((t) => t.refId);
      expect(refIds.length, p.title).toBeGreaterThan(0);
      expect(new Set(refIds).size, p.title).toBe(refIds.length);
    }
  });
});
