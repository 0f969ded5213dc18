/**
 * Starting pods, probed by the gateway itself (Knative's activator does the same): a function's
 * pod is in its Service's EndpointSlice, not ready, as soon as it has an address; from then on
 * the gateway asks its runtime's /readyz every few tens of milliseconds, and the first 200 makes
 * it a ready replica at once, instead of after the kubelet's next readiness probe (up to a
 * period later) and the EndpointSlice's update. The kubelet's probes still rule: a pod the slice
 * reports ready is the slice's, and one it drops or marks terminating is gone.
 */
import { Agent } from 'node:http';
import type { V1EndpointSlice, V1Pod } from '@kubernetes/client-node';
import {
  fieldManager as operatorFieldManager,
  functionLabel,
  managedByLabel,
  runtimePort,
} from '../controller/desired.js';
import type { FunctionKey, InitFailure, Replica } from './platform.js';
import { probeReadyz } from './readyz.js';

/**
 * The first probe of a starting pod, and the next ones growing to the max. A pod is seen from
 * the moment it has an address, often a second or more before its container starts: a long
 * interval by then would add itself to the first invocation, so it stays short.
 */
const firstIntervalMs = 25;
const maxIntervalMs = 50;
const growth = 1.25;
/** One probe's deadline. */
const probeTimeoutMs = 1_000;
/** A pod not ready after this is left to the kubelet's probes. */
const probeWindowMs = 60_000;

/** Whether a pod of that name may be one of the function's Deployment's: `<function>-...`. */
function namedAsFunctionPod(pod: string | undefined, fn: string): boolean {
  return pod !== undefined && pod.startsWith(`${fn}-`);
}

/**
 * Which not-ready endpoints of a slice the gateway may probe and, once they answer, send to:
 * the slice is of the function's own Service (its selector is the function's labels; the
 * platform watches only slices of Services the reconciler made), and the endpoint is a Pod
 * named as the function's Deployment names its pods (`<function>-...`), with an address, and
 * not terminating. Anything else waits for the kubelet's readiness.
 */
export function startingEndpoints(
  slice: V1EndpointSlice,
  endpointUrl: (address: string, port: number, slice?: V1EndpointSlice) => string,
): Replica[] {
  const service = slice.metadata?.labels?.['kubernetes.io/service-name'];
  if (!service) return [];
  const ports = slice.ports ?? [];
  const port = (ports.find((p) => p.name === 'http') ?? ports[0])?.port ?? runtimePort;
  const starting: Replica[] = [];
  for (const endpoint of slice.endpoints ?? []) {
    const address = endpoint.addresses[0];
    const pod = endpoint.targetRef;
    if (address === undefined || pod?.kind !== 'Pod' || !namedAsFunctionPod(pod.name, service))
      continue;
    if (endpoint.conditions?.ready !== false || endpoint.conditions?.terminating === true) continue;
    starting.push({ id: pod.name!, url: endpointUrl(address, port, slice) });
  }
  return starting;
}

/**
 * A pod itself (from the gateway's watch of function pods), when the gateway may probe it and,
 * once it answers, send to it: labelled as the reconciler labels a Function's pods, owned (as
 * its controller) by a ReplicaSet named `<function>-<pod-template-hash>`, which is how the
 * Function's Deployment names its ReplicaSets, and named so too; with an address (the kubelet
 * reports it once the pod's sandbox exists, often before it reports the container running), not
 * being deleted, and not ended. The function's key and the pod as a replica, or undefined. (A pod
 * the kubelet reported ready and then not ready is the caller's to leave alone.)
 */
export function startingPod(
  pod: V1Pod,
  endpointUrl: (address: string, port: number) => string,
): { key: FunctionKey; replica: Replica } | undefined {
  const m = pod.metadata;
  const fn = m?.labels?.[functionLabel];
  const hash = m?.labels?.['pod-template-hash'];
  if (!m || !fn || !hash || m.labels?.[managedByLabel] !== operatorFieldManager) return undefined;
  if (m.deletionTimestamp || !namedAsFunctionPod(m.name, fn)) return undefined;
  const owner = m.ownerReferences?.find((o) => o.controller === true);
  if (
    owner?.kind !== 'ReplicaSet' ||
    owner.apiVersion !== 'apps/v1' ||
    owner.name !== `${fn}-${hash}`
  )
    return undefined;
  const address = pod.status?.podIP;
  const phase = pod.status?.phase;
  if (!address || (phase !== 'Pending' && phase !== 'Running')) return undefined;
  return {
    key: `${m.namespace}/${fn}`,
    replica: { id: m.name!, url: endpointUrl(address, runtimePort) },
  };
}

interface Probing {
  replica: Replica;
  until: number;
  timer: NodeJS.Timeout | undefined;
  request: AbortController | undefined;
}

export interface PodProberOptions {
  /** A starting pod answered /readyz with 200. */
  onReady: (key: FunctionKey, replica: Replica) => void;
  /** A starting pod's /readyz said its handler did not load: it is not probed again. */
  onInitError?: (key: FunctionKey, replica: Replica, failure: InitFailure) => void;
  now?: () => number;
}

/** Probes the starting pods it is told of until they answer, go, or the window ends. */
export class PodProber {
  private readonly probing = new Map<FunctionKey, Map<string, Probing>>();
  private readonly agent = new Agent({ keepAlive: false });
  private readonly now: () => number;
  private stopped = false;

  constructor(private readonly o: PodProberOptions) {
    this.now = o.now ?? Date.now;
  }

  /** The starting pods of `key` now: probes new ones, forgets those no longer starting. */
  track(key: FunctionKey, starting: Replica[]): void {
    if (this.stopped) return;
    let byId = this.probing.get(key);
    const ids = new Set(starting.map((r) => r.id));
    if (byId) {
      for (const [id, p] of byId) {
        if (ids.has(id) && p.replica.url === starting.find((r) => r.id === id)!.url) continue;
        this.drop(key, id);
      }
    }
    for (const replica of starting) {
      if (byId?.has(replica.id)) continue;
      if (!byId) this.probing.set(key, (byId = new Map<string, Probing>()));
      const p: Probing = {
        replica,
        until: this.now() + probeWindowMs,
        timer: undefined,
        request: undefined,
      };
      byId.set(replica.id, p);
      this.probe(key, p, firstIntervalMs);
    }
  }

  /** Ends every probe; later calls do nothing. */
  stop(): void {
    this.stopped = true;
    for (const [key, byId] of this.probing) for (const id of [...byId.keys()]) this.drop(key, id);
    this.agent.destroy();
  }

  private drop(key: FunctionKey, id: string): void {
    const byId = this.probing.get(key);
    const p = byId?.get(id);
    if (!byId || !p) return;
    clearTimeout(p.timer);
    p.request?.abort();
    byId.delete(id);
    if (byId.size === 0) this.probing.delete(key);
  }

  private probe(key: FunctionKey, p: Probing, nextMs: number): void {
    const request = new AbortController();
    p.request = request;
    void probeReadyz(p.replica.url, {
      agent: this.agent,
      signal: request.signal,
      timeoutMs: probeTimeoutMs,
    }).then((readiness) => {
      if (p.request !== request || request.signal.aborted) return;
      p.request = undefined;
      if (this.probing.get(key)?.get(p.replica.id) !== p) return;
      if (readiness.ready) {
        this.drop(key, p.replica.id);
        this.o.onReady(key, p.replica);
        return;
      }
      if (readiness.initError) {
        this.drop(key, p.replica.id);
        this.o.onInitError?.(key, p.replica, readiness.initError);
        return;
      }
      if (this.now() + nextMs > p.until) {
        this.drop(key, p.replica.id);
        return;
      }
      p.timer = setTimeout(
        () => this.probe(key, p, Math.min(maxIntervalMs, nextMs * growth)),
        nextMs,
      );
    });
  }
}
