/**
 * The autoscaler: a leader-only loop that, every interval, reads what the gateways count, turns
 * it into one sample per Function, decides (decide.ts) and asks the platform for the replicas
 * that differ from what it has. It is the only writer that lowers a Function's replicas (a
 * gateway raises them at zero and for a burst, and holds a burst's until they served). Each Function's
 * scale call runs on its own with its own deadline: one that hangs holds up that Function's
 * next call and nothing else.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { EddyFunction } from '../api/types.js';
import { describeError } from '../errors.js';
import type { FunctionStore } from '../functions.js';
import { keyOf, splitKey, type FunctionKey, type Platform } from '../platform/platform.js';
import {
  Sampler,
  Windows,
  burstHolds,
  holdForBurst,
  holdWhileMissing,
  scalingOf,
  type Decision,
} from './decide.js';
import type { LoadReadout, LoadSource } from './load.js';

export interface AutoscalerOptions {
  store: FunctionStore;
  platform: Pick<Platform, 'scale' | 'counts'>;
  load: LoadSource;
  /** How often to read the load and decide; also the longest a load read may take. */
  intervalMs?: number;
  /** The longest one scale call may take before it is abandoned (default 10 s). */
  scaleTimeoutMs?: number;
  now?: () => number;
  log: (message: string) => void;
  /** Where to register the autoscaler's metrics (one registry per app instance). */
  metrics?: Registry;
  /** Called with every decision, changed or not, each interval. */
  onDecision?: (key: FunctionKey, decision: Decision) => void;
}

export interface Autoscaler {
  /**
   * Scales the store's Functions until `signal` aborts; resolves once the last tick has ended
   * and no timer is left. Failures are logged and retried on the next tick, never thrown.
   */
  run(signal: AbortSignal): Promise<void>;
}

export function createAutoscaler(o: AutoscalerOptions): Autoscaler {
  const intervalMs = o.intervalMs ?? 2000;
  const scaleTimeoutMs = o.scaleTimeoutMs ?? 10_000;
  const now = o.now ?? Date.now;
  const metrics = o.metrics && autoscalerMetrics(o.metrics);

  return {
    async run(signal) {
      // State lives per run: a leader that lost the lease and won it back starts from what the
      // gateways count now, not from what it saw before another leader took over.
      const sampler = new Sampler();
      const functions = new Map<FunctionKey, { uid: string | undefined; windows: Windows }>();
      // The replicas last logged per function, so a platform slow to show a change is asked
      // again without logging the change again.
      const announced = new Map<FunctionKey, number>();
      // The last failure logged per function (or "load"), so a lasting failure is one line, not
      // one a tick.
      const failing = new Map<string, string>();
      // Scale calls under way, by function: a function is not asked again until its call ends.
      const scaling = new Map<FunctionKey, Promise<void>>();
      // The gateways missing from the last read, to log a change once.
      let missingBefore = '';

      const fail = (operation: 'load' | 'scale', what: string, message: string) => {
        metrics?.failures.inc({ operation });
        if (failing.get(what) !== message) o.log(message);
        failing.set(what, message);
      };

      const scale = async (fn: EddyFunction, from: number, decision: Decision) => {
        const key = keyOf(fn);
        try {
          await withDeadline(
            (s) => o.platform.scale(fn, decision.desired, s),
            scaleTimeoutMs,
            signal,
          );
        } catch (err) {
          if (signal.aborted) return;
          const message = `${key}: ${from} -> ${decision.desired} failed, retrying: ${describeError(err)}`;
          fail('scale', key, message);
          return;
        }
        failing.delete(key);
        if (announced.get(key) === decision.desired) return;
        announced.set(key, decision.desired);
        o.log(`${key}: ${from} -> ${decision.desired} (${decision.reason})`);
      };

      const tick = async () => {
        let readout: LoadReadout;
        try {
          const read = await withDeadline(
            (s) => o.load(s),
            intervalMs,
            signal,
            () => new Error(`no answer within ${intervalMs} ms`),
          );
          readout = Array.isArray(read) ? { reports: read, missing: [] } : read;
        } catch (err) {
          if (!signal.aborted)
            fail('load', 'load', `reading the load failed, retrying: ${describeError(err)}`);
          return;
        }
        if (failing.delete('load')) o.log('reading the load works again');
        metrics?.missing.set(readout.missing.length);
        const missing = readout.missing.join(', ');
        if (missing !== missingBefore) {
          o.log(
            missing
              ? `no load report from gateway ${missing}: no function is scaled down until every gateway reports`
              : 'every gateway reports its load again',
          );
          missingBefore = missing;
        }

        const at = now();
        // A read with a report missing is no sample: the baseline stays at the last complete
        // read, so the next complete one covers the gap with every gateway's counters.
        const samples = missing ? undefined : sampler.sample(readout.reports, at);
        const held = burstHolds(readout.reports);
        const present = new Set<FunctionKey>();
        for (const fn of o.store.list()) {
          const key = keyOf(fn);
          present.add(key);
          let state = functions.get(key);
          // A Function deleted and created again under the same name starts afresh.
          if (!state || state.uid !== fn.metadata.uid) {
            state = { uid: fn.metadata.uid, windows: new Windows(at) };
            functions.set(key, state);
          }
          if (samples) state.windows.add(samples.get(key) ?? { at, concurrency: 0, active: false });

          const current = o.platform.counts(key);
          const settings = scalingOf(fn.spec);
          let decision = state.windows.decide(at, current, settings);
          if (missing) decision = holdWhileMissing(decision, current);
          const burst = held.get(key);
          if (burst !== undefined) decision = holdForBurst(decision, burst, settings);
          o.onDecision?.(key, decision);
          metrics?.observe(key, decision);
          if (decision.desired === current.desired) announced.delete(key);
          else if (!scaling.has(key)) {
            const call = scale(fn, current.desired, decision).finally(() => scaling.delete(key));
            scaling.set(key, call);
          }
        }
        for (const key of functions.keys()) {
          if (present.has(key)) continue;
          functions.delete(key);
          announced.delete(key);
          failing.delete(key);
          metrics?.forget(key);
        }
      };

      while (!signal.aborted) {
        await tick();
        await sleep(intervalMs, signal);
      }
      // Stopping (the lease lost, say) aborts the calls under way; they end at once.
      await Promise.all(scaling.values());
    },
  };
}

/**
 * Runs `call` with a signal that aborts after `timeoutMs` or when `signal` does, and gives up on
 * it then even if it ignores its signal: a stuck gateway or Deployment stalls no other scaling.
 */
async function withDeadline<T>(
  call: (signal: AbortSignal) => Promise<T>,
  timeoutMs: number,
  signal: AbortSignal,
  timeoutError = () => new Error(`no answer within ${timeoutMs} ms`),
): Promise<T> {
  const deadline = new AbortController();
  const stop = () => deadline.abort(signal.reason);
  signal.addEventListener('abort', stop, { once: true });
  // setTimeout rather than AbortSignal.timeout: the tests' fake clock drives it.
  const timer = setTimeout(() => deadline.abort(timeoutError()), timeoutMs);
  try {
    return await new Promise<T>((resolve, reject) => {
      deadline.signal.addEventListener('abort', () => reject(deadline.signal.reason as Error), {
        once: true,
      });
      call(deadline.signal).then(resolve, reject);
    });
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', stop);
  }
}

/** Resolves after `ms`, or at once when `signal` aborts, leaving no timer behind. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}

function autoscalerMetrics(registry: Registry) {
  const labelNames = ['namespace', 'function'] as const;
  const registers = [registry];
  const desired = new Gauge({
    name: 'eddy_autoscaler_desired_replicas',
    help: 'Replicas the autoscaler wants for a function.',
    labelNames,
    registers,
  });
  const panic = new Gauge({
    name: 'eddy_autoscaler_panic',
    help: '1 while a function is in panic mode (scaling up on the short window, never down).',
    labelNames,
    registers,
  });
  const concurrency = new Gauge({
    name: 'eddy_autoscaler_concurrency',
    help: 'Average in-flight plus queued invocations of a function over the stable or panic window.',
    labelNames: [...labelNames, 'window'],
    registers,
  });
  const missing = new Gauge({
    name: 'eddy_autoscaler_missing_load_reports',
    help: 'Gateway replicas whose load report was missing at the last read (while above 0, nothing is scaled down).',
    registers,
  });
  const failures = new Counter({
    name: 'eddy_autoscaler_failures_total',
    help: 'Load reads and scale calls that failed (each is retried on the next tick).',
    labelNames: ['operation'],
    registers,
  });
  return {
    failures,
    missing,
    observe(key: FunctionKey, d: Decision) {
      const { namespace, name } = splitKey(key);
      const labels = { namespace, function: name };
      desired.set(labels, d.desired);
      panic.set(labels, d.panic ? 1 : 0);
      concurrency.set({ ...labels, window: 'stable' }, d.concurrency.stable);
      concurrency.set({ ...labels, window: 'panic' }, d.concurrency.panic);
    },
    forget(key: FunctionKey) {
      const { namespace, name } = splitKey(key);
      const labels = { namespace, function: name };
      desired.remove(labels);
      panic.remove(labels);
      concurrency.remove({ ...labels, window: 'stable' });
      concurrency.remove({ ...labels, window: 'panic' });
    },
  };
}
