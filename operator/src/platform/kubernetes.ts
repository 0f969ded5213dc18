/**
 * The `kubernetes` platform: a function runs as the Deployment the reconciler makes for it. How
 * many replicas run is set through the Deployment's scale subresource under the scaler's own
 * field manager (the reconciler never writes spec.replicas); which replicas are ready comes from
 * the EndpointSlices of the function's Service, so the gateway sends to pod IPs and learns the
 * moment the first replica is ready, as Knative's activator does. A pod the slice lists but not
 * ready yet is probed by the gateway itself (pod-probe.ts) and taken as soon as its runtime
 * answers, ahead of the kubelet's next readiness probe.
 */
import {
  ApiException,
  AppsV1Api,
  CoreV1Api,
  DiscoveryV1Api,
  PatchStrategy,
  setHeaderOptions,
  type Informer,
  type KubeConfig,
  type ObjectCache,
  type V1Deployment,
  type V1EndpointSlice,
  type V1Pod,
  type V1Scale,
} from '@kubernetes/client-node';
import type { EddyFunction } from '../api/types.js';
import { withConnectionReuse } from '../connection-reuse.js';
import { requestTimeoutOf, withRequestDeadlines, withSignal } from '../request-deadlines.js';
import {
  fieldManager as operatorFieldManager,
  functionLabel,
  runtimePort,
} from '../controller/desired.js';
import { paginated, startInformer } from '../controller/informers.js';
import { ActivationStalled, describeError } from '../errors.js';
import { PodProber, startingEndpoints, startingPod } from './pod-probe.js';
import {
  httpUrl,
  keyOf,
  splitKey,
  type FunctionKey,
  type InitFailure,
  type Platform,
  type Replica,
} from './platform.js';

/** The field manager that owns spec.replicas: the autoscaler's decisions and activations. */
export const scalerFieldManager = 'eddy-autoscaler';

/** Set by the EndpointSlice controller on every slice of a Service. */
export const serviceNameLabel = 'kubernetes.io/service-name';

const managedBy = `app.kubernetes.io/managed-by=${operatorFieldManager}`;
// The EndpointSlice controller copies a Service's labels onto its slices, so the slices of the
// Services the reconciler makes carry its managed-by label; other Services' slices stay unseen.
const sliceSelector = `${managedBy},${serviceNameLabel}`;

/** Conflicts in a row before an activation gives up (each one is a fresh read). */
const maxActivationAttempts = 10;

/** A Deployments cache; when it is also an informer, its changes are followed too. */
export type DeploymentCache = ObjectCache<V1Deployment> &
  Partial<Pick<Informer<V1Deployment>, 'on' | 'off'>>;

export interface KubernetesPlatformOptions {
  kc: KubeConfig;
  log: (message: string) => void;
  /**
   * The URL of an endpoint: by default http://<address>:<port>. Tests map the fake pod IPs they
   * publish to the 127.0.0.1 ports of the runtimes they start.
   */
  endpointUrl?: (address: string, port: number, slice?: V1EndpointSlice) => string;
  /**
   * A Deployments cache to share (the controller's); without one the platform watches the
   * Deployments labelled managed-by=eddy-operator itself.
   */
  deployments?: DeploymentCache;
  /**
   * Probe a function's starting pods (not-ready endpoints) and send to them once their runtime
   * answers, before the kubelet's readiness (default); false waits for the kubelet.
   */
  probeStartingPods?: boolean;
  /**
   * Also watch the functions' pods themselves (cluster-wide list and watch of pods labelled as
   * Functions' pods): a starting pod is probed from the moment the kubelet reports its address,
   * one controller hop before its EndpointSlice lists it. The chart grants it to the gateway.
   */
  watchPods?: boolean;
}

/** A pod's URL unless the endpointUrl seam says otherwise. */
export const defaultEndpointUrl = httpUrl;

/** The function a slice belongs to (its Service is named after it), if it names a Service. */
export function sliceKey(slice: V1EndpointSlice): FunctionKey | undefined {
  const service = slice.metadata?.labels?.[serviceNameLabel];
  return service ? `${slice.metadata?.namespace}/${service}` : undefined;
}

/**
 * The ready endpoints of one slice as replicas. An endpoint counts when it is ready (a missing
 * `ready` means ready, as the API documents) and not terminating; its id is its pod's name.
 */
export function sliceReplicas(
  slice: V1EndpointSlice,
  endpointUrl: KubernetesPlatformOptions['endpointUrl'] = defaultEndpointUrl,
): Replica[] {
  const ports = slice.ports ?? [];
  const port = (ports.find((p) => p.name === 'http') ?? ports[0])?.port ?? runtimePort;
  const replicas: Replica[] = [];
  for (const endpoint of slice.endpoints ?? []) {
    const address = endpoint.addresses[0];
    if (address === undefined) continue;
    if (endpoint.conditions?.ready === false || endpoint.conditions?.terminating === true) continue;
    replicas.push({
      id: endpoint.targetRef?.name ?? address,
      url: endpointUrl(address, port, slice),
    });
  }
  return replicas;
}

/**
 * The ready replicas of every function, merged from their slices (a Service may have several:
 * more than 100 endpoints, or one per address family), minus those the gateway could not reach.
 */
export class ReadyReplicas {
  /** function -> slice name -> the slice's ready replicas. */
  private readonly slices = new Map<FunctionKey, Map<string, Replica[]>>();
  /** function -> slice name -> the slice's starting pods the gateway may probe (pod-probe.ts). */
  private readonly startingBySlice = new Map<FunctionKey, Map<string, Replica[]>>();
  /** Starting pods that answered the gateway's probe while their slice still says not ready. */
  private readonly probed = new Map<FunctionKey, Map<string, Replica>>();
  /** Starting pods whose probe said their handler did not load, with the error. */
  private readonly failedInit = new Map<
    FunctionKey,
    Map<string, { replica: Replica; failure: InitFailure }>
  >();
  /**
   * function -> slice name -> the pods it lists that it has reported ready: not ready again is
   * the kubelet's word, and is not probed.
   */
  private readonly sawReady = new Map<FunctionKey, Map<string, Set<string>>>();
  /** function -> pod name -> starting pods seen by a watch of the pods themselves. */
  private readonly startingPods = new Map<FunctionKey, Map<string, Replica>>();
  /** Pods ("namespace/name") the kubelet has reported ready: not probed once not ready again. */
  private readonly podsSawReady = new Set<string>();
  private readonly unreachableIds = new Map<FunctionKey, Set<string>>();
  /** ready() answers from here: it is read on every invocation, changed only by events. */
  private readonly readyCache = new Map<FunctionKey, Replica[]>();
  private readonly endpointUrl: KubernetesPlatformOptions['endpointUrl'];

  constructor(endpointUrl?: KubernetesPlatformOptions['endpointUrl']) {
    this.endpointUrl = endpointUrl;
  }

  /** Takes in a new or changed slice; returns the function it belongs to, if any. */
  update(slice: V1EndpointSlice): FunctionKey | undefined {
    const key = sliceKey(slice);
    if (!key) return undefined;
    const replicas = sliceReplicas(slice, this.endpointUrl);
    this.readyCache.delete(key);
    let bySlice = this.slices.get(key);
    if (!bySlice) this.slices.set(key, (bySlice = new Map<string, Replica[]>()));
    bySlice.set(slice.metadata?.name ?? '', replicas);
    let starting = this.startingBySlice.get(key);
    if (!starting) this.startingBySlice.set(key, (starting = new Map<string, Replica[]>()));
    let sawReady = this.sawReady.get(key);
    if (!sawReady) this.sawReady.set(key, (sawReady = new Map<string, Set<string>>()));
    const listed = new Set((slice.endpoints ?? []).map((e) => e.targetRef?.name));
    const before = sawReady.get(slice.metadata?.name ?? '') ?? new Set<string>();
    const now = new Set([...before].filter((id) => listed.has(id)));
    for (const r of replicas) now.add(r.id);
    sawReady.set(slice.metadata?.name ?? '', now);
    starting.set(
      slice.metadata?.name ?? '',
      startingEndpoints(slice, this.endpointUrl ?? defaultEndpointUrl).filter(
        (r) => !now.has(r.id),
      ),
    );
    this.forgetProbed(key);
    // A slice that reports a replica ready again is news from its kubelet's probes: trust it.
    const marked = this.unreachableIds.get(key);
    if (marked) {
      for (const r of replicas) marked.delete(r.id);
      this.forgetGone(key);
    }
    return key;
  }

  delete(slice: V1EndpointSlice): FunctionKey | undefined {
    const key = sliceKey(slice);
    if (!key) return undefined;
    this.readyCache.delete(key);
    const bySlice = this.slices.get(key);
    bySlice?.delete(slice.metadata?.name ?? '');
    if (bySlice?.size === 0) this.slices.delete(key);
    const starting = this.startingBySlice.get(key);
    starting?.delete(slice.metadata?.name ?? '');
    if (starting?.size === 0) this.startingBySlice.delete(key);
    const sawReady = this.sawReady.get(key);
    sawReady?.delete(slice.metadata?.name ?? '');
    if (sawReady?.size === 0) this.sawReady.delete(key);
    this.forgetProbed(key);
    this.forgetGone(key);
    return key;
  }

  /**
   * Takes in a new or changed function pod from a watch of the pods themselves (the gateway's):
   * one startingPod() lets the gateway probe is starting until it changes otherwise. Returns the
   * function it belongs to, if any.
   */
  updatePod(pod: V1Pod): FunctionKey | undefined {
    const namespace = pod.metadata?.namespace;
    const fn = pod.metadata?.labels?.[functionLabel];
    const name = pod.metadata?.name;
    if (!namespace || !fn || !name) return undefined;
    const key = `${namespace}/${fn}`;
    // Ready by the kubelet: still a candidate, so a pod probed ready stays ready until its slice
    // catches up. Not ready again after that: the kubelet's word, never probed again.
    const id = `${namespace}/${name}`;
    const ready = pod.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
    if (ready) this.podsSawReady.add(id);
    const starting =
      !ready && this.podsSawReady.has(id)
        ? undefined
        : startingPod(pod, this.endpointUrl ?? defaultEndpointUrl);
    let byName = this.startingPods.get(key);
    if (starting && starting.key === key) {
      if (!byName) this.startingPods.set(key, (byName = new Map<string, Replica>()));
      byName.set(name, starting.replica);
    } else {
      byName?.delete(name);
      if (byName?.size === 0) this.startingPods.delete(key);
    }
    this.readyCache.delete(key);
    this.forgetProbed(key);
    return key;
  }

  deletePod(pod: V1Pod): FunctionKey | undefined {
    const namespace = pod.metadata?.namespace;
    const name = pod.metadata?.name;
    if (namespace && name) this.podsSawReady.delete(`${namespace}/${name}`);
    const fn = pod.metadata?.labels?.[functionLabel];
    if (!namespace || !fn || !name) return undefined;
    const key = `${namespace}/${fn}`;
    const byName = this.startingPods.get(key);
    byName?.delete(name);
    if (byName?.size === 0) this.startingPods.delete(key);
    this.readyCache.delete(key);
    this.forgetProbed(key);
    return key;
  }

  /** The function's starting pods the gateway may probe, and has not seen answer yet. */
  starting(key: FunctionKey): Replica[] {
    const probed = this.probed.get(key);
    const failed = this.failedInit.get(key);
    const byId = new Map<string, Replica>();
    for (const r of this.allStarting(key))
      if (!probed?.has(r.id) && !failed?.has(r.id) && !byId.has(r.id)) byId.set(r.id, r);
    return [...byId.values()];
  }

  /**
   * A starting pod's probe said its handler did not load. Kept while the pod is starting at
   * that address; returns whether it was taken.
   */
  probedInitError(key: FunctionKey, replica: Replica, failure: InitFailure): boolean {
    const still = this.allStarting(key).some((r) => r.id === replica.id && r.url === replica.url);
    if (!still) return false;
    let failed = this.failedInit.get(key);
    if (!failed) {
      failed = new Map<string, { replica: Replica; failure: InitFailure }>();
      this.failedInit.set(key, failed);
    }
    failed.set(replica.id, { replica, failure });
    return true;
  }

  /** The error of a starting pod whose handler did not load, when no replica is ready. */
  initError(key: FunctionKey): InitFailure | undefined {
    const failed = this.failedInit.get(key);
    if (!failed || this.ready(key).length > 0) return undefined;
    return failed.values().next().value?.failure;
  }

  /** Starting pods as their slices list them, then as the pods' own watch does. */
  private allStarting(key: FunctionKey): Replica[] {
    const all: Replica[] = [];
    for (const list of this.startingBySlice.get(key)?.values() ?? []) all.push(...list);
    all.push(...(this.startingPods.get(key)?.values() ?? []));
    return all;
  }

  /**
   * A starting pod answered the gateway's probe: ready from now on, unless its slice no longer
   * lists it as starting at that address. Returns whether it was taken.
   */
  probedReady(key: FunctionKey, replica: Replica): boolean {
    const still = this.allStarting(key).some((r) => r.id === replica.id && r.url === replica.url);
    if (!still) return false;
    let probed = this.probed.get(key);
    if (!probed) this.probed.set(key, (probed = new Map<string, Replica>()));
    probed.set(replica.id, replica);
    this.readyCache.delete(key);
    return true;
  }

  /**
   * Drops probed pods their slices now report ready (the kubelet's word from here on) or no
   * longer list as starting (gone, terminating, or another address).
   */
  private forgetProbed(key: FunctionKey): void {
    const probed = this.probed.get(key);
    const failed = this.failedInit.get(key);
    if (!probed && !failed) return;
    const starting = new Set(this.allStarting(key).map((r) => `${r.id}=${r.url}`));
    if (probed) {
      for (const [id, r] of probed) if (!starting.has(`${id}=${r.url}`)) probed.delete(id);
      if (probed.size === 0) this.probed.delete(key);
    }
    if (failed) {
      for (const [id, f] of failed) if (!starting.has(`${id}=${f.replica.url}`)) failed.delete(id);
      if (failed.size === 0) this.failedInit.delete(key);
    }
  }

  /** Keeps a replica out until a slice update reports it ready again. */
  markUnreachable(key: FunctionKey, id: string): boolean {
    if (!this.all(key).some((r) => r.id === id)) return false;
    let marked = this.unreachableIds.get(key);
    if (!marked) this.unreachableIds.set(key, (marked = new Set<string>()));
    if (marked.has(id)) return false;
    marked.add(id);
    this.readyCache.delete(key);
    return true;
  }

  ready(key: FunctionKey): Replica[] {
    let ready = this.readyCache.get(key);
    if (!ready) {
      const marked = this.unreachableIds.get(key);
      const all = this.all(key);
      ready = marked ? all.filter((r) => !marked.has(r.id)) : all;
      this.readyCache.set(key, ready);
    }
    return ready;
  }

  /** Every ready replica of a function, one per pod (a dual-stack pod is in two slices). */
  private all(key: FunctionKey): Replica[] {
    const bySlice = this.slices.get(key);
    const probed = this.probed.get(key);
    if (!bySlice && !probed) return [];
    const byId = new Map<string, Replica>();
    for (const name of [...(bySlice?.keys() ?? [])].sort()) {
      for (const r of bySlice!.get(name)!) if (!byId.has(r.id)) byId.set(r.id, r);
    }
    for (const r of probed?.values() ?? []) if (!byId.has(r.id)) byId.set(r.id, r);
    return [...byId.values()];
  }

  /** Drops marks of replicas no slice reports ready any more, so marks do not pile up. */
  private forgetGone(key: FunctionKey): void {
    const marked = this.unreachableIds.get(key);
    if (!marked) return;
    const present = new Set(this.all(key).map((r) => r.id));
    for (const id of marked) if (!present.has(id)) marked.delete(id);
    if (marked.size === 0) this.unreachableIds.delete(key);
  }
}

/** A Deployment's spec.replicas; a missing field is the API's default, 1. */
function desiredOf(deployment: V1Deployment | undefined): number {
  return deployment ? (deployment.spec?.replicas ?? 1) : 0;
}

function deploymentKey(d: V1Deployment): FunctionKey {
  return `${d.metadata?.namespace}/${d.metadata?.name}`;
}

function isStatus(err: unknown, code: number): boolean {
  return err instanceof ApiException && err.code === code;
}

const serverSideApply = setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply);

export function createKubernetesPlatform(o: KubernetesPlatformOptions): Platform {
  // Every call here has a deadline: a stalled API server fails an activation, which the gateway
  // retries, rather than leaving it waiting forever.
  withRequestDeadlines(withConnectionReuse(o.kc));
  const apps = o.kc.makeApiClient(AppsV1Api);
  const discovery = o.kc.makeApiClient(DiscoveryV1Api);
  const core = o.kc.makeApiClient(CoreV1Api);
  const replicas = new ReadyReplicas(o.endpointUrl);
  const listeners = new Set<(key: FunctionKey) => void>();
  const prober =
    o.probeStartingPods === false
      ? undefined
      : new PodProber({
          onReady: (key, replica) => {
            if (replicas.probedReady(key, replica)) readyChanged(key);
          },
          onInitError: (key, replica, failure) => {
            if (replicas.probedInitError(key, replica, failure)) notify(key);
          },
        });
  const sliceChanged = (key: FunctionKey | undefined) => {
    if (!key) return;
    prober?.track(key, replicas.starting(key));
    readyChanged(key);
  };
  let deployments: ObjectCache<V1Deployment> | undefined = o.deployments;
  /** What listeners were last told, to call them only on a change. */
  const seenReady = new Map<FunctionKey, string>();
  const seenDesired = new Map<FunctionKey, number>();

  const notify = (key: FunctionKey) => {
    for (const l of listeners) {
      try {
        l(key);
      } catch (err) {
        o.log(`a replica listener failed for ${key}: ${describeError(err)}`);
      }
    }
  };
  const readyChanged = (key: FunctionKey | undefined) => {
    if (!key) return;
    const now = replicas
      .ready(key)
      .map((r) => `${r.id}=${r.url}`)
      .sort()
      .join(',');
    if ((seenReady.get(key) ?? '') === now) return;
    if (now === '') seenReady.delete(key);
    else seenReady.set(key, now);
    notify(key);
  };
  const desiredChanged = (key: FunctionKey, desired: number) => {
    if ((seenDesired.get(key) ?? 0) === desired) return;
    if (desired === 0) seenDesired.delete(key);
    else seenDesired.set(key, desired);
    notify(key);
  };
  const onDeployment = (d: V1Deployment) => desiredChanged(deploymentKey(d), desiredOf(d));
  const onDeploymentDeleted = (d: V1Deployment) => desiredChanged(deploymentKey(d), 0);

  const target = (fn: EddyFunction) => ({
    name: fn.metadata.name,
    namespace: fn.metadata.namespace,
  });
  /**
   * Server-side apply of the Deployment's Scale: the scaler can change the number of replicas
   * and nothing else, and owns spec.replicas under its own field manager. Apply rather than a
   * merge patch because an update records no owner while nobody owns the field (the reconciler
   * never sets it) and drops its owner when it sets 0, which a Scale leaves out; an apply owns
   * the field at 0 too. Forced, since the autoscaler's decision is the one that counts (a
   * `kubectl scale` in between takes the field for a moment). With `resourceVersion`, the write
   * fails with 409 if the Deployment changed since it was read.
   */
  const applyScale = async (
    fn: EddyFunction,
    count: number,
    resourceVersion?: string,
    signal?: AbortSignal,
  ) => {
    const body: V1Scale = {
      apiVersion: 'autoscaling/v1',
      kind: 'Scale',
      metadata: { ...target(fn), ...(resourceVersion ? { resourceVersion } : {}) },
      spec: { replicas: count },
    };
    await apps.patchNamespacedDeploymentScale(
      { ...target(fn), body, fieldManager: scalerFieldManager, force: true },
      signal ? withSignal(signal, serverSideApply) : serverSideApply,
    );
  };

  let started = false;

  return {
    name: 'kubernetes',

    async start(signal) {
      if (started) throw new Error('the kubernetes platform was started already');
      started = true;
      const common = { log: o.log, signal };
      signal.addEventListener('abort', () => prober?.stop(), { once: true });
      if (prober && o.watchPods) {
        const podSelector = `${managedBy},${functionLabel}`;
        // Not waited for: the slices alone still find every pod, a little later.
        void startInformer<V1Pod>(o.kc, {
          ...common,
          name: 'function pods',
          path: '/api/v1/pods',
          labelSelector: podSelector,
          list: paginated((page) =>
            core.listPodForAllNamespaces({ labelSelector: podSelector, ...page }),
          ),
          onChange: (pod) => sliceChanged(replicas.updatePod(pod)),
          onDelete: (pod) => sliceChanged(replicas.deletePod(pod)),
        }).catch((err: unknown) => {
          if (!signal.aborted) o.log(`watching function pods failed: ${describeError(err)}`);
        });
      }
      const slices = startInformer<V1EndpointSlice>(o.kc, {
        ...common,
        name: 'endpointslices',
        path: '/apis/discovery.k8s.io/v1/endpointslices',
        labelSelector: sliceSelector,
        list: paginated((page) =>
          discovery.listEndpointSliceForAllNamespaces({ labelSelector: sliceSelector, ...page }),
        ),
        onChange: (slice) => sliceChanged(replicas.update(slice)),
        onDelete: (slice) => sliceChanged(replicas.delete(slice)),
      });
      const shared = o.deployments;
      if (shared) {
        for (const d of shared.list()) onDeployment(d);
        // A plain cache tells nothing: then only counts() sees its changes.
        shared.on?.('add', onDeployment);
        shared.on?.('update', onDeployment);
        shared.on?.('delete', onDeploymentDeleted);
        signal.addEventListener(
          'abort',
          () => {
            shared.off?.('add', onDeployment);
            shared.off?.('update', onDeployment);
            shared.off?.('delete', onDeploymentDeleted);
          },
          { once: true },
        );
        await slices;
        return;
      }
      const [, own] = await Promise.all([
        slices,
        startInformer<V1Deployment>(o.kc, {
          ...common,
          name: 'deployments',
          path: '/apis/apps/v1/deployments',
          labelSelector: managedBy,
          list: paginated((page) =>
            apps.listDeploymentForAllNamespaces({ labelSelector: managedBy, ...page }),
          ),
          onChange: onDeployment,
          onDelete: onDeploymentDeleted,
        }),
      ]);
      deployments = own;
    },

    async scale(fn, n, signal) {
      await applyScale(fn, n, undefined, signal);
    },

    async activate(fn, atLeast = 1) {
      const key = keyOf(fn);
      // One deadline for the whole activation, however many reads a conflict costs: the gateway
      // retries a failed one while invocations wait.
      const timeoutMs = requestTimeoutOf(o.kc);
      const deadline = AbortSignal.timeout(timeoutMs);
      const bounded = withSignal(deadline);
      for (let attempt = 1; ; attempt++) {
        let scale: V1Scale;
        try {
          scale = await apps.readNamespacedDeploymentScale(target(fn), bounded);
        } catch (err) {
          if (deadline.aborted) throw new ActivationStalled(key, timeoutMs);
          if (!isStatus(err, 404)) throw err;
          // The reconciler has yet to make it, and makes it with one replica (a burst asks again
          // once it exists).
          o.log(`activating ${key}: no Deployment yet; it starts with one replica`);
          return;
        }
        const before = scale.spec?.replicas ?? 0;
        if (before >= atLeast) return;
        try {
          // The resourceVersion read makes this a compare-and-swap: if anyone changed the
          // Deployment since (another gateway activating, the autoscaler deciding 3), the API
          // server answers 409 and the decision is made again on what is there now.
          await applyScale(fn, atLeast, scale.metadata?.resourceVersion, deadline);
          o.log(`activated ${key}: ${before} -> ${atLeast} replica${atLeast === 1 ? '' : 's'}`);
          return;
        } catch (err) {
          if (deadline.aborted) throw new ActivationStalled(key, timeoutMs);
          if (!isStatus(err, 409) || attempt >= maxActivationAttempts) throw err;
          o.log(`activating ${key}: the Deployment changed meanwhile; reading it again`);
        }
      }
    },

    ready: (key) => replicas.ready(key),

    initError: (key) => replicas.initError(key),

    counts(key) {
      const { namespace, name } = splitKey(key);
      return {
        desired: desiredOf(deployments?.get(name, namespace)),
        ready: replicas.ready(key).length,
      };
    },

    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },

    unreachable(key, replicaId) {
      if (replicas.markUnreachable(key, replicaId)) readyChanged(key);
    },
  };
}
