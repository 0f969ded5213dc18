/**
 * What each gateway replica reports about the work it carries, per function: the autoscaler's
 * input. Counters only grow, so any number of readers can take differences between two reads.
 */
import type { FunctionKey } from '../platform/platform.js';

export interface FunctionLoad {
  /** Invocations being answered by replicas now. */
  inFlight: number;
  /** Invocations waiting for a replica (at zero, or throttled) now. */
  queued: number;
  /** The integral of (inFlight + queued) over time since the gateway started, in seconds. */
  concurrencySeconds: number;
  /** Invocations received since the gateway started. */
  requests: number;
  /**
   * Replicas this gateway asked for in a burst that have yet to serve (absent: none): the
   * autoscaler keeps at least this many.
   */
  burstReplicas?: number;
}

/** One gateway replica's load, by function. */
export type LoadReport = Record<FunctionKey, FunctionLoad>;

/** What one read of the gateways found. */
export interface LoadReadout {
  reports: LoadReport[];
  /** The gateways that should have reported and did not (no answer, an error): by URL. */
  missing: string[];
}

/**
 * Reads the load of every gateway replica (in-process locally; over HTTP in a cluster). A plain
 * list means every gateway reported.
 */
export type LoadSource = (signal: AbortSignal) => Promise<LoadReport[] | LoadReadout>;
