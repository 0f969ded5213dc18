/**
 * The controller: informers on Functions and on what they own, one keyed work queue, a periodic
 * resync, and workers that run the reconciler.
 */
import {
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  type V1ConfigMap,
  type V1Deployment,
  type V1Service,
} from '@kubernetes/client-node';
import { group, plural, version, type EddyFunction } from '../api/types.js';
import { eventRecorder } from './events.js';
import { fieldManager, functionLabel } from './desired.js';
import { paginated, startInformer } from './informers.js';
import { WorkQueue } from './queue.js';
import { Reconciler, type Caches, type Cleaner, type ReconcilerSettings } from './reconciler.js';
import { describeError } from '../errors.js';

export interface ControllerOptions {
  kc: KubeConfig;
  settings: ReconcilerSettings;
  identity: string;
  cleaners?: Cleaner[];
  workers?: number;
  /** Every Function is reconciled again this often, changed or not. */
  resyncMs?: number;
  log?: (message: string) => void;
}

export interface Controller {
  caches: Caches;
  queue: WorkQueue;
  /** Resolves once the workers have stopped (after the signal aborted). */
  done: Promise<void>;
  /** Resolves when the queue is empty and no key is being handled. */
  idle(): Promise<void>;
}

const managed = `app.kubernetes.io/managed-by=${fieldManager}`;

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
  const custom = o.kc.makeApiClient(CustomObjectsApi);
  const apps = o.kc.makeApiClient(AppsV1Api);
  const core = o.kc.makeApiClient(CoreV1Api);
  const common = { log, signal };

  const [functions, deployments, services, configMaps] = await Promise.all([
    startInformer<EddyFunction>(o.kc, {
      ...common,
      name: 'functions',
      path: `/apis/${group}/${version}/${plural}`,
      list: paginated(
        async (page) =>
          (await custom.listClusterCustomObject({
            group,
            version,
            plural,
            ...page,
          })) as KubernetesListObject<EddyFunction>,
      ),
      onChange: (fn) => queue.add(key(fn)),
    }),
    startInformer<V1Deployment>(o.kc, {
      ...common,
      name: 'deployments',
      path: '/apis/apps/v1/deployments',
      labelSelector: managed,
      list: paginated((page) =>
        apps.listDeploymentForAllNamespaces({ labelSelector: managed, ...page }),
      ),
      onChange: ownerKey,
    }),
    startInformer<V1Service>(o.kc, {
      ...common,
      name: 'services',
      path: '/api/v1/services',
      labelSelector: managed,
      list: paginated((page) =>
        core.listServiceForAllNamespaces({ labelSelector: managed, ...page }),
      ),
      onChange: ownerKey,
    }),
    startInformer<V1ConfigMap>(o.kc, {
      ...common,
      name: 'configmaps',
      path: '/api/v1/configmaps',
      labelSelector: managed,
      list: paginated((page) =>
        core.listConfigMapForAllNamespaces({ labelSelector: managed, ...page }),
      ),
      onChange: ownerKey,
    }),
  ]);
  const caches: Caches = { functions, deployments, services, configMaps };

  const reconciler = new Reconciler({
    kc: o.kc,
    caches,
    settings: o.settings,
    cleaners: o.cleaners ?? [],
    recorder: eventRecorder(o.kc, o.identity, log),
    log,
  });

  const resync = setInterval(
    () => {
      for (const fn of functions.list()) queue.add(key(fn));
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
  const initial = functions.list().length;
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
