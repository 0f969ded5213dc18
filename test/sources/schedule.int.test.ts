/**
 * The schedule source delivering through the local stack's gateway to real runtime processes:
 * a tick on the wall clock reaches the handler as EventBridge's Scheduled Event, and a restarted
 * source delivers what it missed within startingDeadlineSeconds and skips what is older.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EventQueue } from '../../operator/src/queue/queue.js';
import type { Runnable } from '../../operator/src/manager.js';
import {
  scheduleSource,
  systemClock,
  type ScheduleClock,
} from '../../operator/src/sources/schedule.js';
import type { SourceContext } from '../../operator/src/sources/source.js';
import { startStack, inlineFunction, namespace, type Stack } from '../gateway/stack.js';
import { runtimeMain } from '../harness/runtime.js';
import { waitFor } from '../harness/wait.js';

let stack: Stack;
let scratch: string;
/** The source's deliveries, counted before they reach the gateway's sink. */
let handedOver: Array<{ function: string; time: string }>;
/** Those whose delivery has ended (answered or given up): stopping the source cuts no other. */
let ended: Array<{ function: string; time: string }>;
let ctx: SourceContext;

beforeAll(async () => {
  if (!existsSync(runtimeMain)) throw new Error(`${runtimeMain} is missing: run npm run build`);
  scratch = await mkdtemp(join(tmpdir(), 'eddy-schedule-'));
  stack = await startStack([]);
  handedOver = [];
  ended = [];
  const real = stack.eddy.sources.queue;
  const queue: EventQueue = {
    kind: real.kind,
    enqueue(fn, event, signal) {
      const delivery = { function: fn.metadata.name, time: event.time };
      handedOver.push(delivery);
      const result = real.enqueue(fn, event, signal);
      // In memory, accepted at once; `delivered` settles when the delivery ends.
      void result
        .then((r) => r.delivered)
        .finally(() => ended.push(delivery))
        .catch(() => undefined);
      return result;
    },
  };
  ctx = { ...stack.eddy.sources, queue };
});

afterAll(async () => {
  await stack?.stop();
  await rm(scratch, { recursive: true, force: true });
});

let stopSource: (() => Promise<void>) | undefined;
afterEach(async (test) => {
  if (test.task.result?.state === 'fail') {
    process.stderr.write(`--- stack log\n${stack.logs.slice(-100).join('\n')}\n`);
  }
  await stopSource?.();
  stopSource = undefined;
});

/** Runs the schedule source as the leader would; returns its stop. */
function runSource(clock: ScheduleClock): () => Promise<void> {
  const [runnable] = scheduleSource({ clock })(ctx) as [Runnable];
  const stop = new AbortController();
  const done = runnable.run(stop.signal);
  stopSource = async () => {
    stop.abort();
    await done;
    stopSource = undefined;
  };
  return stopSource;
}

/** A handler that appends what it was given, one JSON line per invocation. */
function recorder(file: string): string {
  return `import { appendFileSync } from 'node:fs';
    export const handler = async (event, context) => {
      appendFileSync(${JSON.stringify(file)}, JSON.stringify({
        event, type: context.cloudEvent.type, requestId: context.awsRequestId, at: Date.now(),
      }) + '\\n');
    };`;
}

interface Recorded {
  event: Record<string, unknown> & { time: string; id: string };
  type: string;
  requestId: string;
  at: number;
}

async function recorded(file: string): Promise<Recorded[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Recorded);
}

async function metric(pattern: RegExp): Promise<string | undefined> {
  const text = await (await fetch(`${stack.metricsUrl}/metrics`)).text();
  return text.split('\n').find((l) => pattern.test(l));
}

describe('the schedule source on the local stack', () => {
  it('fires on the minute and the handler gets the Scheduled Event with the payload', async () => {
    const file = join(scratch, 'minute.jsonl');
    stack.store.set(
      inlineFunction('minutely', recorder(file), {
        timeoutSeconds: 10,
        triggers: [
          {
            name: 'tick',
            schedule: { expression: '* * * * *', payload: { report: 'daily', n: 1 } },
          },
        ],
      }),
    );
    runSource(systemClock);
    const state = await waitFor('the trigger to report its next tick', async () =>
      ctx.states.get(`${namespace}/minutely`, 'tick'),
    );
    expect(state).toEqual({ ready: true, nextScheduleTime: expect.any(String) as string });
    const tick = state.nextScheduleTime!;
    expect(tick).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:00Z$/);

    // The next minute boundary is at most 60 s away; the cold start comes on top.
    const [got] = await waitFor(
      'the handler to be invoked on the minute',
      async () => {
        const r = await recorded(file);
        return r.length > 0 ? r : undefined;
      },
      80_000,
    );
    expect(got!.type).toBe('dev.eddy.schedule');
    expect(got!.event).toEqual({
      version: '0',
      id: got!.requestId,
      'detail-type': 'Scheduled Event',
      source: 'aws.events',
      account: namespace,
      time: tick,
      region: 'eddy',
      resources: [`eddy:schedule:${namespace}/minutely/tick`],
      detail: { report: 'daily', n: 1 },
    });
    // Fired on time: the handler ran within a few seconds of the tick, cold start included.
    expect(got!.at - Date.parse(tick)).toBeGreaterThanOrEqual(0);
    expect(got!.at - Date.parse(tick)).toBeLessThan(10_000);
    expect(ctx.states.get(`${namespace}/minutely`, 'tick')).toEqual({
      ready: true,
      lastScheduleTime: tick,
      nextScheduleTime: new Date(Date.parse(tick) + 60_000).toISOString().replace('.000Z', 'Z'),
    });
    const lag = await metric(
      /^eddy_source_schedule_lag_seconds_count\{namespace="data-path",function="minutely"/,
    );
    expect(lag).toMatch(/ 1$/);
    await waitFor('the invocation to be counted', async () =>
      (await metric(
        /^eddy_function_invocations_total\{namespace="data-path",function="minutely",trigger="tick",outcome="success"\} 1$/,
      ))
        ? true
        : undefined,
    );
    stack.store.delete(namespace, 'minutely');
  }, 120_000);

  it('after a restart delivers the missed tick once within the deadline and skips it outside', async () => {
    const file = join(scratch, 'restart.jsonl');
    // The source's wall clock, moved forward while it is stopped; its timers are real.
    let offset = 0;
    const clock: ScheduleClock = {
      now: () => Date.now() + offset,
      timer: (ms, fn) => systemClock.timer(ms, fn),
    };
    const key = `${namespace}/every5`;
    const anchor = Date.now();
    stack.store.set(
      inlineFunction('every5', recorder(file), {
        timeoutSeconds: 10,
        triggers: [
          {
            name: 'rate',
            schedule: { expression: 'rate(5 minutes)', startingDeadlineSeconds: 120 },
          },
        ],
      }),
    );
    let stop = runSource(clock);
    const first = await waitFor('the first start to report', async () =>
      ctx.states.get(key, 'rate'),
    );
    const tick1 = Date.parse(first.nextScheduleTime!);
    expect(Math.abs(tick1 - (anchor + 300_000))).toBeLessThan(2_000);
    await stop();

    // Down past the first tick: back 30 s after it, within the 120 s deadline.
    offset = tick1 + 30_000 - Date.now();
    stop = runSource(clock);
    const [got] = await waitFor(
      'the missed tick to reach the handler',
      async () => {
        const r = await recorded(file);
        return r.length > 0 ? r : undefined;
      },
      30_000,
    );
    const tickTime = new Date(tick1).toISOString().replace(/\.\d{3}Z$/, 'Z');
    expect(got!.event).toMatchObject({ 'detail-type': 'Scheduled Event', time: tickTime });
    expect(ctx.states.get(key, 'rate')).toMatchObject({
      ready: true,
      lastScheduleTime: tickTime,
      nextScheduleTime: new Date(tick1 + 300_000).toISOString().replace(/\.\d{3}Z$/, 'Z'),
    });
    // The handler has run; its answer may still be on its way. A source stopped before the
    // delivery ends owes the tick and delivers it again (at least once): wait for the end.
    await waitFor('the delivery to end', async () =>
      ended.some((d) => d.function === 'every5') ? true : undefined,
    );
    await stop();

    // Started again at once: nothing more is owed, nothing is delivered twice.
    ctx.states.delete(key, 'rate');
    stop = runSource(clock);
    await waitFor('the source to report after its restart', async () =>
      ctx.states.get(key, 'rate')?.nextScheduleTime ? true : undefined,
    );
    expect(handedOver.filter((h) => h.function === 'every5')).toHaveLength(1);
    await stop();

    // Down past the next two ticks; back 3.5 minutes after the later one: beyond the deadline.
    offset = tick1 + 10 * 60_000 + 210_000 - Date.now();
    stop = runSource(clock);
    const skipped = await waitFor('the skip to be reported', async () => {
      const s = ctx.states.get(key, 'rate');
      return s?.message?.startsWith('skipped the tick') ? s : undefined;
    });
    // 210 s, or a second more on a slow machine.
    expect(skipped.message).toMatch(
      new RegExp(
        `^skipped the tick of ${new Date(tick1 + 10 * 60_000).toISOString().replace(/\.\d{3}Z$/, 'Z')}: ` +
          'it was 21[01] s late, more than startingDeadlineSeconds \\(120\\)$',
      ),
    );
    expect(handedOver.filter((h) => h.function === 'every5')).toHaveLength(1);
    expect(await recorded(file)).toHaveLength(1);
    expect(
      await metric(
        /^eddy_source_schedule_skipped_ticks_total\{namespace="data-path",function="every5",trigger="rate",reason="deadline"\}/,
      ),
    ).toMatch(/ 2$/);
    stack.store.delete(namespace, 'every5');
  }, 90_000);
});
