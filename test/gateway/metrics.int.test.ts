/**
 * The gateway's metrics on a listener of their own, with real runtime processes: the gateway's
 * port does not serve them (and says where they are), and a deleted Function's series go with it.
 */
import { existsSync } from 'node:fs';
import { Counter } from 'prom-client';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { runtimeMain } from '../harness/runtime.js';
import { waitFor } from '../harness/wait.js';
import { inlineFunction, namespace, startStack, type Stack } from './stack.js';

let stack: Stack | undefined;

beforeAll(() => {
  if (!existsSync(runtimeMain)) throw new Error(`${runtimeMain} is missing: run npm run build`);
});

afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail' && stack) {
    process.stderr.write(`--- stack log\n${stack.logs.slice(-200).join('\n')}\n`);
  }
  await stack?.stop();
  stack = undefined;
});

const ok = 'export const handler = async () => ({ ok: true });';
const failing = 'export const handler = async () => { throw new Error("no"); };';
const scrape = async (s: Stack) => (await fetch(`${s.metricsUrl}/metrics`)).text();
/** The lines of a scrape that belong to one function. */
const seriesOf = (text: string, name: string) =>
  text
    .split('\n')
    .filter((l) => l.includes(`namespace="${namespace}"`) && l.includes(`function="${name}"`));

describe('the gateway’s metrics', () => {
  it('are served on their own port only; the gateway’s port says where they are', async () => {
    stack = await startStack([inlineFunction('hello', ok, { timeoutSeconds: 5 })]);
    expect(new URL(stack.metricsUrl).port).not.toBe(new URL(stack.url).port);

    const onGateway = await fetch(`${stack.url}/metrics`);
    expect(onGateway.status).toBe(404);
    const refused = (await onGateway.json()) as { errorType: string; errorMessage: string };
    expect(refused.errorMessage).toContain('metrics are served on a port of their own');
    expect(refused.errorMessage).toContain('EDDY_METRICS_PORT');

    expect((await stack.invoke('hello')).status).toBe(200);
    const res = await fetch(`${stack.metricsUrl}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    expect(await res.text()).toMatch(
      /eddy_function_invocations_total\{namespace="data-path",function="hello",trigger="invoke",outcome="success"\} 1/,
    );
    // Nothing else on that port: no invocations, no listing.
    const elsewhere = await fetch(`${stack.metricsUrl}/functions/${namespace}/hello`, {
      method: 'POST',
      body: '{}',
    });
    expect(elsewhere.status).toBe(404);
    expect(await elsewhere.text()).toContain('this port serves only GET /metrics');
    expect((await fetch(`${stack.metricsUrl}/functions`)).status).toBe(404);
  });

  it('drops every series of a deleted Function, its sources’ too, and keeps the others', async () => {
    stack = await startStack([
      inlineFunction('doomed', failing, { timeoutSeconds: 5 }),
      inlineFunction('kept', ok, { timeoutSeconds: 5 }),
    ]);
    // A metric as a source registers it, labelled with the function.
    const sourceMetric = new Counter({
      name: 'eddy_source_test_records_total',
      help: 'Records a test source read.',
      labelNames: ['namespace', 'function', 'trigger'],
      registers: [stack.eddy.sources.metrics],
    });
    for (const name of ['doomed', 'kept']) {
      sourceMetric.inc({ namespace, function: name, trigger: 'clicks' });
      const res = await stack.invoke(name);
      await res.arrayBuffer();
    }
    const before = await scrape(stack);
    const doomed = seriesOf(before, 'doomed');
    // Invocations (an error), duration, cold start, activation, GB-seconds, the source's.
    for (const metric of [
      'eddy_function_invocations_total',
      'eddy_function_duration_seconds_bucket',
      'eddy_function_cold_starts_total',
      'eddy_function_activation_seconds_count',
      'eddy_function_billed_gb_seconds_total',
      'eddy_function_replicas',
      'eddy_source_test_records_total',
    ]) {
      expect(
        doomed.some((l) => l.startsWith(metric)),
        `${metric} of doomed`,
      ).toBe(true);
    }
    const kept = seriesOf(before, 'kept');

    stack.store.delete(namespace, 'doomed');
    const after = await waitFor('the deleted function’s series to go', async () => {
      const text = await scrape(stack!);
      return seriesOf(text, 'doomed').length === 0 ? text : undefined;
    });
    // The other function's series are all still there (gauges read now may hold other values).
    const keptAfter = seriesOf(after, 'kept');
    const name = (l: string) => l.replace(/ [^ ]+$/, '');
    expect(keptAfter.map(name).sort()).toEqual(
      kept
        .map(name)
        // Its replica counts may have changed meanwhile (scaling), not its series.
        .sort(),
    );
  });
});
