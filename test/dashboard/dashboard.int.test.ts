/**
 * The dashboard against real Prometheus: it scrapes a gateway that has answered a short load,
 * and every query of every panel is evaluated through Prometheus's API, with the dashboard's
 * variables substituted as Grafana would. All must parse; the core panels must return series.
 */
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildDashboard } from '../../dashboards/eddy.js';
import { startPrometheus, type PrometheusSample } from '../harness/prometheus.js';
import { runtimeMain } from '../harness/runtime.js';
import { canRun, useComponent } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';
import { inlineFunction, namespace, startStack, type Stack } from '../gateway/stack.js';

const handler = `export const handler = async (event) => {
  if (event.fail) throw new Error('asked to fail');
  return { ok: true };
};`;

/** Panels that any traffic fills: each of their queries must return series. */
const core = [
  'Invocations/s by outcome',
  'Duration p50 / p95 / p99',
  'Replicas desired vs ready',
  'In flight and queued',
];
/** Panels this load fills too (it has errors, a cold start and billed time). */
const filled = [
  'Error ratio',
  'Cold starts/s',
  'Activation time p50 / p95 / p99',
  'GB-seconds/s per function',
  'GB-seconds in the time range',
];

interface PanelQuery {
  panel: string;
  refId: string;
  expr: string;
}

function panelQueries(): PanelQuery[] {
  const out: PanelQuery[] = [];
  for (const p of buildDashboard().panels ?? []) {
    if (!('targets' in p)) continue;
    for (const t of (p.targets ?? []) as Array<{ refId?: string; expr?: string }>) {
      out.push({ panel: p.title ?? '', refId: t.refId ?? '', expr: t.expr ?? '' });
    }
  }
  return out;
}

/** What Grafana puts in place of its variables; a 1 s scrape makes 30 s a safe rate window. */
function substitute(expr: string, vars: { namespace: string; function: string }): string {
  return expr
    .replaceAll('$__rate_interval', '30s')
    .replaceAll('$__interval', '15s')
    .replaceAll('$__range', '5m')
    .replaceAll('$namespace', vars.namespace)
    .replaceAll('$function', vars.function);
}

describe.skipIf(!canRun('prometheus'))('the Grafana dashboard on real Prometheus', () => {
  let stack: Stack | undefined;
  let target = '';
  beforeAll(async () => {
    if (!existsSync(runtimeMain)) throw new Error(`${runtimeMain} is missing: run npm run build`);
    stack = await startStack([inlineFunction('thumbs', handler, { timeoutSeconds: 5 })]);
    target = new URL(stack.metricsUrl).host;
  });
  afterAll(async () => {
    await stack?.stop();
  });
  const prometheus = useComponent(() =>
    startPrometheus({ jobs: [{ job: 'eddy', targets: [target] }], scrapeIntervalSeconds: 1 }),
  );

  /** Invokes `count` times, every fourth failing, a few at once. */
  async function load(count: number): Promise<void> {
    for (let i = 0; i < count; i += 5) {
      await Promise.all(
        Array.from({ length: Math.min(5, count - i) }, async (_, j) => {
          const res = await stack!.invoke('thumbs', { fail: (i + j) % 4 === 3 });
          await res.arrayBuffer();
        }),
      );
    }
  }

  /** Waits until Prometheus has scraped `total` invocations of the function. */
  async function scraped(total: number): Promise<void> {
    const p = prometheus();
    await waitFor(
      `Prometheus to scrape ${total} invocations`,
      async () => {
        const r = await p.query(
          `sum(eddy_function_invocations_total{namespace="${namespace}", function="thumbs"})`,
        );
        return Number(r[0]?.value[1] ?? 0) >= total ? true : undefined;
      },
      30_000,
    );
  }

  it('evaluates every panel query; the core panels return series', async () => {
    const p = prometheus();
    // Two rounds with a scrape between, so every rate window holds an increase.
    await load(12);
    await scraped(12);
    await load(24);
    await scraped(36);

    // The variables' label_values queries, as Grafana asks them of the labels API.
    const labelValues = async (label: string, match: string) => {
      const res = await fetch(
        `${p.url}/api/v1/label/${label}/values?match[]=${encodeURIComponent(match)}`,
      );
      const body = (await res.json()) as { status: string; data: string[] };
      expect(body.status).toBe('success');
      return body.data;
    };
    expect(await labelValues('namespace', 'eddy_function_invocations_total')).toEqual([namespace]);
    expect(
      await labelValues('function', `eddy_function_invocations_total{namespace=~"${namespace}"}`),
    ).toEqual(['thumbs']);

    const queries = panelQueries();
    const titles = new Set(queries.map((q) => q.panel));
    for (const t of [...core, ...filled]) expect(titles, t).toContain(t);

    const selections = [
      { namespace: '.*', function: '.*' },
      { namespace, function: 'thumbs' },
    ];
    const results = new Map<string, PrometheusSample[]>();
    for (const vars of selections) {
      for (const q of queries) {
        const expr = substitute(q.expr, vars);
        expect(expr, `${q.panel} ${q.refId}`).not.toContain('$');
        // query() throws with Prometheus's error when the expression does not parse.
        const result = await p.query(expr);
        if (vars.function === 'thumbs') results.set(`${q.panel} ${q.refId}`, result);
        if (core.includes(q.panel) || filled.includes(q.panel)) {
          expect(result.length, `${q.panel} ${q.refId}: ${expr}`).toBeGreaterThan(0);
        }
      }
    }

    // The series carry what the legends name.
    const outcomes = results.get('Invocations/s by outcome A')!.map((s) => s.metric.outcome);
    expect(outcomes.sort()).toEqual(['error', 'success']);
    const states = results.get('Replicas desired vs ready A')!.map((s) => s.metric.state);
    expect(states.sort()).toEqual(['desired', 'ready']);
    const bill = results.get('GB-seconds in the time range A')!;
    expect(bill.map((s) => s.metric.function)).toEqual(['thumbs']);
    expect(Number(bill[0]!.value[1])).toBeGreaterThan(0);
  });
});
