/**
 * Asynchronous delivery with Lambda's semantics: one attempt, retries with exponential backoff
 * and full jitter while `spec.retry` allows and the event is young enough, then the dead-letter
 * destination. Every event ends in exactly one counted outcome; none is dropped silently.
 *
 * Async invocations and every event source deliver through here. The gateway's dispatcher
 * supplies `attempt` (one invocation of the function); clock, timers and randomness are
 * injected so the policy tests without waiting.
 */
import { setTimeout as wait } from 'node:timers/promises';
import type { EddyFunction } from '../api/types.js';
import { describeError } from '../errors.js';
import { GatewayError } from './errors.js';

/** An event to deliver, as a source or the async invoke API accepted it. */
export interface DeliveryEvent {
  /** The CloudEvent id; also names the dead letter, so a redelivered event overwrites its own. */
  id: string;
  type: string;
  source: string;
  /** RFC 3339: when the event happened or was accepted. Its age bounds the retries. */
  time: string;
  body: Buffer;
  /** The CloudEvent binary-mode headers (`ce-*`) and `content-type` to forward. */
  headers: Record<string, string>;
  /** The trigger that produced the event; absent for direct async invocations. */
  trigger?: string;
  /**
   * Drawn once when the event was accepted and kept with it (the durable queue keeps it in the
   * message): with the id, it names the event's dead letter, whichever replica writes it.
   */
  acceptedAs?: string;
}

/** Lambda's error shape: `{errorType, errorMessage}`. */
export interface AttemptError {
  errorType: string;
  errorMessage: string;
}

/**
 * What one invocation came to. `retryable: false` means the event itself is bad (a 4xx).
 * `throttled`: the function was at its limit and did not run; as on Lambda, such a try is
 * retried without counting against `maxAttempts` (the event's age still bounds it).
 */
export type AttemptResult =
  | { ok: true; status: number; /** The function's answer. */ body?: Buffer }
  | { ok: false; status?: number; error: AttemptError; retryable: boolean; throttled?: boolean };

/** Why an event went to its dead letter; the first two are Lambda's own conditions. */
export type DeadLetterCondition = 'RetriesExhausted' | 'EventAgeExceeded' | 'NotRetryable';

/** What a dead-letter destination receives about a failed event. */
export interface DeadLetterRecord {
  event: DeliveryEvent;
  /** The last attempt's error. */
  error: AttemptError;
  /** Invocations made, the first included. */
  attempts: number;
  condition: DeadLetterCondition;
  /** RFC 3339 times of the first and last invocation. */
  firstAttemptAt: string;
  lastAttemptAt: string;
}

/** Sends a failed event to its Function's `spec.deadLetter`; rejects when it could not. */
export interface DeadLetterSender {
  send(fn: EddyFunction, record: DeadLetterRecord, signal?: AbortSignal): Promise<void>;
}

/**
 * How a delivery ended. `interrupted` (shutdown) is not final: the caller leaves the event
 * unacknowledged so that it is delivered again.
 */
export type DeliveryOutcome =
  | { outcome: 'succeeded'; attempts: number; status: number }
  | {
      outcome: 'dead-lettered';
      attempts: number;
      condition: DeadLetterCondition;
      error: AttemptError;
      /** Sends it took to reach the destination. */
      deadLetterSends: number;
    }
  | {
      outcome: 'dropped';
      attempts: number;
      condition: DeadLetterCondition;
      error: AttemptError;
      /** Why it was not dead-lettered: no destination, or the destination kept failing. */
      reason: string;
    }
  | { outcome: 'interrupted'; attempts: number };

/** A failed attempt that will be retried after `delayMs`. */
export interface DeliveryRetry {
  outcome: 'retried';
  attempts: number;
  delayMs: number;
  error: AttemptError;
}

export type OutcomeName = DeliveryOutcome['outcome'] | DeliveryRetry['outcome'];

export interface DeliveryDeps {
  deadLetter: DeadLetterSender;
  /** Milliseconds since the epoch. */
  now?: () => number;
  /** Resolves after `ms`, or early when `signal` aborts (it must not reject). */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** In [0, 1): the jitter. */
  random?: () => number;
  /** The first retry waits up to this; each further retry doubles it. Default 1 s. */
  baseDelayMs?: number;
  /**
   * The longest wait between two tries. Default 60 s. Lambda waits about 1 minute before the
   * second attempt and 2 minutes before the third; Eddy retries sooner (up to 1 s, 2 s, 4 s, ...
   * capped here) because a source acknowledges its event only once delivery ends.
   */
  maxDelayMs?: number;
  /** Sends to the dead letter before giving up on it (and dropping the event). Default 10. */
  maxDeadLetterSends?: number;
  /** Called for every retry and every end of a delivery: the place to count them. */
  onOutcome?: (
    fn: EddyFunction,
    event: DeliveryEvent,
    outcome: OutcomeName,
    detail: DeliveryOutcome | DeliveryRetry,
  ) => void;
  log: (message: string) => void;
}

export interface DeliverOptions {
  fn: EddyFunction;
  event: DeliveryEvent;
  /** One invocation of the function (numbered from 1); the dispatcher provides it. */
  attempt: (attemptNo: number, signal: AbortSignal) => Promise<AttemptResult>;
  /** Shutdown: aborting ends the delivery as `interrupted`. */
  signal: AbortSignal;
  /**
   * Ends a wait for a retry early (the Function was deleted): the next attempt comes at once,
   * and finds out what became of the Function.
   */
  wake?: AbortSignal;
}

export interface Delivery {
  /**
   * Resolves once the event succeeded, was dead-lettered or dropped (or the signal aborted), so
   * a source can acknowledge it then. Never rejects.
   */
  deliver(o: DeliverOptions): Promise<DeliveryOutcome>;
  /**
   * Sends an event that failed elsewhere (a stream source's batch, retried by the source) to
   * its Function's dead letter, with the same sends, outcomes and log line as `deliver`.
   */
  deadLetter(
    fn: EddyFunction,
    record: DeadLetterRecord,
    signal: AbortSignal,
    options?: DeadLetterOptions,
  ): Promise<DeliveryOutcome>;
}

export interface DeadLetterOptions {
  /**
   * The event is kept elsewhere (a durable queue): when the destination keeps failing, end
   * `interrupted` after `sends` sends instead of dropping it, so that it is tried again later.
   */
  keep?: { sends: number };
}

/** `spec.retry` when the Function leaves it out, as the CRD defaults it. */
export const retryDefaults = { maxAttempts: 2, maxEventAgeSeconds: 21_600 } as const;

/** `spec.retry` with defaults applied and values held to the CRD's ranges. */
export function retryPolicy(fn: EddyFunction): { maxAttempts: number; maxEventAgeMs: number } {
  const r = fn.spec.retry ?? {};
  const clamp = (v: number | undefined, fallback: number, min: number, max: number) =>
    v === undefined || !Number.isFinite(v) ? fallback : Math.min(max, Math.max(min, Math.floor(v)));
  return {
    maxAttempts: clamp(r.maxAttempts, retryDefaults.maxAttempts, 0, 10),
    maxEventAgeMs: clamp(r.maxEventAgeSeconds, retryDefaults.maxEventAgeSeconds, 60, 21_600) * 1000,
  };
}

/** Full jitter (AWS's "Exponential Backoff and Jitter"): uniform in [0, min(cap, base * 2^(n-1))). */
export function backoffDelay(
  retry: number,
  o: { baseDelayMs: number; maxDelayMs: number; random: () => number },
): number {
  const ceiling = Math.min(o.maxDelayMs, o.baseDelayMs * 2 ** Math.max(0, retry - 1));
  return Math.floor(o.random() * ceiling);
}

/**
 * What follows a failed attempt, Lambda's way: the dead letter when the event itself is bad, the
 * retries are used up (throttled tries do not count) or the event would be too old by the next
 * try; otherwise a retry after the backoff. The in-process delivery and the durable queue's
 * consumers both decide here.
 */
export function afterFailure(o: {
  retryable: boolean;
  /** Invocations made, this one included. */
  attempts: number;
  /** Of those, the ones the function's limit refused. */
  throttles: number;
  policy: { maxAttempts: number; maxEventAgeMs: number };
  /** How old the event is now. */
  ageMs: number;
  backoff: { baseDelayMs: number; maxDelayMs: number; random: () => number };
}): { condition: DeadLetterCondition } | { delayMs: number } {
  if (!o.retryable) return { condition: 'NotRetryable' };
  if (o.attempts - o.throttles > o.policy.maxAttempts) return { condition: 'RetriesExhausted' };
  const delayMs = backoffDelay(o.attempts, o.backoff);
  // Do not wait for a retry the event would be too old to get.
  if (o.ageMs + delayMs >= o.policy.maxEventAgeMs) return { condition: 'EventAgeExceeded' };
  return { delayMs };
}

/**
 * The line a failed attempt is logged with as soon as it fails, on every path (in memory, the
 * queue, a stream's batch): which attempt, of what, the error, and what comes next.
 */
export function failedAttemptLine(o: {
  /** What failed: `event <id> to <namespace>/<name> (trigger <t>)` or a stream's records. */
  what: string;
  attempt: number;
  error: AttemptError;
  next: { delayMs: number } | { condition: DeadLetterCondition } | { bisect: true };
}): string {
  const then =
    'delayMs' in o.next
      ? `retrying in ${o.next.delayMs} ms`
      : 'bisect' in o.next
        ? 'retrying it in two halves (bisectOnError)'
        : `not retried (${o.next.condition})`;
  return `attempt ${o.attempt} of ${o.what} failed: ${o.error.errorType}: ${o.error.errorMessage.replace(/\s*\n\s*/g, ' ')}; ${then}`;
}

/** How a failed attempt names its event: `event <id> to <namespace>/<name> (trigger <t>)`. */
export function eventDescription(
  fn: EddyFunction,
  event: Pick<DeliveryEvent, 'id' | 'trigger'>,
): string {
  return `event ${event.id} to ${fn.metadata.namespace}/${fn.metadata.name}${event.trigger ? ` (trigger ${event.trigger})` : ''}`;
}

async function defaultSleep(ms: number, signal: AbortSignal): Promise<void> {
  await wait(ms, undefined, { signal }).catch(() => undefined);
}

const fnKey = (fn: EddyFunction) => `${fn.metadata.namespace}/${fn.metadata.name}`;

export function createDelivery(deps: DeliveryDeps): Delivery {
  const now = deps.now ?? Date.now;
  const sleep = deps.sleep ?? defaultSleep;
  const backoff = {
    baseDelayMs: deps.baseDelayMs ?? 1_000,
    maxDelayMs: deps.maxDelayMs ?? 60_000,
    random: deps.random ?? Math.random,
  };
  const maxDeadLetterSends = deps.maxDeadLetterSends ?? 10;
  // deliver never rejects: a sleep that does is taken as an early wake-up.
  const pause = (ms: number, signal: AbortSignal) => sleep(ms, signal).catch(() => undefined);
  /** A pause that either signal ends; the listeners go with it. */
  const pauseUnless = async (ms: number, signal: AbortSignal, wake: AbortSignal | undefined) => {
    if (!wake) return pause(ms, signal);
    if (wake.aborted) return;
    const either = new AbortController();
    const stop = () => either.abort();
    signal.addEventListener('abort', stop, { once: true });
    wake.addEventListener('abort', stop, { once: true });
    try {
      await pause(ms, either.signal);
    } finally {
      signal.removeEventListener('abort', stop);
      wake.removeEventListener('abort', stop);
    }
  };

  async function deliver(o: DeliverOptions): Promise<DeliveryOutcome> {
    const { fn, event, signal } = o;
    const report = (r: DeliveryOutcome | DeliveryRetry) =>
      deps.onOutcome?.(fn, event, r.outcome, r);
    const end = (r: DeliveryOutcome) => {
      report(r);
      return r;
    };
    const { maxAttempts, maxEventAgeMs } = retryPolicy(fn);
    const firstSeen = now();
    const parsedTime = Date.parse(event.time);
    // An event without a readable time is as old as this delivery.
    const happenedAt = Number.isNaN(parsedTime) ? firstSeen : parsedTime;

    let attempts = 0;
    let throttles = 0;
    let firstAttemptAt = firstSeen;
    let lastAttemptAt = firstSeen;
    for (;;) {
      if (signal.aborted) return end({ outcome: 'interrupted', attempts });
      attempts++;
      lastAttemptAt = now();
      if (attempts === 1) firstAttemptAt = lastAttemptAt;
      let result: AttemptResult;
      try {
        result = await o.attempt(attempts, signal);
      } catch (err) {
        // The dispatcher should answer with a result; a throw is treated as a transient failure.
        result = {
          ok: false,
          error:
            err instanceof GatewayError
              ? err.body()
              : {
                  errorType: err instanceof Error ? err.name : 'Error',
                  errorMessage: describeError(err),
                },
          retryable: true,
        };
      }
      if (result.ok) return end({ outcome: 'succeeded', attempts, status: result.status });
      if (signal.aborted) return end({ outcome: 'interrupted', attempts });

      if (result.throttled) throttles++;
      const next = afterFailure({
        retryable: result.retryable,
        attempts,
        throttles,
        policy: { maxAttempts, maxEventAgeMs },
        ageMs: now() - happenedAt,
        backoff,
      });
      deps.log(
        failedAttemptLine({
          what: eventDescription(fn, event),
          attempt: attempts,
          error: result.error,
          next,
        }),
      );
      if ('condition' in next) {
        const { condition } = next;
        return end(
          await deadLetter(
            fn,
            {
              event,
              error: result.error,
              attempts,
              condition,
              firstAttemptAt: new Date(firstAttemptAt).toISOString(),
              lastAttemptAt: new Date(lastAttemptAt).toISOString(),
            },
            signal,
          ),
        );
      }
      report({ outcome: 'retried', attempts, delayMs: next.delayMs, error: result.error });
      await pauseUnless(next.delayMs, signal, o.wake);
    }
  }

  async function deadLetter(
    fn: EddyFunction,
    record: DeadLetterRecord,
    signal: AbortSignal,
    options: DeadLetterOptions = {},
  ): Promise<DeliveryOutcome> {
    const sends = options.keep?.sends ?? maxDeadLetterSends;
    const { attempts, condition, error } = record;
    const dropped = (reason: string): DeliveryOutcome => {
      // Lambda discards such an event too; say so loudly, in one line, so it is never silent.
      deps.log(
        `DROPPED event ${record.event.id} for function ${fnKey(fn)}` +
          `${record.event.trigger ? ` (trigger ${record.event.trigger})` : ''} after ${attempts} ` +
          `attempt(s), ${condition}: ${reason}; last error ${error.errorType}: ` +
          error.errorMessage.replace(/\s*\n\s*/g, ' '),
      );
      return { outcome: 'dropped', attempts, condition, error, reason };
    };
    if (!fn.spec.deadLetter?.url && !fn.spec.deadLetter?.s3) {
      return dropped('the Function has no spec.deadLetter: set url or s3 to keep failed events');
    }
    let lastFailure = '';
    for (let send = 1; send <= sends; send++) {
      if (signal.aborted) return { outcome: 'interrupted', attempts };
      try {
        await deps.deadLetter.send(fn, record, signal);
        return { outcome: 'dead-lettered', attempts, condition, error, deadLetterSends: send };
      } catch (err) {
        if (signal.aborted) return { outcome: 'interrupted', attempts };
        lastFailure = describeError(err);
        deps.log(
          `dead letter for event ${record.event.id} of ${fnKey(fn)} failed ` +
            `(send ${send}/${sends}): ${lastFailure}`,
        );
      }
      if (send < sends) await pause(backoffDelay(send, backoff), signal);
    }
    if (options.keep) return { outcome: 'interrupted', attempts };
    return dropped(`the dead letter failed ${maxDeadLetterSends} times, last with: ${lastFailure}`);
  }

  return {
    deliver,
    async deadLetter(fn, record, signal, options) {
      const r = await deadLetter(fn, record, signal, options);
      // Not ended: the caller keeps the event and says what becomes of it.
      if (r.outcome !== 'interrupted') deps.onOutcome?.(fn, record.event, r.outcome, r);
      return r;
    },
  };
}
