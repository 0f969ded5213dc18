/**
 * Where accepted events wait for delivery. Asynchronous invocations, S3 notifications and
 * schedule ticks are enqueued here; synchronous invocations and Kinesis batches are not.
 *
 * Two kinds: NATS JetStream (`jetstream.ts`), durable, where an accepted event survives any one
 * process dying; and memory, where it lives in this process until delivered (the local stack
 * without nats-server, or a cluster installed without a queue).
 */
import type { EddyFunction } from '../api/types.js';
import type { EventSink } from '../gateway/async.js';
import type { DeliveryEvent, DeliveryOutcome } from '../gateway/delivery.js';
import { gatewayError } from '../gateway/errors.js';

export interface Enqueued {
  /** The queue had the event already (same function and event id): it is kept once. */
  duplicate: boolean;
  /**
   * In memory only: the delivery, which ends once the event succeeded, was dead-lettered or
   * dropped. A source that keeps its own progress (a schedule's checkpoint, a store's POST)
   * holds on to the event until then, since nothing else keeps it.
   */
  delivered?: Promise<DeliveryOutcome>;
}

export interface EventQueue {
  readonly kind: 'jetstream' | 'memory';
  /**
   * Accepts an event for delivery to `fn` with its retry policy and dead letter. Resolves once
   * accepted (JetStream: the stream acknowledged it); rejects with a GatewayError when it was
   * not (QueueUnavailable, Throttled, ShuttingDown), and then nothing was accepted. In memory,
   * `signal` interrupts the delivery (its source stopping); a durable queue keeps the event.
   */
  enqueue(fn: EddyFunction, event: DeliveryEvent, signal?: AbortSignal): Promise<Enqueued>;
}

/** The queue in this process's memory: each event delivered at once, in the background. */
export function memoryQueue(o: {
  sink: EventSink;
  /** Aborted when the process stops: then nothing more is taken. */
  signal: AbortSignal;
  /** Events accepted and not yet delivered, at most; past it, 429. Default 1000. */
  backlogLimit?: number;
}): EventQueue {
  const backlogLimit = o.backlogLimit ?? 1000;
  let pending = 0;
  return {
    kind: 'memory',
    enqueue(fn, event, signal) {
      if (o.signal.aborted) {
        return Promise.reject(gatewayError('ShuttingDown', 'the gateway is stopping; retry', 1));
      }
      if (pending >= backlogLimit) {
        return Promise.reject(
          gatewayError(
            'Throttled',
            `this gateway holds ${pending} asynchronous events not yet delivered: slow down and retry`,
            1,
          ),
        );
      }
      pending++;
      const delivered = o.sink.deliver(fn, event, signal).finally(() => pending--);
      return Promise.resolve({ duplicate: false, delivered });
    },
  };
}
