/**
 * The durable queue on NATS JetStream. JetStream keeps every accepted event on disk, removes
 * duplicates (the message id is the event's), redelivers what was not acknowledged and bounds
 * what is in flight; Eddy only names the stream and consumers and decides, per message, between
 * acknowledging, asking for a redelivery after the backoff, and the dead letter.
 *
 * One stream (default `EDDY_EVENTS`, subjects `<stream>.<namespace>.<function>`, work-queue
 * retention: a message goes once acknowledged) and one durable pull consumer per Function,
 * shared by every gateway replica, whose `max_ack_pending` is `maxReplicas x concurrency`: a
 * function's backlog never holds another's events. Settings: docs/queue.md.
 */
import { readFileSync } from 'node:fs';
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  jetstream,
  jetstreamManager,
  JetStreamApiError,
  RetentionPolicy,
  StorageType,
  type ConsumerConfig,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type StreamConfig,
} from '@nats-io/jetstream';
import {
  connect,
  credsAuthenticator,
  headers as natsHeaders,
  nanos,
  type NatsConnection,
} from '@nats-io/transport-node';
import { Counter, Histogram, type Registry } from 'prom-client';
import type { EddyFunction } from '../api/types.js';
import { describeError } from '../errors.js';
import type { FunctionStore } from '../functions.js';
import type { EventSink } from '../gateway/async.js';
import {
  afterFailure,
  eventDescription,
  failedAttemptLine,
  retryPolicy,
  type AttemptError,
  type DeadLetterCondition,
  type DeliveryEvent,
} from '../gateway/delivery.js';
import { acceptanceSuffix } from '../gateway/dead-letter.js';
import { gatewayError } from '../gateway/errors.js';
import type { GatewayMetrics } from '../gateway/metrics.js';
import { keyOf } from '../platform/platform.js';
import type { Enqueued, EventQueue } from './queue.js';

export interface JetStreamSettings {
  /** nats://host:port, one or more. */
  servers: string[];
  /** A NATS credentials file (JWT and seed), when the server wants one. */
  credsFile?: string;
  /** The stream's name; also the first token of its subjects. Default EDDY_EVENTS. */
  stream?: string;
  /** The stream's (and its consumers') replicas: 1, or 3 on a NATS cluster. Default 1. */
  replicas?: number;
  /** Bytes the stream keeps at most; past it, publishing is refused (429). Default 1 GiB. */
  maxBytes?: number;
  /** How long an event is kept at most, delivered or not. Default 7 days. */
  maxAgeMs?: number;
}

export interface JetStreamQueueOptions extends JetStreamSettings {
  log: (message: string) => void;
  /** Where the queue's metrics go (the gateway's registry). */
  registry: Registry;
  /** The client's name as the server shows it (the pod's). */
  name?: string;
  /** The deadline of one publish acknowledgement. Default 5 s. */
  publishTimeoutMs?: number;
}

export interface ConsumeOptions {
  store: FunctionStore;
  sink: EventSink;
  metrics: GatewayMetrics;
  log: (message: string) => void;
  /**
   * Stops taking messages; those in hand get `drainMs` to finish, then go back to the queue
   * (unacknowledged, redelivered at once to another replica).
   */
  signal: AbortSignal;
  drainMs?: number;
  /** The first retry's backoff (the retries double it); tests shorten it. Default 1 s. */
  baseDelayMs?: number;
  /** How long a message may go without word from its holder before redelivery. Default 30 s. */
  ackWaitMs?: number;
}

export interface JetStreamQueue extends EventQueue {
  readonly kind: 'jetstream';
  /** Runs every Function's consumer in this process until the signal; resolves once drained. */
  consume(o: ConsumeOptions): Promise<void>;
  close(): Promise<void>;
}

/** What travels in the `Eddy-Event` header; the body is the message's data. */
interface EventHeader {
  id: string;
  type: string;
  source: string;
  time: string;
  trigger?: string;
  headers: Record<string, string>;
  /** See DeliveryEvent.acceptedAs: drawn at the publish, so every delivery names one dead letter. */
  acceptedAs?: string;
}

const eventHeader = 'Eddy-Event';

/** A subject token or consumer name for a Kubernetes name ('.' is not allowed in either). */
const token = (s: string) => s.replace(/\./g, '_');

export function subjectOf(stream: string, fn: { metadata: { namespace?: string; name?: string } }) {
  return `${stream}.${token(fn.metadata.namespace ?? '')}.${token(fn.metadata.name ?? '')}`;
}

export function consumerNameOf(fn: { metadata: { namespace?: string; name?: string } }) {
  return `fn_${token(fn.metadata.namespace ?? '')}_${token(fn.metadata.name ?? '')}`;
}

/** Events a Function may have in flight at once: as many as it can run at once, at least 1. */
export function maxInFlight(fn: EddyFunction): number {
  const replicas = fn.spec.scaling?.maxReplicas ?? 10;
  const concurrency = fn.spec.concurrency ?? 1;
  return Math.max(1, replicas * concurrency);
}

export function streamConfig(s: JetStreamSettings): Partial<StreamConfig> & { name: string } {
  const name = s.stream ?? 'EDDY_EVENTS';
  return {
    name,
    subjects: [`${name}.>`],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    num_replicas: s.replicas ?? 1,
    discard: DiscardPolicy.New,
    max_bytes: s.maxBytes ?? 1024 ** 3,
    max_age: nanos(s.maxAgeMs ?? 7 * 24 * 3600 * 1000),
    // A store that posts a notification again, or two leaders firing one tick, within this
    // window publish it once.
    duplicate_window: nanos(2 * 60 * 1000),
    // 6 MB of body and its headers.
    max_msg_size: 7 * 1024 * 1024,
  };
}

export function consumerConfig(
  fn: EddyFunction,
  stream: string,
  ackWaitMs: number,
): Partial<ConsumerConfig> {
  return {
    durable_name: consumerNameOf(fn),
    filter_subject: subjectOf(stream, fn),
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(ackWaitMs),
    max_deliver: -1,
    max_ack_pending: maxInFlight(fn),
    description: `Eddy: events for function ${keyOf(fn)}`,
  };
}

export function createJetStreamQueue(o: JetStreamQueueOptions): JetStreamQueue {
  const stream = o.stream ?? 'EDDY_EVENTS';
  const publishTimeoutMs = o.publishTimeoutMs ?? 5_000;
  const published = new Counter({
    name: 'eddy_queue_published_total',
    help: 'Events offered to the durable queue: accepted, duplicate (kept once) or refused.',
    labelNames: ['namespace', 'function', 'trigger', 'outcome'],
    registers: [o.registry],
  });
  const publishSeconds = new Histogram({
    name: 'eddy_queue_publish_seconds',
    help: "Time from publishing an event to the stream's acknowledgement.",
    buckets: [
      0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025,
      0.05, 0.1, 0.5, 1, 5,
    ],
    registers: [o.registry],
  });
  const redelivered = new Counter({
    name: 'eddy_queue_redelivered_total',
    help: 'Deliveries of an event after its first: retries, and events whose holder stopped or went silent.',
    labelNames: ['namespace', 'function', 'trigger'],
    registers: [o.registry],
  });

  const authenticator = o.credsFile
    ? credsAuthenticator(new Uint8Array(readFileSync(o.credsFile)))
    : undefined;
  let nc: NatsConnection | undefined;
  let js: JetStreamClient | undefined;
  let jsm: JetStreamManager | undefined;
  let streamReady = false;
  /** False while the connection is down (NATS restarting, say): events are refused at once. */
  let connected = false;
  let lastProblem = 'not connected yet';
  const closing = new AbortController();
  const where = o.servers.join(',');

  /** Creates the stream, or brings its settings to ours; idempotent, every replica does it. */
  async function ensureStream(): Promise<void> {
    const cfg = streamConfig(o);
    try {
      await jsm!.streams.add(cfg);
    } catch (err) {
      // Made by another replica or an earlier version with other settings: bring them to ours.
      const info = await jsm!.streams.info(stream).catch(() => undefined);
      if (!info) throw err;
      const { name: _name, retention: _retention, storage: _storage, ...changeable } = cfg;
      await jsm!.streams.update(stream, changeable);
    }
    streamReady = true;
  }

  /** Connects (forever, with backoff) and makes the stream; the process goes on meanwhile. */
  const connecting = (async () => {
    let failures = 0;
    while (!closing.signal.aborted) {
      try {
        nc = await connect({
          servers: o.servers,
          name: o.name ?? 'eddy',
          timeout: 5_000,
          maxReconnectAttempts: -1,
          reconnectTimeWait: 1_000,
          pingInterval: 10_000,
          ...(authenticator ? { authenticator } : {}),
        });
        js = jetstream(nc, { timeout: publishTimeoutMs });
        jsm = await jetstreamManager(nc, { timeout: 5_000 });
        await ensureStream();
        connected = true;
        o.log(`queue: NATS JetStream at ${where}, stream ${stream}`);
        void watchStatus(nc);
        return;
      } catch (err) {
        lastProblem = describeError(err);
        failures++;
        if (failures === 1 || failures % 30 === 0) {
          o.log(`queue: cannot use NATS JetStream at ${where} (${lastProblem}); trying again`);
        }
        await nc?.close().catch(() => undefined);
        nc = undefined;
        await sleep(Math.min(5_000, 250 * 2 ** Math.min(failures, 5)), closing.signal);
      }
    }
  })();

  /** Says when the connection drops and comes back; the stream is checked again then. */
  async function watchStatus(conn: NatsConnection): Promise<void> {
    for await (const s of conn.status()) {
      if (s.type === 'disconnect') {
        connected = false;
        lastProblem = `disconnected from ${s.server}`;
        o.log(`queue: ${lastProblem}; reconnecting (events are refused meanwhile)`);
      } else if (s.type === 'reconnect') {
        connected = true;
        o.log(`queue: reconnected to ${s.server}`);
        await ensureStream().catch((err: unknown) =>
          o.log(`queue: the stream ${stream} could not be checked: ${describeError(err)}`),
        );
      }
    }
  }

  async function enqueue(fn: EddyFunction, event: DeliveryEvent): Promise<Enqueued> {
    const labels = {
      namespace: fn.metadata.namespace ?? '',
      function: fn.metadata.name ?? '',
      trigger: event.trigger ?? 'async',
    };
    if (!js || !streamReady || !connected || nc?.isClosed()) {
      published.inc({ ...labels, outcome: 'refused' });
      throw gatewayError(
        'QueueUnavailable',
        `the event queue (NATS JetStream at ${where}) is not reachable (${lastProblem}): nothing was accepted; send it again`,
        1,
      );
    }
    const h = natsHeaders();
    const meta: EventHeader = {
      id: event.id,
      type: event.type,
      source: event.source,
      time: event.time,
      ...(event.trigger ? { trigger: event.trigger } : {}),
      headers: event.headers,
      acceptedAs: event.acceptedAs ?? acceptanceSuffix(),
    };
    h.set(eventHeader, JSON.stringify(meta));
    const started = performance.now();
    try {
      const ack = await js.publish(subjectOf(stream, fn), event.body, {
        // One function's copy of one event: a second publish within the window is dropped.
        msgID: `${keyOf(fn)}/${event.trigger ?? 'async'}/${event.id}`,
        headers: h,
        timeout: publishTimeoutMs,
      });
      publishSeconds.observe((performance.now() - started) / 1000);
      published.inc({ ...labels, outcome: ack.duplicate ? 'duplicate' : 'accepted' });
      return { duplicate: ack.duplicate };
    } catch (err) {
      published.inc({ ...labels, outcome: 'refused' });
      const why = describeError(err);
      if (/maximum (bytes|messages)|insufficient resources/i.test(why)) {
        throw gatewayError(
          'Throttled',
          `the event queue (stream ${stream}) is full: ${why}; slow down and send it again`,
          5,
        );
      }
      throw gatewayError(
        'QueueUnavailable',
        `the event queue (NATS JetStream at ${where}) did not acknowledge the event within ${publishTimeoutMs} ms (${why}): nothing was accepted; send it again`,
        1,
      );
    }
  }

  async function consume(c: ConsumeOptions): Promise<void> {
    const ackWaitMs = c.ackWaitMs ?? 30_000;
    const drainMs = c.drainMs ?? 25_000;
    const backoff = {
      baseDelayMs: c.baseDelayMs ?? 1_000,
      maxDelayMs: 60_000,
      random: Math.random,
    };
    /** In-hand messages: their attempts end with `handing` (shutdown after the drain). */
    const handing = new AbortController();
    const inHand = new Set<Promise<void>>();
    /** Per message (stream sequence): tries the function's limit refused, and the last error. */
    const throttles = new Map<number, number>();
    const lastErrors = new Map<number, AttemptError>();
    interface Loop {
      fn: EddyFunction;
      deleted: boolean;
      done: Promise<void>;
      /** Ends the current round of pulls, so that the next one sees what changed. */
      interrupt?: () => void;
    }
    const loops = new Map<string, Loop>();

    const labelsOf = (fn: EddyFunction, trigger: string | undefined) => ({
      namespace: fn.metadata.namespace ?? '',
      function: fn.metadata.name ?? '',
      trigger: trigger ?? 'async',
    });

    const forget = (seq: number) => {
      throttles.delete(seq);
      lastErrors.delete(seq);
    };

    /** One delivery of one message: ack, nak after a delay, or (unreadable) term. */
    async function handle(known: EddyFunction, msg: JsMsg): Promise<void> {
      const seq = msg.info.streamSequence;
      let meta: EventHeader;
      try {
        meta = JSON.parse(msg.headers?.get(eventHeader) ?? '') as EventHeader;
        if (typeof meta.id !== 'string') throw new Error('no event id');
      } catch (err) {
        c.log(
          `queue: message ${seq} on ${msg.subject} is not an Eddy event (${describeError(err)}); removed`,
        );
        msg.term('not an Eddy event');
        return;
      }
      const event: DeliveryEvent = {
        id: meta.id,
        type: meta.type,
        source: meta.source,
        time: meta.time,
        body: Buffer.from(msg.data),
        headers: meta.headers ?? {},
        ...(meta.trigger ? { trigger: meta.trigger } : {}),
        ...(typeof meta.acceptedAs === 'string' ? { acceptedAs: meta.acceptedAs } : {}),
      };
      // The Function as it is now: its retry policy and dead letter may have changed.
      const fn = c.store.get(known.metadata.namespace, known.metadata.name) ?? known;
      const labels = labelsOf(fn, event.trigger);
      const attempts = msg.info.deliveryCount;
      if (attempts > 1) redelivered.inc(labels);
      const policy = retryPolicy(fn);
      const acceptedAt = Number(msg.info.timestampNanos / 1e6) || Date.now();
      const parsed = Date.parse(event.time);
      const happenedAt = Number.isNaN(parsed) ? acceptedAt : parsed;
      const throttled = throttles.get(seq) ?? 0;
      // Word to the server while the message is held (an invocation, waiting for a replica, or
      // writing a dead letter), so that a long hold is not taken for a dead holder and the
      // message handed to another replica meanwhile.
      const holding = <T>(work: Promise<T>): Promise<T> => {
        const keepAlive = setInterval(() => msg.working(), Math.max(1_000, ackWaitMs / 3));
        return work.finally(() => clearInterval(keepAlive));
      };
      const toDeadLetter = async (condition: DeadLetterCondition, error: AttemptError) => {
        const out = await holding(
          c.sink.deadLetter(
            fn,
            {
              event,
              error,
              attempts,
              condition,
              firstAttemptAt: new Date(acceptedAt).toISOString(),
              lastAttemptAt: new Date().toISOString(),
            },
            handing.signal,
            { keep: { sends: 3 } },
          ),
        );
        if (out.outcome === 'interrupted') {
          c.metrics.interrupted.inc(labels);
          const delay = Math.min(60_000, backoff.baseDelayMs * 2 ** Math.min(attempts, 6));
          c.log(
            `queue: event ${event.id} of ${keyOf(fn)} is kept in the queue: its dead letter could not be written; trying again in ${Math.round(delay / 1000)} s`,
          );
          msg.nak(delay);
          return;
        }
        forget(seq);
        msg.ack();
      };
      // Redelivered after its last try (its holder stopped before the dead letter), or too old.
      if (attempts - throttled > policy.maxAttempts + 1) {
        await toDeadLetter(
          'RetriesExhausted',
          lastErrors.get(seq) ?? {
            errorType: 'RetriesExhausted',
            errorMessage: `${attempts - 1} deliveries did not succeed`,
          },
        );
        return;
      }
      if (attempts > 1 && Date.now() - happenedAt >= policy.maxEventAgeMs) {
        await toDeadLetter(
          'EventAgeExceeded',
          lastErrors.get(seq) ?? {
            errorType: 'EventAgeExceeded',
            errorMessage: `the event is older than maxEventAgeSeconds (${policy.maxEventAgeMs / 1000})`,
          },
        );
        return;
      }
      const result = await holding(c.sink.invoke(fn, event, handing.signal));
      if (result.ok) {
        forget(seq);
        msg.ack();
        return;
      }
      if (handing.signal.aborted) {
        c.metrics.interrupted.inc(labels);
        c.log(
          `queue: delivery ${attempts} of event ${event.id} to ${keyOf(fn)} was interrupted (the gateway is stopping); it goes back to the queue`,
        );
        msg.nak();
        return;
      }
      const tries = attempts;
      const throttledNow = throttled + (result.throttled ? 1 : 0);
      // What another replica settles is never forgotten here: held to a bound instead.
      if (lastErrors.size >= 10_000) {
        throttles.clear();
        lastErrors.clear();
      }
      if (result.throttled) throttles.set(seq, throttledNow);
      lastErrors.set(seq, result.error);
      const next = afterFailure({
        retryable: result.retryable,
        attempts: tries,
        throttles: throttledNow,
        policy,
        ageMs: Date.now() - happenedAt,
        backoff,
      });
      c.log(
        failedAttemptLine({
          what: eventDescription(fn, event),
          attempt: tries,
          error: result.error,
          next,
        }),
      );
      if ('condition' in next) {
        await toDeadLetter(next.condition, result.error);
        return;
      }
      c.metrics.retries.inc(labels);
      msg.nak(next.delayMs);
    }

    /** Keeps one Function's consumer and takes its messages until stopped or drained. */
    async function run(key: string): Promise<void> {
      let failures = 0;
      while (!c.signal.aborted) {
        const entry = loops.get(key)!;
        try {
          await connecting;
          if (!jsm || !js) return;
          const cfg = consumerConfig(entry.fn, stream, ackWaitMs);
          if (entry.deleted) {
            // Drained by every replica: once nothing waits and nothing is in hand, it goes.
            const info = await jsm.consumers.info(stream, cfg.durable_name!).catch(() => undefined);
            if (!info || (info.num_pending === 0 && info.num_ack_pending === 0)) {
              await jsm.consumers.delete(stream, cfg.durable_name!).catch(() => undefined);
              if (loops.get(key) === entry) loops.delete(key);
              return;
            }
          } else {
            await ensureConsumer(jsm, cfg);
          }
          const consumer = await js.consumers.get(stream, cfg.durable_name);
          const messages = await consumer.consume({
            max_messages: Math.min(maxInFlight(entry.fn), 256),
            expires: entry.deleted ? 2_000 : 30_000,
          });
          const stop = () => void messages.stop();
          entry.interrupt = stop;
          // A consumer or stream gone (NATS lost its store: an emptyDir restarted) is made again
          // on the next round, rather than waited for.
          void (async () => {
            for await (const s of messages.status()) {
              if (
                s.type === 'consumer_not_found' ||
                s.type === 'consumer_deleted' ||
                s.type === 'stream_not_found'
              ) {
                stop();
                return;
              }
            }
          })().catch(() => undefined);
          c.signal.addEventListener('abort', stop, { once: true });
          // A deleted Function drains what is left, then stops to delete the consumer.
          const drainCheck = entry.deleted ? setInterval(stop, 2_000) : undefined;
          try {
            for await (const msg of messages) {
              failures = 0;
              const p = handle(entry.fn, msg).catch((err: unknown) => {
                c.log(`queue: message ${msg.seq} of ${key} failed: ${describeError(err)}`);
                msg.nak(1_000);
              });
              inHand.add(p);
              void p.finally(() => inHand.delete(p));
            }
          } finally {
            entry.interrupt = undefined;
            c.signal.removeEventListener('abort', stop);
            if (drainCheck) clearInterval(drainCheck);
          }
        } catch (err) {
          failures++;
          if (failures === 1 || failures % 20 === 0) {
            c.log(`queue: consumer of ${key}: ${describeError(err)}; trying again`);
          }
          await sleep(Math.min(5_000, 200 * 2 ** Math.min(failures, 5)), c.signal);
        }
      }
    }

    const start = (fn: EddyFunction) => {
      const key = keyOf(fn);
      const entry = loops.get(key);
      if (entry) {
        const changed = maxInFlight(entry.fn) !== maxInFlight(fn);
        const wasDeleted = entry.deleted;
        entry.fn = fn;
        entry.deleted = false;
        // A Function made again while its old consumer drained, or one whose limit changed
        // (maxReplicas, concurrency): the next round of pulls brings the consumer up to date.
        if (wasDeleted || changed) entry.interrupt?.();
        return;
      }
      const fresh: Loop = { fn, deleted: false, done: Promise.resolve() };
      loops.set(key, fresh);
      fresh.done = run(key);
    };
    for (const fn of c.store.list()) if (!fn.metadata.deletionTimestamp) start(fn);
    const unsubscribe = c.store.onChange((fn, deleted) => {
      if (c.signal.aborted) return;
      if (!deleted) {
        start(fn);
        return;
      }
      const entry = loops.get(keyOf(fn));
      if (!entry) return;
      entry.fn = fn;
      entry.deleted = true;
      entry.interrupt?.();
    });
    await aborted(c.signal);
    unsubscribe();
    await Promise.all([...loops.values()].map((l) => l.done));
    // What is in hand gets its chance to finish; the rest goes back to the queue.
    const waited = new AbortController();
    const drained = await Promise.race([
      Promise.all([...inHand]).then(() => true),
      sleep(drainMs, waited.signal).then(() => false),
    ]);
    // The timer goes with the wait: a pending one would keep the process alive.
    waited.abort();
    if (!drained) handing.abort();
    await Promise.all([...inHand]);
  }

  /** The consumer as the Function wants it: made, or its limits brought up to date. */
  async function ensureConsumer(m: JetStreamManager, cfg: Partial<ConsumerConfig>): Promise<void> {
    const name = cfg.durable_name!;
    const info = await m.consumers.info(stream, name).catch((err: unknown) => {
      if (err instanceof JetStreamApiError && err.code === 10014) return undefined;
      throw err;
    });
    if (!info) {
      await m.consumers.add(stream, cfg);
      return;
    }
    if (
      info.config.max_ack_pending !== cfg.max_ack_pending ||
      info.config.ack_wait !== cfg.ack_wait
    ) {
      await m.consumers.update(stream, name, {
        max_ack_pending: cfg.max_ack_pending!,
        ack_wait: cfg.ack_wait!,
      });
    }
  }

  return {
    kind: 'jetstream',
    enqueue,
    consume,
    async close() {
      closing.abort();
      await connecting;
      // Everything published has its acknowledgement and every consumer has stopped: close
      // (a drain would wait for the consumers' pull subscriptions to time out).
      await nc?.close().catch(() => undefined);
    },
  };
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}

function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) =>
    signal.addEventListener('abort', () => resolve(), { once: true }),
  );
}
