/**
 * The autoscaler: a leader-only loop that, every interval, reads what the gateways count, turns
 * it into one sample per Function, decides (decide.ts) and asks the platform for the replicas
 * that differ from what it has. It is the only writer of a Function's replicas.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import type { EddyFunction } from '../api/types.js';
import { describeError } from '../errors.js';
import type { FunctionStore } from '../functions.js';
import { keyOf, splitKey, type FunctionKey, type Platform } from '../platform/platform.js';
import { Sampler, Windows, scalingOf, type Decision } from './decide.js';
import type { LoadReport, LoadSource } from './load.js';

export interface AutoscalerOptions {
  store: FunctionStore;
  platform: Pick<Platform, 'scale' | 'counts'>;
  load: LoadSource;
  /** How often to read the load and decide; also the longest a load read may take. */
  intervalMs?: number;
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

      const fail = (operation: 'load' | 'scale', what: string, message: string) => {
        metrics?.failures.inc({ operation });
        if (failing.get(what) !== message) o.log(message);
        failing.set(what, message);
      };

      const scale = async (fn: EddyFunction, from: number, decision: Decision) => {
        const key = keyOf(fn);
        try {
          await o.platform.scale(fn, decision.desired);
        } catch (err) {
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
        let reports: LoadReport[];
        try {
          reports = await readLoad(o.load, intervalMs, signal);
        } catch (err) {
          if (!signal.aborted)
            fail('load', 'load', `reading the load failed, retrying: ${describeError(err)}`);
          return;
        }
        if (failing.delete('load')) o.log('reading the load works again');

        const at = now();
        const samples = sampler.sample(reports, at);
        const present = new Set<FunctionKey>();
        const changes: Promise<void>[] = [];
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
          const decision = state.windows.decide(at, current, scalingOf(fn.spec));
          o.onDecision?.(key, decision);
          metrics?.observe(key, decision);
          if (decision.desired === current.desired) announced.delete(key);
          else changes.push(scale(fn, current.desired, decision));
        }
        for (const key of functions.keys()) {
          if (present.has(key)) continue;
          functions.delete(key);
          announced.delete(key);
          failing.delete(key);
          metrics?.forget(key);
        }
        // Scale calls run side by side: one slow Deployment must not hold up the others.
        await Promise.all(changes);
      };

      while (!signal.aborted) {
        await tick();
        await sleep(intervalMs, signal);
      }
    },
  };
}

/** A read that takes longer than one interval is abandoned: a stuck gateway stalls no scaling. */
async function readLoad(load: LoadSource, timeoutMs: number, signal: AbortSignal) {
  const deadline = new AbortController();
  const stop = () => deadline.abort(signal.reason);
  signal.addEventListener('abort', stop, { once: true });
  const timer = setTimeout(
    () => deadline.abort(new Error(`no answer within ${timeoutMs} ms`)),
    timeoutMs,
  );
  try {
    return await load(deadline.signal);
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
  const failures = new Counter({
    name: 'eddy_autoscaler_failures_total',
    help: 'Load reads and scale calls that failed (each is retried on the next tick).',
    labelNames: ['operation'],
    registers,
  });
  return {
    failures,
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
