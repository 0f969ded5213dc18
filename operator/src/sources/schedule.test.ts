import { Registry } from 'prom-client';
import { memoryQueue } from '../queue/queue.js';
import { afterEach, describe, expect, it } from 'vitest';
import type { EddyFunction, ScheduleTrigger } from '../api/types.js';
import { MemoryFunctionStore } from '../functions.js';
import type { EventSink } from '../gateway/async.js';
import type { DeliveryEvent, DeliveryOutcome } from '../gateway/delivery.js';
import { memoryCheckpoints } from './checkpoints.js';
import { scheduleSource, type ScheduleClock, type ScheduledEvent } from './schedule.js';
import type { SourceContext } from './source.js';
import { TriggerStates } from './states.js';

/** A clock that moves only when told, running due timers in order as it goes. */
function manualClock(start: string) {
  let now = Date.parse(start);
  let timers: Array<{ at: number; fn: () => void }> = [];
  let armed = 0;
  const settle = async () => {
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
  };
  const clock: ScheduleClock & {
    advanceTo(iso: string): Promise<void>;
    jump(iso: string): Promise<void>;
    settle(): Promise<void>;
    /** Timers set so far. */
    readonly armed: number;
    readonly pending: number;
    at(): string;
  } = {
    now: () => now,
    timer(ms, fn) {
      armed++;
      const t = { at: now + ms, fn };
      timers.push(t);
      return () => {
        timers = timers.filter((x) => x !== t);
      };
    },
    async advanceTo(iso) {
      const target = Date.parse(iso);
      await settle();
      for (;;) {
        const next = timers.reduce<(typeof timers)[number] | undefined>(
          (a, t) => (t.at <= target && (!a || t.at < a.at) ? t : a),
          undefined,
        );
        if (!next) break;
        timers = timers.filter((x) => x !== next);
        now = Math.max(now, next.at);
        next.fn();
        await settle();
      }
      now = target;
      await settle();
    },
    /** Moves time without running timers: the process was stalled or the machine asleep. */
    async jump(iso) {
      now = Date.parse(iso);
      await settle();
    },
    settle,
    get armed() {
      return armed;
    },
    get pending() {
      return timers.length;
    },
    at: () => new Date(now).toISOString(),
  };
  return clock;
}

interface Delivered {
  fn: string;
  event: DeliveryEvent;
  body: ScheduledEvent;
  /** The clock when it was handed to the sink. */
  at: string;
}

function recordingSink(clock: { at(): string }, hold = false) {
  const delivered: Delivered[] = [];
  const sink: EventSink = {
    deliver(fn, event, signal) {
      delivered.push({
        fn: `${fn.metadata.namespace}/${fn.metadata.name}`,
        event,
        body: JSON.parse(event.body.toString()) as ScheduledEvent,
        at: clock.at(),
      });
      if (!hold) return Promise.resolve({ outcome: 'succeeded', attempts: 1, status: 200 });
      // Held until the source stops: a delivery still retrying when the operator goes away.
      return new Promise<DeliveryOutcome>((resolve) => {
        const done = () => resolve({ outcome: 'interrupted', attempts: 1 });
        if (signal?.aborted) done();
        else signal?.addEventListener('abort', done, { once: true });
      });
    },
    // Schedules only ever deliver: the sink's other ways are not theirs.
    invoke: () => Promise.reject(new Error('schedules do not invoke without retries')),
    deadLetter: () => Promise.reject(new Error('schedules do not dead-letter directly')),
  };
  return { sink, delivered };
}

function fnWith(name: string, triggers: Record<string, ScheduleTrigger>): EddyFunction {
  return {
    apiVersion: 'eddy.dev/v1alpha1',
    kind: 'Function',
    metadata: { name, namespace: 'jobs', uid: `uid-${name}` },
    spec: { triggers: Object.entries(triggers).map(([n, schedule]) => ({ name: n, schedule })) },
  };
}

const running: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const stop of running.splice(0)) await stop();
});

function harness(start: string, o: { hold?: boolean; maxInFlightPerTrigger?: number } = {}) {
  const clock = manualClock(start);
  const store = new MemoryFunctionStore();
  const checkpoints = memoryCheckpoints();
  const states = new TriggerStates();
  const metrics = new Registry();
  const logs: string[] = [];
  const { sink, delivered } = recordingSink(clock, o.hold);
  const ctx: SourceContext = {
    store,
    secrets: () => Promise.reject(new Error('no secrets here')),
    sink,
    queue: memoryQueue({ sink, signal: new AbortController().signal }),
    states,
    checkpoints,
    metrics,
    log: (m) => logs.push(m),
    route: () => undefined,
  };
  const h = {
    clock,
    store,
    checkpoints,
    states,
    metrics,
    logs,
    delivered,
    /** Starts the source (as a new leader would); returns its stop. */
    async start() {
      const [runnable] = scheduleSource({
        clock,
        maxInFlightPerTrigger: o.maxInFlightPerTrigger,
      })(ctx);
      expect(runnable).toMatchObject({ name: 'schedule', leaderOnly: true });
      const stop = new AbortController();
      const done = runnable!.run(stop.signal);
      await clock.settle();
      const halt = async () => {
        stop.abort();
        await done;
      };
      running.push(halt);
      return async () => {
        running.splice(running.indexOf(halt), 1);
        await halt();
      };
    },
    state: (fn: string, trigger: string) => states.get(`jobs/${fn}`, trigger),
    ticks: () => delivered.map((d) => d.body.time),
    async metric(name: string): Promise<string[]> {
      return (await metrics.metrics()).split('\n').filter((l) => l.startsWith(name));
    },
  };
  return h;
}

describe('the schedule source', () => {
  it("sends a trigger's input as the whole event, as an EventBridge target's constant Input", async () => {
    const h = harness('2025-01-01T10:02:30.000Z');
    h.store.set(
      fnWith('cleanup', {
        nightly: { expression: 'rate(5 minutes)', input: { task: 'cleanup', days: 30 } },
      }),
    );
    await h.start();
    await h.clock.advanceTo('2025-01-01T10:08:00Z');
    const [first] = h.delivered;
    expect(first!.body).toEqual({ task: 'cleanup', days: 30 });
    // Still the tick's CloudEvent, with its id.
    expect(first!.event).toMatchObject({
      type: 'dev.eddy.schedule',
      source: 'eddy:schedule:jobs/cleanup/nightly',
      time: '2025-01-01T10:07:30Z',
      headers: { 'ce-id': first!.event.id, 'content-type': 'application/json' },
    });
  });

  it('fires a rate from its first start, with the EventBridge event and the status times', async () => {
    const h = harness('2025-01-01T10:02:30.000Z');
    h.store.set(
      fnWith('report', { every5: { expression: 'rate(5 minutes)', payload: { mode: 'full' } } }),
    );
    await h.start();
    expect(h.state('report', 'every5')).toEqual({
      ready: true,
      nextScheduleTime: '2025-01-01T10:07:30Z',
    });

    await h.clock.advanceTo('2025-01-01T10:13:00Z');
    expect(h.ticks()).toEqual(['2025-01-01T10:07:30Z', '2025-01-01T10:12:30Z']);
    const [first] = h.delivered;
    expect(first!.at).toBe('2025-01-01T10:07:30.000Z');
    expect(first!.fn).toBe('jobs/report');
    expect(first!.body).toEqual({
      version: '0',
      id: first!.event.id,
      'detail-type': 'Scheduled Event',
      source: 'aws.events',
      account: 'jobs',
      time: '2025-01-01T10:07:30Z',
      region: 'eddy',
      resources: ['eddy:schedule:jobs/report/every5'],
      detail: { mode: 'full' },
    });
    expect(first!.event).toMatchObject({
      type: 'dev.eddy.schedule',
      source: 'eddy:schedule:jobs/report/every5',
      time: '2025-01-01T10:07:30Z',
      trigger: 'every5',
      headers: {
        'ce-specversion': '1.0',
        'ce-id': first!.event.id,
        'ce-type': 'dev.eddy.schedule',
        'ce-source': 'eddy:schedule:jobs/report/every5',
        'ce-time': '2025-01-01T10:07:30Z',
        'content-type': 'application/json',
      },
    });
    expect(first!.event.id).toMatch(
      /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    );
    expect(h.delivered[1]!.event.id).not.toBe(first!.event.id);
    expect(h.state('report', 'every5')).toEqual({
      ready: true,
      lastScheduleTime: '2025-01-01T10:12:30Z',
      nextScheduleTime: '2025-01-01T10:17:30Z',
    });
    expect(await h.metric('eddy_source_schedule_lag_seconds_count')).toEqual([
      'eddy_source_schedule_lag_seconds_count{namespace="jobs",function="report",trigger="every5"} 2',
    ]);
  });

  it('fires an EventBridge cron in its time zone across the spring-forward night', async () => {
    const h = harness('2025-03-29T12:00:00Z');
    h.store.set(
      fnWith('nightly', {
        at230: { expression: 'cron(30 2 * * ? *)', timezone: 'Europe/Berlin' },
        weekdays: { expression: '0 9 * * 1-5', timezone: 'America/New_York' },
      }),
    );
    await h.start();
    expect(h.state('nightly', 'at230')?.nextScheduleTime).toBe('2025-03-30T01:00:00Z');
    await h.clock.advanceTo('2025-04-01T00:00:00Z');
    expect(h.delivered.map((d) => `${d.event.trigger} ${d.body.time} ${d.at}`)).toEqual([
      // 02:30 does not exist on the 30th in Berlin: it runs at 03:00 CEST.
      'at230 2025-03-30T01:00:00Z 2025-03-30T01:00:00.000Z',
      'at230 2025-03-31T00:30:00Z 2025-03-31T00:30:00.000Z',
      // Monday 09:00 EDT.
      'weekdays 2025-03-31T13:00:00Z 2025-03-31T13:00:00.000Z',
    ]);
  });

  it('reports an invalid expression or time zone, and fires nothing for it', async () => {
    const h = harness('2025-01-01T00:00:00Z');
    h.store.set(
      fnWith('bad', {
        both: { expression: 'cron(0 3 * * * *)' },
        zone: { expression: 'rate(1 minute)', timezone: 'Europe/Atlantis' },
        good: { expression: 'rate(1 minute)' },
      }),
    );
    await h.start();
    expect(h.state('bad', 'both')).toEqual({
      ready: false,
      reason: 'InvalidExpression',
      message: expect.stringMatching(
        /^expression "cron\(0 3 \* \* \* \*\)" is invalid: EventBridge needs \? in exactly one of day-of-month and day-of-week.*a valid one looks like rate\(5 minutes\)/,
      ) as string,
    });
    expect(h.state('bad', 'zone')).toMatchObject({
      ready: false,
      reason: 'InvalidExpression',
      message: expect.stringContaining('time zone "Europe/Atlantis" is unknown') as string,
    });
    await h.clock.advanceTo('2025-01-02T00:00:00Z');
    expect(new Set(h.delivered.map((d) => d.event.trigger))).toEqual(new Set(['good']));

    // Fixing it makes it ready.
    h.store.set(
      fnWith('bad', {
        both: { expression: 'cron(0 3 * * ? *)' },
        zone: { expression: 'rate(1 minute)', timezone: 'Europe/Berlin' },
        good: { expression: 'rate(1 minute)' },
      }),
    );
    await h.clock.settle();
    expect(h.state('bad', 'both')).toEqual({
      ready: true,
      nextScheduleTime: '2025-01-02T03:00:00Z',
    });
    expect(h.state('bad', 'zone')).toMatchObject({ ready: true });
  });

  it('delivers the latest tick missed while no operator ran once, within the deadline', async () => {
    const h = harness('2025-01-01T10:00:30Z');
    h.store.set(
      fnWith('sweep', { five: { expression: '*/5 * * * *', startingDeadlineSeconds: 300 } }),
    );
    const stop = await h.start();
    await h.clock.advanceTo('2025-01-01T10:06:00Z');
    expect(h.ticks()).toEqual(['2025-01-01T10:05:00Z']);
    await stop();
    expect(h.checkpoints.data.get('jobs/sweep/five')).toMatchObject({
      expression: '*/5 * * * *',
      lastScheduleTime: '2025-01-01T10:05:00Z',
      through: '2025-01-01T10:05:00.000Z',
      inflight: '',
    });

    // Down through 10:10 and 10:15; back at 10:17.
    await h.clock.advanceTo('2025-01-01T10:17:00Z');
    expect(h.ticks()).toHaveLength(1);
    await h.start();
    expect(h.delivered.map((d) => `${d.body.time} ${d.at}`)).toEqual([
      '2025-01-01T10:05:00Z 2025-01-01T10:05:00.000Z',
      '2025-01-01T10:15:00Z 2025-01-01T10:17:00.000Z',
    ]);
    expect(h.state('sweep', 'five')).toEqual({
      ready: true,
      message:
        'skipped 1 tick(s) missed before 2025-01-01T10:15:00Z: only the latest missed tick is delivered',
      lastScheduleTime: '2025-01-01T10:15:00Z',
      nextScheduleTime: '2025-01-01T10:20:00Z',
    });
    expect(await h.metric('eddy_source_schedule_skipped_ticks_total')).toEqual([
      'eddy_source_schedule_skipped_ticks_total{namespace="jobs",function="sweep",trigger="five",reason="deadline"} 1',
    ]);
    // Once: the next start finds nothing missed.
    await h.clock.advanceTo('2025-01-01T10:19:00Z');
    const again = await h.start();
    await again();
    expect(h.ticks()).toHaveLength(2);
  });

  it('skips a missed tick later than the deadline, and says so', async () => {
    const h = harness('2025-01-01T10:00:30Z');
    h.store.set(
      fnWith('sweep', { five: { expression: 'cron(0/5 * * * ? *)', startingDeadlineSeconds: 60 } }),
    );
    const stop = await h.start();
    await h.clock.advanceTo('2025-01-01T10:06:00Z');
    await stop();
    await h.clock.advanceTo('2025-01-01T10:17:00Z');
    await h.start();
    expect(h.ticks()).toEqual(['2025-01-01T10:05:00Z']);
    expect(h.state('sweep', 'five')).toEqual({
      ready: true,
      message:
        'skipped the tick of 2025-01-01T10:15:00Z: it was 120 s late, more than startingDeadlineSeconds (60)',
      lastScheduleTime: '2025-01-01T10:05:00Z',
      nextScheduleTime: '2025-01-01T10:20:00Z',
    });
    expect(await h.metric('eddy_source_schedule_skipped_ticks_total')).toEqual([
      'eddy_source_schedule_skipped_ticks_total{namespace="jobs",function="sweep",trigger="five",reason="deadline"} 2',
    ]);
    expect(h.logs.some((l) => l.includes('schedule jobs/sweep/five: skipped the tick of'))).toBe(
      true,
    );
    await h.clock.advanceTo('2025-01-01T10:20:00Z');
    expect(h.ticks()).toEqual(['2025-01-01T10:05:00Z', '2025-01-01T10:20:00Z']);
  });

  it('without a deadline delivers the latest missed tick however late, as a CronJob does', async () => {
    const h = harness('2025-01-01T00:00:00Z');
    h.store.set(fnWith('daily', { d: { expression: 'rate(1 day)' } }));
    const stop = await h.start();
    await stop();
    await h.clock.advanceTo('2025-01-04T12:00:00Z');
    await h.start();
    expect(h.delivered.map((d) => `${d.body.time} ${d.at}`)).toEqual([
      '2025-01-04T00:00:00Z 2025-01-04T12:00:00.000Z',
    ]);
    // The rate keeps its anchor across the restart.
    expect(h.state('daily', 'd')?.nextScheduleTime).toBe('2025-01-05T00:00:00Z');
  });

  it('fires only the latest tick, on time, after the process stalled past several', async () => {
    const h = harness('2025-01-01T10:00:00Z');
    h.store.set(fnWith('m', { m: { expression: 'rate(1 minute)', startingDeadlineSeconds: 30 } }));
    await h.start();
    await h.clock.jump('2025-01-01T10:10:20Z');
    await h.clock.advanceTo('2025-01-01T10:10:20Z');
    expect(h.delivered.map((d) => `${d.body.time} ${d.at}`)).toEqual([
      '2025-01-01T10:10:00Z 2025-01-01T10:10:20.000Z',
    ]);
    expect(h.state('m', 'm')).toMatchObject({
      message:
        'skipped 9 tick(s) missed before 2025-01-01T10:10:00Z: only the latest missed tick is delivered',
      nextScheduleTime: '2025-01-01T10:11:00Z',
    });
    await h.clock.advanceTo('2025-01-01T10:11:00Z');
    expect(h.ticks()).toEqual(['2025-01-01T10:10:00Z', '2025-01-01T10:11:00Z']);
  });

  it('delivers again, with the same id, a tick whose delivery a shutdown cut short', async () => {
    const h = harness('2025-01-01T10:00:30Z', { hold: true });
    h.store.set(fnWith('slow', { m: { expression: 'rate(1 minute)' } }));
    const stop = await h.start();
    await h.clock.advanceTo('2025-01-01T10:01:40Z');
    await stop();
    expect(h.checkpoints.data.get('jobs/slow/m')?.inflight).toBe('2025-01-01T10:01:30Z');
    await h.start();
    expect(h.delivered.map((d) => d.body.time)).toEqual([
      '2025-01-01T10:01:30Z',
      '2025-01-01T10:01:30Z',
    ]);
    expect(h.delivered[1]!.event.id).toBe(h.delivered[0]!.event.id);
  });

  it('skips a tick rather than pile up deliveries of one trigger', async () => {
    const h = harness('2025-01-01T10:00:00Z', { hold: true, maxInFlightPerTrigger: 2 });
    h.store.set(fnWith('stuck', { m: { expression: 'rate(1 minute)' } }));
    h.store.set(fnWith('other', { m: { expression: 'rate(1 minute)' } }));
    await h.start();
    await h.clock.advanceTo('2025-01-01T10:03:00Z');
    // Three ticks each; the third of each is skipped while two deliveries are still held.
    expect(h.delivered.filter((d) => d.fn === 'jobs/stuck')).toHaveLength(2);
    expect(h.delivered.filter((d) => d.fn === 'jobs/other')).toHaveLength(2);
    expect(h.state('stuck', 'm')?.message).toBe(
      'skipped the tick of 2025-01-01T10:03:00Z: 2 deliveries of this trigger are still in progress',
    );
    expect(await h.metric('eddy_source_schedule_skipped_ticks_total')).toContain(
      'eddy_source_schedule_skipped_ticks_total{namespace="jobs",function="stuck",trigger="m",reason="overlap"} 1',
    );
  });

  it('follows added, changed and removed triggers and deleted Functions', async () => {
    const h = harness('2025-01-01T00:00:00Z');
    await h.start();
    h.store.set(fnWith('f', { a: { expression: 'rate(1 hour)' } }));
    await h.clock.settle();
    expect(h.state('f', 'a')?.nextScheduleTime).toBe('2025-01-01T01:00:00Z');

    await h.clock.advanceTo('2025-01-01T00:30:00Z');
    h.store.set(
      fnWith('f', {
        a: { expression: 'rate(2 hours)' }, // changed: counts afresh from now
        b: { expression: '0 * * * *' },
      }),
    );
    await h.clock.settle();
    expect(h.state('f', 'a')?.nextScheduleTime).toBe('2025-01-01T02:30:00Z');
    expect(h.state('f', 'b')?.nextScheduleTime).toBe('2025-01-01T01:00:00Z');

    await h.clock.advanceTo('2025-01-01T01:30:00Z');
    expect(h.delivered.map((d) => `${d.event.trigger} ${d.body.time}`)).toEqual([
      'b 2025-01-01T01:00:00Z',
    ]);
    expect(h.checkpoints.data.has('jobs/f/b')).toBe(true);

    h.store.set(fnWith('f', { a: { expression: 'rate(2 hours)' } }));
    await h.clock.settle();
    expect(h.state('f', 'b')).toBeUndefined();
    expect(h.checkpoints.data.has('jobs/f/b')).toBe(false);

    h.store.delete('jobs', 'f');
    await h.clock.settle();
    expect(h.state('f', 'a')).toBeUndefined();
    await h.clock.advanceTo('2025-01-02T00:00:00Z');
    expect(h.delivered).toHaveLength(1);
    expect(h.clock.pending).toBe(0);
  });

  it('fires 1,000 schedules due in the same second from one timer', async () => {
    const h = harness('2025-01-01T00:00:10Z');
    for (let i = 0; i < 1000; i++) {
      h.store.set(fnWith(`f${i}`, { t: { expression: 'cron(* * * * ? *)' } }));
    }
    await h.start();
    const armedBefore = h.clock.armed;
    expect(h.clock.pending).toBe(1);
    await h.clock.advanceTo('2025-01-01T00:01:00Z');
    expect(h.delivered).toHaveLength(1000);
    expect(new Set(h.delivered.map((d) => d.fn)).size).toBe(1000);
    expect(h.delivered.every((d) => d.at === '2025-01-01T00:01:00.000Z')).toBe(true);
    // One wake for all of them, and one timer set for the next minute.
    expect(h.clock.armed - armedBefore).toBe(1);
    expect(h.clock.pending).toBe(1);
  });

  it('registers its metrics once per registry, whatever the leader terms', async () => {
    const h = harness('2025-01-01T00:00:00Z');
    h.store.set(fnWith('f', { a: { expression: 'rate(1 minute)' } }));
    const first = await h.start();
    await h.clock.advanceTo('2025-01-01T00:01:00Z');
    await first();
    await h.start();
    await h.clock.advanceTo('2025-01-01T00:02:00Z');
    expect(await h.metric('eddy_source_schedule_lag_seconds_count')).toEqual([
      'eddy_source_schedule_lag_seconds_count{namespace="jobs",function="f",trigger="a"} 2',
    ]);
  });
});
