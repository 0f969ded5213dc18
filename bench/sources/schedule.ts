/**
 * 1,000 schedules due in the same second: how late the schedule source fires them (fire time
 * minus the tick), beside a baseline measured in the same run: 1,000 plain setTimeout timers
 * due at one instant. The source runs with real timers and delivers to a no-op sink, so the
 * figure is the scheduler's own (no gateway, no function). Its wall clock is shifted so that a
 * minute boundary comes a few seconds after it starts, rather than waiting for the next one.
 */
import { memoryQueue } from '../../operator/src/queue/queue.js';
import { performance } from 'node:perf_hooks';
import { Registry } from 'prom-client';
import type { EddyFunction } from '../../operator/src/api/types.js';
import { MemoryFunctionStore } from '../../operator/src/functions.js';
import type { EventSink } from '../../operator/src/gateway/async.js';
import type { Runnable } from '../../operator/src/manager.js';
import { memoryCheckpoints } from '../../operator/src/sources/checkpoints.js';
import { scheduleSource, type ScheduleClock } from '../../operator/src/sources/schedule.js';
import { TriggerStates } from '../../operator/src/sources/states.js';

/** Schedules only ever deliver: the sink's other ways are not theirs. */
const unusedBySchedules = {
  invoke: () => Promise.reject(new Error('schedules do not invoke without retries')),
  deadLetter: () => Promise.reject(new Error('schedules do not dead-letter directly')),
};

const count = 1000;
const expression = 'cron(* * * * ? *)';

function fn(i: number): EddyFunction {
  return {
    apiVersion: 'eddy.dev/v1alpha1',
    kind: 'Function',
    metadata: { name: `f${i}`, namespace: 'bench', uid: `uid-${i}` },
    spec: { triggers: [{ name: 'tick', schedule: { expression } }] },
  };
}

function summary(lagsMs: number[]): string {
  const s = [...lagsMs].sort((a, b) => a - b);
  const at = (p: number) => s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
  return `p50 ${at(50).toFixed(2)} ms, p99 ${at(99).toFixed(2)} ms, max ${s[s.length - 1]!.toFixed(2)} ms`;
}

/** 1,000 setTimeout timers set now and due at one instant `inMs` from now. */
async function baseline(inMs: number): Promise<number[]> {
  const due = performance.now() + inMs;
  const lags: number[] = [];
  await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<void>((resolve) =>
          setTimeout(() => {
            lags.push(performance.now() - due);
            resolve();
          }, due - performance.now()),
        ),
    ),
  );
  return lags;
}

async function source(): Promise<{ lags: number[]; loadMs: number }> {
  // The next minute boundary, 3 s after the source starts, on the source's (shifted) clock.
  const realNow = () => performance.timeOrigin + performance.now();
  const boundary = Math.ceil((realNow() + 60_000) / 60_000) * 60_000;
  const offset = boundary - 3_000 - realNow();
  const clock: ScheduleClock = {
    now: () => realNow() + offset,
    timer(ms, f) {
      const t = setTimeout(f, ms);
      return () => clearTimeout(t);
    },
  };
  const lags: number[] = [];
  let allFired: () => void = () => undefined;
  const fired = new Promise<void>((r) => (allFired = r));
  const sink: EventSink = {
    deliver(_fn, event) {
      lags.push(clock.now() - Date.parse(event.time));
      if (lags.length === count) allFired();
      return Promise.resolve({ outcome: 'succeeded', attempts: 1, status: 200 });
    },
    ...unusedBySchedules,
  };
  const store = new MemoryFunctionStore();
  for (let i = 0; i < count; i++) store.set(fn(i));
  const states = new TriggerStates();
  let reported = 0;
  let loadMs = 0;
  const started = performance.now();
  states.onChange(() => {
    if (++reported === count) loadMs = performance.now() - started;
  });
  const [runnable] = scheduleSource({ clock })({
    store,
    secrets: () => Promise.reject(new Error('no secrets in the bench')),
    sink,
    queue: memoryQueue({ sink, signal: new AbortController().signal }),
    states,
    checkpoints: memoryCheckpoints(),
    metrics: new Registry(),
    log: () => undefined,
    route: () => undefined,
  }) as [Runnable];
  const stop = new AbortController();
  const done = runnable.run(stop.signal);
  const timeout = setTimeout(() => allFired(), 15_000);
  await fired;
  clearTimeout(timeout);
  stop.abort();
  await done;
  return { lags, loadMs };
}

/** Lines to print. */
export async function benchSchedule(): Promise<string[]> {
  const base = await baseline(3_000);
  const { lags, loadMs } = await source();
  return [
    `schedule: ${count} triggers (${expression}) due at the same second, delivered to a no-op sink (the scheduler alone: no gateway, no function)`,
    `  source:   fired ${lags.length}/${count}; lag ${lags.length ? summary(lags) : 'none'}`,
    `  baseline: ${count} setTimeout timers due at one instant; lag ${summary(base)}`,
    `  start: ${count} triggers loaded and reported their next tick in ${loadMs.toFixed(0)} ms`,
  ];
}
