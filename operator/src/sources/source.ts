/**
 * What every event source is given. Sources read Functions from the store, deliver through the
 * gateway's dispatcher (the sink: retries and dead letters included), report each trigger's state
 * for the Function's status, and keep their progress in the checkpoint store.
 */
import type { IncomingMessage } from 'node:http';
import type { Registry } from 'prom-client';
import type { FunctionStore, SecretReader } from '../functions.js';
import type { RouteHandler } from '../gateway/app.js';
import type { EventSink } from '../gateway/async.js';
import type { Runnable } from '../manager.js';
import type { EventQueue } from '../queue/queue.js';
import type { CheckpointStore } from './checkpoints.js';
import type { TriggerStates } from './states.js';

export interface SourceContext {
  store: FunctionStore;
  secrets: SecretReader;
  /** Delivers at once: a stream source's batches (Kinesis), which keep their own order. */
  sink: EventSink;
  /**
   * Where pushed and scheduled events go (S3 notifications, schedule ticks): accepted once
   * queued, delivered by the queue's consumers with the Function's retries and dead letter.
   */
  queue: EventQueue;
  states: TriggerStates;
  checkpoints: CheckpointStore;
  /** The gateway's registry: source metrics are scraped with the rest. */
  metrics: Registry;
  log: (message: string) => void;
  /** Serves a POST intake on every gateway (the S3 webhook); `authorize` sees only headers. */
  route(path: string, handler: RouteHandler, authorize?: (req: IncomingMessage) => void): void;
}

/** Builds a source's runnables from the context (leader-only ones for consumers and schedules). */
export type SourceFactory = (ctx: SourceContext) => Runnable[];
