/**
 * The dispatcher: every invocation passes here. Per function it keeps the work in flight on
 * each ready replica and a bounded FIFO queue of invocations waiting for a slot. At zero, the
 * first invocation asks the platform for a replica at once and waits, with the others, until
 * one is ready (the activator); nothing is ever sent to a replica that is not ready. When the
 * work waiting is more than the ready and starting replicas can take, it asks for the replicas
 * the work needs at once (burst.ts). Beyond maxReplicas x concurrency in flight, invocations
 * wait in the same queue; past its bound they get 429.
 */
import { Agent, request, type IncomingHttpHeaders } from 'node:http';
import { Agent as ConnectionPool, type Dispatcher as HttpDispatcher } from 'undici';
import type { EddyFunction } from '../api/types.js';
import { mebibytes } from '../api/quantity.js';
import { describeError } from '../errors.js';
import type { FunctionLoad, LoadReport } from '../autoscaler/load.js';
import {
  CannotRun,
  keyOf,
  type FunctionKey,
  type InitFailure,
  type Platform,
  type Replica,
} from '../platform/platform.js';
import { headers as h, maxPayloadBytes } from '../../../runtime/src/contract/index.js';
import type { MemoryBudget } from './budget.js';
import { Bursts } from './burst.js';
import type { GoneSignal } from './caller-gone.js';
import { gatewayError, GatewayError } from './errors.js';
import type { GatewayMetrics, InvocationOutcome } from './metrics.js';

export interface InvokeRequest {
  /** The id the runtime gives the handler as awsRequestId. */
  requestId: string;
  body: Buffer;
  /** Headers to forward: content-type and, for a binary-mode CloudEvent, its ce-* headers. */
  headers: Record<string, string>;
  /** The trigger (for metrics): `invoke`, `async`, or a trigger's name. */
  trigger: string;
  /** Aborts when the caller is gone: an AbortSignal, or the gateway's `responseGone`. */
  signal?: GoneSignal;
}

export interface InvokeResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  replicaId: string;
  /** The function failed (x-eddy-function-error), as opposed to the request. */
  functionError: boolean;
}

export interface DispatcherOptions {
  platform: Platform;
  metrics: GatewayMetrics;
  log: (message: string) => void;
  /** Invocations one function may hold waiting; past it, 429. */
  queueLimit?: number;
  /** Counts the answers while they arrive from replicas. */
  budget?: MemoryBudget;
  /**
   * Queued work beyond what the ready and starting replicas take asks for more replicas at
   * once (default); false leaves scale-up past the first replica to the autoscaler.
   */
  burstScaleUp?: boolean;
  now?: () => number;
}

/** The default of spec.scaling.activationTimeoutSeconds. */
export const defaultActivationTimeoutSeconds = 120;
/** What the gateway waits beyond a function's timeout before it gives up on a replica. */
const answerGraceMs = 5_000;
/**
 * An activation that failed for a passing reason (an error, or no answer within
 * activationAttemptMs) is asked again after this, doubling per failure in a row up to the max,
 * for as long as invocations wait.
 */
const activationRetryMs = 250;
const activationRetryMaxMs = 5_000;
/** The longest one activation may take before it counts as failed and is asked again. */
const activationAttemptMs = 15_000;
/** After an activation, how soon to look whether the function was scaled to zero meanwhile. */
const activationCheckMs = 250;
/** A replica at its own limit (another gateway filled it) is tried again after this. */
const busyRetryMs = 25;
/** Bodies up to this go out in one write (undici); larger ones through Node's streamed client. */
const smallBodyBytes = 64 * 1024;
/** Times an invocation is sent again after its connection failed before it was written. */
const maxUnsentResends = 3;

interface Waiter {
  fn: EddyFunction;
  enqueuedAt: number;
  /** Enqueued while the function had no ready replica: its wait is activation time. */
  atZero: boolean;
  resolve(replica: Replica): void;
  reject(err: Error): void;
}

class Lane {
  inFlight = 0;
  readonly perReplica = new Map<string, number>();
  readonly waiters: Waiter[] = [];
  activating = false;
  /** Activations that failed in a row: the next retry waits longer. */
  activationFailures = 0;
  /** The function was deleted: nothing waits here any more. */
  forgotten = false;
  /** The integral of (inFlight + queued) over time, in ms, up to `changedAt`. */
  concurrencyMs = 0;
  changedAt: number;
  requests = 0;

  constructor(now: number) {
    this.changedAt = now;
  }

  /** Call before inFlight or the queue changes. */
  account(now: number): void {
    this.concurrencyMs += (this.inFlight + this.waiters.length) * (now - this.changedAt);
    this.changedAt = now;
  }
}

export interface DataPathSettings {
  concurrency: number;
  maxReplicas: number;
  timeoutMs: number;
  memoryMb: number;
  activationTimeoutMs: number;
}

// A Function object is replaced, never changed, when its spec changes: its settings are kept.
const settingsOf = new WeakMap<EddyFunction, DataPathSettings>();

/** Settings of a function that the data path needs, with the API's defaults. */
export function dataPathSettings(fn: EddyFunction): DataPathSettings {
  let s = settingsOf.get(fn);
  if (!s) {
    const scaling = fn.spec.scaling ?? {};
    s = {
      concurrency: fn.spec.concurrency ?? 1,
      maxReplicas: scaling.maxReplicas ?? 10,
      timeoutMs: (fn.spec.timeoutSeconds ?? 3) * 1000,
      memoryMb: mebibytes(fn.spec.memory ?? '128Mi'),
      activationTimeoutMs:
        (scaling.activationTimeoutSeconds ?? defaultActivationTimeoutSeconds) * 1000,
    };
    settingsOf.set(fn, s);
  }
  return s;
}

export class Dispatcher {
  private readonly lanes = new Map<FunctionKey, Lane>();
  // Connections to replicas: one per invocation in flight, kept alive between them. Idle ones
  // close after 30 s, before the runtime's 65 s keep-alive ends them, so a request never goes
  // out on a connection the replica is closing. undici's own timeouts are off: an answer may
  // take as long as the function's timeout, which `send` enforces.
  private readonly agent = new ConnectionPool({
    keepAliveTimeout: 30_000,
    keepAliveMaxTimeout: 30_000,
    headersTimeout: 0,
    bodyTimeout: 0,
  });
  /** For bodies larger than `smallBodyBytes`. */
  private readonly streamingAgent = new Agent({
    keepAlive: true,
    maxSockets: Infinity,
    scheduling: 'lifo',
    timeout: 30_000,
  });
  private readonly now: () => number;
  private readonly queueLimit: number;
  private readonly bursts: Bursts | undefined;
  private stopping = false;

  constructor(private readonly o: DispatcherOptions) {
    this.now = o.now ?? Date.now;
    this.queueLimit = o.queueLimit ?? 1000;
    if (o.burstScaleUp !== false) {
      this.bursts = new Bursts({
        platform: o.platform,
        log: o.log,
        now: this.now,
        workOf: (key) => {
          const lane = this.lanes.get(key);
          return lane ? lane.inFlight + lane.waiters.length : 0;
        },
      });
    }
  }

  /** Follows the platform's ready replicas until `signal` aborts. */
  start(signal: AbortSignal): void {
    const unsubscribe = this.o.platform.onChange((key) => this.pump(key));
    signal.addEventListener(
      'abort',
      () => {
        unsubscribe();
        this.stopping = true;
        for (const lane of this.lanes.values()) {
          lane.account(this.now());
          for (const w of lane.waiters.splice(0))
            w.reject(gatewayError('ShuttingDown', 'the gateway is stopping; retry', 1));
        }
      },
      { once: true },
    );
  }

  /**
   * Invokes `fn` once: waits for a slot on a ready replica (activating the function at zero),
   * sends, and answers with the runtime's answer. Throws a GatewayError for what the gateway
   * itself answers (throttled, activation timed out, the replica died or timed out).
   */
  async invoke(fn: EddyFunction, req: InvokeRequest): Promise<InvokeResponse> {
    const key = keyOf(fn);
    const { namespace, name } = fn.metadata;
    const lane = this.lane(key);
    const s = dataPathSettings(fn);
    lane.requests++;
    const deadline = this.now() + s.activationTimeoutMs;
    let outcome: InvocationOutcome = 'error';
    let unsentResends = 0;
    try {
      for (;;) {
        if (this.stopping) throw gatewayError('ShuttingDown', 'the gateway is stopping; retry', 1);
        if (req.signal?.aborted) throw callerGone();
        if (lane.forgotten) throw deleted(key);
        let replica: Replica;
        try {
          replica = await this.acquire(fn, lane, deadline, req.signal);
        } catch (err) {
          if (!(err instanceof InitFailed)) throw err;
          outcome = 'error';
          return initFailedResponse(err.failure);
        }
        let sent: SendResult;
        try {
          sent = await this.send(replica, req, s.timeoutMs);
        } finally {
          this.release(key, lane, replica.id);
        }
        if (sent.kind === 'unsent') {
          // The connection failed before the whole request was written (a kept-alive connection
          // the replica had closed): the handler cannot have run, so it is sent again. A replica
          // that keeps failing so is kept out until it proves ready again.
          if (++unsentResends > maxUnsentResends) this.o.platform.unreachable(key, replica.id);
          this.o.log(
            `${key}: the connection to replica ${replica.id} failed before the invocation was written (${sent.reason}); sending it again`,
          );
          continue;
        }
        if (sent.kind === 'undelivered') {
          // Nothing reached the handler: the replica is gone or recycling. Another one takes it.
          this.o.platform.unreachable(key, replica.id);
          this.o.log(
            `${key}: replica ${replica.id} did not take the invocation (${sent.reason}); sending it elsewhere`,
          );
          continue;
        }
        if (sent.kind === 'busy') {
          if (req.signal?.aborted) throw callerGone();
          if (this.now() + busyRetryMs >= deadline) {
            throw gatewayError(
              'Throttled',
              `every replica of ${key} stayed at its concurrency limit until the wait ended: slow down or raise scaling.maxReplicas`,
              1,
              'ReservedFunctionConcurrentInvocationLimitExceeded',
            );
          }
          await new Promise((r) => setTimeout(r, busyRetryMs));
          continue;
        }
        if (sent.kind === 'died') {
          // The whole invocation reached the replica: it is never sent again, since its
          // handler may have run (Lambda's Runtime.ExitError, once).
          const timedOut = sent.timedOut;
          outcome = timedOut ? 'timeout' : 'error';
          if (timedOut) {
            throw gatewayError(
              'FunctionTimeout',
              `Task timed out after ${(s.timeoutMs / 1000).toFixed(2)} seconds`,
            );
          }
          throw gatewayError(
            'ExitError',
            `the replica of ${key} ended while it ran the invocation (${sent.reason}): it crashed, was killed or called process.exit`,
          );
        }
        const res = sent.response;
        this.bursts?.served(key, replica.id);
        this.observe(fn, res, s.memoryMb);
        if (req.signal?.aborted) throw callerGone();
        outcome = outcomeOf(res);
        return res;
      }
    } catch (err) {
      if (err instanceof CallerGone) outcome = 'cancelled';
      else if (err instanceof GatewayError) {
        if (err.code === 'Throttled') outcome = 'throttled';
        else if (
          err.code === 'ActivationTimeout' ||
          err.code === 'ActivationFailed' ||
          err.code === 'ShuttingDown'
        )
          outcome = 'unavailable';
      }
      throw err;
    } finally {
      this.o.metrics.invocation(namespace, name, req.trigger, outcome);
    }
  }

  /** Closes the connections to replicas; call once invocations in flight have finished. */
  close(): void {
    void this.agent.destroy().catch(() => undefined);
    this.streamingAgent.destroy();
  }

  /** Per function: the counters the autoscaler reads. */
  load(): LoadReport {
    const now = this.now();
    const report: LoadReport = {};
    for (const [key, lane] of this.lanes) {
      const load: FunctionLoad = {
        inFlight: lane.inFlight,
        queued: lane.waiters.length,
        concurrencySeconds:
          (lane.concurrencyMs + (lane.inFlight + lane.waiters.length) * (now - lane.changedAt)) /
          1000,
        requests: lane.requests,
      };
      const held = this.bursts?.held(key);
      if (held !== undefined) load.burstReplicas = held;
      report[key] = load;
    }
    return report;
  }

  /**
   * Drops the queue of a deleted function: its waiting invocations get 404 at once, those in
   * flight end with their replica's answer and are not sent again, and a Function created
   * again under the name starts with a queue of its own.
   */
  forget(key: FunctionKey): void {
    const lane = this.lanes.get(key);
    if (!lane) return;
    this.lanes.delete(key);
    this.bursts?.forget(key);
    lane.account(this.now());
    lane.forgotten = true;
    for (const w of lane.waiters.splice(0)) w.reject(deleted(key));
  }

  private lane(key: FunctionKey): Lane {
    let lane = this.lanes.get(key);
    if (!lane) {
      lane = new Lane(this.now());
      this.lanes.set(key, lane);
    }
    return lane;
  }

  private acquire(
    fn: EddyFunction,
    lane: Lane,
    deadline: number,
    signal: GoneSignal | undefined,
  ): Promise<Replica> {
    const key = keyOf(fn);
    if (lane.waiters.length === 0) {
      const replica = this.pick(fn, lane);
      if (replica) {
        this.take(lane, replica);
        return Promise.resolve(replica);
      }
    }
    if (lane.waiters.length >= this.queueLimit) {
      return Promise.reject(
        gatewayError(
          'Throttled',
          `function ${key} is at its limit (${dataPathSettings(fn).maxReplicas} replicas x ${dataPathSettings(fn).concurrency} in flight) and ${lane.waiters.length} invocations already wait: slow down or raise scaling.maxReplicas`,
          1,
          'ReservedFunctionConcurrentInvocationLimitExceeded',
        ),
      );
    }
    if (lane.forgotten) return Promise.reject(deleted(key));
    return new Promise<Replica>((resolve, reject) => {
      const now = this.now();
      const atZero = this.o.platform.ready(key).length === 0;
      let timer: NodeJS.Timeout | undefined = undefined;
      const onAbort = () => {
        if (remove()) waiter.reject(callerGone());
      };
      const remove = () => {
        const i = lane.waiters.indexOf(waiter);
        if (i < 0) return false;
        lane.account(this.now());
        lane.waiters.splice(i, 1);
        return true;
      };
      const waiter: Waiter = {
        fn,
        enqueuedAt: now,
        atZero,
        resolve: (replica) => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          resolve(replica);
        },
        reject: (err) => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      lane.account(now);
      lane.waiters.push(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
      timer = setTimeout(
        () => {
          if (!remove()) return;
          const ready = this.o.platform.ready(key).length;
          const waited = ((this.now() - now) / 1000).toFixed(1);
          waiter.reject(
            ready === 0
              ? gatewayError(
                  'ActivationTimeout',
                  `no replica of ${key} became ready within ${waited} s (scaling.activationTimeoutSeconds): see the function's pods or logs for why it does not start`,
                  1,
                )
              : gatewayError(
                  'Throttled',
                  `function ${key} stayed at its limit for ${waited} s: slow down or raise scaling.maxReplicas`,
                  1,
                  'ReservedFunctionConcurrentInvocationLimitExceeded',
                ),
          );
        },
        Math.max(0, deadline - now),
      );
      this.activateIfIdle(fn, lane);
      this.bursts?.demand(fn, dataPathSettings(fn));
      this.failUnstartable(key, lane);
    });
  }

  /**
   * Waiting invocations of a function none of whose replicas is ready, and one of which could not
   * load its handler (or that the platform cannot start now), get that error now: no replica that
   * says so becomes ready by waiting.
   */
  private failUnstartable(key: FunctionKey, lane: Lane): boolean {
    if (lane.waiters.length === 0) return false;
    const failure = this.o.platform.initError?.(key);
    const cannot = failure ? undefined : this.o.platform.cannotStart?.(key);
    if (!failure && !cannot) return false;
    lane.account(this.now());
    for (const w of lane.waiters.splice(0)) {
      w.reject(
        failure
          ? new InitFailed(failure)
          : gatewayError('ActivationFailed', `${key} cannot be started: ${cannot}`, 5),
      );
    }
    return true;
  }

  /** At zero ready replicas with work waiting, asks the platform for one, once at a time. */
  private activateIfIdle(fn: EddyFunction, lane: Lane): void {
    const key = keyOf(fn);
    if (lane.activating || lane.waiters.length === 0) return;
    if (this.o.platform.ready(key).length > 0) return;
    lane.activating = true;
    let retry = false;
    let timer: NodeJS.Timeout | undefined;
    // A platform call that never answers must not leave the function "activating" until every
    // waiting invocation times out: past activationAttemptMs it counts as failed.
    const attempt = Promise.race([
      this.o.platform.activate(fn),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`the platform did not answer within ${activationAttemptMs} ms`)),
          activationAttemptMs,
        );
      }),
    ]).finally(() => clearTimeout(timer));
    void attempt
      .then(
        () => {
          lane.activationFailures = 0;
          return activationCheckMs;
        },
        (err: unknown) => {
          const message = `${key} cannot be started: ${describeError(err)}`;
          if (!(err instanceof CannotRun)) {
            retry = true;
            const waitMs = Math.min(
              activationRetryMaxMs,
              activationRetryMs * 2 ** lane.activationFailures++,
            );
            this.o.log(`${message}; trying again in ${waitMs} ms`);
            return waitMs;
          }
          this.o.log(message);
          lane.account(this.now());
          for (const w of lane.waiters.splice(0))
            w.reject(gatewayError('ActivationFailed', message, 5));
          return undefined;
        },
      )
      .then(async (lookAgainMs) => {
        // Passing trouble (the API server busy or stalled), or scaled to zero again meanwhile
        // by the autoscaler: invocations that still wait ask again.
        if (lookAgainMs !== undefined) await new Promise((r) => setTimeout(r, lookAgainMs));
        lane.activating = false;
        const first = lane.waiters[0];
        if (!first) lane.activationFailures = 0;
        else if (retry || this.o.platform.counts(key).desired === 0)
          this.activateIfIdle(first.fn, lane);
      });
  }

  /** The ready replica with the fewest in flight and a free slot, if any and under the cap. */
  private pick(fn: EddyFunction, lane: Lane): Replica | undefined {
    const { concurrency, maxReplicas } = dataPathSettings(fn);
    if (lane.inFlight >= concurrency * maxReplicas) return undefined;
    let best: Replica | undefined;
    let bestLoad = concurrency;
    for (const r of this.o.platform.ready(keyOf(fn))) {
      const load = lane.perReplica.get(r.id) ?? 0;
      if (load < bestLoad) {
        best = r;
        bestLoad = load;
      }
    }
    return best;
  }

  private take(lane: Lane, replica: Replica): void {
    lane.account(this.now());
    lane.inFlight++;
    lane.perReplica.set(replica.id, (lane.perReplica.get(replica.id) ?? 0) + 1);
  }

  private release(key: FunctionKey, lane: Lane, replicaId: string): void {
    lane.account(this.now());
    lane.inFlight--;
    const n = (lane.perReplica.get(replicaId) ?? 1) - 1;
    if (n <= 0) lane.perReplica.delete(replicaId);
    else lane.perReplica.set(replicaId, n);
    this.pump(key);
    if (lane.inFlight === 0 && lane.waiters.length === 0) this.bursts?.settled(key);
  }

  /** Hands free slots to waiting invocations, first come first served. */
  private pump(key: FunctionKey): void {
    const lane = this.lanes.get(key);
    if (!lane || lane.waiters.length === 0) return;
    if (this.failUnstartable(key, lane)) return;
    while (lane.waiters.length > 0) {
      const first = lane.waiters[0]!;
      const replica = this.pick(first.fn, lane);
      if (!replica) break;
      lane.account(this.now());
      lane.waiters.shift();
      this.take(lane, replica);
      if (first.atZero) {
        this.o.metrics
          .of(first.fn.metadata.namespace, first.fn.metadata.name)
          .activation.observe((this.now() - first.enqueuedAt) / 1000);
      }
      first.resolve(replica);
    }
    if (lane.waiters.length > 0) {
      const fn = lane.waiters[0]!.fn;
      this.activateIfIdle(fn, lane);
      this.bursts?.demand(fn, dataPathSettings(fn));
    }
  }

  private observe(fn: EddyFunction, res: InvokeResponse, memoryMb: number): void {
    const m = this.o.metrics.of(fn.metadata.namespace, fn.metadata.name);
    const duration = Number(res.headers[h.durationMs]);
    if (Number.isFinite(duration)) m.duration.observe(duration / 1000);
    const billed = Number(res.headers[h.billedDurationMs]);
    if (Number.isFinite(billed)) m.billedGbSeconds.inc((billed / 1000) * (memoryMb / 1024));
    if (res.headers[h.initDurationMs] !== undefined) m.coldStarts.inc();
  }

  /** Replica URLs as undici's origins (scheme, host and port). */
  private readonly origins = new Map<string, string>();

  private originOf(url: string): string {
    let origin = this.origins.get(url);
    if (origin === undefined) {
      origin = new URL(url).origin;
      if (this.origins.size > 10_000) this.origins.clear();
      this.origins.set(url, origin);
    }
    return origin;
  }

  private send(replica: Replica, req: InvokeRequest, timeoutMs: number): Promise<SendResult> {
    return req.body.length <= smallBodyBytes
      ? this.sendWhole(replica, req, timeoutMs)
      : this.sendStreamed(replica, req, timeoutMs);
  }

  /**
   * Sends with undici, which costs the gateway about a third less CPU per invocation than Node's
   * client. It says the request was written (onRequestSent) once its bytes were given to the
   * socket, not once the kernel took them: for a body of at most `smallBodyBytes`, on a
   * connection with nothing else in flight (one invocation per connection), the kernel takes
   * the whole request in the same call, so the two are the same.
   */
  private sendWhole(replica: Replica, req: InvokeRequest, timeoutMs: number): Promise<SendResult> {
    return new Promise((resolve) => {
      const started = this.now();
      let settled = false;
      // The answer's bytes while they arrive. Taken even past the budget: the handler has run,
      // so its answer is kept, and new bodies are refused meanwhile.
      const answer = this.o.budget?.hold();
      /** Set once the request has a connected socket: undici's way to end it. */
      let abort: ((reason?: Error) => void) | undefined;
      /** The whole request was handed to the replica's socket. */
      let written = false;
      const done = (r: SendResult) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        answer?.release();
        resolve(r);
      };
      const timer = setTimeout(() => {
        abort?.(new Error('no answer in time'));
        done({ kind: 'died', timedOut: true, reason: 'no answer in time' });
      }, timeoutMs + answerGraceMs);
      const headers: string[] = [];
      for (const k in req.headers) headers.push(k, req.headers[k]!);
      headers.push(h.requestId, req.requestId);
      let status = 502;
      let answerHeaders: Record<string, string> = {};
      const chunks: Buffer[] = [];
      let size = 0;
      // onRequestSent: undici calls it once the whole request is written to the socket, whatever
      // the body (its typings leave it out).
      const handler: HttpDispatcher.DispatchHandler & { onRequestSent(): void } = {
        // Called once the request has a connected socket, before its first byte is written.
        onConnect: (a) => {
          abort = a;
          // Given up on while it waited for a connection: it is not sent.
          if (settled) a(new Error('no answer in time'));
        },
        onRequestSent: () => {
          written = true;
        },
        onHeaders: (statusCode, raw) => {
          status = statusCode;
          answerHeaders = headersOf(raw);
          return true;
        },
        onData: (c) => {
          size += c.length;
          if (size <= maxPayloadBytes * 2 && !settled) {
            answer?.force(c.length);
            chunks.push(c);
          }
          return true;
        },
        onComplete: () => {
          const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
          done(answered(status, answerHeaders, body, replica.id));
        },
        // Whether the request was connected, and whole in the replica's socket. The runtime
        // starts a handler only once the body is complete, so a failure before that proves the
        // invocation did not run; after it, it may have. A caller that goes away does not cut
        // the invocation short: the handler runs on either way, and its slot is free only once
        // the replica has answered.
        onError: (err: NodeJS.ErrnoException) => {
          const reason = err.code && !err.code.startsWith('UND_ERR') ? err.code : err.message;
          if (!abort) done({ kind: 'undelivered', reason });
          else if (!written) done({ kind: 'unsent', reason });
          else done({ kind: 'died', timedOut: this.now() - started >= timeoutMs, reason });
        },
      };
      this.agent.dispatch(
        {
          origin: this.originOf(replica.url),
          path: '/',
          method: 'POST',
          headers,
          body: req.body,
        },
        handler,
      );
    });
  }

  private readonly targets = new Map<string, { host: string; port: string }>();

  private targetOf(url: string): { host: string; port: string } {
    let t = this.targets.get(url);
    if (!t) {
      const u = new URL(url);
      t = { host: u.hostname.replace(/^\[|\]$/g, ''), port: u.port || '80' };
      if (this.targets.size > 10_000) this.targets.clear();
      this.targets.set(url, t);
    }
    return t;
  }

  /**
   * Sends with Node's HTTP client, whose 'finish' says when every byte was handed to the kernel:
   * for bodies that may not fit the socket's buffers at once.
   */
  private sendStreamed(
    replica: Replica,
    req: InvokeRequest,
    timeoutMs: number,
  ): Promise<SendResult> {
    return new Promise((resolve) => {
      const started = this.now();
      let settled = false;
      // The answer's bytes while they arrive. Taken even past the budget: the handler has run,
      // so its answer is kept, and new bodies are refused meanwhile.
      const answer = this.o.budget?.hold();
      const done = (r: SendResult) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        answer?.release();
        resolve(r);
      };
      const target = this.targetOf(replica.url);
      const out = request(
        {
          agent: this.streamingAgent,
          host: target.host,
          port: target.port,
          method: 'POST',
          path: '/',
          headers: {
            ...req.headers,
            [h.requestId]: req.requestId,
            'content-length': String(req.body.length),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size <= maxPayloadBytes * 2 && !settled) {
              answer?.force(c.length);
              chunks.push(c);
            }
          });
          res.on('error', (err) => done(died(err, this.now() - started >= timeoutMs)));
          res.on('aborted', () => done(died(new Error('the answer was cut off'), false)));
          res.on('end', () => {
            const status = res.statusCode ?? 502;
            const headers = flatten(res.headers);
            done(answered(status, headers, Buffer.concat(chunks), replica.id));
          });
        },
      );
      const timer = setTimeout(() => {
        out.destroy();
        done({ kind: 'died', timedOut: true, reason: 'no answer in time' });
      }, timeoutMs + answerGraceMs);
      // Whether the request was connected, and whole in the replica's socket ('finish': every
      // byte handed to the kernel). The runtime starts a handler only once the body is complete,
      // so a failure before that proves the invocation did not run; after it, it may have.
      let connected = false;
      let written = false;
      out.once('socket', (socket) => {
        if (!socket.connecting) connected = true;
        else socket.once('connect', () => (connected = true));
      });
      out.once('finish', () => (written = true));
      // A caller that goes away does not cut the invocation short: the handler runs on either
      // way, and its slot is free only once the replica has answered.
      out.on('error', (err: NodeJS.ErrnoException) => {
        const reason = err.code ?? err.message;
        if (!connected) done({ kind: 'undelivered', reason });
        else if (!written) done({ kind: 'unsent', reason });
        else done(died(err, this.now() - started >= timeoutMs));
      });
      out.end(req.body);
    });
  }
}

type SendResult =
  | { kind: 'answered'; response: InvokeResponse }
  | { kind: 'undelivered'; reason: string }
  | { kind: 'busy' }
  /** The connection failed before the request was fully written: it never reached the handler. */
  | { kind: 'unsent'; reason: string }
  | { kind: 'died'; timedOut: boolean; reason: string };

/** The caller went away before its invocation ended. */
class CallerGone extends Error {
  override readonly name = 'CallerGone';
}

/** The function's replicas could not load its handler: the invocation gets their error. */
class InitFailed extends Error {
  override readonly name = 'InitFailed';
  constructor(readonly failure: InitFailure) {
    super(`${failure.errorType}: ${failure.errorMessage}`);
  }
}

/** The answer a replica whose handler did not load gives every invocation (docs/runtime.md). */
function initFailedResponse(failure: InitFailure): InvokeResponse {
  return {
    status: 502,
    headers: { 'content-type': 'application/json', [h.functionError]: 'Unhandled' },
    body: Buffer.from(
      JSON.stringify({ errorType: failure.errorType, errorMessage: failure.errorMessage }),
    ),
    replicaId: '',
    functionError: true,
  };
}

function callerGone(): CallerGone {
  return new CallerGone('the caller went away');
}

function deleted(key: FunctionKey): GatewayError {
  return gatewayError(
    'FunctionNotFound',
    `function ${key} was deleted while the invocation waited; it was not run`,
  );
}

/** What a replica's whole answer means, from either client. */
function answered(
  status: number,
  headers: Record<string, string>,
  body: Buffer,
  replicaId: string,
): SendResult {
  if (status === 503 && isUnavailable(body))
    return { kind: 'undelivered', reason: 'the replica is recycling or stopping' };
  if (status === 429) return { kind: 'busy' };
  return {
    kind: 'answered',
    response: {
      status,
      headers,
      body,
      replicaId,
      functionError: headers[h.functionError] !== undefined,
    },
  };
}

function died(err: Error, timedOut: boolean): SendResult {
  return { kind: 'died', timedOut, reason: (err as NodeJS.ErrnoException).code ?? err.message };
}

function flatten(headers: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v === undefined) continue;
    out[k] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}

/** An answer's raw headers (name, value, ...) by lower-case name, repeated ones joined. */
function headersOf(raw: Buffer[] | string[] | null): Record<string, string> {
  const out: Record<string, string> = {};
  if (!raw) return out;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const k = raw[i]!.toString('latin1').toLowerCase();
    const v = raw[i + 1]!.toString('latin1');
    const had = out[k];
    out[k] = had === undefined ? v : `${had}, ${v}`;
  }
  return out;
}

function isUnavailable(body: Buffer): boolean {
  try {
    return (
      (JSON.parse(body.toString('utf8')) as { errorType?: string }).errorType ===
      'Runtime.Unavailable'
    );
  } catch {
    return false;
  }
}

function outcomeOf(res: InvokeResponse): InvocationOutcome {
  if (res.status < 300) return 'success';
  if (res.status === 504) return 'timeout';
  if (res.status === 429) return 'throttled';
  if (res.functionError || res.status >= 500) return 'error';
  return 'invalid';
}
