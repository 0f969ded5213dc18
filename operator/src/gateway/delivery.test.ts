import { describe, expect, it } from 'vitest';
import type { EddyFunction, FunctionSpec } from '../api/types.js';
import {
  createDelivery,
  type AttemptResult,
  type DeadLetterRecord,
  type DeliveryDeps,
  type DeliveryEvent,
  type OutcomeName,
} from './delivery.js';
import { gatewayError } from './errors.js';

const start = Date.parse('2025-03-01T12:00:00.000Z');
const attemptMs = 100;

function fn(spec: FunctionSpec = { deadLetter: { url: 'http://sink.photos.svc/dead' } }) {
  return {
    apiVersion: 'eddy.dev/v1alpha1',
    kind: 'Function',
    metadata: { name: 'thumbnail', namespace: 'photos' },
    spec,
  } satisfies EddyFunction;
}

const event = (ageMs = 0): DeliveryEvent => ({
  id: 'evt-1',
  type: 'com.amazonaws.s3.ObjectCreated:Put',
  source: 'aws:s3.us-east-1.photos',
  time: new Date(start - ageMs).toISOString(),
  body: Buffer.from('{"key":"beach.jpg"}'),
  headers: { 'content-type': 'application/json' },
  trigger: 'uploads',
});

const failure = (message: string, retryable = true): AttemptResult => ({
  ok: false,
  status: retryable ? 500 : 400,
  error: { errorType: retryable ? 'Error' : 'InvalidEvent', errorMessage: message },
  retryable,
});

/**
 * A delivery on a fake clock: sleeping and attempting move the clock, the dead letter records
 * what it gets (after failing `deadLetterFailures` times), every outcome and log line is kept.
 */
function harness(
  o: {
    random?: number[];
    deadLetterFailures?: number;
    deps?: Partial<DeliveryDeps>;
    onSleep?: (ms: number) => void;
  } = {},
) {
  let clock = start;
  const randoms = [...(o.random ?? [0.5])];
  let failures = o.deadLetterFailures ?? 0;
  const sleeps: number[] = [];
  const deadLetters: DeadLetterRecord[] = [];
  const deadLetterTries: number[] = [];
  const logs: string[] = [];
  const outcomes: OutcomeName[] = [];
  const delivery = createDelivery({
    deadLetter: {
      async send(_fn, record) {
        deadLetterTries.push(clock);
        if (failures-- > 0)
          throw new Error('dead letter http://sink.photos.svc/dead answered HTTP 503');
        deadLetters.push(record);
      },
    },
    now: () => clock,
    sleep: async (ms) => {
      sleeps.push(ms);
      o.onSleep?.(ms);
      clock += ms;
    },
    random: () => (randoms.length > 1 ? randoms.shift()! : randoms[0]!),
    log: (m) => logs.push(m),
    onOutcome: (_fn, _event, outcome) => outcomes.push(outcome),
    ...o.deps,
  });
  /** Answers attempt n with results[n-1] (the last one repeats); each takes `attemptMs`. */
  const script = (...results: AttemptResult[]) => {
    const calls: number[] = [];
    const attempt = async (n: number) => {
      calls.push(n);
      clock += attemptMs;
      return results[Math.min(n, results.length) - 1]!;
    };
    return { calls, attempt };
  };
  return { delivery, sleeps, deadLetters, deadLetterTries, logs, outcomes, script };
}

const live = () => new AbortController().signal;

describe('delivery', () => {
  it('succeeds on the first attempt without waiting or dead-lettering', async () => {
    const h = harness();
    const s = h.script({ ok: true, status: 200 });
    const out = await h.delivery.deliver({
      fn: fn(),
      event: event(),
      attempt: s.attempt,
      signal: live(),
    });
    expect(out).toEqual({ outcome: 'succeeded', attempts: 1, status: 200 });
    expect(s.calls).toEqual([1]);
    expect(h.sleeps).toEqual([]);
    expect(h.deadLetters).toEqual([]);
    expect(h.outcomes).toEqual(['succeeded']);
  });

  it('retries after growing, jittered delays and then succeeds', async () => {
    // Full jitter: random * min(cap, base * 2^(n-1)), base 1 s, cap 3 s.
    const h = harness({ random: [0.25, 0.75, 0.9], deps: { maxDelayMs: 3_000 } });
    const s = h.script(failure('boom 1'), failure('boom 2'), failure('boom 3'), {
      ok: true,
      status: 200,
    });
    const out = await h.delivery.deliver({
      fn: fn({ retry: { maxAttempts: 3 }, deadLetter: { url: 'http://sink/dead' } }),
      event: event(),
      attempt: s.attempt,
      signal: live(),
    });
    expect(out).toEqual({ outcome: 'succeeded', attempts: 4, status: 200 });
    expect(s.calls).toEqual([1, 2, 3, 4]);
    expect(h.sleeps).toEqual([250, 1_500, 2_700]);
    expect(h.outcomes).toEqual(['retried', 'retried', 'retried', 'succeeded']);
    expect(h.deadLetters).toEqual([]);
  });

  it('dead-letters after the retries are spent, with the attempt count and the last error', async () => {
    const h = harness();
    const s = h.script(failure('first'), failure('second'), failure('third'));
    // spec.retry left out: 2 retries, as on Lambda.
    const out = await h.delivery.deliver({
      fn: fn(),
      event: event(),
      attempt: s.attempt,
      signal: live(),
    });
    expect(s.calls).toEqual([1, 2, 3]);
    expect(h.sleeps).toEqual([500, 1_000]);
    expect(out).toEqual({
      outcome: 'dead-lettered',
      attempts: 3,
      condition: 'RetriesExhausted',
      error: { errorType: 'Error', errorMessage: 'third' },
      deadLetterSends: 1,
    });
    expect(h.deadLetters).toEqual([
      {
        event: event(),
        error: { errorType: 'Error', errorMessage: 'third' },
        attempts: 3,
        condition: 'RetriesExhausted',
        firstAttemptAt: '2025-03-01T12:00:00.000Z',
        // 100 ms per attempt plus 0.5 s and 1 s of backoff before the third.
        lastAttemptAt: '2025-03-01T12:00:01.700Z',
      },
    ]);
    expect(h.outcomes).toEqual(['retried', 'retried', 'dead-lettered']);
  });

  it('dead-letters an event the function rejects as bad at once, without retrying', async () => {
    const h = harness();
    const s = h.script(failure('body is not JSON', false), { ok: true, status: 200 });
    const out = await h.delivery.deliver({
      fn: fn(),
      event: event(),
      attempt: s.attempt,
      signal: live(),
    });
    expect(s.calls).toEqual([1]);
    expect(h.sleeps).toEqual([]);
    expect(out).toMatchObject({ outcome: 'dead-lettered', attempts: 1, condition: 'NotRetryable' });
    expect(h.deadLetters[0]).toMatchObject({
      attempts: 1,
      error: { errorType: 'InvalidEvent', errorMessage: 'body is not JSON' },
    });
  });

  it('stops retrying when the next try would come after maxEventAgeSeconds', async () => {
    // 55 s old with a 60 s limit; random 0.99 waits 0.99 s, 1.98 s, then 3.96 s would pass 60 s.
    const h = harness({ random: [0.99] });
    const s = h.script(failure('down'));
    const out = await h.delivery.deliver({
      fn: fn({
        retry: { maxAttempts: 10, maxEventAgeSeconds: 60 },
        deadLetter: { url: 'http://x/' },
      }),
      event: event(55_000),
      attempt: s.attempt,
      signal: live(),
    });
    expect(s.calls).toEqual([1, 2, 3]);
    expect(h.sleeps).toEqual([990, 1_980]);
    expect(out).toMatchObject({
      outcome: 'dead-lettered',
      attempts: 3,
      condition: 'EventAgeExceeded',
    });
    expect(h.deadLetters[0]).toMatchObject({ attempts: 3, condition: 'EventAgeExceeded' });
  });

  it('does not retry at all with maxAttempts 0', async () => {
    const h = harness();
    const s = h.script(failure('once'), { ok: true, status: 200 });
    const out = await h.delivery.deliver({
      fn: fn({ retry: { maxAttempts: 0 }, deadLetter: { url: 'http://x/' } }),
      event: event(),
      attempt: s.attempt,
      signal: live(),
    });
    expect(s.calls).toEqual([1]);
    expect(h.sleeps).toEqual([]);
    expect(out).toMatchObject({
      outcome: 'dead-lettered',
      attempts: 1,
      condition: 'RetriesExhausted',
    });
  });

  it('retries a throttled attempt without counting it against maxAttempts', async () => {
    const h = harness();
    const throttled: AttemptResult = {
      ok: false,
      status: 429,
      error: { errorType: 'TooManyRequestsException', errorMessage: 'at its limit' },
      retryable: true,
      throttled: true,
    };
    const s = h.script(throttled, throttled, failure('once'), { ok: true, status: 200 });
    const out = await h.delivery.deliver({
      fn: fn({ retry: { maxAttempts: 1 }, deadLetter: { url: 'http://x/' } }),
      event: event(),
      attempt: s.attempt,
      signal: live(),
    });
    expect(s.calls).toEqual([1, 2, 3, 4]);
    expect(out).toMatchObject({ outcome: 'succeeded', attempts: 4 });
  });

  it('logs each failed attempt as it fails, with its number, error type and message and what comes next', async () => {
    const h = harness();
    // What was logged by the time each attempt starts: the previous failure is already there.
    const seenAtStart: string[][] = [];
    const s = h.script(failure('first'), failure('second\nline'), failure('third'));
    const out = await h.delivery.deliver({
      fn: fn({}),
      event: event(),
      attempt: async (n) => {
        seenAtStart.push([...h.logs]);
        return s.attempt(n);
      },
      signal: live(),
    });
    expect(out.outcome).toBe('dropped');
    const line1 =
      'attempt 1 of event evt-1 to photos/thumbnail (trigger uploads) failed: Error: first; retrying in 500 ms';
    const line2 =
      'attempt 2 of event evt-1 to photos/thumbnail (trigger uploads) failed: Error: second line; retrying in 1000 ms';
    expect(seenAtStart).toEqual([[], [line1], [line1, line2]]);
    expect(h.logs[2]).toBe(
      'attempt 3 of event evt-1 to photos/thumbnail (trigger uploads) failed: Error: third; not retried (RetriesExhausted)',
    );
    expect(h.logs[3]).toMatch(/^DROPPED event evt-1/);
    expect(h.logs).toHaveLength(4);
  });

  it('drops the event of a Function without a dead letter, in one loud log line, and counts it', async () => {
    const h = harness();
    const s = h.script(failure('ECONNRESET'));
    const out = await h.delivery.deliver({
      fn: fn({}),
      event: event(),
      attempt: s.attempt,
      signal: live(),
    });
    expect(s.calls).toEqual([1, 2, 3]);
    expect(out).toMatchObject({
      outcome: 'dropped',
      attempts: 3,
      condition: 'RetriesExhausted',
      error: { errorMessage: 'ECONNRESET' },
    });
    expect(h.deadLetterTries).toEqual([]);
    expect(h.outcomes).toEqual(['retried', 'retried', 'dropped']);
    const dropped = h.logs.filter((l) => l.includes('DROPPED'));
    expect(dropped).toHaveLength(1);
    expect(dropped[0]).toContain('photos/thumbnail');
    expect(dropped[0]).toContain('evt-1');
    expect(dropped[0]).toContain('Error: ECONNRESET');
    expect(dropped[0]).toContain('spec.deadLetter');
  });

  it('keeps sending to a failing dead letter with backoff until it takes the event', async () => {
    const h = harness({ deadLetterFailures: 2 });
    const s = h.script(failure('bad', false));
    const out = await h.delivery.deliver({
      fn: fn(),
      event: event(),
      attempt: s.attempt,
      signal: live(),
    });
    expect(out).toMatchObject({ outcome: 'dead-lettered', attempts: 1, deadLetterSends: 3 });
    expect(h.deadLetters).toHaveLength(1);
    expect(h.sleeps).toEqual([500, 1_000]);
    expect(h.logs.filter((l) => l.includes('HTTP 503'))).toHaveLength(2);
    expect(h.outcomes).toEqual(['dead-lettered']);
  });

  it('drops the event, naming the reason, when the dead letter fails every send', async () => {
    const h = harness({ deadLetterFailures: Infinity, deps: { maxDeadLetterSends: 4 } });
    const s = h.script(failure('bad', false));
    const out = await h.delivery.deliver({
      fn: fn(),
      event: event(),
      attempt: s.attempt,
      signal: live(),
    });
    expect(h.deadLetterTries).toHaveLength(4);
    expect(out).toMatchObject({ outcome: 'dropped', attempts: 1 });
    expect(out.outcome === 'dropped' && out.reason).toMatch(/failed 4 times.*HTTP 503/);
    expect(h.logs.filter((l) => l.includes('DROPPED'))).toHaveLength(1);
    expect(h.outcomes).toEqual(['dropped']);
  });

  it('treats an attempt that throws as a failure to retry', async () => {
    const h = harness();
    let n = 0;
    const out = await h.delivery.deliver({
      fn: fn(),
      event: event(),
      attempt: async () => {
        if (++n === 1) throw new TypeError('socket hang up');
        return { ok: true, status: 202 };
      },
      signal: live(),
    });
    expect(out).toEqual({ outcome: 'succeeded', attempts: 2, status: 202 });
  });

  it('dead-letters a thrown gateway error under its own error type', async () => {
    const h = harness();
    const out = await h.delivery.deliver({
      fn: fn({ retry: { maxAttempts: 0 }, deadLetter: { url: 'http://x/' } }),
      event: event(),
      attempt: async () => {
        throw gatewayError('ActivationTimeout', 'no replica became ready within 120 s');
      },
      signal: live(),
    });
    expect(out).toMatchObject({ outcome: 'dead-lettered', attempts: 1 });
    expect(h.deadLetters[0]!.error).toEqual({
      errorType: 'EddyActivationTimeout',
      errorMessage: 'no replica became ready within 120 s',
    });
  });

  it('ends as interrupted, with nothing dead-lettered, when shutdown comes between attempts', async () => {
    const stop = new AbortController();
    const h = harness({ onSleep: () => stop.abort() });
    const s = h.script(failure('down'));
    const out = await h.delivery.deliver({
      fn: fn(),
      event: event(),
      attempt: s.attempt,
      signal: stop.signal,
    });
    expect(out).toEqual({ outcome: 'interrupted', attempts: 1 });
    expect(s.calls).toEqual([1]);
    expect(h.deadLetterTries).toEqual([]);
    expect(h.outcomes).toEqual(['retried', 'interrupted']);
  });

  it('ends as interrupted when shutdown aborts the attempt in flight', async () => {
    const stop = new AbortController();
    const h = harness();
    const out = await h.delivery.deliver({
      fn: fn(),
      event: event(),
      attempt: async (_n, signal) => {
        stop.abort();
        expect(signal.aborted).toBe(true);
        return failure('aborted');
      },
      signal: stop.signal,
    });
    expect(out).toEqual({ outcome: 'interrupted', attempts: 1 });
    expect(h.deadLetterTries).toEqual([]);
  });

  it('ends as interrupted, not dropped, when shutdown comes while the dead letter is failing', async () => {
    const stop = new AbortController();
    const h = harness({ deadLetterFailures: Infinity, onSleep: () => stop.abort() });
    const s = h.script(failure('bad', false));
    const out = await h.delivery.deliver({
      fn: fn(),
      event: event(),
      attempt: s.attempt,
      signal: stop.signal,
    });
    expect(out).toEqual({ outcome: 'interrupted', attempts: 1 });
    expect(h.deadLetterTries).toHaveLength(1);
    expect(h.logs.some((l) => l.includes('DROPPED'))).toBe(false);
  });

  it('dead-letters an event a stream source gave up on, retrying failed sends, and counts it', async () => {
    const h = harness({ deadLetterFailures: 1 });
    const record: DeadLetterRecord = {
      event: event(),
      error: { errorType: 'Error', errorMessage: 'poison' },
      attempts: 4,
      condition: 'RetriesExhausted',
      firstAttemptAt: new Date(start).toISOString(),
      lastAttemptAt: new Date(start).toISOString(),
    };
    const out = await h.delivery.deadLetter(fn(), record, live());
    expect(out).toEqual({
      outcome: 'dead-lettered',
      attempts: 4,
      condition: 'RetriesExhausted',
      error: record.error,
      deadLetterSends: 2,
    });
    expect(h.deadLetters).toEqual([record]);
    expect(h.outcomes).toEqual(['dead-lettered']);

    const none = harness();
    const dropped = await none.delivery.deadLetter(fn({}), record, live());
    expect(dropped).toMatchObject({ outcome: 'dropped', condition: 'RetriesExhausted' });
    expect(none.outcomes).toEqual(['dropped']);
    expect(none.logs.filter((l) => l.startsWith('DROPPED event evt-1'))).toHaveLength(1);
  });
});

describe('delivery when its Function is deleted', () => {
  it('ends a wait for a retry at once, and the next attempt finds out', async () => {
    const wake = new AbortController();
    const h = harness({
      deps: {
        // A wait that only ends when its signal aborts (the backoff would be long).
        sleep: (_ms, signal) =>
          new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve())),
      },
    });
    let deleted = false;
    const calls: number[] = [];
    const done = h.delivery.deliver({
      fn: fn(),
      event: event(),
      attempt: async (n) => {
        calls.push(n);
        if (n === 1) {
          // Deleted while the first attempt ran: the wait that follows is woken.
          queueMicrotask(() => {
            deleted = true;
            wake.abort();
          });
          return failure('boom');
        }
        return deleted
          ? failure('function photos/thumbnail was deleted', false)
          : failure('still there');
      },
      signal: live(),
      wake: wake.signal,
    });
    const out = await done;
    expect(calls).toEqual([1, 2]);
    expect(out).toMatchObject({
      outcome: 'dead-lettered',
      attempts: 2,
      condition: 'NotRetryable',
    });
    expect(h.outcomes).toEqual(['retried', 'dead-lettered']);
  });
});
