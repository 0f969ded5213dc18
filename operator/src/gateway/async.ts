/**
 * Asynchronous invocation (Lambda's `InvocationType: Event`) and the event sink every source
 * delivers through: one attempt, retries and the dead letter. The gateway answers 202 once the
 * event queue (operator/src/queue/) has accepted the event.
 */
import type { EddyFunction } from '../api/types.js';
import { describeError } from '../errors.js';
import type { FunctionStore, SecretReader } from '../functions.js';
import { randomUUID } from 'node:crypto';
import { eventTypes, requestIdPattern } from '../../../runtime/src/contract/index.js';
import { keyOf } from '../platform/platform.js';
import type { AsyncInvoke } from './app.js';
import { createDeadLetterSender, type DeadLetterUrlOptions } from './dead-letter.js';
import {
  createDelivery,
  type AttemptResult,
  type DeadLetterOptions,
  type DeadLetterRecord,
  type Delivery,
  type DeliveryEvent,
  type DeliveryOutcome,
} from './delivery.js';
import type { Dispatcher, InvokeRequest } from './dispatcher.js';
import { gatewayError, GatewayError } from './errors.js';
import type { EventQueue } from '../queue/queue.js';
import type { GatewayMetrics } from './metrics.js';

export interface EventSinkOptions {
  dispatcher: Dispatcher;
  /** Each attempt invokes the Function as it is now; a deleted one is not invoked again. */
  store: FunctionStore;
  metrics: GatewayMetrics;
  secrets: SecretReader;
  log: (message: string) => void;
  /** Aborts the deliveries under way (shutdown). */
  signal: AbortSignal;
  /** First retry delay; tests shorten it. */
  baseDelayMs?: number;
  /** Which addresses `deadLetter.url` may reach (the local stack allows loopback). */
  deadLetterUrls?: DeadLetterUrlOptions;
}

/** One invocation through the dispatcher, as delivery sees it. */
export async function attemptVia(
  dispatcher: Dispatcher,
  fn: EddyFunction,
  req: InvokeRequest,
  signal: AbortSignal,
): Promise<AttemptResult> {
  try {
    const res = await dispatcher.invoke(fn, { ...req, signal });
    if (res.status < 300) return { ok: true, status: res.status, body: res.body };
    let error = { errorType: `HTTP${res.status}`, errorMessage: res.body.toString('utf8') };
    try {
      const body = JSON.parse(res.body.toString('utf8')) as Partial<typeof error>;
      if (body.errorType)
        error = { errorType: body.errorType, errorMessage: body.errorMessage ?? '' };
    } catch {
      // not Lambda's error shape: keep the text
    }
    // A 4xx other than throttling says the event itself is bad: retrying cannot help.
    const retryable = res.status >= 500 || res.status === 429;
    return { ok: false, status: res.status, error, retryable, throttled: res.status === 429 };
  } catch (err) {
    if (err instanceof GatewayError) {
      return {
        ok: false,
        status: err.status,
        error: err.body(),
        retryable: err.code !== 'FunctionNotFound' && err.code !== 'PayloadTooLarge',
        throttled: err.code === 'Throttled',
      };
    }
    throw err;
  }
}

/**
 * Delivers one event to a Function with retries and its dead letter, as every source and the
 * async invoke API do. Each attempt invokes the Function as it is now; a deleted one is not
 * invoked again (the event is not retryable then).
 */
export interface EventSink {
  /** Resolves once the event succeeded, was dead-lettered, dropped or interrupted. Never rejects. */
  deliver(fn: EddyFunction, event: DeliveryEvent, signal?: AbortSignal): Promise<DeliveryOutcome>;
  /**
   * One invocation, without retries or dead letter, answering with the function's answer: for
   * a stream source, which retries a batch itself (holding its shard meanwhile) and reads which
   * of the batch's items failed. Never rejects.
   */
  invoke(fn: EddyFunction, event: DeliveryEvent, signal?: AbortSignal): Promise<AttemptResult>;
  /** Sends an event the caller gave up on to the Function's dead letter. Never rejects. */
  deadLetter(
    fn: EddyFunction,
    record: DeadLetterRecord,
    signal?: AbortSignal,
    options?: DeadLetterOptions,
  ): Promise<DeliveryOutcome>;
}

export function createEventSink(o: EventSinkOptions): EventSink {
  const deadLetter = createDeadLetterSender({ secrets: o.secrets, urls: o.deadLetterUrls });
  o.signal.addEventListener('abort', () => deadLetter.close(), { once: true });
  // Deliveries waiting for a retry, by function: a deleted Function's try again at once, find
  // it gone and end (NotRetryable, to the dead letter it had), rather than wait out the backoff.
  const waiting = new Map<string, Set<AbortController>>();
  const unsubscribe = o.store.onChange((fn, deleted) => {
    if (!deleted) return;
    for (const wake of waiting.get(keyOf(fn)) ?? []) wake.abort();
  });
  o.signal.addEventListener('abort', unsubscribe, { once: true });
  const delivery: Delivery = createDelivery({
    deadLetter,
    log: o.log,
    ...(o.baseDelayMs !== undefined ? { baseDelayMs: o.baseDelayMs } : {}),
    onOutcome: (fn, event, outcome, detail) => {
      const labels = {
        namespace: fn.metadata.namespace,
        function: fn.metadata.name,
        trigger: event.trigger ?? 'async',
      };
      if (outcome === 'retried') o.metrics.retries.inc(labels);
      else if (outcome === 'dead-lettered')
        o.metrics.deadLetters.inc({ ...labels, outcome: 'sent' });
      else if (outcome === 'dropped') o.metrics.deadLetters.inc({ ...labels, outcome: 'dropped' });
      else if (outcome === 'interrupted') {
        // Its delivery was in this process's memory: say so, and count it. (A store posts its
        // notification again, a schedule keeps the tick owed; an async invocation is gone.)
        o.metrics.interrupted.inc(labels);
        o.log(
          `INTERRUPTED event ${event.id} for function ${keyOf(fn)}${event.trigger ? ` (trigger ${event.trigger})` : ''}: the gateway stopped before its delivery ended, after ${detail.attempts} attempt(s)`,
        );
      }
    },
  });
  const requestOf = (event: DeliveryEvent): InvokeRequest => ({
    // Lambda keeps the request id across retries; so does Eddy.
    requestId: requestIdPattern.test(event.id) ? event.id : randomUUID(),
    body: event.body,
    headers: event.headers,
    trigger: event.trigger ?? 'async',
  });
  /** One invocation of the Function as it is now; a deleted one is not invoked again. */
  const attempt = async (
    fn: EddyFunction,
    req: InvokeRequest,
    signal: AbortSignal,
  ): Promise<AttemptResult> => {
    const { namespace, name } = fn.metadata;
    const current = o.store.get(namespace, name);
    if (!current) {
      return {
        ok: false,
        error: gatewayError('FunctionNotFound', `function ${namespace}/${name} was deleted`).body(),
        retryable: false,
      };
    }
    return attemptVia(o.dispatcher, current, req, signal);
  };
  /**
   * A signal that aborts with the sink's or the caller's. Its listeners go once `release` is
   * called: a combined signal of a long-lived one would be kept as long as that one lives.
   */
  const within = (signal?: AbortSignal): { signal: AbortSignal; release: () => void } => {
    if (!signal) return { signal: o.signal, release: () => undefined };
    const both = new AbortController();
    const abort = () => both.abort();
    const sources = [o.signal, signal];
    for (const s of sources) {
      if (s.aborted) both.abort();
      else s.addEventListener('abort', abort, { once: true });
    }
    return {
      signal: both.signal,
      release: () => {
        for (const s of sources) s.removeEventListener('abort', abort);
      },
    };
  };
  return {
    deliver(fn, event, signal) {
      const req = requestOf(event);
      const { signal: both, release } = within(signal);
      const key = keyOf(fn);
      const wake = new AbortController();
      let set = waiting.get(key);
      if (!set) waiting.set(key, (set = new Set()));
      set.add(wake);
      return delivery
        .deliver({
          fn,
          event,
          attempt: (_n, attemptSignal) => attempt(fn, req, attemptSignal),
          signal: both,
          wake: wake.signal,
        })
        .finally(() => {
          release();
          set.delete(wake);
          if (set.size === 0 && waiting.get(key) === set) waiting.delete(key);
        });
    },
    async invoke(fn, event, signal) {
      const { signal: both, release } = within(signal);
      try {
        return await attempt(fn, requestOf(event), both);
      } catch (err) {
        // The caller went away (shutdown): a failure it will not act on.
        return {
          ok: false,
          error: {
            errorType: err instanceof Error ? err.name : 'Error',
            errorMessage: describeError(err),
          },
          retryable: true,
        };
      } finally {
        release();
      }
    },
    deadLetter(fn, record, signal, options) {
      const { signal: both, release } = within(signal);
      return delivery.deadLetter(fn, record, both, options).finally(release);
    },
  };
}

/** The async invoke API's events, as a queue takes them (asked for when each call comes). */
export function asyncInvokeVia(queue: () => EventQueue): AsyncInvoke {
  return async (fn, req, acceptedAt) => {
    // A direct call's body is JSON to the runtime whatever its content type says (curl -d sends
    // form-urlencoded); a dead letter should carry it the same way.
    const direct =
      !Object.keys(req.headers).some((k) => k.startsWith('ce-')) &&
      !(req.headers['content-type'] ?? '').startsWith('application/cloudevents');
    const event: DeliveryEvent = {
      id: req.requestId,
      type: req.headers['ce-type'] ?? eventTypes.invoke,
      source: req.headers['ce-source'] ?? '/eddy/gateway',
      time: acceptedAt.toISOString(),
      body: req.body,
      headers: direct ? { ...req.headers, 'content-type': 'application/json' } : req.headers,
    };
    const { delivered } = await queue().enqueue(fn, event);
    return delivered ? { delivered } : {};
  };
}
