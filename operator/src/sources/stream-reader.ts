/**
 * The machinery Lambda's stream event source mappings share, for Kinesis and DynamoDB Streams:
 * for every trigger of the kind, one consumer per shard (list shards, get an iterator, read), as
 * Lambda polls. A shard's batches go to the function one at a time, in order; the shard waits
 * while a batch is retried. The children of a split or merge are read only once their parents
 * reached their end. Records no filter passes are skipped. Progress (the last sequence number
 * done per shard, which stream it belongs to, and when a LATEST trigger first started) is saved
 * at most once a second and resumed after a restart or a change of leader. Leader-only: one
 * reader per shard cluster-wide. What differs between the two services is a `StreamKind`.
 */
import { Gauge, type Registry } from 'prom-client';
import { setTimeout as wait } from 'node:timers/promises';
import type { EddyFunction, StreamTriggerBase, Trigger } from '../api/types.js';
import { triggerProblem } from '../api/validate.js';
import { describeError } from '../errors.js';
import { failedAttemptLine, type AttemptResult, type DeliveryEvent } from '../gateway/delivery.js';
import { CheckpointWriter } from './checkpoint-writer.js';
import type { Checkpoint } from './checkpoints.js';
import {
  classifyError,
  connectionFingerprint,
  problemBackoffMs,
  resolveConnection,
  SourceProblem,
  type ResolvedConnection,
} from './connection.js';
import { checkpointName } from './checkpoints.js';
import {
  EventFilter,
  filteredRecordsCounter,
  type FilteredCounter,
  type MatchOptions,
} from './event-filter.js';
import {
  batchDue,
  batchEvent,
  batchLength,
  deliverBatch,
  streamSettings,
  kinesisSettings,
  type BatchDeps,
  type KinesisSettings,
  type ShapedRecord,
  type StreamOrigin,
} from './kinesis-batch.js';
import type { SourceContext, SourceFactory } from './source.js';

/** A client of a stream service: whatever the kind's calls need, and a way to let it go. */
export interface StreamClient {
  destroy(): void;
}

/** The stream a trigger reads, as its service describes it. */
export interface StreamDescription {
  /** Its ARN: every record's `eventSourceARN` and the batch's CloudEvent source. */
  arn: string;
  /** Names the stream its sequence numbers belong to; saved with the checkpoint. */
  stream: string;
  /** When it was made, if the service says: a stream made again under one name is another. */
  created?: string;
  /** How long it keeps records (hours), if the service says. */
  retentionHours?: number;
}

export interface ShardInfo {
  id: string;
  /** Its parents (a split has one, a merge two): read to their end before it. */
  parents: string[];
}

/** Where an iterator starts. */
export type Position =
  | { type: 'TRIM_HORIZON' }
  | { type: 'AT_TIMESTAMP'; at: Date }
  | { type: 'AFTER_SEQUENCE_NUMBER'; sequenceNumber: string };

/** A record as read, before it is shaped for the function. */
export interface ReadRecord {
  sequenceNumber: string;
  /** Milliseconds since the epoch. */
  arrivedAt: number;
  /** What filter patterns are matched against. */
  filterView(origin: StreamOrigin): unknown;
  shape(origin: StreamOrigin): ShapedRecord;
}

export interface ReadResult {
  records: ReadRecord[];
  /** The next iterator; none once the shard was read to its end. */
  next?: string;
  /** How far behind the stream's newest record this read was. */
  behindMs: number;
}

/** What differs between Kinesis and DynamoDB Streams. */
export interface StreamKind<C extends StreamClient, T extends StreamTriggerBase> {
  /** The trigger's field (`kinesis`, `dynamodb`): logs, the runnable's name, status messages. */
  name: 'kinesis' | 'dynamodb';
  /** This kind's part of a trigger, if it is one of this kind. */
  spec(t: Trigger): T | undefined;
  /** Names the stream in messages, never with credentials. */
  what(t: T): string;
  /** The iterator age gauge's name and help. */
  ageMetric: { name: string; help: string };
  /** The CloudEvent type of a batch. */
  eventType: string;
  /** What the dead letter of records given up on holds; by default, their batch's event. */
  deadLetterEvent?(
    records: readonly ShapedRecord[],
    o: StreamOrigin,
    trigger: string,
  ): DeliveryEvent;
  /** How filter patterns read this kind's records. */
  matchOptions: MatchOptions;
  /**
   * Whether the service gives AT_TIMESTAMP iterators. Without, a shard that would start at a
   * time is read from its oldest record and what came before that time is skipped.
   */
  timestamps: boolean;
  /**
   * With fewer records than this waiting, the next read starts while a batch is delivered, so
   * reading and invoking overlap (Lambda reads ahead too); still one batch in flight per shard,
   * and the checkpoint moves only as batches are done. What is read ahead is held besides the
   * batch: one read at most. Absent: a shard reads only between batches.
   */
  readAhead?: number;
  /** Error names that mean "slow down, the iterator stays good". */
  throttles: ReadonlySet<string>;
  makeClient(conn: ResolvedConnection): C;
  describe(c: C, t: T, signal: AbortSignal): Promise<StreamDescription>;
  listShards(c: C, stream: StreamDescription, signal: AbortSignal): Promise<ShardInfo[]>;
  iterator(
    c: C,
    stream: StreamDescription,
    shardId: string,
    from: Position,
    signal: AbortSignal,
  ): Promise<string | undefined>;
  read(c: C, iterator: string, signal: AbortSignal): Promise<ReadResult>;
}

export interface StreamSourceOptions<C extends StreamClient> {
  /** Wait before reading again a shard that had nothing new. Default 1 s, as Lambda polls. */
  idlePollMs?: number;
  /** Least time between two reads of one shard: Kinesis allows 5 a second. Default 200 ms. */
  minPollMs?: number;
  /** How often shards are listed again to find those a reshard made. Default 10 s. */
  shardSyncMs?: number;
  /** First wait before a failed batch is retried, doubling up to `retryMaxDelayMs` (60 s). Default 1 s. */
  retryBaseDelayMs?: number;
  retryMaxDelayMs?: number;
  /** First wait before a trigger with a problem is tried again, doubling up to 60 s. Default 1 s. */
  problemBaseMs?: number;
  /** Checkpoints are saved at most this often. Default 1 s. */
  checkpointIntervalMs?: number;
  /** Longest wait for one call to the service; longer, and it is aborted and retried. Default 30 s. */
  callTimeoutMs?: number;
  /**
   * At an endpoint (a Kinesis-compatible server), longest wait for an AT_TIMESTAMP iterator:
   * kinesalite answers one only once the shard holds a record from then on. Default 2 s.
   */
  atTimestampWaitMs?: number;
  /** Longest wait for the checkpoint's last save as the consumer stops (tried twice). Default 5 s. */
  finalSaveTimeoutMs?: number;
  /** Makes the client for a connection (tests give a fake one). */
  makeClient?: (conn: ResolvedConnection) => C;
}

type Settings<C extends StreamClient> = Required<Omit<StreamSourceOptions<C>, 'makeClient'>> &
  Pick<StreamSourceOptions<C>, 'makeClient'>;

const defaults: Settings<StreamClient> = {
  idlePollMs: 1_000,
  minPollMs: 200,
  shardSyncMs: 10_000,
  retryBaseDelayMs: 1_000,
  retryMaxDelayMs: 60_000,
  problemBaseMs: 1_000,
  checkpointIntervalMs: 1_000,
  callTimeoutMs: 30_000,
  atTimestampWaitMs: 2_000,
  finalSaveTimeoutMs: 5_000,
};

/** A shard's checkpoint once it was read to its end: its children may be read. */
export const shardEnd = 'SHARD_END';
/** The checkpoint's key naming the stream its sequence numbers belong to. */
const streamKey = 'stream';
/**
 * With the name, which stream: a stream deleted and made again under the same name repeats its
 * shard ids, and the old sequence numbers mean nothing in it.
 */
const createdKey = 'streamCreated';
/** When a LATEST trigger first started: shards with no position yet start at this moment. */
const startedKey = 'startedAt';
const metaKeys = new Set([streamKey, createdKey, startedKey]);

type AgeGauge = Gauge<'namespace' | 'function' | 'trigger' | 'shard'>;
const gauges = new WeakMap<Registry, Map<string, AgeGauge>>();

/** Registered once per registry and name, however many times a source is made for it. */
function iteratorAgeGauge(registry: Registry, metric: { name: string; help: string }): AgeGauge {
  let byName = gauges.get(registry);
  if (!byName) gauges.set(registry, (byName = new Map<string, AgeGauge>()));
  let gauge = byName.get(metric.name);
  if (!gauge) {
    gauge = new Gauge({
      name: metric.name,
      help: metric.help,
      labelNames: ['namespace', 'function', 'trigger', 'shard'],
      registers: [registry],
    });
    byName.set(metric.name, gauge);
  }
  return gauge;
}

/** A stream source: one leader-only runnable that follows the Functions' triggers of `kind`. */
export function streamSource<C extends StreamClient, T extends StreamTriggerBase>(
  kind: StreamKind<C, T>,
  options: StreamSourceOptions<C> = {},
): SourceFactory {
  const settings = { ...defaults, ...options } as Settings<C>;
  return (ctx) => [
    {
      name: kind.name,
      leaderOnly: true,
      run: (signal) => followTriggers(ctx, kind, settings, signal),
    },
  ];
}

interface Wanted<T> {
  fn: EddyFunction;
  trigger: Trigger;
  spec: T;
  index: number;
  fingerprint: string;
}

interface Running {
  fn: EddyFunction;
  trigger: string;
  fingerprint: string;
  stop: AbortController;
  done: Promise<void>;
}

const fnKeyOf = (fn: EddyFunction) => `${fn.metadata.namespace}/${fn.metadata.name}`;

/** Starts, restarts and stops a consumer per trigger of the kind as Functions change. */
async function followTriggers<C extends StreamClient, T extends StreamTriggerBase>(
  ctx: SourceContext,
  kind: StreamKind<C, T>,
  o: Settings<C>,
  signal: AbortSignal,
): Promise<void> {
  const gauge = iteratorAgeGauge(ctx.metrics, kind.ageMetric);
  const filtered = filteredRecordsCounter(ctx.metrics);
  const running = new Map<string, Running>();
  let changed = true;
  let wake: (() => void) | undefined;
  const unsubscribe = ctx.store.onChange(() => {
    changed = true;
    wake?.();
  });
  const onAbort = () => wake?.();
  signal.addEventListener('abort', onAbort, { once: true });

  /** Per trigger: the stop (and clean-up) of its last consumer, which the next one waits for. */
  const settling = new Map<string, Promise<void>>();

  const stillWanted = (r: Running) =>
    ctx.store
      .get(r.fn.metadata.namespace, r.fn.metadata.name)
      ?.spec.triggers?.some((t) => t.name === r.trigger && kind.spec(t) !== undefined) ?? false;

  const retire = async (r: Running): Promise<void> => {
    await r.done;
    // Looked at once it stopped: the trigger may be back by now.
    if (stillWanted(r)) return;
    ctx.states.delete(fnKeyOf(r.fn), r.trigger);
    const now = ctx.store.get(r.fn.metadata.namespace, r.fn.metadata.name);
    // The trigger went from a Function that stays: its progress goes too. (A deleted
    // Function's goes with it: its ConfigMaps are owned by it.)
    if (now && now.metadata.uid === r.fn.metadata.uid) {
      await ctx.checkpoints
        .remove(now, r.trigger)
        .catch((err: unknown) =>
          ctx.log(
            `${kind.name}: forgetting the checkpoint of ${fnKeyOf(now)} trigger ${r.trigger} failed: ${describeError(err)}`,
          ),
        );
    }
  };

  const sync = () => {
    const wanted = new Map<string, Wanted<T>>();
    for (const fn of ctx.store.list()) {
      (fn.spec.triggers ?? []).forEach((trigger, index) => {
        const spec = kind.spec(trigger);
        if (!spec) return;
        wanted.set(`${fnKeyOf(fn)}/${trigger.name}`, {
          fn,
          trigger,
          spec,
          index,
          fingerprint: JSON.stringify([fn.metadata.uid ?? '', spec]),
        });
      });
    }
    for (const [key, r] of running) {
      if (wanted.get(key)?.fingerprint === r.fingerprint) continue;
      r.stop.abort();
      running.delete(key);
      // Stopping may take as long as the batch in flight: no other trigger waits for it.
      const settled = retire(r);
      settling.set(key, settled);
      void settled.finally(() => {
        if (settling.get(key) === settled) settling.delete(key);
      });
    }
    for (const [key, w] of wanted) {
      if (running.has(key) || signal.aborted) continue;
      const stop = new AbortController();
      const own = AbortSignal.any([signal, stop.signal]);
      // A changed trigger's new consumer reads what the old one saved as it stopped.
      const before = settling.get(key) ?? Promise.resolve();
      running.set(key, {
        fn: w.fn,
        trigger: w.trigger.name,
        fingerprint: w.fingerprint,
        stop,
        done: before.then(() => keepConsuming(ctx, kind, o, { gauge, filtered }, w, own, signal)),
      });
    }
  };

  try {
    while (!signal.aborted) {
      if (changed) {
        changed = false;
        sync();
        continue;
      }
      await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
    }
  } finally {
    unsubscribe();
    signal.removeEventListener('abort', onAbort);
    for (const r of running.values()) r.stop.abort();
    // Each consumer saves its checkpoint as it stops.
    await Promise.all([...running.values()].map((r) => r.done));
    await Promise.all(settling.values());
  }
}

/** Resolves after `ms`: true, or false as soon as `signal` aborts. */
async function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  if (signal.aborted) return false;
  await wait(Math.max(0, ms), undefined, { signal }).catch(() => undefined);
  return !signal.aborted;
}

/** A consumer that failed unexpectedly starts again (with backoff) rather than going quiet. */
async function keepConsuming<C extends StreamClient, T extends StreamTriggerBase>(
  ctx: SourceContext,
  kind: StreamKind<C, T>,
  o: Settings<C>,
  metrics: Metrics,
  w: Wanted<T>,
  signal: AbortSignal,
  /** Aborts with the source itself: only then is a batch in flight cut off. */
  shutdown: AbortSignal,
): Promise<void> {
  // A trigger the API check refuses (an invalid filter pattern) is not read until it changes.
  const invalid = triggerProblem(w.trigger);
  if (invalid) {
    ctx.states.set(fnKeyOf(w.fn), w.trigger.name, {
      ready: false,
      reason: 'InvalidTrigger',
      message: invalid,
    });
    await new Promise((resolve) => {
      if (signal.aborted) resolve(undefined);
      else signal.addEventListener('abort', resolve, { once: true });
    });
    return;
  }
  for (let failures = 1; !signal.aborted; failures++) {
    try {
      await new TriggerConsumer(ctx, kind, o, metrics, w, signal, shutdown).run();
      return;
    } catch (err) {
      const message = `the consumer failed and restarts: ${describeError(err)}`;
      ctx.log(`${kind.name}: ${fnKeyOf(w.fn)} trigger ${w.trigger.name}: ${message}`);
      ctx.states.set(fnKeyOf(w.fn), w.trigger.name, {
        ready: false,
        reason: 'SourceError',
        message,
      });
      await sleep(problemBackoffMs(failures, o.problemBaseMs), signal);
    }
  }
}

/** The metrics every consumer of the source updates. */
interface Metrics {
  gauge: AgeGauge;
  filtered: FilteredCounter;
}

/** Where a shard starts when it has no checkpoint. */
type Start = Exclude<Position, { type: 'AFTER_SEQUENCE_NUMBER' }>;

/**
 * A signal for one call: aborted with `signal`, or after `ms`. `done` must be called once the
 * call settled, so that neither the timer nor the listener outlives it.
 */
export function callSignal(signal: AbortSignal, ms: number): { signal: AbortSignal; done(): void } {
  const c = new AbortController();
  const onAbort = () => c.abort(signal.reason);
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  const timer = setTimeout(() => {
    const err = new Error(`no answer within ${ms / 1000} s`);
    err.name = 'TimeoutError';
    c.abort(err);
  }, ms);
  return {
    signal: c.signal,
    done: () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', onAbort);
    },
  };
}

/** The key of the trigger's problem with the stream itself (describe, list), not one shard's. */
const streamProblem = ' stream';
/** The key of the trigger's problem with its checkpoint. */
const checkpointProblem = ' checkpoint';
/** The prefix of the key of a shard's problem with its dead letter. */
const deadLetterProblem = ' dead letter ';

/** One trigger: its stream's shards, each read by its own loop, and the trigger's checkpoint. */
class TriggerConsumer<C extends StreamClient, T extends StreamTriggerBase> {
  private readonly t: T;
  private readonly name: string;
  private readonly key: string;
  private s: KinesisSettings;
  /** Names the stream in messages, never with credentials. */
  private readonly what: string;
  private readonly where: string;
  private client: C | undefined;
  /** Clients with the reads that use each: an old one goes once its last read settled. */
  private readonly inUse = new Map<C, number>();
  private clientFingerprint = '';
  /** After a problem the connection is resolved again: the Secret may have been fixed. */
  private stale = true;
  /** What keeps the trigger from being ready, per shard (and for the stream and checkpoint). */
  private readonly problems = new Map<string, SourceProblem>();
  private writer: CheckpointWriter | undefined;
  /** Where a shard with no position starts (LATEST is pinned to the moment the trigger started). */
  private start: Start = { type: 'TRIM_HORIZON' };
  private readonly gauge: AgeGauge;
  /** Lambda's event filtering: records no filter passes are skipped and checkpointed. */
  private readonly filter: EventFilter;

  constructor(
    private readonly ctx: SourceContext,
    private readonly kind: StreamKind<C, T>,
    private readonly o: Settings<C>,
    private readonly metrics: Metrics,
    private readonly w: Wanted<T>,
    /** Stops the consumer: no further reads, retries or waits. */
    private readonly signal: AbortSignal,
    /**
     * Cuts off a batch in flight, which `signal` lets finish and checkpoint (a changed trigger's
     * next consumer starts after it): the source is stopping.
     */
    private readonly shutdown: AbortSignal,
  ) {
    this.t = w.spec;
    this.gauge = metrics.gauge;
    this.filter = new EventFilter(
      (this.t.filterCriteria?.filters ?? []).map((f) => f.pattern),
      kind.matchOptions,
    );
    this.name = w.trigger.name;
    this.key = fnKeyOf(w.fn);
    this.s = kinesisSettings(this.t);
    const region = this.t.connection.region ?? 'us-east-1';
    this.what = `${kind.what(this.t)} at ${safeEndpoint(this.t.connection.endpoint) ?? `AWS ${region}`}`;
    this.where = `trigger ${this.name} (spec.triggers[${w.index}].${kind.name}.connection)`;
  }

  /** The Function as it is now (its dead letter, its checkpoint's owner). */
  private fn(): EddyFunction {
    return this.ctx.store.get(this.w.fn.metadata.namespace, this.w.fn.metadata.name) ?? this.w.fn;
  }

  private log(message: string): void {
    this.ctx.log(`${this.kind.name}: ${this.key} trigger ${this.name}: ${message}`);
  }

  /** Ready once no shard, nor the stream or the checkpoint, has a problem left. */
  private report(): void {
    const [p] = this.problems.values();
    if (!p) {
      this.ctx.states.set(this.key, this.name, { ready: true });
      return;
    }
    this.ctx.states.set(this.key, this.name, {
      ready: false,
      reason: p.reason,
      message: p.message,
    });
  }

  private healthy(key: string): void {
    if (this.problems.delete(key) || this.problems.size === 0) this.report();
  }

  private problem(key: string, err: unknown): void {
    const p = classifyError(err, this.what, 'StreamNotFound');
    // Logged when it is new for this shard (or the stream, or the checkpoint), not on each retry.
    if (this.problems.get(key)?.message !== p.message) this.log(`${p.reason}: ${p.message}`);
    this.problems.set(key, p);
    // A new client helps with the stream, not with the checkpoint or a dead letter.
    if (key !== checkpointProblem && !key.startsWith(deadLetterProblem)) this.stale = true;
    this.report();
  }

  /** Names the checkpoint and what the operator needs to keep it. */
  private checkpointError(doing: string, err: unknown): SourceProblem {
    const fn = this.fn();
    return new SourceProblem(
      'SourceError',
      `${doing} the checkpoint ConfigMap ${fn.metadata.namespace}/${checkpointName(fn, this.name)} failed: the operator needs get, create and patch on configmaps in namespace ${fn.metadata.namespace} (${describeError(err)})`,
    );
  }

  private async connect(): Promise<C> {
    if (this.client && !this.stale) return this.client;
    const conn = await resolveConnection(
      this.ctx.secrets,
      this.fn(),
      this.t.connection,
      this.where,
    );
    this.stale = false;
    const fingerprint = connectionFingerprint(conn);
    if (this.client && fingerprint === this.clientFingerprint) return this.client;
    const old = this.client;
    this.client = this.o.makeClient ? this.o.makeClient(conn) : this.kind.makeClient(conn);
    this.inUse.set(this.client, 0);
    this.clientFingerprint = fingerprint;
    // An older client still in use by another shard's read goes once that read settled.
    if (old && this.inUse.get(old) === 0) {
      this.inUse.delete(old);
      old.destroy();
    }
    return this.client;
  }

  /** One call to the service, bounded by `timeoutMs` (`callTimeoutMs`). */
  private async send<R>(
    call: (c: C, signal: AbortSignal) => Promise<R>,
    timeoutMs = this.o.callTimeoutMs,
  ): Promise<R> {
    const c = await this.connect();
    this.inUse.set(c, (this.inUse.get(c) ?? 0) + 1);
    const bounded = callSignal(this.signal, timeoutMs);
    try {
      return await call(c, bounded.signal);
    } catch (err) {
      if (bounded.signal.aborted && !this.signal.aborted) {
        const timeout = new Error(`no answer within ${timeoutMs / 1000} s`);
        timeout.name = 'TimeoutError';
        throw timeout;
      }
      throw err;
    } finally {
      bounded.done();
      const left = (this.inUse.get(c) ?? 1) - 1;
      if (left > 0 || c === this.client) this.inUse.set(c, left);
      else {
        this.inUse.delete(c);
        c.destroy();
      }
    }
  }

  /** Repeats `call` with backoff, reporting each failure as the trigger's problem `key`. */
  private async retrying<R>(key: string, call: () => Promise<R>): Promise<R | undefined> {
    for (let failures = 1; !this.signal.aborted; failures++) {
      try {
        const out = await call();
        this.healthy(key);
        return out;
      } catch (err) {
        if (this.signal.aborted) return undefined;
        this.problem(key, err);
        await sleep(problemBackoffMs(failures, this.o.problemBaseMs), this.signal);
      }
    }
    return undefined;
  }

  async run(): Promise<void> {
    try {
      const stream = await this.retrying(streamProblem, () =>
        this.send((c, abortSignal) => this.kind.describe(c, this.t, abortSignal)),
      );
      if (!stream) return;
      this.s = streamSettings(this.s, stream.retentionHours);
      const saved = await this.retrying(checkpointProblem, () =>
        this.ctx.checkpoints.load(this.fn(), this.name).catch((err: unknown) => {
          throw this.checkpointError('Reading', err);
        }),
      );
      if (!saved) return;
      const created = stream.created;
      // Sequence numbers of another stream (the trigger was pointed elsewhere, or the stream was
      // deleted and made again under its name) mean nothing here.
      const resuming =
        saved[streamKey] === stream.stream &&
        (saved[createdKey] === undefined || created === undefined || saved[createdKey] === created);
      const initial: Checkpoint = resuming ? { ...saved } : { [streamKey]: stream.stream };
      if (created !== undefined) initial[createdKey] = created;
      this.start = this.startingPosition(initial);
      this.writer = new CheckpointWriter(initial, {
        save: (data) =>
          this.ctx.checkpoints.save(this.fn(), this.name, data).catch((err: unknown) => {
            throw this.checkpointError('Saving', err);
          }),
        intervalMs: this.o.checkpointIntervalMs,
        log: (m) => this.log(m),
        onSaved: () => this.healthy(checkpointProblem),
        onError: (err) => this.problem(checkpointProblem, err),
      });
      // The stream's identity and start are saved at once, before any shard delivered.
      this.writer.touch();
      await this.followShards(stream, this.writer);
    } finally {
      await this.writer?.flush(this.o.finalSaveTimeoutMs);
      for (const c of this.inUse.keys()) c.destroy();
    }
  }

  private region(): string {
    return this.t.connection.region ?? 'us-east-1';
  }

  /**
   * Lists the shards now and then (and whenever one ends), and reads each shard whose parents
   * are done. A shard with no checkpoint starts at `startingPosition`: LATEST as the moment the
   * trigger first started, so that a restart neither replays nor skips; a shard made after that
   * moment (or after the AT_TIMESTAMP) starts at its oldest record, as AT_TIMESTAMP gives it. A
   * shard closed before then is read to its end at once, finding nothing.
   */
  private async followShards(stream: StreamDescription, writer: CheckpointWriter): Promise<void> {
    const reading = new Map<string, Promise<void>>();
    let wake: (() => void) | undefined;
    const onAbort = () => wake?.();
    this.signal.addEventListener('abort', onAbort, { once: true });
    try {
      while (!this.signal.aborted) {
        const shards = await this.retrying(streamProblem, () =>
          this.send((c, abortSignal) => this.kind.listShards(c, stream, abortSignal)),
        );
        if (!shards) break;
        const listed = new Set(shards.map((s) => s.id));
        // Shards that left the stream (their records expired) need no position any more.
        for (const id of Object.keys(writer.snapshot())) {
          if (!metaKeys.has(id) && !listed.has(id) && !reading.has(id)) writer.delete(id);
        }
        for (const shard of shards) {
          const id = shard.id;
          if (reading.has(id) || writer.get(id) === shardEnd) continue;
          const waiting = shard.parents.some((p) => listed.has(p) && writer.get(p) !== shardEnd);
          if (waiting) continue;
          const origin: StreamOrigin = {
            shardId: id,
            streamArn: stream.arn,
            region: this.region(),
            identity: `system:serviceaccount:${this.w.fn.metadata.namespace}:${this.w.fn.spec.serviceAccountName ?? 'default'}`,
          };
          reading.set(
            id,
            this.readShard(stream, origin, this.start, writer).finally(() => {
              reading.delete(id);
              // A shard read to its end has no problem left (one stopping keeps what it had).
              if (!this.signal.aborted) this.healthy(id);
              wake?.();
            }),
          );
        }
        let timer: NodeJS.Timeout | undefined;
        await new Promise<void>((resolve) => {
          wake = resolve;
          timer = setTimeout(resolve, this.o.shardSyncMs);
        });
        clearTimeout(timer);
        wake = undefined;
      }
    } finally {
      this.signal.removeEventListener('abort', onAbort);
      await Promise.all(reading.values());
    }
  }

  /** Where shards without a position start; a LATEST trigger's first start is noted in `data`. */
  private startingPosition(data: Checkpoint): Start {
    const type = this.t.startingPosition ?? 'TRIM_HORIZON';
    if (type === 'AT_TIMESTAMP') {
      const { startingTimestamp } = this.t as { startingTimestamp?: string };
      return { type, at: new Date(startingTimestamp ?? 0) };
    }
    if (type === 'LATEST') {
      const at = Date.parse(data[startedKey] ?? '');
      const startedAt = Number.isFinite(at) ? at : Date.now();
      data[startedKey] = new Date(startedAt).toISOString();
      return { type: 'AT_TIMESTAMP', at: new Date(startedAt) };
    }
    return { type: 'TRIM_HORIZON' };
  }

  /** Reads one shard to its end (or until stopped), delivering its batches in order. */
  private async readShard(
    stream: StreamDescription,
    origin: StreamOrigin,
    start: Start,
    writer: CheckpointWriter,
  ) {
    const { signal, o } = this;
    const s = this.s;
    const shardId = origin.shardId;
    const labels = {
      namespace: this.w.fn.metadata.namespace,
      function: this.w.fn.metadata.name,
      trigger: this.name,
      shard: shardId,
    };
    /** The oldest record not yet done, while a batch is delivered: the age the gauge shows. */
    let oldest: number | undefined;
    const showAge = () => {
      if (oldest !== undefined) this.gauge.set(labels, Math.max(0, Date.now() - oldest) / 1000);
    };
    const deps = this.batchDeps(origin, writer, (arrivedAt) => {
      oldest = arrivedAt;
      showAge();
    });
    const buffer: ShapedRecord[] = [];
    const saved = writer.get(shardId);
    /** The last record read: a new iterator starts after it. */
    let after = saved;
    let iterator: string | undefined;
    let ended = false;
    let nextReadAt = 0;
    /** When the first record of the batch being gathered was read. */
    let gathering: number | undefined;
    let failures = 0;
    /**
     * Without AT_TIMESTAMP iterators a shard that starts at a time is read from its oldest
     * record, and records from before that second are skipped (checkpointed, not delivered).
     */
    /** The records after the checkpoint expired: the shard goes on from its oldest record. */
    let trimmed = false;
    /** A read started while a batch was delivered, and when it started. */
    let ahead: Promise<ReadResult> | undefined;
    let aheadAt = 0;
    const readFrom = (it: string) =>
      this.send((c, abortSignal) => this.kind.read(c, it, abortSignal));
    const skipBefore =
      start.type === 'AT_TIMESTAMP' && !this.kind.timestamps
        ? Math.floor(start.at.getTime() / 1000) * 1000
        : undefined;
    try {
      while (!signal.aborted) {
        const due = batchDue(buffer, s, {
          gatheringSince: gathering ?? 0,
          now: Date.now(),
          shardEnded: ended,
        });
        if (due) {
          const batch = buffer.splice(0, batchLength(buffer, s.batchSize));
          // The next read starts while the batch is delivered: at once, or as soon as the least
          // time between reads allows, if the batch is still in flight then.
          const readAhead = () => {
            if (ahead !== undefined || iterator === undefined || ended || signal.aborted) return;
            aheadAt = Date.now();
            ahead = readFrom(iterator);
            // Its failure is met where it is awaited (or not at all when the shard stops).
            ahead.catch(() => undefined);
          };
          let aheadTimer: NodeJS.Timeout | undefined;
          if (
            this.kind.readAhead !== undefined &&
            ahead === undefined &&
            buffer.length < this.kind.readAhead
          ) {
            const waitMs = nextReadAt - Date.now();
            if (waitMs <= 0) readAhead();
            else aheadTimer = setTimeout(readAhead, waitMs);
          }
          oldest = batch[0]!.arrivedAt;
          showAge();
          const ticker = setInterval(showAge, 1_000);
          let delivered: boolean;
          try {
            delivered = await deliverBatch(batch, s, deps);
          } finally {
            clearTimeout(aheadTimer);
            clearInterval(ticker);
            oldest = undefined;
          }
          if (!delivered) return;
          // Records left over were read with the batch: their window runs from then.
          if (buffer.length === 0) gathering = undefined;
          continue;
        }
        if (ended) {
          writer.set(shardId, shardEnd);
          this.log(`${shardId} read to its end`);
          return;
        }
        const until = Math.min(
          nextReadAt,
          gathering === undefined ? Infinity : gathering + s.maxBatchingWindowMs,
        );
        if (!(await sleep(until - Date.now(), signal))) return;
        if (Date.now() < nextReadAt) continue;
        // Kinesis-compatible servers may hold an AT_TIMESTAMP iterator until a record comes.
        const byTime =
          iterator === undefined &&
          !after &&
          start.type === 'AT_TIMESTAMP' &&
          this.kind.timestamps &&
          this.t.connection.endpoint !== undefined;
        try {
          const from: Position = after
            ? { type: 'AFTER_SEQUENCE_NUMBER', sequenceNumber: after }
            : skipBefore !== undefined || trimmed
              ? { type: 'TRIM_HORIZON' }
              : start;
          iterator ??= await this.send(
            (c, abortSignal) => this.kind.iterator(c, stream, shardId, from, abortSignal),
            byTime ? Math.min(o.atTimestampWaitMs, o.callTimeoutMs) : undefined,
          );
          if (iterator === undefined) throw new Error(`no iterator for ${shardId}`);
          const started = ahead;
          ahead = undefined;
          const read = started ? aheadAt : Date.now();
          const out = await (started ?? readFrom(iterator));
          failures = 0;
          this.healthy(shardId);
          const behindMs = out.behindMs;
          this.gauge.set(labels, behindMs / 1000);
          const records = out.records;
          let skipped = 0;
          for (const r of records) {
            const early = skipBefore !== undefined && r.arrivedAt < skipBefore;
            if (early || (this.filter.active && !this.filter.matches(r.filterView(origin)))) {
              // Done with the record before it; with none pending, done at once.
              if (!early) skipped++;
              const last = buffer[buffer.length - 1];
              if (last) last.through = r.sequenceNumber;
              else writer.set(shardId, r.sequenceNumber);
              continue;
            }
            buffer.push(r.shape(origin));
          }
          if (skipped > 0) {
            const { shard: _, ...trigger } = labels;
            this.metrics.filtered.inc(trigger, skipped);
          }
          if (records.length > 0) {
            after = records[records.length - 1]!.sequenceNumber;
            // Records all filtered out start no batch.
            if (buffer.length > 0) gathering ??= Date.now();
          }
          iterator = out.next;
          if (!iterator) ended = true;
          const idle = records.length === 0 && behindMs === 0;
          nextReadAt = read + (idle ? o.idlePollMs : o.minPollMs);
        } catch (err) {
          if (signal.aborted) return;
          const name = (err as { name?: string }).name;
          if (byTime && name === 'TimeoutError') {
            // Nothing in the shard from then on yet: asked again, as an idle shard is read.
            nextReadAt = Date.now() + o.idlePollMs;
            continue;
          }
          failures++;
          if (name !== undefined && this.kind.throttles.has(name)) {
            // The iterator stays good for five minutes: kept, so that nothing is skipped.
            nextReadAt = Date.now() + problemBackoffMs(failures, o.minPollMs, 10_000);
            continue;
          }
          // A new iterator starts after the last record read or, before the first one, where
          // the shard started (never a new LATEST, which would skip what came meanwhile).
          iterator = undefined;
          if (name === 'ExpiredIteratorException') continue;
          if (name === 'TrimmedDataAccessException' && after !== undefined) {
            // The records after the last one done left the stream (a trigger stopped for
            // longer than its retention): what is left is read, as Lambda does.
            this.log(
              `${shardId}: the records after sequence number ${after} are no longer in the stream; reading on from its oldest record`,
            );
            after = undefined;
            trimmed = true;
            continue;
          }
          this.problem(shardId, err);
          nextReadAt = Date.now() + problemBackoffMs(failures, o.problemBaseMs);
        }
      }
    } finally {
      this.gauge.remove(labels);
    }
  }

  private batchDeps(
    origin: StreamOrigin,
    writer: CheckpointWriter,
    sending: (oldestArrivedAt: number) => void,
  ): BatchDeps {
    const { signal, ctx } = this;
    const iso = (ms: number) => new Date(ms).toISOString();
    const events = new WeakMap<readonly ShapedRecord[], DeliveryEvent>();
    return {
      invoke: async (records): Promise<AttemptResult> => {
        sending(records[0]!.arrivedAt);
        const { namespace, name } = this.w.fn.metadata;
        if (!ctx.store.get(namespace, name)) {
          // Deleted: this consumer is about to be stopped; nothing is sent or given up.
          if (!signal.aborted)
            await new Promise((resolve) =>
              signal.addEventListener('abort', resolve, { once: true }),
            );
          return {
            ok: false,
            error: { errorType: 'Stopped', errorMessage: `${namespace}/${name} was deleted` },
            retryable: true,
          };
        }
        return ctx.sink.invoke(
          this.fn(),
          batchEvent(records, origin, this.name, this.kind.eventType),
          this.shutdown,
        );
      },
      deadLetter: async (records, f) => {
        // The same event each time these records are tried again: one dead letter's name.
        let event = events.get(records);
        if (!event) {
          event = this.kind.deadLetterEvent
            ? this.kind.deadLetterEvent(records, origin, this.name)
            : batchEvent(records, origin, this.name, this.kind.eventType);
          events.set(records, event);
        }
        const out = await ctx.sink.deadLetter(
          this.fn(),
          {
            event,
            error: f.error,
            attempts: f.attempts,
            condition: f.condition,
            firstAttemptAt: iso(f.firstAttemptAt),
            lastAttemptAt: iso(f.lastAttemptAt),
          },
          signal,
        );
        if (out.outcome === 'interrupted') return 'stopped';
        const problem = `${deadLetterProblem}${origin.shardId}`;
        if (out.outcome === 'dropped' && this.fn().spec.deadLetter !== undefined) {
          // Not written: the records stay before the checkpoint and the shard waits for them.
          this.problem(
            problem,
            new SourceProblem(
              'SourceError',
              `${origin.shardId}: the dead letter of ${records.length} record(s) from sequence number ${records[0]!.sequenceNumber} could not be written (${out.reason}); the shard waits and tries again: check spec.deadLetter`,
            ),
          );
          return 'failed';
        }
        this.healthy(problem);
        if (out.outcome === 'dead-lettered') {
          this.log(
            `${records.length} record(s) of ${origin.shardId} from sequence number ${records[0]!.sequenceNumber} sent to the dead letter (${f.condition} after ${f.attempts} attempt(s), last error ${f.error.errorType}: ${f.error.errorMessage.replace(/\s*\n\s*/g, ' ')}); the shard moves on`,
          );
        }
        return 'sent';
      },
      failed: (records, attempt, error, next) =>
        this.log(
          failedAttemptLine({
            what: `${records.length} record(s) of ${origin.shardId} from sequence number ${records[0]!.sequenceNumber}`,
            attempt,
            error,
            next,
          }),
        ),
      checkpoint: (sequenceNumber) => writer.set(origin.shardId, sequenceNumber),
      sleep: (ms) => sleep(ms, signal),
      stopped: () => signal.aborted,
      now: Date.now,
      retryDelayMs: (n) => problemBackoffMs(n, this.o.retryBaseDelayMs, this.o.retryMaxDelayMs),
    };
  }
}

/** The endpoint without user or password, for messages. */
export function safeEndpoint(endpoint: string | undefined): string | undefined {
  if (!endpoint) return undefined;
  try {
    const url = new URL(endpoint);
    url.username = '';
    url.password = '';
    return url.toString().replace(/\/$/, '');
  } catch {
    return '(an endpoint that is not a URL)';
  }
}
