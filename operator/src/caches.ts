/**
 * The shared informer caches of a process in a cluster: Functions, and the Deployments, Services,
 * NetworkPolicies and ConfigMaps the operator manages. Started once by the manager and read by every runnable;
 * the reconciler subscribes to their changes while it leads.
 */
import {
  AppsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  NetworkingV1Api,
  type KubeConfig,
  type KubernetesListObject,
  type Informer,
  type KubernetesObject,
  type ObjectCache,
  type V1ConfigMap,
  type V1Deployment,
  type V1NetworkPolicy,
  type V1Service,
} from '@kubernetes/client-node';
import { group, plural, version, type EddyFunction } from './api/types.js';
import { fieldManager, functionLabel, managedByLabel } from './controller/desired.js';
import { paginated, startInformer, type Resilient } from './controller/informers.js';
import type { Caches } from './controller/reconciler.js';
import type { FunctionStore } from './functions.js';

export type CachedKind = 'Function' | 'Deployment' | 'Service' | 'ConfigMap' | 'NetworkPolicy';
export type CacheListener = (kind: CachedKind, obj: KubernetesObject, deleted: boolean) => void;

export interface ClusterCaches extends Omit<Caches, 'deployments'> {
  deployments: Resilient<V1Deployment>;
  /** Called on every add, update and delete of a cached object. Returns an unsubscribe. */
  onChange(listener: CacheListener): () => void;
  /** The Functions, as the gateway, platforms and sources read them. */
  store: FunctionStore;
}

/**
 * The caches before they start: the manager starts them once, before any runnable, so that
 * runnables built earlier can hold `store` and read it once they run. What subscribes to the
 * Functions' changes before then is subscribed when they start.
 */
export class LazyClusterCaches {
  private started: ClusterCaches | undefined;
  private readonly early = new Set<{
    listener: Parameters<FunctionStore['onChange']>[0];
    unsubscribe?: () => void;
  }>();
  readonly store: FunctionStore;
  /** The Deployments cache, followed by the kubernetes platform once it starts. */
  readonly deployments: ObjectCache<V1Deployment> & Pick<Informer<V1Deployment>, 'on' | 'off'>;

  constructor(
    private readonly kc: KubeConfig,
    private readonly log: (message: string) => void,
    /**
     * Whether this process reconciles: the Services, ConfigMaps and NetworkPolicies caches are
     * the reconciler's alone, and a gateway process neither starts them nor may list them.
     */
    private readonly reconciles = true,
  ) {
    const get = () => this.get();
    this.store = {
      get: (namespace, name) => get().store.get(namespace, name),
      list: (namespace) => get().store.list(namespace),
      onChange: (listener) => {
        if (this.started) return this.started.store.onChange(listener);
        const entry: { listener: typeof listener; unsubscribe?: () => void } = { listener };
        this.early.add(entry);
        return () => {
          this.early.delete(entry);
          entry.unsubscribe?.();
        };
      },
    };
    const informer = () => get().deployments;
    this.deployments = {
      get: (name, namespace) => informer().get(name, namespace),
      list: (namespace) => informer().list(namespace),
      on: ((verb: never, cb: never) => informer().on(verb, cb)) as Informer<V1Deployment>['on'],
      off: ((verb: never, cb: never) => informer().off(verb, cb)) as Informer<V1Deployment>['off'],
    };
  }

  async start(signal: AbortSignal): Promise<void> {
    this.started = await startClusterCaches(this.kc, this.log, signal, this.reconciles);
    for (const entry of this.early) entry.unsubscribe = this.started.store.onChange(entry.listener);
  }

  get(): ClusterCaches {
    if (!this.started) throw new Error('the caches are read before the manager started them');
    return this.started;
  }
}

const managed = `${managedByLabel}=${fieldManager}`;
/**
 * The Functions' own ConfigMaps (code): the sources' checkpoints carry the operator's label too,
 * but not the function label, so that one written every second does not wake the reconciler.
 */
const managedCode = `${managed},${functionLabel}`;

/** Starts the informers; resolves with the caches once each has its first full list. */
export async function startClusterCaches(
  kc: KubeConfig,
  log: (message: string) => void,
  signal: AbortSignal,
  reconciles = true,
): Promise<ClusterCaches> {
  const listeners = new Set<CacheListener>();
  const emit = (kind: CachedKind) => ({
    onChange: (obj: KubernetesObject) => {
      for (const l of listeners) l(kind, obj, false);
    },
    onDelete: (obj: KubernetesObject) => {
      for (const l of listeners) l(kind, obj, true);
    },
  });
  const custom = kc.makeApiClient(CustomObjectsApi);
  const apps = kc.makeApiClient(AppsV1Api);
  const core = kc.makeApiClient(CoreV1Api);
  const networking = kc.makeApiClient(NetworkingV1Api);
  const common = { log, signal };

  /** What a process that does not reconcile holds instead: nothing, and it never lists. */
  const none = <T extends KubernetesObject>(): ObjectCache<T> => ({
    get: () => undefined,
    list: () => [],
  });
  const [functions, deployments, services, configMaps, networkPolicies] = await Promise.all([
    startInformer<EddyFunction>(kc, {
      ...common,
      ...emit('Function'),
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
    }),
    startInformer<V1Deployment>(kc, {
      ...common,
      ...emit('Deployment'),
      name: 'deployments',
      path: '/apis/apps/v1/deployments',
      labelSelector: managed,
      list: paginated((page) =>
        apps.listDeploymentForAllNamespaces({ labelSelector: managed, ...page }),
      ),
    }),
    reconciles
      ? startInformer<V1Service>(kc, {
          ...common,
          ...emit('Service'),
          name: 'services',
          path: '/api/v1/services',
          labelSelector: managed,
          list: paginated((page) =>
            core.listServiceForAllNamespaces({ labelSelector: managed, ...page }),
          ),
        })
      : Promise.resolve(none<V1Service>()),
    reconciles
      ? startInformer<V1ConfigMap>(kc, {
          ...common,
          ...emit('ConfigMap'),
          name: 'configmaps',
          path: '/api/v1/configmaps',
          labelSelector: managedCode,
          list: paginated((page) =>
            core.listConfigMapForAllNamespaces({ labelSelector: managedCode, ...page }),
          ),
        })
      : Promise.resolve(none<V1ConfigMap>()),
    reconciles
      ? startInformer<V1NetworkPolicy>(kc, {
          ...common,
          ...emit('NetworkPolicy'),
          name: 'networkpolicies',
          path: '/apis/networking.k8s.io/v1/networkpolicies',
          labelSelector: managed,
          list: paginated((page) =>
            networking.listNetworkPolicyForAllNamespaces({ labelSelector: managed, ...page }),
          ),
        })
      : Promise.resolve(none<V1NetworkPolicy>()),
  ]);

  const onChange = (listener: CacheListener) => {
    listeners.add(listener);
    return () => {
      listeners.delete(listener);
    };
  };
  return {
    functions,
    deployments,
    services,
    configMaps,
    networkPolicies,
    onChange,
    store: informerStore(functions, onChange),
  };
}

function informerStore(
  functions: ObjectCache<EddyFunction>,
  onChange: (listener: CacheListener) => () => void,
): FunctionStore {
  return {
    get: (namespace, name) => functions.get(name, namespace),
    list: (namespace) => functions.list(namespace),
    onChange: (listener) =>
      onChange((kind, obj, deleted) => {
        if (kind === 'Function') listener(obj as EddyFunction, deleted);
      }),
  };
}
