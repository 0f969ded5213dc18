/**
 * Asynchronous invocation (Lambda's `InvocationType: Event`): the gateway answers 202 at once
 * and delivers in the background with retries and the dead letter. The backlog lives in this
 * gateway's memory: a gateway that stops ends the deliveries still waiting for a retry.
 */
import type { EddyFunction } from '../api/types.js';
import type { SecretReader } from '../functions.js';
import { eventTypes } from '../../../runtime/src/contract/index.js';
import type { AsyncInvoke } from './app.js';
import { createDeadLetterSender } from './dead-letter.js';
import { createDelivery, type AttemptResult, type Delivery } from './delivery.js';
import type { Dispatcher, InvokeRequest } from './dispatcher.js';
import { GatewayError } from './errors.js';
import type { GatewayMetrics } from './metrics.js';

export interface AsyncDeliveryOptions {
  dispatcher: Dispatcher;
  metrics: GatewayMetrics;
  secrets: SecretReader;
  log: (message: string) => void;
  /** Aborts the deliveries under way (shutdown). */
  signal: AbortSignal;
  /** First retry delay; tests shorten it. */
  baseDelayMs?: number;
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
    if (res.status < 300) return { ok: true, status: res.status };
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
    return { ok: false, status: res.status, error, retryable };
  } catch (err) {
    if (err instanceof GatewayError) {
      return {
        ok: false,
        status: err.status,
        error: err.body(),
        retryable: err.code !== 'FunctionNotFound' && err.code !== 'PayloadTooLarge',
      };
    }
    throw err;
  }
}

export function asyncDelivery(o: AsyncDeliveryOptions): AsyncInvoke {
  const deadLetter = createDeadLetterSender({ secrets: o.secrets });
  o.signal.addEventListener('abort', () => deadLetter.close(), { once: true });
  const delivery: Delivery = createDelivery({
    deadLetter,
    log: o.log,
    ...(o.baseDelayMs !== undefined ? { baseDelayMs: o.baseDelayMs } : {}),
    onOutcome: (fn, event, outcome) => {
      const labels = {
        namespace: fn.metadata.namespace,
        function: fn.metadata.name,
        trigger: event.trigger ?? 'async',
      };
      if (outcome === 'retried') o.metrics.retries.inc(labels);
      else if (outcome === 'dead-lettered')
        o.metrics.deadLetters.inc({ ...labels, outcome: 'sent' });
      else if (outcome === 'dropped') o.metrics.deadLetters.inc({ ...labels, outcome: 'dropped' });
    },
  });
  return (fn, req, acceptedAt) => {
    // A direct call's body is JSON to the runtime whatever its content type says (curl -d sends
    // form-urlencoded); a dead letter should carry it the same way.
    const direct =
      !Object.keys(req.headers).some((k) => k.startsWith('ce-')) &&
      !(req.headers['content-type'] ?? '').startsWith('application/cloudevents');
    const event = {
      id: req.requestId,
      type: req.headers['ce-type'] ?? eventTypes.invoke,
      source: req.headers['ce-source'] ?? '/eddy/gateway',
      time: acceptedAt.toISOString(),
      body: req.body,
      headers: direct ? { ...req.headers, 'content-type': 'application/json' } : req.headers,
    };
    void delivery.deliver({
      fn,
      event,
      // Lambda keeps the request id across retries; so does Eddy.
      attempt: (_n, signal) => attemptVia(o.dispatcher, fn, req, signal),
      signal: o.signal,
    });
  };
}
