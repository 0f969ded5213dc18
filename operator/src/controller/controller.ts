/**
 * The controller: subscribed to the shared caches of Functions and what they own, one keyed work
 * queue, a periodic resync, and workers that run the reconciler. Runs while this process leads.
 */
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import type { ClusterCaches } from '../caches.js';
import { eventRecorder } from './events.js';
import { functionLabel } from './desired.js';
import { WorkQueue } from './queue.js';
import { Reconciler, type Caches, type Cleaner, type ReconcilerSettings } from './reconciler.js';
import { describeError } from '../errors.js';
import type { TriggerStates } from '../sources/states.js';

export interface ControllerOptions {
  kc: KubeConfig;
  /** The manager's shared caches. */
  caches: ClusterCaches;
  settings: ReconcilerSettings;
  identity: string;
  cleaners?: Cleaner[];
  workers?: number;
  /** Every Function is reconciled again this often, changed or not. */
  resyncMs?: number;
  log?: (message: string) => void;
  /** What the sources report about triggers: a change reconciles the Function again. */
  states?: TriggerStates;
}

export interface Controller {
  caches: Caches;
  queue: WorkQueue;
  /** Resolves once the workers have stopped (after the signal aborted). */
  done: Promise<void>;
  /** Resolves when the queue is empty and no key is being handled. */
  idle(): Promise<void>;
}

export async function startController(
  o: ControllerOptions,
  signal: AbortSignal,
): Promise<Controller> {
  const log = o.log ?? ((m: string) => console.log(`eddy-operator: ${m}`));
  const queue = new WorkQueue();
  const key = (obj: KubernetesObject) => `${obj.metadata!.namespace}/${obj.metadata!.name}`;
  const ownerKey = (obj: KubernetesObject) => {
    const fn = obj.metadata?.labels?.[functionLabel];
    if (fn) queue.add(`${obj.metadata!.namespace}/${fn}`);
  };
  const { caches } = o;
  const unsubscribe = caches.onChange((kind, obj) => {
    if (kind === 'Function') queue.add(key(obj));
    else ownerKey(obj);
  });
  signal.addEventListener('abort', unsubscribe, { once: true });
  const unsubscribeStates = o.states?.onChange((fnKey) => queue.add(fnKey));
  if (unsubscribeStates) signal.addEventListener('abort', unsubscribeStates, { once: true });
  // What changed before this process led is picked up by reconciling everything once.
  for (const fn of caches.functions.list()) queue.add(key(fn));

  const reconciler = new Reconciler({
    kc: o.kc,
    caches,
    settings: o.settings,
    cleaners: o.cleaners ?? [],
    recorder: eventRecorder(o.kc, o.identity, log),
    log,
    ...(o.states ? { states: o.states } : {}),
  });

  const resync = setInterval(
    () => {
      for (const fn of caches.functions.list()) queue.add(key(fn));
    },
    o.resyncMs ?? 10 * 60_000,
  );
  signal.addEventListener('abort', () => clearInterval(resync), { once: true });

  let busy = 0;
  const idleWaiters: Array<() => void> = [];
  const checkIdle = () => {
    if (busy === 0 && queue.length === 0) for (const w of idleWaiters.splice(0)) w();
  };

  const done = queue.run(
    o.workers ?? 4,
    async (k) => {
      busy++;
      try {
        const result = await reconciler.reconcile(k);
        queue.forget(k);
        if (result.requeueAfterMs !== undefined) queue.addAfter(k, result.requeueAfterMs);
      } catch (err) {
        const delay = queue.addRateLimited(k);
        log(`reconciling ${k} failed, retrying in ${delay} ms: ${describeError(err)}`);
      } finally {
        busy--;
        setImmediate(checkIdle);
      }
    },
    signal,
  );

  const idle = () =>
    new Promise<void>((resolve) => {
      idleWaiters.push(resolve);
      setImmediate(checkIdle);
    });
  const started = Date.now();
  const initial = caches.functions.list().length;
  void idle().then(() => {
    const m = process.memoryUsage();
    const mb = (n: number) => Math.round(n / 2 ** 20);
    log(
      `reconciled all ${initial} Function(s) found at start in ${Date.now() - started} ms (heap ${mb(m.heapUsed)} of ${mb(m.heapTotal)} MB, external ${mb(m.external)} MB, rss ${mb(m.rss)} MB)`,
    );
  });

  return {
    caches,
    queue,
    done,
    idle,
  };
}
