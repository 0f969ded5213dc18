import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { promtoolBinary } from '../harness/components.js';
import { billedFor, startRuntime, waitForReadyz } from '../harness/runtime.js';
import { canRun, usePerTest } from '../harness/suite.js';
import { startHolds } from '../harness/holds.js';

const logging = `
export const handler = async (event) => {
  console.log('hello', { n: event.n });
  console.warn('careful');
  console.error(new Error('shown, not thrown').message);
  if (event.objects) {
    console.info({ n: event.n, nested: { ok: true } });
    console.error(new TypeError('as an object'));
    console.error('with an error:', new RangeError('beside'));
  }
  if (event.fail) throw new Error('failed on purpose');
  if (event.hold) await (await fetch(event.hold)).text();
  if (event.sleep) await new Promise((r) => setTimeout(r, event.sleep));
  return 'ok';
};`;

async function invoke(url: string, body: unknown, requestId?: string) {
  const res = await fetch(url, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: requestId ? { 'x-eddy-request-id': requestId } : {},
  });
  await res.arrayBuffer();
  return res;
}

/** promtool's verdict on an exposition: its exit code and what it printed. */
async function promtoolCheck(text: string): Promise<{ code: number | null; output: string }> {
  const child = spawn(promtoolBinary, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  child.stdin.end(text);
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, output };
}

function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`)) continue;
    const inside = line.slice(name.length + 1, line.lastIndexOf('}'));
    const got: Record<string, string | undefined> = Object.fromEntries(
      [...inside.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!, m[2]!]),
    );
    if (Object.entries(labels).every(([k, v]) => got[k] === v))
      return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return undefined;
}

describe('runtime: logs and metrics', () => {
  const track = usePerTest();

  it("writes Lambda's START / console / END / REPORT lines", async () => {
    const rt = track(await startRuntime({ 'index.mjs': logging }, { EDDY_MEMORY_MB: '512' }));
    await invoke(rt.url, { n: 1 }, 'req-text-1');
    const log = await rt.waitForLog(/REPORT RequestId: req-text-1/);
    const lines = log.split('\n').filter((l) => l.includes('req-text-1'));
    expect(lines[0]).toBe('START RequestId: req-text-1 Version: $LATEST');
    expect(lines[1]).toMatch(
      /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z\treq-text-1\tINFO\thello { n: 1 }$/,
    );
    expect(lines[2]).toMatch(/\treq-text-1\tWARN\tcareful$/);
    expect(lines[3]).toMatch(/\treq-text-1\tERROR\tshown, not thrown$/);
    expect(lines[4]).toBe('END RequestId: req-text-1');
    const report =
      /^REPORT RequestId: req-text-1\tDuration: (\d+\.\d{2}) ms\tBilled Duration: (\d+) ms\tMemory Size: 512 MB\tMax Memory Used: (\d+) MB\tInit Duration: (\d+\.\d{2}) ms$/.exec(
        lines[5]!,
      );
    expect(report).not.toBeNull();
    expect(billedFor(Number(report![1]))).toContain(Number(report![2]));
    // Peak RSS of a Node process with a worker: tens of MB, never zero, below the function's memory.
    expect(Number(report![3])).toBeGreaterThan(20);
    expect(Number(report![3])).toBeLessThan(512);

    // A failed invocation says why in the log, as Lambda's Invoke Error line does.
    await invoke(rt.url, { n: 2, fail: true }, 'req-text-2');
    const failedLog = await rt.waitForLog(/REPORT RequestId: req-text-2/);
    const failed = failedLog.split('\n').filter((l) => l.includes('req-text-2'));
    const invokeError = /^\S+\treq-text-2\tERROR\tInvoke Error \t(\{.*\})$/.exec(failed.at(-3)!);
    expect(invokeError).not.toBeNull();
    const error = JSON.parse(invokeError![1]!) as Record<string, unknown>;
    expect(error).toMatchObject({ errorType: 'Error', errorMessage: 'failed on purpose' });
    expect((error.stack as string[])[0]).toBe('Error: failed on purpose');
    expect(failed.at(-2)).toBe('END RequestId: req-text-2');
  });

  it('keeps each invocation’s console lines under its own request id when they run concurrently', async () => {
    const rt = track(await startRuntime({ 'index.mjs': logging }, { EDDY_CONCURRENCY: '2' }));
    await Promise.all([
      invoke(rt.url, { n: 1, sleep: 50 }, 'req-a'),
      invoke(rt.url, { n: 2, sleep: 50 }, 'req-b'),
    ]);
    const log = await rt.waitForLog(
      /REPORT RequestId: req-b[\s\S]*REPORT RequestId: req-a|REPORT RequestId: req-a[\s\S]*REPORT RequestId: req-b/,
    );
    expect(log).toMatch(/\treq-a\tINFO\thello { n: 1 }/);
    expect(log).toMatch(/\treq-b\tINFO\thello { n: 2 }/);
  });

  it('keeps request ids on lines logged after an await, from the first line a handler logs', async () => {
    const awaiting = `
      export const handler = async (event) => {
        console.log('before', event.n);
        await new Promise((r) => setTimeout(r, 50));
        console.log('after', event.n);
        return 'ok';
      };`;
    const rt = track(await startRuntime({ 'index.mjs': awaiting }, { EDDY_CONCURRENCY: '4' }));
    await Promise.all([
      invoke(rt.url, { n: 1 }, 'req-1'),
      invoke(rt.url, { n: 2 }, 'req-2'),
      invoke(rt.url, { n: 3 }, 'req-3'),
    ]);
    const log = await rt.waitForLog(/(REPORT RequestId: req-\d[\s\S]*){3}/);
    for (const n of [1, 2, 3]) {
      expect(log).toMatch(new RegExp(`\treq-${n}\tINFO\tbefore ${n}\n`));
      expect(log).toMatch(new RegExp(`\treq-${n}\tINFO\tafter ${n}\n`));
    }
  });

  it('writes the same as JSON lines with EDDY_LOG_FORMAT=json', async () => {
    const rt = track(await startRuntime({ 'index.mjs': logging }, { EDDY_LOG_FORMAT: 'json' }));
    await invoke(rt.url, { n: 3 }, 'req-json-1');
    const log = await rt.waitForLog(/"platform.report".*req-json-1/);
    const records = log
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((r) => JSON.stringify(r).includes('req-json-1'));
    expect(records.map((r) => r.type ?? r.level)).toEqual([
      'platform.start',
      'INFO',
      'WARN',
      'ERROR',
      'platform.end',
      'platform.report',
    ]);
    expect(records[1]).toMatchObject({
      requestId: 'req-json-1',
      level: 'INFO',
      message: 'hello { n: 3 }',
    });
    const report = records[5] as { record: { status: string; metrics: Record<string, number> } };
    expect(report.record.status).toBe('success');
    expect(report.record.metrics).toMatchObject({ memorySizeMB: 128 });
    // The JSON record carries the duration unrounded: the billed figure follows from it exactly.
    expect(report.record.metrics.billedDurationMs).toBe(
      Math.max(1, Math.ceil(report.record.metrics.durationMs!)),
    );
    expect(report.record.metrics.initDurationMs).toBeGreaterThan(0);

    // As Lambda's JSON format: one argument stays what it is, an Error becomes its fields;
    // several are one string, the first Error's fields beside it.
    await invoke(rt.url, { n: 5, objects: true }, 'req-json-3');
    const objectsLog = await rt.waitForLog(/"platform.report".*req-json-3/);
    const objects = objectsLog
      .split('\n')
      .filter((l) => l.startsWith('{') && l.includes('req-json-3'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((r) => r.level === 'INFO' || r.level === 'ERROR');
    expect(objects[2]).toMatchObject({ message: { n: 5, nested: { ok: true } } });
    expect(objects[3]).toMatchObject({
      message: { errorType: 'TypeError', errorMessage: 'as an object' },
    });
    expect((objects[3]!.message as { stackTrace: string[] }).stackTrace[0]).toBe(
      'TypeError: as an object',
    );
    expect(objects[4]).toMatchObject({
      message: expect.stringMatching(/^with an error: RangeError: beside/) as unknown,
      errorType: 'RangeError',
      errorMessage: 'beside',
    });

    await invoke(rt.url, { n: 4, fail: true }, 'req-json-2');
    const failedLog = await rt.waitForLog(/"platform.report".*req-json-2/);
    const failed = failedLog
      .split('\n')
      .filter((l) => l.startsWith('{') && l.includes('req-json-2'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(failed.find((r) => r.message === 'Invoke Error')).toMatchObject({
      level: 'ERROR',
      requestId: 'req-json-2',
      errorType: 'Error',
      errorMessage: 'failed on purpose',
      stackTrace: expect.arrayContaining(['Error: failed on purpose']) as unknown,
    });
  });

  it.skipIf(!canRun('prometheus'))(
    'exposes invocation metrics that promtool accepts, with namespace and function labels',
    async () => {
      const timeoutMs = 2000;
      const rt = track(
        await startRuntime(
          { 'index.mjs': logging },
          { EDDY_TIMEOUT_MS: String(timeoutMs), EDDY_CONCURRENCY: '2' },
        ),
      );
      const h = track(await startHolds());
      await waitForReadyz(rt.url, 200);
      const answered: Response[] = [];
      const invoked = async (body: unknown) => {
        const res = await invoke(rt.url, body);
        answered.push(res);
        return res;
      };
      await invoked({ n: 1 });
      await invoked({ n: 2 });
      await invoked({ fail: true });
      // One long invocation holds a slot while two more arrive: one runs, one is throttled.
      const long = invoked({ hold: h.url('long'), sleep: 200 });
      await h.started('long');
      const pair = ['b', 'c'].map((name) => invoked({ hold: h.url(name), sleep: 150 }));
      const refused = await Promise.race(pair.map((p, i) => p.then((res) => ({ res, i }))));
      expect(refused.res.status).toBe(429);
      const admitted = ['b', 'c'][1 - refused.i]!;
      await h.started(admitted);
      h.release(admitted);
      h.release('long');
      await Promise.all([...pair, long]);

      const text = await (await fetch(`${rt.url}/metrics`)).text();
      // The runtime's own metrics pass promtool's checks without a remark.
      const own = text
        .split('\n')
        .filter((line) => /^(# (HELP|TYPE) )?eddy_/.test(line))
        .join('\n');
      expect(await promtoolCheck(`${own}\n`)).toEqual({ code: 0, output: '' });
      // The whole exposition parses; promtool's only remarks are on three of prom-client's
      // default gauges, whose names end in _total.
      const all = await promtoolCheck(text);
      const remarks = all.output.trim().split('\n');
      expect(remarks).toEqual([
        'nodejs_active_handles_total non-counter metrics should not have "_total" suffix',
        'nodejs_active_requests_total non-counter metrics should not have "_total" suffix',
        'nodejs_active_resources_total non-counter metrics should not have "_total" suffix',
      ]);
      const l = { namespace: 'tests', function: 'hello' };
      expect(sample(text, 'eddy_runtime_invocations_total', { ...l, outcome: 'success' })).toBe(4);
      expect(sample(text, 'eddy_runtime_invocations_total', { ...l, outcome: 'error' })).toBe(1);
      expect(sample(text, 'eddy_runtime_invocations_total', { ...l, outcome: 'throttled' })).toBe(
        1,
      );
      expect(sample(text, 'eddy_runtime_invocations_total', { ...l, outcome: 'timeout' })).toBe(0);
      expect(sample(text, 'eddy_runtime_invocation_duration_seconds_count', l)).toBe(5);
      // Every bucket holds exactly the invocations whose answers gave a duration within it (the
      // throttled one ran nothing and has none).
      const ran = answered.filter((res) => res.status !== 429);
      expect(ran).toHaveLength(5);
      const durations = ran.map((res) => Number(res.headers.get('x-eddy-duration-ms')));
      const bounds = [
        ...text.matchAll(/^eddy_runtime_invocation_duration_seconds_bucket\{.*le="([^"]+)"/gm),
      ]
        .map((m) => m[1]!)
        .filter((le) => le !== '+Inf');
      expect(bounds).toContain('0.001');
      for (const le of bounds) {
        const boundMs = Number(le) * 1000;
        // The header rounds to 1/100 ms: one that rounds onto the bound could lie either side.
        if (durations.some((d) => Math.abs(d - boundMs) < 0.01)) continue;
        expect(
          sample(text, 'eddy_runtime_invocation_duration_seconds_bucket', { ...l, le }),
          `bucket le=${le}`,
        ).toBe(durations.filter((d) => d <= boundMs).length);
      }
      expect(durations.filter((d) => d >= 150)).toHaveLength(2);
      expect(
        sample(text, 'eddy_runtime_invocation_duration_seconds_bucket', { ...l, le: '900' }),
      ).toBe(5);
      expect(sample(text, 'eddy_runtime_in_flight', l)).toBe(0);
      expect(sample(text, 'eddy_runtime_init_duration_seconds', l)).toBeGreaterThan(0);
      // The sum of what each answer said it billed: 200 ms + 150 ms of sleeping at least, and at
      // least 1 ms for each of the other three.
      const billed = sample(text, 'eddy_runtime_billed_duration_seconds_total', l)!;
      const billedMs = ran.map((res) => Number(res.headers.get('x-eddy-billed-duration-ms')));
      expect(billed).toBeCloseTo(billedMs.reduce((a, b) => a + b, 0) / 1000, 6);
      expect(billed).toBeGreaterThanOrEqual(0.353);
      // Node's default metrics, with the same labels.
      expect(sample(text, 'process_resident_memory_bytes', l)).toBeGreaterThan(0);
      expect(sample(text, 'nodejs_heap_size_used_bytes', l)).toBeGreaterThan(0);

      // Timeouts are counted too. The runtime recycles once nothing is in flight, so a second
      // invocation keeps it up long enough to be scraped.
      const exited = once(rt.process.child, 'exit');
      const timedOut = invoke(rt.url, { hold: h.url('never') });
      await h.started('never');
      // Half a timeout later, so that its own deadline is well after the scrape below.
      await sleep(timeoutMs / 2);
      const keepsItUp = invoke(rt.url, { hold: h.url('keeps-it-up') });
      await h.started('keeps-it-up');
      expect((await timedOut).status).toBe(504);
      const after = await (await fetch(`${rt.url}/metrics`)).text();
      expect(sample(after, 'eddy_runtime_invocations_total', { ...l, outcome: 'timeout' })).toBe(1);
      expect(sample(after, 'eddy_runtime_in_flight', l)).toBe(1);
      h.release('keeps-it-up');
      expect((await keepsItUp).status).toBe(200);
      await exited;
    },
  );
});
