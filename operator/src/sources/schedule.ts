/**
 * The schedule source: invokes Functions on their `schedule` triggers with EventBridge's
 * "Scheduled Event". It runs on the leader only, so each tick fires once across the cluster.
 *
 * One timer, set for the earliest tick of all triggers (a heap orders them), wakes the source;
 * every trigger due by then fires before any next tick is worked out, so a thousand schedules
 * due in the same second fire together. Deliveries go through the sink (retries, dead letters)
 * without being awaited: a slow function delays no other schedule.
 *
 * Each trigger's checkpoint keeps the ticks it has accounted for, so a restarted operator or a
 * new leader knows what it missed: the latest missed tick is delivered once if it is no more
 * than `startingDeadlineSeconds` late, and the others are skipped, counted and reported, as a
 * Kubernetes CronJob does. A delivery cut short by a shutdown is delivered again.
 */
import { createHash } from 'node:crypto';
import { Counter, Histogram, type Registry } from 'prom-client';
import { eventTypes } from '../../../runtime/src/contract/index.js';
import type { EddyFunction, ScheduleTrigger } from '../api/types.js';
import { describeError } from '../errors.js';
import type { DeliveryEvent, DeliveryOutcome } from '../gateway/delivery.js';
import type { Checkpoint } from './checkpoints.js';
import { parseSchedule, ticksBetween, type Schedule } from './schedule-expression.js';
import type { SourceContext, SourceFactory } from './source.js';

/** Wall-clock time and one-shot timers: injected so that calendar tests need not wait. */
export interface ScheduleClock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Calls `fn` after `ms`; returns a cancel. */
  timer(ms: number, fn: () => void): () => void;
}

export const systemClock: ScheduleClock = {
  now: () => Date.now(),
  timer(ms, fn) {
    const t = setTimeout(fn, ms);
    return () => clearTimeout(t);
  },
};

export interface ScheduleSourceOptions {
  clock?: ScheduleClock;
  /**
   * Deliveries of one trigger that may be in progress (running or waiting for a retry) at once;
   * a tick beyond that is skipped rather than piling up. Default 5.
   */
  maxInFlightPerTrigger?: number;
}

/** The event's `resources` entry and CloudEvent source: which trigger fired. */
export function scheduleResource(namespace: string, name: string, trigger: string): string {
  return `eddy:schedule:${namespace}/${name}/${trigger}`;
}

/** EventBridge's "Scheduled Event", as a Lambda handler receives it. */
export interface ScheduledEvent {
  version: '0';
  id: string;
  'detail-type': 'Scheduled Event';
  source: 'aws.events';
  account: string;
  time: string;
  region: string;
  resources: string[];
  detail: Record<string, unknown>;
}

/** RFC 3339 in UTC without milliseconds, as EventBridge writes `time`. */
export function rfc3339(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/**
 * The event of one tick: the Scheduled Event with the trigger's payload as its detail, or the
 * trigger's `input` as it is (an EventBridge target's constant Input). Its id is derived from the
 * trigger and the tick, so a tick delivered again (after a shutdown cut its delivery short)
 * carries the same id.
 */
export function scheduledEvent(
  fn: EddyFunction,
  trigger: string,
  spec: Pick<ScheduleTrigger, 'payload' | 'input'>,
  tick: number,
): { event: ScheduledEvent; delivery: DeliveryEvent } {
  const { namespace, name } = fn.metadata;
  const resource = scheduleResource(namespace, name, trigger);
  const time = rfc3339(tick);
  const id = uuidFrom(`${resource}@${time}`);
  const event: ScheduledEvent = {
    version: '0',
    id,
    'detail-type': 'Scheduled Event',
    source: 'aws.events',
    account: namespace,
    time,
    region: 'eddy',
    resources: [resource],
    detail: spec.payload ?? {},
  };
  return {
    event,
    delivery: {
      id,
      type: eventTypes.schedule,
      source: resource,
      time,
      body: Buffer.from(JSON.stringify(spec.input ?? event)),
      headers: {
        'ce-specversion': '1.0',
        'ce-id': id,
        'ce-type': eventTypes.schedule,
        'ce-source': resource,
        'ce-time': time,
        'content-type': 'application/json',
      },
      trigger,
    },
  };
}

function uuidFrom(text: string): string {
  const h = createHash('sha1').update(text).digest('hex');
  // Shaped as a name-based (version 5) UUID.
  const variant = ((parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

type Labels = { namespace: string; function: string; trigger: string };

interface ScheduleMetrics {
  lag: Histogram<'namespace' | 'function' | 'trigger'>;
  skipped: Counter<'namespace' | 'function' | 'trigger' | 'reason'>;
}

/** Registered once per registry: a new leader term reuses what the last one registered. */
function scheduleMetrics(registry: Registry): ScheduleMetrics {
  const lagName = 'eddy_source_schedule_lag_seconds';
  const skippedName = 'eddy_source_schedule_skipped_ticks_total';
  return {
    lag:
      (registry.getSingleMetric(lagName) as ScheduleMetrics['lag'] | undefined) ??
      new Histogram({
        name: lagName,
        help: 'How late a schedule fired: the time it fired minus the tick it fired for.',
        labelNames: ['namespace', 'function', 'trigger'],
        buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300],
        registers: [registry],
      }),
    skipped:
      (registry.getSingleMetric(skippedName) as ScheduleMetrics['skipped'] | undefined) ??
      new Counter({
        name: skippedName,
        help: 'Ticks not delivered: missed beyond startingDeadlineSeconds (reason deadline) or while too many deliveries of the trigger were in progress (reason overlap).',
        labelNames: ['namespace', 'function', 'trigger', 'reason'],
        registers: [registry],
      }),
  };
}

/** One schedule trigger of one Function. */
interface Entry {
  fnKey: string;
  trigger: string;
  fn: EddyFunction;
  spec: ScheduleTrigger;
  labels: Labels;
  /** Undefined while the checkpoint loads or when the expression is invalid. */
  schedule?: Schedule;
  /** A rate's ticks are `anchor + k * period`. */
  anchor: number;
  /** Every tick up to here has been fired or skipped. */
  through: number;
  /** The last tick fired. */
  last?: number;
  next?: number;
  /** The tick after `next`, worked out ahead so that firing needs no calendar arithmetic. */
  following?: number;
  /** The event of `next`, made ahead so that firing is only handing it over. */
  prepared?: { tick: number; spec: ScheduleTrigger; delivery: DeliveryEvent };
  /** Ticks whose delivery has not ended. */
  inflight: Set<number>;
  /** The latest skip, as the status message shows it. */
  message?: string;
  /** Bumped whenever `next` changes or the entry goes: older heap items are stale. */
  seq: number;
  removed: boolean;
  saving: Promise<void>;
  saveQueued: boolean;
  cancelRetry?: () => void;
}

interface HeapItem {
  at: number;
  entry: Entry;
  seq: number;
}

/** A binary min-heap of ticks. */
class TickHeap {
  private readonly items: HeapItem[] = [];

  push(item: HeapItem): void {
    const a = this.items;
    a.push(item);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (a[p]!.at <= item.at) break;
      a[i] = a[p]!;
      i = p;
    }
    a[i] = item;
  }

  /** The earliest item still current; stale ones are dropped on the way. */
  peek(): HeapItem | undefined {
    while (this.items.length > 0) {
      const top = this.items[0]!;
      if (!top.entry.removed && top.seq === top.entry.seq) return top;
      this.pop();
    }
    return undefined;
  }

  pop(): HeapItem | undefined {
    const a = this.items;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        let at = last.at;
        if (l < a.length && a[l]!.at < at) {
          m = l;
          at = a[l]!.at;
        }
        if (r < a.length && a[r]!.at < at) m = r;
        if (m === i) break;
        a[i] = a[m]!;
        i = m;
      }
      a[i] = last;
    }
    return top;
  }
}

/** A timer longer than this is cut short and set again, which also follows wall-clock jumps. */
const maxTimerMs = 60_000;
const loadRetryMs = 10_000;

/** Schedules' source: one leader-only runnable for every schedule trigger of every Function. */
export function scheduleSource(options: ScheduleSourceOptions = {}): SourceFactory {
  return (ctx) => [
    {
      name: 'schedule',
      leaderOnly: true,
      run: (signal) => runSchedules(ctx, options, signal),
    },
  ];
}

async function runSchedules(
  ctx: SourceContext,
  options: ScheduleSourceOptions,
  signal: AbortSignal,
): Promise<void> {
  const clock = options.clock ?? systemClock;
  const maxInFlight = options.maxInFlightPerTrigger ?? 5;
  const metrics = scheduleMetrics(ctx.metrics);
  const byFunction = new Map<string, Map<string, Entry>>();
  /** Checkpoint removals under way, so that a trigger added again reads after them. */
  const removals = new Map<string, Promise<void>>();
  const deliveries = new Set<Promise<void>>();
  const heap = new TickHeap();
  let cancelTimer: (() => void) | undefined;
  let timerAt: number | undefined;

  const log = (e: Entry, message: string) =>
    ctx.log(`schedule ${e.fnKey}/${e.trigger}: ${message}`);

  function sync(fn: EddyFunction, deleted: boolean): void {
    if (signal.aborted) return;
    const fnKey = `${fn.metadata.namespace}/${fn.metadata.name}`;
    const gone = deleted || fn.metadata.deletionTimestamp !== undefined;
    const wanted = gone ? [] : (fn.spec.triggers ?? []).filter((t) => t.schedule);
    let entries = byFunction.get(fnKey);
    if (entries) {
      const names = new Set(wanted.map((t) => t.name));
      for (const e of [...entries.values()]) if (!names.has(e.trigger)) remove(e);
    }
    if (wanted.length === 0) return;
    if (!entries) byFunction.set(fnKey, (entries = new Map<string, Entry>()));
    for (const t of wanted) {
      const spec = t.schedule!;
      const e = entries.get(t.name);
      if (!e) {
        const added = newEntry(fnKey, fn, t.name, spec);
        entries.set(t.name, added);
        load(added);
      } else {
        const changed =
          e.spec.expression !== spec.expression ||
          (e.spec.timezone ?? 'UTC') !== (spec.timezone ?? 'UTC');
        e.fn = fn;
        e.spec = spec;
        // A changed expression starts afresh; a trigger still loading or invalid loads again.
        if (changed && e.schedule !== undefined) begin(e, {});
        else if (changed) load(e);
      }
    }
    arm();
  }

  function newEntry(fnKey: string, fn: EddyFunction, trigger: string, spec: ScheduleTrigger) {
    const entry: Entry = {
      fnKey,
      trigger,
      fn,
      spec,
      labels: { namespace: fn.metadata.namespace, function: fn.metadata.name, trigger },
      anchor: 0,
      through: 0,
      inflight: new Set(),
      seq: 0,
      removed: false,
      saving: Promise.resolve(),
      saveQueued: false,
    };
    return entry;
  }

  function remove(e: Entry): void {
    e.removed = true;
    e.seq++;
    e.cancelRetry?.();
    const entries = byFunction.get(e.fnKey);
    entries?.delete(e.trigger);
    if (entries?.size === 0) byFunction.delete(e.fnKey);
    ctx.states.delete(e.fnKey, e.trigger);
    // A trigger that went leaves no series behind.
    metrics.lag.remove(e.labels);
    for (const reason of ['deadline', 'overlap']) metrics.skipped.remove({ ...e.labels, reason });
    const id = `${e.fnKey}/${e.trigger}`;
    const removal = e.saving
      .then(() => ctx.checkpoints.remove(e.fn, e.trigger))
      .catch((err: unknown) => log(e, `could not remove the checkpoint: ${describeError(err)}`))
      .finally(() => {
        if (removals.get(id) === removal) removals.delete(id);
      });
    removals.set(id, removal);
    log(e, 'removed');
  }

  function load(e: Entry): void {
    const seq = ++e.seq;
    const before = removals.get(`${e.fnKey}/${e.trigger}`) ?? Promise.resolve();
    void before
      .then(() => ctx.checkpoints.load(e.fn, e.trigger))
      .then(
        (checkpoint) => {
          if (e.removed || e.seq !== seq || signal.aborted) return;
          try {
            begin(e, checkpoint);
          } catch (err) {
            // Whatever one trigger's schedule does, the others keep firing.
            const message = `the schedule cannot run: ${describeError(err)}`;
            log(e, message);
            ctx.states.set(e.fnKey, e.trigger, { ready: false, reason: 'SourceError', message });
          }
          arm();
        },
        (err: unknown) => {
          if (e.removed || e.seq !== seq || signal.aborted) return;
          const message = `cannot read the trigger's checkpoint (retrying in ${loadRetryMs / 1000} s): ${describeError(err)}`;
          log(e, message);
          ctx.states.set(e.fnKey, e.trigger, { ready: false, reason: 'SourceError', message });
          e.cancelRetry = clock.timer(loadRetryMs, () => {
            if (!e.removed && e.seq === seq && !signal.aborted) load(e);
          });
        },
      );
  }

  /** Starts a trigger from its checkpoint (`{}`: afresh) and catches up on what it missed. */
  function begin(e: Entry, checkpoint: Checkpoint): void {
    e.seq++;
    const timezone = e.spec.timezone ?? 'UTC';
    const parsed = parseSchedule(e.spec.expression, timezone);
    if ('problem' in parsed) {
      e.schedule = undefined;
      log(e, parsed.problem);
      ctx.states.set(e.fnKey, e.trigger, {
        ready: false,
        reason: 'InvalidExpression',
        message: parsed.problem,
      });
      return;
    }
    e.schedule = parsed.schedule;
    e.next = e.following = undefined;
    const now = clock.now();
    const time = (s: string | undefined) => (s ? Date.parse(s) : NaN);
    if (checkpoint.lastScheduleTime) e.last = time(checkpoint.lastScheduleTime);
    const same =
      checkpoint.expression === e.spec.expression &&
      checkpoint.timezone === timezone &&
      !Number.isNaN(time(checkpoint.through)) &&
      !Number.isNaN(time(checkpoint.anchor));
    if (same) {
      e.anchor = time(checkpoint.anchor);
      e.through = time(checkpoint.through);
    } else {
      // A new trigger, or its expression changed: ticks count from now, a rate's from this
      // second (EventBridge's times have no milliseconds).
      e.anchor = Math.floor(now / 1000) * 1000;
      e.through = now;
      e.message = undefined;
    }
    // Deliveries a shutdown cut short are owed: their age still bounds their retries.
    const owed = same ? (checkpoint.inflight ?? '').split(',').filter((s) => s !== '') : [];
    for (const tick of owed.map(time).filter((t) => !Number.isNaN(t))) {
      log(e, `delivering the tick of ${rfc3339(tick)} again: its delivery did not end`);
      deliver(e, tick);
    }
    catchUp(e, now);
    advance(e, now);
    report(e);
    save(e);
  }

  /** Fires the latest tick in `(through, now]` if on time, and skips the rest. */
  function catchUp(e: Entry, now: number): void {
    const { count, capped, latest } = ticksBetween(e.schedule!, e.anchor, e.through, now);
    if (count === 0 || latest === undefined) return;
    const missed = count - 1;
    if (missed > 0) {
      skip(
        e,
        'deadline',
        missed,
        `skipped ${capped ? 'at least ' : ''}${missed} tick(s) missed before ${rfc3339(latest)}: only the latest missed tick is delivered`,
      );
    }
    fireOrSkip(e, latest, now);
  }

  /** `lags`: where to leave the lag for observing later, off the path that fires. */
  function fireOrSkip(e: Entry, tick: number, now: number, lags?: Array<[Entry, number]>): void {
    e.through = Math.max(e.through, tick);
    const deadline = e.spec.startingDeadlineSeconds;
    const lateSeconds = Math.floor((now - tick) / 1000);
    if (deadline !== undefined && lateSeconds > deadline) {
      skip(
        e,
        'deadline',
        1,
        `skipped the tick of ${rfc3339(tick)}: it was ${lateSeconds} s late, more than startingDeadlineSeconds (${deadline})`,
      );
    } else if (e.inflight.size >= maxInFlight) {
      skip(
        e,
        'overlap',
        1,
        `skipped the tick of ${rfc3339(tick)}: ${e.inflight.size} deliveries of this trigger are still in progress`,
      );
    } else {
      const lag = Math.max(0, clock.now() - tick) / 1000;
      if (lags) lags.push([e, lag]);
      else metrics.lag.observe(e.labels, lag);
      e.last = tick;
      deliver(e, tick);
    }
  }

  function skip(e: Entry, reason: 'deadline' | 'overlap', ticks: number, message: string): void {
    metrics.skipped.inc({ ...e.labels, reason }, ticks);
    e.message = message;
    log(e, message);
  }

  function deliver(e: Entry, tick: number): void {
    e.inflight.add(tick);
    const p = e.prepared;
    const delivery =
      p && p.tick === tick && p.spec === e.spec
        ? p.delivery
        : scheduledEvent(e.fn, e.trigger, e.spec, tick).delivery;
    const done = enqueue(e, tick, delivery)
      .then((outcome) => {
        if (!outcome || outcome.outcome === 'interrupted') return; // stays in the checkpoint: owed
        e.inflight.delete(tick);
        if (outcome.outcome === 'dropped') {
          log(e, `the tick of ${rfc3339(tick)} was dropped: ${outcome.reason}`);
        }
        save(e);
      })
      .catch((err: unknown) => log(e, `delivery failed: ${describeError(err)}`))
      .finally(() => deliveries.delete(done));
    deliveries.add(done);
  }

  /**
   * Puts a tick on the queue, again and again while the queue refuses it (NATS down). Resolves
   * with how its delivery ended: at once when queued durably (the queue's consumers deliver
   * it), once delivered when the queue is this process's memory; undefined when the source
   * stopped first (the tick stays owed in the checkpoint).
   */
  async function enqueue(
    e: Entry,
    tick: number,
    delivery: DeliveryEvent,
  ): Promise<DeliveryOutcome | undefined> {
    for (let refusals = 0; !signal.aborted && !e.removed; refusals++) {
      try {
        const { delivered } = await ctx.queue.enqueue(e.fn, delivery, signal);
        return delivered ? await delivered : { outcome: 'succeeded', attempts: 0, status: 202 };
      } catch (err) {
        const waitMs = Math.min(30_000, 1_000 * 2 ** Math.min(refusals, 5));
        log(
          e,
          `the tick of ${rfc3339(tick)} could not be queued (${describeError(err)}); trying again in ${Math.round(waitMs / 1000)} s`,
        );
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, waitMs);
          function done() {
            clearTimeout(timer);
            signal.removeEventListener('abort', done);
            resolve();
          }
          signal.addEventListener('abort', done, { once: true });
        });
      }
    }
    return undefined;
  }

  /** Works out the next tick after `now` and queues it. */
  function advance(e: Entry, now: number): void {
    const schedule = e.schedule!;
    const after = Math.max(now, e.through);
    e.next =
      e.following !== undefined && e.following > after && e.next !== undefined && e.next <= after
        ? e.following
        : schedule.next(after, e.anchor);
    e.following = e.next === undefined ? undefined : schedule.next(e.next, e.anchor);
    e.seq++;
    if (e.next === undefined) return;
    heap.push({ at: e.next, entry: e, seq: e.seq });
    const { delivery } = scheduledEvent(e.fn, e.trigger, e.spec, e.next);
    e.prepared = { tick: e.next, spec: e.spec, delivery };
  }

  function report(e: Entry): void {
    const message = e.next === undefined ? 'no tick is left: the schedule has ended' : e.message;
    ctx.states.set(e.fnKey, e.trigger, {
      ready: true,
      ...(message ? { message } : {}),
      ...(e.last !== undefined ? { lastScheduleTime: rfc3339(e.last) } : {}),
      ...(e.next !== undefined ? { nextScheduleTime: rfc3339(e.next) } : {}),
    });
  }

  /** Saves the entry's progress after any save under way; saves asked for meanwhile coalesce. */
  function save(e: Entry): void {
    if (e.saveQueued || e.removed) return;
    e.saveQueued = true;
    e.saving = e.saving
      .then(async () => {
        e.saveQueued = false;
        if (e.removed || !e.schedule) return;
        await ctx.checkpoints.save(e.fn, e.trigger, {
          expression: e.spec.expression,
          timezone: e.spec.timezone ?? 'UTC',
          anchor: new Date(e.anchor).toISOString(),
          through: new Date(e.through).toISOString(),
          ...(e.last !== undefined ? { lastScheduleTime: rfc3339(e.last) } : {}),
          inflight: [...e.inflight].map(rfc3339).join(','),
        });
      })
      .catch((err: unknown) => log(e, `could not save the checkpoint: ${describeError(err)}`));
  }

  function onTimer(): void {
    cancelTimer = undefined;
    timerAt = undefined;
    if (signal.aborted) return;
    const now = clock.now();
    const due: Entry[] = [];
    for (let top = heap.peek(); top && top.at <= now; top = heap.peek()) {
      heap.pop();
      due.push(top.entry);
    }
    // Fire everything due first; metrics and the calendar work for the next ticks come after.
    const lags: Array<[Entry, number]> = [];
    for (const e of due) {
      if (e.following === undefined || e.following > now) fireOrSkip(e, e.next!, now, lags);
      else catchUp(e, now); // more than one tick passed: the timer was held up
    }
    for (const [e, lag] of lags) metrics.lag.observe(e.labels, lag);
    for (const e of due) {
      advance(e, now);
      report(e);
      save(e);
    }
    arm();
  }

  function arm(): void {
    if (signal.aborted) return;
    const top = heap.peek();
    if (top === undefined) {
      cancelTimer?.();
      cancelTimer = timerAt = undefined;
      return;
    }
    if (timerAt === top.at && cancelTimer) return;
    cancelTimer?.();
    timerAt = top.at;
    cancelTimer = clock.timer(Math.min(Math.max(0, top.at - clock.now()), maxTimerMs), onTimer);
  }

  const unsubscribe = ctx.store.onChange((fn, deleted) => sync(fn, deleted));
  for (const fn of ctx.store.list()) sync(fn, false);
  ctx.log(
    `schedule: following ${[...byFunction.values()].reduce((n, m) => n + m.size, 0)} trigger(s)`,
  );
  await new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener('abort', () => resolve(), { once: true });
  });
  unsubscribe();
  cancelTimer?.();
  const entries = [...byFunction.values()].flatMap((m) => [...m.values()]);
  for (const e of entries) e.cancelRetry?.();
  // Deliveries end promptly on the signal (interrupted ones stay owed); then the last saves.
  await Promise.allSettled([...deliveries]);
  await Promise.allSettled([...entries.map((e) => e.saving), ...removals.values()]);
}
