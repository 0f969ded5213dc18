/**
 * Where functions run. One interface, two implementations: `kubernetes` (Deployments' scale
 * subresource, EndpointSlices, pod IPs) and `local` (child processes on 127.0.0.1). Nothing
 * else in the operator touches Deployments' replicas, pods or processes.
 */
import type { EddyFunction } from '../api/types.js';

/** "namespace/name". */
export type FunctionKey = string;

export function keyOf(fn: { metadata: { namespace?: string; name?: string } }): FunctionKey {
  return `${fn.metadata.namespace}/${fn.metadata.name}`;
}

export function splitKey(key: FunctionKey): { namespace: string; name: string } {
  const slash = key.indexOf('/');
  return { namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}

/** http://<address>:<port>, with an IPv6 address in brackets. */
export function httpUrl(address: string, port: number): string {
  return `http://${address.includes(':') ? `[${address}]` : address}:${port}`;
}

/** A replica that is ready to take invocations. */
export interface Replica {
  /** Stable for the life of the replica: the pod's name, or the process's id. */
  id: string;
  /** Base URL of its runtime, such as http://10.244.0.7:8080. */
  url: string;
}

/** A replica's handler that did not load: the error its runtime answers every invocation with. */
export interface InitFailure {
  errorType: string;
  errorMessage: string;
}

export interface ReplicaCounts {
  /** What the platform was last asked for (the Deployment's spec.replicas). */
  desired: number;
  /** Replicas ready to take invocations. */
  ready: number;
}

export interface Platform {
  readonly name: 'kubernetes' | 'local';
  /**
   * Starts following the replicas of the Functions in `store`; resolves once the current state
   * is known. Stops, and (local) ends its processes, when `signal` aborts.
   */
  start(signal: AbortSignal): Promise<void>;
  /** Resolves once stopped after start's signal aborted (local: every process has exited). */
  readonly stopped?: Promise<void>;
  /**
   * Sets how many replicas should run: the autoscaler's decision. `signal` abandons the call
   * (its deadline passed, or the autoscaler stopped leading).
   */
  scale(fn: EddyFunction, replicas: number, signal?: AbortSignal): Promise<void>;
  /**
   * Activation from zero, and a burst's scale-up: at least `atLeast` replicas (default 1), at
   * once. Sets max(current, atLeast), never more, so two gateways activating the same function
   * together ask for one replica, not two, and a burst never lowers what the autoscaler set.
   */
  activate(fn: EddyFunction, atLeast?: number): Promise<void>;
  /** The ready replicas of a function now. */
  ready(key: FunctionKey): Replica[];
  /**
   * Why the function cannot take invocations now, if a starting replica has said that its
   * handler did not load (its /readyz) and none is ready: invocations are answered with that
   * error at once rather than wait for a replica that will not become ready.
   */
  initError?(key: FunctionKey): InitFailure | undefined;
  /**
   * Why the platform cannot start the function's replicas now (locally: its language's
   * environment could not be made), when none is ready: invocations get 503 at once with it.
   */
  cannotStart?(key: FunctionKey): string | undefined;
  counts(key: FunctionKey): ReplicaCounts;
  /** Called whenever the ready replicas or counts of a function change. Returns an unsubscribe. */
  onChange(listener: (key: FunctionKey) => void): () => void;
  /**
   * The gateway could not reach a replica (connection refused or reset): keep it out of the
   * ready set until the platform sees it ready again.
   */
  unreachable(key: FunctionKey, replicaId: string): void;
}

/**
 * The platform cannot run this Function as it stands (locally: an image with no code directory,
 * say): asking again will not help, so waiting invocations fail at once with the reason. Any
 * other error from activate or scale is taken as passing (the API server busy, say).
 */
export class CannotRun extends Error {
  override readonly name = 'CannotRun';
}
