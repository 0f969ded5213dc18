import { describe, expect, it } from 'vitest';
import type { AttemptResult } from '../gateway/delivery.js';
import {
  batchDue,
  batchEvent,
  batchLength,
  deliverBatch,
  judgeAnswer,
  kinesisSettings,
  lambdaRecord,
  shapeRecord,
  streamSettings,
  type BatchDeps,
  type GiveUp,
  type KinesisSettings,
  type ShapedRecord,
  type ShardRecord,
  type StreamOrigin,
} from './kinesis-batch.js';

const origin: StreamOrigin = {
  shardId: 'shardId-000000000001',
  streamArn: 'arn:aws:kinesis:us-east-1:000000000000:stream/clicks',
  region: 'us-east-1',
  identity: 'system:serviceaccount:shop:clicks',
};

const start = Date.parse('2025-03-01T12:00:00.000Z');

/** Record n: sequence number `seq-0n`, arrived n seconds after start. */
const rec = (n: number): ShapedRecord =>
  shapeRecord(
    {
      SequenceNumber: `seq-${String(n).padStart(2, '0')}`,
      PartitionKey: `user-${n}`,
      Data: Buffer.from(`click ${n}`),
      ApproximateArrivalTimestamp: new Date(start + n * 1000),
    },
    origin,
  );
const recs = (...ns: number[]) => ns.map(rec);
const seqs = (rs: readonly ShapedRecord[]) => rs.map((r) => Number(r.sequenceNumber.slice(4)));

describe('Kinesis records and batches', () => {
  it("shapes a record as Lambda's Kinesis event record", () => {
    const data = Buffer.from('{"page":"/cart"}');
    const larger = Buffer.concat([Buffer.from('xx'), data, Buffer.from('yy')]);
    expect(
      lambdaRecord(
        {
          SequenceNumber: '49590338271490256608559692538361571095921575989136588898',
          PartitionKey: 'user-7',
          // A view into a larger buffer, as the SDK may hand it: only the view is the data.
          Data: new Uint8Array(larger.buffer, larger.byteOffset + 2, data.length),
          ApproximateArrivalTimestamp: new Date(1545084650987),
        },
        origin,
      ),
    ).toEqual({
      kinesis: {
        kinesisSchemaVersion: '1.0',
        partitionKey: 'user-7',
        sequenceNumber: '49590338271490256608559692538361571095921575989136588898',
        data: data.toString('base64'),
        approximateArrivalTimestamp: 1545084650.987,
      },
      eventSource: 'aws:kinesis',
      eventVersion: '1.0',
      eventID: 'shardId-000000000001:49590338271490256608559692538361571095921575989136588898',
      eventName: 'aws:kinesis:record',
      invokeIdentityArn: 'system:serviceaccount:shop:clicks',
      awsRegion: 'us-east-1',
      eventSourceARN: 'arn:aws:kinesis:us-east-1:000000000000:stream/clicks',
    });
  });

  it("makes a record's JSON when a batch first needs it, and only once", () => {
    let reads = 0;
    const read: ShardRecord = {
      SequenceNumber: 'seq-07',
      PartitionKey: 'user-7',
      ApproximateArrivalTimestamp: new Date(start),
      get Data() {
        reads++;
        return Buffer.from('{"page":"/cart"}');
      },
    };
    const r = shapeRecord(read, origin);
    // Read and batched by sequence number and age without being shaped.
    expect([r.sequenceNumber, r.arrivedAt, reads]).toEqual(['seq-07', start, 0]);
    expect(r.bytes).toBe(Buffer.byteLength(r.json));
    expect(JSON.parse(r.json)).toEqual(lambdaRecord(read, origin));
    expect(reads).toBe(2); // once for r.json, once for the lambdaRecord compared with
    expect(batchEvent([r, r], origin, 'clicks').body.toString()).toBe(
      `{"Records":[${r.json},${r.json}]}`,
    );
    expect(reads).toBe(2);
  });

  it('makes a binary-mode CloudEvent with {Records} as its data', () => {
    const event = batchEvent(recs(1, 2), origin, 'clicks');
    expect(event.headers).toEqual({
      'ce-specversion': '1.0',
      'ce-id': 'shardId-000000000001:seq-01:2',
      'ce-type': 'dev.eddy.kinesis.batch',
      'ce-source': origin.streamArn,
      'ce-subject': origin.shardId,
      'ce-time': new Date(start + 1000).toISOString(),
      'content-type': 'application/json',
    });
    const data = JSON.parse(event.body.toString()) as { Records: unknown[] };
    expect(data.Records).toHaveLength(2);
    expect(data.Records[1]).toEqual(JSON.parse(rec(2).json));
    expect(event.trigger).toBe('clicks');
  });

  it('cuts batches at batchSize and at the payload limit, but never below one record', () => {
    const rs = recs(1, 2, 3, 4, 5);
    expect(batchLength(rs, 3)).toBe(3);
    expect(batchLength(rs, 100)).toBe(5);
    const one = rec(1).bytes;
    expect(batchLength(rs, 100, 14 + one * 2 + 1)).toBe(2);
    expect(batchLength(rs, 100, 10)).toBe(1);
  });

  it('sends a batch when it is full, the shard ended, or the batching window is over', () => {
    const s = { ...kinesisSettings({ stream: 's', connection: {} }), batchSize: 3 };
    const at = (now: number, shardEnded = false) => ({ gatheringSince: 1_000, now, shardEnded });
    expect(batchDue([], s, at(1_000, true))).toBe(false);
    // No window: whatever a read returned goes at once.
    expect(batchDue(recs(1), s, at(1_000))).toBe(true);
    const windowed = { ...s, maxBatchingWindowMs: 2_000 };
    expect(batchDue(recs(1, 2), windowed, at(2_999))).toBe(false);
    expect(batchDue(recs(1, 2), windowed, at(3_000))).toBe(true);
    expect(batchDue(recs(1, 2, 3), windowed, at(1_000))).toBe(true);
    expect(batchDue(recs(1), windowed, at(1_000, true))).toBe(true);
  });

  it("applies the CRD's defaults", () => {
    expect(kinesisSettings({ stream: 's', connection: {} })).toEqual({
      batchSize: 100,
      maxBatchingWindowMs: 0,
      bisectOnError: false,
      maxRetryAttempts: -1,
      maxRecordAgeMs: -1,
      reportBatchItemFailures: false,
    });
  });
});

const ok = (body?: unknown): AttemptResult => ({
  ok: true,
  status: 200,
  ...(body === undefined ? {} : { body: Buffer.from(JSON.stringify(body)) }),
});
const failed: AttemptResult = {
  ok: false,
  status: 500,
  error: { errorType: 'Error', errorMessage: 'boom' },
  retryable: true,
};
const failures = (...ids: unknown[]) =>
  ok({ batchItemFailures: ids.map((itemIdentifier) => ({ itemIdentifier })) });

describe('reading the function’s answer', () => {
  const ids = ['a', 'b', 'c', 'd'];
  it('takes item failures only when reportBatchItemFailures is on', () => {
    expect(judgeAnswer(failures('c'), ids, false)).toEqual({ kind: 'succeeded' });
    expect(judgeAnswer(failures('d', 'b'), ids, true)).toMatchObject({ kind: 'partial', from: 1 });
  });

  it('takes no answer, null, a non-object and an empty list as success', () => {
    for (const answer of [
      ok(),
      ok(null),
      ok('done'),
      ok({}),
      ok({ batchItemFailures: [] }),
      ok({ batchItemFailures: null }),
    ]) {
      expect(judgeAnswer(answer, ids, true)).toEqual({ kind: 'succeeded' });
    }
  });

  it('fails the whole batch on an answer that is not JSON or names no record of it', () => {
    const notJson: AttemptResult = { ok: true, status: 200, body: Buffer.from('oops{') };
    for (const answer of [
      notJson,
      failures('z'),
      failures(''),
      failures(null),
      ok({ batchItemFailures: 'b' }),
    ]) {
      expect(judgeAnswer(answer, ids, true)).toMatchObject({
        kind: 'failed',
        error: { errorType: 'InvalidBatchItemFailures' },
        retryable: true,
      });
    }
  });

  it('passes a failed invocation through', () => {
    expect(judgeAnswer({ ...failed, throttled: true }, ids, true)).toMatchObject({
      kind: 'failed',
      retryable: true,
      throttled: true,
    });
  });
});

interface Sent {
  seqs: number[];
  condition: GiveUp;
  attempts: number;
  errorType: string;
}

/**
 * A batch delivery on a fake clock. `answer` decides each invocation from its records; sleeping
 * moves the clock.
 */
function harness(
  answer: (records: number[], call: number) => AttemptResult,
  stopAfterSleeps = Infinity,
) {
  let clock = start + 60_000;
  const calls: number[][] = [];
  const checkpoints: number[] = [];
  const deadLetters: Sent[] = [];
  /** What the dead letter answers, in turn; then `sent`. */
  const deadLetterAnswers: Array<'sent' | 'failed' | 'stopped'> = [];
  const sleeps: number[] = [];
  /** Invocations and failures in the order they happened. */
  const story: string[] = [];
  let stopped = false;
  const deps: BatchDeps = {
    invoke: async (records) => {
      calls.push(seqs(records));
      story.push(`invoke ${seqs(records).join(',')}`);
      clock += 100;
      return answer(seqs(records), calls.length);
    },
    deadLetter: async (records, f) => {
      deadLetters.push({
        seqs: seqs(records),
        condition: f.condition,
        attempts: f.attempts,
        errorType: f.error.errorType,
      });
      return deadLetterAnswers.shift() ?? 'sent';
    },
    failed: (records, attempt, error, next) =>
      story.push(
        `attempt ${attempt} of ${seqs(records).join(',')} failed: ${error.errorType}; ${JSON.stringify(next)}`,
      ),
    checkpoint: (s) => checkpoints.push(Number(s.slice(4))),
    sleep: async (ms) => {
      sleeps.push(ms);
      clock += ms;
      if (sleeps.length >= stopAfterSleeps) stopped = true;
      return !stopped;
    },
    stopped: () => stopped,
    now: () => clock,
    retryDelayMs: (n) => 1000 * 2 ** (n - 1),
  };
  return { deps, calls, checkpoints, deadLetters, deadLetterAnswers, sleeps, story };
}

const settings = (over: Partial<KinesisSettings> = {}): KinesisSettings => ({
  ...kinesisSettings({ stream: 's', connection: {} }),
  ...over,
});
const poison = (n: number) => (records: number[]) => (records.includes(n) ? failed : ok());

describe('delivering a batch with stream retries', () => {
  it('checkpoints the last record of a batch that succeeds', async () => {
    const h = harness(() => ok());
    expect(await deliverBatch(recs(1, 2, 3), settings(), h.deps)).toBe(true);
    expect(h.calls).toEqual([[1, 2, 3]]);
    expect(h.checkpoints).toEqual([3]);
  });

  it('checkpoints records no filter passed with the record before them, once it is done', async () => {
    // 2 was followed by 3 and 4 and 5 by 6, which were filtered out.
    const rs = recs(1, 2, 5);
    rs[1] = { ...rs[1]!, through: 'seq-04' };
    rs[2] = { ...rs[2]!, through: 'seq-06' };
    const h = harness((_r, call) => (call === 1 ? failures('seq-05') : ok()));
    expect(await deliverBatch(rs, settings({ reportBatchItemFailures: true }), h.deps)).toBe(true);
    expect(h.calls).toEqual([[1, 2, 5], [5]]);
    expect(h.checkpoints).toEqual([4, 6]);
  });

  it('retries a failed batch whole, after growing waits, holding the shard until it succeeds', async () => {
    const h = harness((_r, call) => (call < 4 ? failed : ok()));
    expect(await deliverBatch(recs(1, 2), settings(), h.deps)).toBe(true);
    expect(h.calls).toEqual([
      [1, 2],
      [1, 2],
      [1, 2],
      [1, 2],
    ]);
    expect(h.sleeps).toEqual([1000, 2000, 4000]);
    expect(h.checkpoints).toEqual([2]);
    expect(h.deadLetters).toEqual([]);
  });

  it('dead-letters the batch once maxRetryAttempts are spent, and moves on', async () => {
    const h = harness(() => failed);
    expect(await deliverBatch(recs(1, 2, 3), settings({ maxRetryAttempts: 2 }), h.deps)).toBe(true);
    expect(h.calls).toHaveLength(3);
    expect(h.deadLetters).toEqual([
      { seqs: [1, 2, 3], condition: 'RetriesExhausted', attempts: 3, errorType: 'Error' },
    ]);
    expect(h.checkpoints).toEqual([3]);
  });

  it('with bisectOnError, isolates a poison record and delivers the others in order', async () => {
    const h = harness(poison(3));
    const s = settings({ bisectOnError: true, maxRetryAttempts: 1 });
    expect(await deliverBatch(recs(1, 2, 3, 4, 5, 6, 7, 8), s, h.deps)).toBe(true);
    expect(h.calls).toEqual([
      [1, 2, 3, 4, 5, 6, 7, 8],
      [1, 2, 3, 4],
      [1, 2],
      [3, 4],
      [3],
      [3],
      [4],
      [5, 6, 7, 8],
    ]);
    expect(h.deadLetters).toEqual([
      { seqs: [3], condition: 'RetriesExhausted', attempts: 5, errorType: 'Error' },
    ]);
    expect(h.checkpoints).toEqual([2, 3, 4, 8]);
  });

  it('tells of each failed invocation as it fails: its number, error and what comes next', async () => {
    const h = harness(poison(3));
    const s = settings({ bisectOnError: true, maxRetryAttempts: 1 });
    expect(await deliverBatch(recs(1, 2, 3, 4), s, h.deps)).toBe(true);
    expect(h.story).toEqual([
      'invoke 1,2,3,4',
      'attempt 1 of 1,2,3,4 failed: Error; {"bisect":true}',
      'invoke 1,2',
      'invoke 3,4',
      'attempt 2 of 3,4 failed: Error; {"bisect":true}',
      'invoke 3',
      'attempt 3 of 3 failed: Error; {"delayMs":1000}',
      'invoke 3',
      'attempt 4 of 3 failed: Error; {"condition":"RetriesExhausted"}',
      'invoke 4',
    ]);
  });

  it('with reportBatchItemFailures, checkpoints before the lowest failed record and retries from it', async () => {
    const h = harness((records, call) => (call === 1 ? failures('seq-04', 'seq-03') : ok()));
    const s = settings({ reportBatchItemFailures: true });
    expect(await deliverBatch(recs(1, 2, 3, 4, 5), s, h.deps)).toBe(true);
    expect(h.calls).toEqual([
      [1, 2, 3, 4, 5],
      [3, 4, 5],
    ]);
    expect(h.checkpoints).toEqual([2, 5]);
  });

  it('with item failures and bisect, retries the failed remainder as one batch, not split', async () => {
    const h = harness((records) =>
      records.includes(4) ? failures('seq-04') : ok({ batchItemFailures: [] }),
    );
    const s = settings({ reportBatchItemFailures: true, bisectOnError: true, maxRetryAttempts: 1 });
    expect(await deliverBatch(recs(1, 2, 3, 4, 5, 6), s, h.deps)).toBe(true);
    // The remainder failed once with the whole batch, and once more on its own.
    expect(h.calls).toEqual([
      [1, 2, 3, 4, 5, 6],
      [4, 5, 6],
    ]);
    expect(h.deadLetters).toMatchObject([
      { seqs: [4, 5, 6], condition: 'RetriesExhausted', errorType: 'BatchItemFailures' },
    ]);
    expect(h.checkpoints).toEqual([3, 6]);
  });

  it('with item failures and bisect, still splits a batch whose invocation failed', async () => {
    const h = harness(poison(2));
    const s = settings({ reportBatchItemFailures: true, bisectOnError: true, maxRetryAttempts: 0 });
    expect(await deliverBatch(recs(1, 2, 3, 4), s, h.deps)).toBe(true);
    expect(h.calls).toEqual([[1, 2, 3, 4], [1, 2], [1], [2], [3, 4]]);
    expect(h.checkpoints).toEqual([1, 2, 4]);
  });

  it('takes the stream retention as the age limit when there is none', () => {
    const none = settings({ maxRecordAgeMs: -1, maxRetryAttempts: -1 });
    expect(streamSettings(none, 24).maxRecordAgeMs).toBe(86_400_000);
    expect(streamSettings(none, undefined)).toBe(none);
    const own = settings({ maxRecordAgeMs: 60_000 });
    expect(streamSettings(own, 24)).toBe(own);
  });

  it('does not count throttles, where the batch never reached the function, as retries', async () => {
    const throttled: AttemptResult = { ...failed, status: 429, throttled: true };
    const h = harness((_r, call) => (call <= 3 ? throttled : failed));
    expect(await deliverBatch(recs(1), settings({ maxRetryAttempts: 0 }), h.deps)).toBe(true);
    expect(h.calls).toHaveLength(4);
    expect(h.deadLetters).toMatchObject([{ seqs: [1], attempts: 4 }]);
  });

  it('gives up at once on a batch the function refuses as bad, unless it can bisect', async () => {
    const bad: AttemptResult = { ...failed, status: 400, retryable: false };
    const h = harness(() => bad);
    expect(await deliverBatch(recs(1, 2), settings(), h.deps)).toBe(true);
    expect(h.calls).toEqual([[1, 2]]);
    expect(h.sleeps).toEqual([]);
    expect(h.deadLetters).toMatchObject([{ seqs: [1, 2], condition: 'NotRetryable', attempts: 1 }]);
    expect(h.checkpoints).toEqual([2]);

    // With bisectOnError the refused batch is split until the record it refuses stands alone:
    // only that one is given up on, at once, and the records around it are delivered.
    const b = harness((records) => (records.includes(2) ? bad : ok()));
    expect(await deliverBatch(recs(1, 2, 3, 4), settings({ bisectOnError: true }), b.deps)).toBe(
      true,
    );
    expect(b.calls).toEqual([[1, 2, 3, 4], [1, 2], [1], [2], [3, 4]]);
    expect(b.sleeps).toEqual([]);
    expect(b.deadLetters).toMatchObject([{ seqs: [2], condition: 'NotRetryable' }]);
    expect(b.checkpoints).toEqual([1, 2, 4]);
  });

  it('does not checkpoint past records whose dead letter failed: the shard waits and sends it again', async () => {
    const bad: AttemptResult = { ...failed, status: 400, retryable: false };
    const h = harness((records) => (records.includes(2) ? bad : ok()));
    h.deadLetterAnswers.push('failed', 'failed');
    expect(await deliverBatch(recs(1, 2, 3), settings({ bisectOnError: true }), h.deps)).toBe(true);
    // Record 2's dead letter failed twice and was written the third time: only then did the
    // checkpoint pass it, and record 3 was sent after it.
    expect(h.deadLetters.map((d) => d.seqs)).toEqual([[2], [2], [2]]);
    expect(h.sleeps.slice(-2)).toEqual([1000, 2000]);
    expect(h.checkpoints).toEqual([1, 2, 3]);
  });

  it('stops without checkpointing records whose dead letter failed', async () => {
    const bad: AttemptResult = { ...failed, status: 400, retryable: false };
    const h = harness(() => bad, 1);
    h.deadLetterAnswers.push('failed');
    expect(await deliverBatch(recs(1, 2), settings(), h.deps)).toBe(false);
    expect(h.deadLetters).toHaveLength(1);
    expect(h.checkpoints).toEqual([]);
  });

  it('sends records older than maxRecordAgeSeconds to the dead letter without invoking', async () => {
    // The clock is 60 s past start: records 1..30 are older than 30 s.
    const h = harness(() => ok());
    expect(
      await deliverBatch(recs(29, 30, 31, 32), settings({ maxRecordAgeMs: 30_000 }), h.deps),
    ).toBe(true);
    expect(h.deadLetters).toEqual([
      { seqs: [29], condition: 'EventAgeExceeded', attempts: 0, errorType: 'RecordAgeExceeded' },
    ]);
    expect(h.calls).toEqual([[30, 31, 32]]);
    expect(h.checkpoints).toEqual([29, 32]);
  });

  it('stops retrying when records age past maxRecordAgeSeconds', async () => {
    const h = harness(() => failed);
    expect(await deliverBatch(recs(55, 56), settings({ maxRecordAgeMs: 10_000 }), h.deps)).toBe(
      true,
    );
    // Tries at 60 s, 61.1 s and 63.2 s; after the third failure's wait (67.3 s) both are too old.
    expect(h.calls).toHaveLength(3);
    expect(h.deadLetters).toEqual([
      { seqs: [55, 56], condition: 'EventAgeExceeded', attempts: 3, errorType: 'Error' },
    ]);
  });

  it('checkpoints what the function did though the consumer stopped while it ran', async () => {
    // A changed trigger stops the consumer; its batch in flight finishes, and the next consumer
    // starts after it.
    let stopped = false;
    const h = harness(() => ok());
    const deps: BatchDeps = {
      ...h.deps,
      invoke: async (records) => {
        const answer = await h.deps.invoke(records);
        stopped = true;
        return answer;
      },
      stopped: () => stopped,
    };
    expect(await deliverBatch(recs(1, 2, 3), settings(), deps)).toBe(true);
    expect(h.checkpoints).toEqual([3]);
  });

  it('stops without checkpointing what was not done when the consumer stops', async () => {
    const h = harness(() => failed, 2);
    expect(await deliverBatch(recs(1, 2), settings(), h.deps)).toBe(false);
    expect(h.calls).toHaveLength(2);
    expect(h.checkpoints).toEqual([]);
    expect(h.deadLetters).toEqual([]);
  });
});
