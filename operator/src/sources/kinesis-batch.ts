/**
 * A Kinesis batch, from records read off a shard to the end of its delivery: the records shaped
 * as Lambda's Kinesis event, the function's answer read as Lambda reads it (batch item failures),
 * and the stream retries Lambda makes (the shard waits meanwhile): bisect on error, retry limits,
 * record age, then the dead letter. No I/O here: the shard consumer supplies invoke, dead letter,
 * checkpoint and sleep.
 */
import type { StreamTriggerBase } from '../api/types.js';
import type { AttemptError, AttemptResult, DeliveryEvent } from '../gateway/delivery.js';
import { eventTypes, maxPayloadBytes } from '../../../runtime/src/contract/index.js';

/** A trigger's settings with the CRD's defaults applied. */
export interface KinesisSettings {
  batchSize: number;
  maxBatchingWindowMs: number;
  bisectOnError: boolean;
  /** -1: until the record expires from the stream. */
  maxRetryAttempts: number;
  /** -1: no limit (until the stream's retention, once `streamSettings` applied it). */
  maxRecordAgeMs: number;
  reportBatchItemFailures: boolean;
}

export function kinesisSettings<T extends StreamTriggerBase>(t: T): KinesisSettings {
  const int = (v: number | undefined, fallback: number, min: number, max: number) =>
    v === undefined || !Number.isFinite(v) ? fallback : Math.min(max, Math.max(min, Math.floor(v)));
  const age = int(t.maxRecordAgeSeconds, -1, -1, 604_800);
  return {
    batchSize: int(t.batchSize, 100, 1, 10_000),
    maxBatchingWindowMs: int(t.maxBatchingWindowSeconds, 0, 0, 300) * 1000,
    bisectOnError: t.bisectOnError ?? false,
    maxRetryAttempts: int(t.maxRetryAttempts, -1, -1, 10_000),
    maxRecordAgeMs: age < 0 ? -1 : age * 1000,
    reportBatchItemFailures: t.reportBatchItemFailures ?? false,
  };
}

/**
 * The settings for a stream: with no record age limit (-1), records are retried until they
 * expire from the stream, its retention, rather than forever after the stream dropped them.
 */
export function streamSettings(
  s: KinesisSettings,
  retentionHours: number | undefined,
): KinesisSettings {
  if (s.maxRecordAgeMs >= 0 || !retentionHours || retentionHours <= 0) return s;
  return { ...s, maxRecordAgeMs: retentionHours * 3_600_000 };
}

/** Where records come from, as every record of Lambda's event names it. */
export interface StreamOrigin {
  shardId: string;
  streamArn: string;
  region: string;
  /** The Function's identity (Lambda's execution role ARN). */
  identity: string;
}

/** A record read from a shard, as GetRecords returns it. */
export interface ShardRecord {
  SequenceNumber?: string;
  PartitionKey?: string;
  Data?: Uint8Array;
  ApproximateArrivalTimestamp?: Date;
}

/** A record ready to batch: its JSON in Lambda's shape is made once, however often it is sent. */
export interface ShapedRecord {
  sequenceNumber: string;
  /** Milliseconds since the epoch. */
  arrivedAt: number;
  readonly json: string;
  /** Its length in UTF-8. */
  readonly bytes: number;
  /**
   * The last sequence number done once this record is: records after it that no filter passed
   * were skipped, and are checkpointed with it.
   */
  through?: string;
}

/** One record of Lambda's Kinesis event, keys in Lambda's order. */
export function lambdaRecord(r: ShardRecord, o: StreamOrigin): Record<string, unknown> {
  const data = r.Data ?? new Uint8Array();
  return {
    kinesis: {
      kinesisSchemaVersion: '1.0',
      partitionKey: r.PartitionKey ?? '',
      sequenceNumber: r.SequenceNumber ?? '',
      data: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64'),
      approximateArrivalTimestamp: (r.ApproximateArrivalTimestamp?.getTime() ?? Date.now()) / 1000,
    },
    eventSource: 'aws:kinesis',
    eventVersion: '1.0',
    eventID: `${o.shardId}:${r.SequenceNumber ?? ''}`,
    eventName: 'aws:kinesis:record',
    invokeIdentityArn: o.identity,
    awsRegion: o.region,
    eventSourceARN: o.streamArn,
  };
}

export function shapeRecord(r: ShardRecord, o: StreamOrigin): ShapedRecord {
  return new DeferredRecord(
    r.SequenceNumber ?? '',
    r.ApproximateArrivalTimestamp?.getTime() ?? Date.now(),
    () => JSON.stringify(lambdaRecord(r, o)),
  );
}

/**
 * A record whose JSON is made when a batch first needs it (its size or its body), not when it
 * is read: after a read of 10,000 records the first batch goes out at once, and the shaping of
 * the others overlaps the delivery of those before them. Made once, however often it is sent.
 */
export class DeferredRecord implements ShapedRecord {
  through?: string;
  private made: string | undefined;
  private length: number | undefined;

  constructor(
    readonly sequenceNumber: string,
    readonly arrivedAt: number,
    private make: (() => string) | undefined,
  ) {}

  get json(): string {
    if (this.made === undefined) {
      this.made = this.make!();
      // What it was made from (the SDK's record) is not held any longer.
      this.make = undefined;
    }
    return this.made;
  }

  get bytes(): number {
    return (this.length ??= Buffer.byteLength(this.json));
  }
}

const envelopeBytes = '{"Records":[]}'.length;

/**
 * How many records from the front of `records` go into the next batch: at most `batchSize`, and
 * no more than the gateway takes in one invocation (Lambda's 6 MB), but always at least one.
 */
export function batchLength(
  records: readonly ShapedRecord[],
  batchSize: number,
  maxBytes = maxPayloadBytes,
): number {
  let bytes = envelopeBytes;
  let n = 0;
  for (const r of records) {
    if (n >= batchSize) break;
    bytes += r.bytes + (n > 0 ? 1 : 0);
    if (n > 0 && bytes > maxBytes) break;
    n++;
  }
  return n;
}

/**
 * Whether the records read so far go to the function now: a full batch (by count or payload),
 * the end of the shard, or the batching window over since the first of them was read.
 */
export function batchDue(
  records: readonly ShapedRecord[],
  s: KinesisSettings,
  o: { gatheringSince: number; now: number; shardEnded: boolean },
): boolean {
  if (records.length === 0) return false;
  const n = batchLength(records, s.batchSize);
  return (
    o.shardEnded ||
    n >= s.batchSize ||
    n < records.length ||
    o.now - o.gatheringSince >= s.maxBatchingWindowMs
  );
}

/** The CloudEvent (binary mode) carrying a batch to the function. */
export function batchEvent(
  records: readonly ShapedRecord[],
  o: StreamOrigin,
  trigger: string,
  type: string = eventTypes.kinesisBatch,
): DeliveryEvent {
  const first = records[0]!;
  const id = `${o.shardId}:${first.sequenceNumber}:${records.length}`;
  const time = new Date(first.arrivedAt).toISOString();
  return {
    id,
    type,
    source: o.streamArn,
    time,
    body: Buffer.from(`{"Records":[${records.map((r) => r.json).join(',')}]}`),
    headers: {
      'ce-specversion': '1.0',
      'ce-id': id,
      'ce-type': type,
      'ce-source': o.streamArn,
      'ce-subject': o.shardId,
      'ce-time': time,
      'content-type': 'application/json',
    },
    trigger,
  };
}

/** What a batch's invocation came to. */
export type BatchAnswer =
  | { kind: 'succeeded' }
  /** The function reported item failures: records from index `from` on are to be retried. */
  | { kind: 'partial'; from: number; error: AttemptError }
  | { kind: 'failed'; error: AttemptError; retryable: boolean; throttled: boolean };

const invalidAnswer = (message: string): BatchAnswer => ({
  kind: 'failed',
  error: { errorType: 'InvalidBatchItemFailures', errorMessage: message },
  retryable: true,
  throttled: false,
});

/**
 * Reads an invocation's result as Lambda does. With `reportBatchItemFailures`, an answer of
 * `{batchItemFailures: [{itemIdentifier: <sequence number>}]}` fails the records from the lowest
 * one named on; no answer, null or an empty list is a success; an answer that is not JSON or
 * names a record not in the batch fails the whole batch.
 */
export function judgeAnswer(
  result: AttemptResult,
  sequenceNumbers: readonly string[],
  reportBatchItemFailures: boolean,
): BatchAnswer {
  if (!result.ok) {
    return {
      kind: 'failed',
      error: result.error,
      retryable: result.retryable,
      throttled: result.throttled ?? false,
    };
  }
  if (!reportBatchItemFailures) return { kind: 'succeeded' };
  const text = result.body?.toString('utf8').trim() ?? '';
  if (text === '') return { kind: 'succeeded' };
  let answer: unknown;
  try {
    answer = JSON.parse(text);
  } catch {
    return invalidAnswer(`the function's answer is not JSON: ${text.slice(0, 200)}`);
  }
  if (answer === null || typeof answer !== 'object' || Array.isArray(answer)) {
    return { kind: 'succeeded' };
  }
  const failures = (answer as { batchItemFailures?: unknown }).batchItemFailures;
  if (failures === undefined || failures === null) return { kind: 'succeeded' };
  if (!Array.isArray(failures)) {
    return invalidAnswer('batchItemFailures must be a list of {itemIdentifier}');
  }
  if (failures.length === 0) return { kind: 'succeeded' };
  let from = sequenceNumbers.length;
  for (const f of failures as unknown[]) {
    const id = (f as { itemIdentifier?: unknown } | null)?.itemIdentifier;
    const at = typeof id === 'string' && id !== '' ? sequenceNumbers.indexOf(id) : -1;
    if (at < 0) {
      return invalidAnswer(
        `batchItemFailures names ${JSON.stringify(id ?? null)}, which is not the sequence number of a record in the batch`,
      );
    }
    from = Math.min(from, at);
  }
  return {
    kind: 'partial',
    from,
    error: {
      errorType: 'BatchItemFailures',
      errorMessage: `the function reported ${failures.length} failed record(s), the first at sequence number ${sequenceNumbers[from]}`,
    },
  };
}

/** Why records were given up on; the dead letter's condition. */
export type GiveUp = 'RetriesExhausted' | 'EventAgeExceeded' | 'NotRetryable';

export interface BatchDeps {
  /** One invocation with these records. */
  invoke(records: readonly ShapedRecord[]): Promise<AttemptResult>;
  /**
   * Sends records given up on to the dead letter: `sent` (or dropped, for a Function without
   * one), `failed` when the dead letter could not be written, `stopped` when interrupted
   * (shutdown). Only sent records are checkpointed.
   */
  deadLetter(
    records: readonly ShapedRecord[],
    failure: {
      error: AttemptError;
      attempts: number;
      condition: GiveUp;
      firstAttemptAt: number;
      lastAttemptAt: number;
    },
  ): Promise<'sent' | 'failed' | 'stopped'>;
  /** Told of each failed invocation as it fails: its number, its error and what comes next. */
  failed?(
    records: readonly ShapedRecord[],
    attempt: number,
    error: AttemptError,
    next: { delayMs: number } | { condition: GiveUp } | { bisect: true },
  ): void;
  /** The records up to this sequence number are done. */
  checkpoint(sequenceNumber: string): void;
  /** Resolves after `ms`; false when stopped meanwhile. */
  sleep(ms: number): Promise<boolean>;
  stopped(): boolean;
  now(): number;
  /** The wait before retry `n` (from 1). */
  retryDelayMs(n: number): number;
}

interface Part {
  records: ShapedRecord[];
  /** Failed invocations of exactly these records: what maxRetryAttempts limits. */
  failures: number;
  /** Invocations that included these records, their larger batches' included. */
  attempts: number;
  throttles: number;
  firstAttemptAt?: number;
  lastAttemptAt?: number;
  lastError?: AttemptError;
}

/**
 * Delivers one batch with Lambda's stream semantics, in order, before the shard moves on:
 * - a failed batch is retried (after a growing wait) until `maxRetryAttempts`; throttles, where
 *   the batch never reached the function, do not count;
 * - with `bisectOnError`, a failed batch is split in two and each half retried in turn (splitting
 *   is not a retry: only a single record that keeps failing spends `maxRetryAttempts`, so good
 *   records around a poison one are not given up with it);
 * - with `reportBatchItemFailures`, the records before the lowest failed one are done, and the
 *   rest is retried as one batch (bisect splits only batches whose invocation failed);
 * - records older than `maxRecordAgeMs` are not sent (again);
 * - what is given up on goes to the dead letter and the shard moves past it; while the dead
 *   letter cannot be written the shard waits (growing waits) and tries it again, never
 *   checkpointing past those records, as the S3 intake leaves them with the store.
 * Resolves true once every record is done, false when stopped first (nothing after the last
 * checkpoint counts as done then).
 */
export async function deliverBatch(
  records: readonly ShapedRecord[],
  s: KinesisSettings,
  deps: BatchDeps,
): Promise<boolean> {
  const queue: Part[] = [{ records: [...records], failures: 0, attempts: 0, throttles: 0 }];
  const done = (part: Part) => {
    const last = part.records[part.records.length - 1]!;
    deps.checkpoint(last.through ?? last.sequenceNumber);
  };
  const giveUp = async (part: Part, condition: GiveUp, error: AttemptError) => {
    const now = deps.now();
    const failure = {
      error,
      attempts: part.attempts,
      condition,
      firstAttemptAt: part.firstAttemptAt ?? now,
      lastAttemptAt: part.lastAttemptAt ?? now,
    };
    for (let failed = 1; ; failed++) {
      const out = await deps.deadLetter(part.records, failure);
      if (out === 'sent') {
        done(part);
        return true;
      }
      if (out === 'stopped' || deps.stopped()) return false;
      if (!(await deps.sleep(deps.retryDelayMs(failed)))) return false;
    }
  };
  while (queue.length > 0) {
    if (deps.stopped()) return false;
    const part = queue[0]!;
    if (s.maxRecordAgeMs >= 0) {
      const now = deps.now();
      // A shard's records arrive in order: the old ones are at the front.
      const old = part.records.findIndex((r) => now - r.arrivedAt <= s.maxRecordAgeMs);
      const count = old < 0 ? part.records.length : old;
      if (count > 0) {
        const expired: Part = { ...part, records: part.records.slice(0, count) };
        const error = part.lastError ?? {
          errorType: 'RecordAgeExceeded',
          errorMessage: `the record(s) were older than the age limit (${s.maxRecordAgeMs / 1000} s: maxRecordAgeSeconds, or the stream's retention) before they could be sent`,
        };
        if (!(await giveUp(expired, 'EventAgeExceeded', error))) return false;
        part.records = part.records.slice(count);
        if (part.records.length === 0) {
          queue.shift();
          continue;
        }
      }
    }
    part.attempts++;
    part.lastAttemptAt = deps.now();
    part.firstAttemptAt ??= part.lastAttemptAt;
    const answer = judgeAnswer(
      await deps.invoke(part.records),
      part.records.map((r) => r.sequenceNumber),
      s.reportBatchItemFailures,
    );
    // What the function has done is checkpointed though the consumer stopped meanwhile (its
    // trigger changed): the next consumer must not deliver it again.
    if (answer.kind === 'succeeded') {
      done(part);
      queue.shift();
      continue;
    }
    if (answer.kind === 'partial' && answer.from > 0) {
      done({ ...part, records: part.records.slice(0, answer.from) });
      part.records = part.records.slice(answer.from);
    }
    if (deps.stopped()) return false;
    part.lastError = answer.error;
    const retryable = answer.kind === 'partial' || answer.retryable;
    if (answer.kind === 'failed' && answer.throttled) {
      part.throttles++;
      const delayMs = deps.retryDelayMs(part.throttles);
      deps.failed?.(part.records, part.attempts, answer.error, { delayMs });
      if (!(await deps.sleep(delayMs))) return false;
      continue;
    }
    // The records the function reported as failed are retried as they are, not split again.
    if (s.bisectOnError && answer.kind === 'failed' && part.records.length > 1) {
      deps.failed?.(part.records, part.attempts, answer.error, { bisect: true });
      const half = Math.ceil(part.records.length / 2);
      const split = (rs: ShapedRecord[]): Part => ({ ...part, records: rs, failures: 0 });
      queue.splice(0, 1, split(part.records.slice(0, half)), split(part.records.slice(half)));
      continue;
    }
    part.failures++;
    const condition: GiveUp | undefined = !retryable
      ? 'NotRetryable'
      : s.maxRetryAttempts >= 0 && part.failures > s.maxRetryAttempts
        ? 'RetriesExhausted'
        : undefined;
    if (condition) {
      deps.failed?.(part.records, part.attempts, answer.error, { condition });
      if (!(await giveUp(part, condition, answer.error))) return false;
      queue.shift();
      continue;
    }
    const delayMs = deps.retryDelayMs(part.failures);
    deps.failed?.(part.records, part.attempts, answer.error, { delayMs });
    if (!(await deps.sleep(delayMs))) return false;
  }
  return true;
}
