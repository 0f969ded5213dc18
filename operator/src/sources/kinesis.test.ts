import { afterEach, describe, expect, it, vi } from 'vitest';
import { getEventListeners } from 'node:events';
import type { KinesisClient } from '@aws-sdk/client-kinesis';
import { Registry } from 'prom-client';
import { setTimeout as pause } from 'node:timers/promises';
import type { EddyFunction, KinesisTrigger } from '../api/types.js';
import { MemoryFunctionStore } from '../functions.js';
import type { AttemptResult } from '../gateway/delivery.js';
import { memoryCheckpoints, type Checkpoint, type CheckpointStore } from './checkpoints.js';
import { callSignal, kinesisKind } from './kinesis.js';
import { streamSource } from './stream-reader.js';
import type { SourceContext } from './source.js';
import { TriggerStates } from './states.js';

interface FakeRecord {
  SequenceNumber: string;
  PartitionKey: string;
  Data: Uint8Array;
  ApproximateArrivalTimestamp: Date;
}

interface FakeShard {
  id: string;
  parents: string[];
  closed: boolean;
  records: FakeRecord[];
}

type Failure = (input: Record<string, unknown>, signal?: AbortSignal) => Promise<never> | undefined;

/** Kinesis in memory: one stream, enough of ListShards, GetShardIterator and GetRecords. */
class FakeKinesis {
  created = new Date('2025-01-01T00:00:00.000Z');
  retentionHours = 24;
  shards: FakeShard[] = [];
  private seq = 0;
  private readonly iterators = new Map<string, { shard: FakeShard; at: number }>();
  private iteratorCount = 0;
  /** Calls made, by command. */
  readonly calls: Array<{ command: string; input: Record<string, unknown> }> = [];
  /** Clients made and destroyed. */
  made = 0;
  destroyed = 0;
  /** A call may be made to fail (return a rejecting promise) or pass (undefined). */
  fail: Partial<Record<string, Failure>> = {};

  constructor(shards: number) {
    for (let i = 0; i < shards; i++) this.addShard([]);
  }

  addShard(parents: string[]): FakeShard {
    const shard: FakeShard = {
      id: `shardId-${String(this.shards.length).padStart(12, '0')}`,
      parents,
      closed: false,
      records: [],
    };
    this.shards.push(shard);
    return shard;
  }

  put(shard: number, data: string, at = new Date()): void {
    this.shards[shard]!.records.push({
      SequenceNumber: String(++this.seq).padStart(20, '0'),
      PartitionKey: 'k',
      Data: Buffer.from(data),
      ApproximateArrivalTimestamp: at,
    });
  }

  reads(shard: number): number {
    const id = this.shards[shard]!.id;
    return this.calls.filter(
      (c) => c.command === 'GetRecords' && this.iteratorShard(c.input.ShardIterator) === id,
    ).length;
  }

  private readonly shardOfIterator = new Map<string, string>();
  private iteratorShard(it: unknown): string | undefined {
    return this.shardOfIterator.get(String(it));
  }

  private iterator(shard: FakeShard, at: number): string {
    const id = `it-${++this.iteratorCount}`;
    this.iterators.set(id, { shard, at });
    this.shardOfIterator.set(id, shard.id);
    return id;
  }

  client(): KinesisClient {
    const send = async (
      cmd: { input: Record<string, unknown> },
      o?: { abortSignal?: AbortSignal },
    ) => {
      const command = cmd.constructor.name.replace(/Command$/, '');
      const input = cmd.input;
      this.calls.push({ command, input });
      await pause(1);
      const failing = this.fail[command]?.(input, o?.abortSignal);
      if (failing) return failing;
      return this.answer(command, input);
    };
    this.made++;
    return { send, destroy: () => void this.destroyed++ } as unknown as KinesisClient;
  }

  private answer(command: string, input: Record<string, unknown>): unknown {
    switch (command) {
      case 'DescribeStreamSummary':
        return {
          StreamDescriptionSummary: {
            StreamName: 'clicks',
            StreamARN: 'arn:aws:kinesis:us-east-1:000000000000:stream/clicks',
            StreamCreationTimestamp: this.created,
            RetentionPeriodHours: this.retentionHours,
          },
        };
      case 'ListShards':
        return {
          Shards: this.shards.map((s) => ({
            ShardId: s.id,
            ...(s.parents[0] ? { ParentShardId: s.parents[0] } : {}),
            ...(s.parents[1] ? { AdjacentParentShardId: s.parents[1] } : {}),
            SequenceNumberRange: {
              StartingSequenceNumber: '0',
              ...(s.closed ? { EndingSequenceNumber: '9' } : {}),
            },
          })),
        };
      case 'GetShardIterator': {
        const shard = this.shards.find((s) => s.id === input.ShardId)!;
        const type = input.ShardIteratorType;
        let at = 0;
        if (type === 'LATEST') at = shard.records.length;
        if (type === 'AT_TIMESTAMP') {
          const t = (input.Timestamp as Date).getTime();
          at = shard.records.findIndex((r) => r.ApproximateArrivalTimestamp.getTime() >= t);
          if (at < 0) at = shard.records.length;
        }
        if (type === 'AFTER_SEQUENCE_NUMBER') {
          const i = shard.records.findIndex(
            (r) => r.SequenceNumber === input.StartingSequenceNumber,
          );
          if (i < 0) throw named('InvalidArgumentException', 'no such sequence number');
          at = i + 1;
        }
        return { ShardIterator: this.iterator(shard, at) };
      }
      case 'GetRecords': {
        const it = this.iterators.get(String(input.ShardIterator));
        if (!it) throw named('ExpiredIteratorException', 'expired');
        const records = it.shard.records.slice(it.at);
        const end = it.at + records.length;
        const done = it.shard.closed && end === it.shard.records.length;
        return {
          Records: records,
          MillisBehindLatest: 0,
          ...(done ? {} : { NextShardIterator: this.iterator(it.shard, end) }),
        };
      }
      default:
        throw new Error(`the fake does not know ${command}`);
    }
  }
}

function named(name: string, message: string): Error {
  const err = new Error(message);
  err.name = name;
  return err;
}

/** A failure for the next `times` calls. */
function failing(err: () => Error, o: { times?: number } = {}) {
  let left = o.times ?? Infinity;
  return (): Promise<never> | undefined => {
    if (left <= 0) return undefined;
    left--;
    return Promise.reject(err());
  };
}

async function until<T>(what: string, probe: () => T | undefined, ms = 4_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await pause(10);
  }
}

const stops: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const stop of stops.splice(0)) await stop();
});

function harness(
  kinesis: FakeKinesis,
  trigger: Partial<KinesisTrigger>,
  o: {
    checkpoints?: CheckpointStore & { data?: Map<string, Checkpoint> };
    answer?: () => AttemptResult;
    atTimestampWaitMs?: number;
    /** How long each invocation takes. */
    invokeMs?: number;
    /** Reads ahead with fewer records than this waiting (Kinesis: 10,000). */
    readAhead?: number;
    /** Runs within each invocation (the first is 1), before it answers. */
    during?: (invocation: number) => Promise<void>;
  } = {},
) {
  const store = new MemoryFunctionStore();
  const secret = { key: 'secret' };
  const checkpoints = o.checkpoints ?? memoryCheckpoints();
  const states = new TriggerStates();
  const metrics = new Registry();
  const logs: string[] = [];
  const delivered: string[][] = [];
  const deadLettered: string[] = [];
  const invokedAt: number[] = [];
  let invocations = 0;
  let active = 0;
  const ctx: SourceContext = {
    store,
    secrets: async () => ({ accessKeyId: 'id', secretAccessKey: secret.key }),
    sink: {
      deliver: () => Promise.reject(new Error('streams invoke')),
      invoke: async (_fn, event) => {
        const n = ++invocations;
        invokedAt.push(Date.now());
        active++;
        try {
          if (o.invokeMs) await pause(o.invokeMs);
          await o.during?.(n);
        } finally {
          active--;
        }
        const answer = o.answer?.() ?? { ok: true, status: 200 };
        if (answer.ok) {
          const body = JSON.parse(event.body.toString()) as {
            Records: Array<{ kinesis: { data: string } }>;
          };
          delivered.push(body.Records.map((r) => Buffer.from(r.kinesis.data, 'base64').toString()));
        }
        return answer;
      },
      deadLetter: async (_fn, r) => {
        deadLettered.push(r.condition);
        return {
          outcome: 'dead-lettered',
          attempts: r.attempts,
          condition: r.condition,
          error: r.error,
          deadLetterSends: 1,
        };
      },
    },
    states,
    checkpoints,
    metrics,
    log: (m) => logs.push(m),
    queue: {
      kind: 'memory',
      enqueue: () => Promise.reject(new Error('streams are not queued')),
    },
    route: () => undefined,
  };
  const fn: EddyFunction = {
    apiVersion: 'eddy.dev/v1alpha1',
    kind: 'Function',
    metadata: { name: 'clicks', namespace: 'shop', uid: 'uid-clicks' },
    spec: {
      triggers: [
        {
          name: 'clicks',
          kinesis: {
            stream: 'clicks',
            connection: { endpoint: 'http://kinesis.test', secretRef: { name: 'creds' } },
            ...trigger,
          },
        },
      ],
    },
  };
  store.set(fn);
  const h = {
    store,
    secret,
    checkpoints,
    states,
    metrics,
    logs,
    delivered,
    deadLettered,
    invokedAt,
    invocations: () => invocations,
    /** Invocations under way. */
    active: () => active,
    records: () => delivered.flat(),
    state: () => states.get('shop/clicks', 'clicks'),
    async start() {
      const kind = o.readAhead ? { ...kinesisKind, readAhead: o.readAhead } : kinesisKind;
      const [runnable] = streamSource(kind, {
        idlePollMs: 20,
        minPollMs: 5,
        shardSyncMs: 50,
        retryBaseDelayMs: 20,
        retryMaxDelayMs: 50,
        problemBaseMs: 20,
        checkpointIntervalMs: 20,
        callTimeoutMs: 300,
        ...(o.atTimestampWaitMs ? { atTimestampWaitMs: o.atTimestampWaitMs } : {}),
        finalSaveTimeoutMs: 200,
        makeClient: () => kinesis.client(),
      })(ctx);
      const stop = new AbortController();
      const done = runnable!.run(stop.signal);
      const halt = async () => {
        stop.abort();
        await done;
      };
      stops.push(halt);
      return async () => {
        stops.splice(stops.indexOf(halt), 1);
        await halt();
      };
    },
  };
  return h;
}

/** Waits until every shard was read `n` more times than now. */
async function readsMore(kinesis: FakeKinesis, shards: number[], n = 2): Promise<void> {
  const base = shards.map((s) => kinesis.reads(s));
  await until(`${n} more reads`, () => shards.every((s, i) => kinesis.reads(s) >= base[i]! + n));
}

describe('the Kinesis source', () => {
  it('pins LATEST to its first start: a restart neither replays old records nor skips new ones', async () => {
    const kinesis = new FakeKinesis(4);
    for (let s = 0; s < 4; s++) kinesis.put(s, `old ${s}`, new Date(Date.now() - 60_000));
    const h = harness(kinesis, { startingPosition: 'LATEST' });
    let stop = await h.start();
    await readsMore(kinesis, [0, 1, 2, 3]);
    kinesis.put(0, 'while up');
    await until('the record put while up', () => h.records().includes('while up'));
    await stop();
    // Down: records put now are after the trigger started, on every shard.
    for (let s = 0; s < 4; s++) kinesis.put(s, `while down ${s}`);
    stop = await h.start();
    await until('the records put while down', () => h.records().length >= 5);
    await readsMore(kinesis, [0, 1, 2, 3]);
    await stop();
    expect(h.records().sort()).toEqual([
      'while down 0',
      'while down 1',
      'while down 2',
      'while down 3',
      'while up',
    ]);
  });

  it('keeps the start of a LATEST trigger that saw no record yet across a restart', async () => {
    const kinesis = new FakeKinesis(2);
    kinesis.put(1, 'old', new Date(Date.now() - 60_000));
    const h = harness(kinesis, { startingPosition: 'LATEST' });
    let stop = await h.start();
    await readsMore(kinesis, [0, 1]);
    await stop();
    expect(h.checkpoints.data?.get('shop/clicks/clicks')).toMatchObject({
      stream: 'clicks',
      startedAt: expect.any(String) as unknown,
    });
    kinesis.put(0, 'while down');
    stop = await h.start();
    await until('the record put while down', () => h.records().includes('while down'));
    await readsMore(kinesis, [0, 1]);
    expect(h.records()).toEqual(['while down']);
  });

  it('reads what a shard split while a LATEST trigger was down got before and after the split', async () => {
    const kinesis = new FakeKinesis(1);
    const h = harness(kinesis, { startingPosition: 'LATEST' });
    let stop = await h.start();
    await readsMore(kinesis, [0]);
    await stop();
    kinesis.put(0, 'before the split');
    kinesis.shards[0]!.closed = true;
    kinesis.addShard([kinesis.shards[0]!.id]);
    kinesis.put(1, 'after the split');
    stop = await h.start();
    await until('the child read', () => h.records().includes('after the split'));
    expect(h.records()).toEqual(['before the split', 'after the split']);
  });

  it('waits at an endpoint that holds an AT_TIMESTAMP iterator until a record comes, without a problem', async () => {
    const kinesis = new FakeKinesis(1);
    // As kinesalite: no answer while the shard has nothing from the timestamp on.
    kinesis.fail.GetShardIterator = (input, signal) => {
      const t = (input.Timestamp as Date | undefined)?.getTime() ?? 0;
      const records = kinesis.shards[0]!.records;
      if (input.ShardIteratorType !== 'AT_TIMESTAMP') return undefined;
      if (records.some((r) => r.ApproximateArrivalTimestamp.getTime() >= t)) return undefined;
      return new Promise<never>((_, reject) =>
        signal?.addEventListener('abort', () => reject(named('AbortError', 'aborted')), {
          once: true,
        }),
      );
    };
    const h = harness(kinesis, { startingPosition: 'LATEST' }, { atTimestampWaitMs: 50 });
    await h.start();
    await until('a held call', () =>
      kinesis.calls.filter((c) => c.command === 'GetShardIterator').length >= 2 ? true : undefined,
    );
    kinesis.put(0, 'at last');
    await until('the record', () => h.records().includes('at last'));
    expect(h.state()).toEqual({ ready: true });
    expect(h.logs.join('\n')).not.toMatch(/EndpointUnreachable/);
  });

  it('starts shards opened after AT_TIMESTAMP at the timestamp too', async () => {
    const t = Date.now() - 30_000;
    const kinesis = new FakeKinesis(1);
    kinesis.put(0, 'parent before', new Date(t - 20_000));
    kinesis.put(0, 'parent after', new Date(t + 1_000));
    kinesis.shards[0]!.closed = true;
    const child = kinesis.addShard([kinesis.shards[0]!.id]);
    kinesis.put(1, 'child before', new Date(t - 10_000));
    kinesis.put(1, 'child after', new Date(t + 2_000));
    expect(child.id).toBe('shardId-000000000001');
    const h = harness(kinesis, {
      startingPosition: 'AT_TIMESTAMP',
      startingTimestamp: new Date(t).toISOString(),
    });
    await h.start();
    await until('the child read', () => h.records().includes('child after'));
    expect(h.records()).toEqual(['parent after', 'child after']);
  });

  it('reads on after a failed read from where it was, not from a new LATEST', async () => {
    const kinesis = new FakeKinesis(1);
    const h = harness(kinesis, { startingPosition: 'LATEST' });
    await h.start();
    await readsMore(kinesis, [0]);
    kinesis.fail.GetRecords = failing(() => named('InternalFailure', 'try again'), { times: 1 });
    kinesis.put(0, 'in the gap');
    await until('the record', () => h.records().includes('in the gap'));
  });

  it('reads on from the oldest record when the records after its checkpoint left the stream', async () => {
    const kinesis = new FakeKinesis(1);
    kinesis.put(0, 'oldest kept');
    kinesis.put(0, 'next');
    const checkpoints = memoryCheckpoints();
    checkpoints.data.set('shop/clicks/clicks', {
      stream: 'clicks',
      streamCreated: kinesis.created.toISOString(),
      [kinesis.shards[0]!.id]: kinesis.shards[0]!.records[0]!.SequenceNumber,
    });
    // DynamoDB Streams' answer for a sequence number older than the stream's retention.
    kinesis.fail.GetShardIterator = failing(
      () => named('TrimmedDataAccessException', 'the requested data has been trimmed'),
      { times: 1 },
    );
    const h = harness(kinesis, {}, { checkpoints });
    await h.start();
    await until('both records', () => (h.records().length >= 2 ? true : undefined));
    expect(h.records()).toEqual(['oldest kept', 'next']);
    expect(h.logs.join('\n')).toContain('are no longer in the stream; reading on from its oldest');
  });

  it('keeps its iterator when reads are throttled', async () => {
    const kinesis = new FakeKinesis(1);
    const h = harness(kinesis, {});
    await h.start();
    await readsMore(kinesis, [0]);
    const iterators = kinesis.calls.filter((c) => c.command === 'GetShardIterator').length;
    kinesis.fail.GetRecords = failing(
      () => named('ProvisionedThroughputExceededException', 'slow down'),
      { times: 2 },
    );
    kinesis.put(0, 'after throttling');
    await until('the record', () => h.records().includes('after throttling'));
    expect(kinesis.calls.filter((c) => c.command === 'GetShardIterator')).toHaveLength(iterators);
    expect(h.state()).toEqual({ ready: true });
  });

  it('gives up on a call that does not answer and tries again', async () => {
    const kinesis = new FakeKinesis(1);
    let hung = 0;
    kinesis.fail.GetRecords = (_input, signal) => {
      if (hung++ > 0) return undefined;
      // Never answers: only the call's own signal ends it.
      return new Promise<never>((_, reject) =>
        signal?.addEventListener('abort', () => reject(named('AbortError', 'aborted')), {
          once: true,
        }),
      );
    };
    kinesis.put(0, 'behind a hung read');
    const h = harness(kinesis, {});
    await h.start();
    await until('the record', () => h.records().includes('behind a hung read'));
    expect(h.logs.join('\n')).toMatch(/EndpointUnreachable: .*no answer within 0.3 s/);
  });

  it('starts afresh on a stream made again under the same name', async () => {
    const kinesis = new FakeKinesis(1);
    kinesis.put(0, 'in the new stream');
    const checkpoints = memoryCheckpoints();
    checkpoints.data.set('shop/clicks/clicks', {
      stream: 'clicks',
      streamCreated: '2024-06-01T00:00:00.000Z',
      'shardId-000000000000': 'SHARD_END',
    });
    const h = harness(kinesis, {}, { checkpoints });
    await h.start();
    await until('the record', () => h.records().includes('in the new stream'));
    const first = kinesis.shards[0]!.records[0]!.SequenceNumber;
    await until('the checkpoint', () =>
      checkpoints.data.get('shop/clicks/clicks')?.['shardId-000000000000'] === first
        ? true
        : undefined,
    );
    expect(checkpoints.data.get('shop/clicks/clicks')).toEqual({
      stream: 'clicks',
      streamCreated: kinesis.created.toISOString(),
      'shardId-000000000000': first,
    });
  });

  it('reports a checkpoint it cannot read or save as such, naming the ConfigMap', async () => {
    const kinesis = new FakeKinesis(1);
    const forbidden = () =>
      Object.assign(new Error('configmaps "clicks.clicks.source" is forbidden'), { code: 403 });
    let loadFails = true;
    let saveFails = true;
    const inner = memoryCheckpoints();
    const checkpoints: CheckpointStore = {
      load: (fn, t) => (loadFails ? Promise.reject(forbidden()) : inner.load(fn, t)),
      save: (fn, t, d: Checkpoint) =>
        saveFails ? Promise.reject(forbidden()) : inner.save(fn, t, d),
      remove: (fn, t) => inner.remove(fn, t),
    };
    const h = harness(kinesis, {}, { checkpoints });
    await h.start();
    const problem = {
      ready: false,
      reason: 'SourceError',
      message: expect.stringMatching(
        /checkpoint ConfigMap shop\/clicks\.clicks\.source failed: the operator needs get, create and patch on configmaps in namespace shop/,
      ) as unknown,
    };
    await until('the load problem', () => (h.state()?.ready === false ? true : undefined));
    expect(h.state()).toEqual({
      ...problem,
      message: expect.stringMatching(/^Reading the checkpoint/) as unknown,
    });
    loadFails = false;
    kinesis.put(0, 'one');
    await until('the record', () => h.records().includes('one'));
    // Saves keep failing: the trigger says so, however well its shards read.
    await readsMore(kinesis, [0]);
    expect(h.state()).toEqual({
      ...problem,
      message: expect.stringMatching(/^Saving the checkpoint/) as unknown,
    });
    saveFails = false;
    await until('ready', () => (h.state()?.ready ? true : undefined));
  });

  it('stays not ready while one shard fails, however well the others read', async () => {
    const kinesis = new FakeKinesis(2);
    const h = harness(kinesis, {});
    const bad = kinesis.shards[1]!.id;
    kinesis.fail.GetShardIterator = (input) =>
      input.ShardId === bad
        ? Promise.reject(
            Object.assign(named('InternalFailure', 'shard 1 is unwell'), {
              $metadata: { httpStatusCode: 500 },
            }),
          )
        : undefined;
    await h.start();
    await until('the problem', () => (h.state()?.ready === false ? true : undefined));
    for (let i = 0; i < 5; i++) {
      await readsMore(kinesis, [0], 1);
      expect(h.state()).toMatchObject({ ready: false, reason: 'SourceError' });
    }
    kinesis.fail = {};
    await until('ready', () => (h.state()?.ready ? true : undefined));
  });

  it('replaces its client when the credentials change, and destroys the old one once unused', async () => {
    const kinesis = new FakeKinesis(1);
    const h = harness(kinesis, {});
    const stop = await h.start();
    await readsMore(kinesis, [0]);
    expect([kinesis.made, kinesis.destroyed]).toEqual([1, 0]);
    h.secret.key = 'rotated';
    // A problem makes the consumer read its Secret again.
    kinesis.fail.GetRecords = failing(
      () =>
        Object.assign(named('AccessDeniedException', 'no'), { $metadata: { httpStatusCode: 400 } }),
      { times: 1 },
    );
    await until('a new client', () => (kinesis.made === 2 ? true : undefined));
    await until('the old one destroyed', () => (kinesis.destroyed === 1 ? true : undefined));
    kinesis.put(0, 'with the new key');
    await until('the record', () => h.records().includes('with the new key'));
    await stop();
    expect([kinesis.made, kinesis.destroyed]).toEqual([2, 2]);
  });

  it('sends records left over from a batch when their own batching window ends', async () => {
    const kinesis = new FakeKinesis(1);
    for (const d of ['a', 'b', 'c']) kinesis.put(0, d);
    const h = harness(kinesis, { batchSize: 2, maxBatchingWindowSeconds: 1 }, { invokeMs: 700 });
    await h.start();
    await until('both batches', () => (h.delivered.length >= 2 ? true : undefined));
    expect(h.delivered).toEqual([['a', 'b'], ['c']]);
    // "c" was read with "a" and "b": its window ended 1 s after that read, during the first
    // batch's 0.7 s, not 1 s after the first batch was done.
    expect(h.invokedAt[1]! - h.invokedAt[0]!).toBeLessThan(1_400);
  });

  it('shows the age of the oldest record not yet delivered while a batch is retried', async () => {
    const kinesis = new FakeKinesis(1);
    kinesis.put(0, 'stuck', new Date(Date.now() - 120_000));
    const h = harness(
      kinesis,
      {},
      {
        answer: () => ({
          ok: false,
          error: { errorType: 'Error', errorMessage: 'no' },
          retryable: true,
        }),
      },
    );
    await h.start();
    await until('retries', () => (h.invocations() >= 3 ? true : undefined));
    const metric = (await h.metrics.metrics())
      .split('\n')
      .find((l) => l.startsWith('eddy_source_kinesis_iterator_age_seconds{'));
    expect(Number(metric?.split(' ')[1])).toBeGreaterThanOrEqual(119);
  });

  it('logs each failed batch invocation as it fails, with its number, error and next step', async () => {
    const kinesis = new FakeKinesis(1);
    kinesis.put(0, 'click');
    let calls = 0;
    let loggedBeforeSecond: string[] = [];
    const h = harness(
      kinesis,
      {},
      {
        answer: () => {
          calls++;
          if (calls === 2) loggedBeforeSecond = [...h.logs];
          return calls === 1
            ? {
                ok: false,
                error: { errorType: 'TypeError', errorMessage: 'no\nmore' },
                retryable: true,
              }
            : { ok: true, status: 200 };
        },
      },
    );
    await h.start();
    await until('the retry to succeed', () => (h.records().length === 1 ? true : undefined));
    const line =
      /trigger clicks: attempt 1 of 1 record\(s\) of \S+ from sequence number \S+ failed: TypeError: no more; retrying in \d+ ms$/;
    expect(loggedBeforeSecond.filter((l) => line.test(l))).toHaveLength(1);
  });

  it('delivers only records a filter passes, and checkpoints the skipped ones too', async () => {
    const kinesis = new FakeKinesis(1);
    const puts = [
      '{"kind": "order", "amount": 150}',
      '{"kind": "order", "amount": 50}',
      'not json',
      '{"kind": "refund", "amount": 500}',
      '{"kind": "order", "amount": 101}',
      '{"kind": "order", "amount": 7}',
    ];
    for (const d of puts) kinesis.put(0, d);
    const checkpoints = memoryCheckpoints();
    const h = harness(
      kinesis,
      {
        filterCriteria: {
          filters: [
            { pattern: '{"data": {"kind": ["order"], "amount": [{"numeric": [">", 100]}]}}' },
          ],
        },
      },
      { checkpoints },
    );
    const stop = await h.start();
    await until('the passed records', () => (h.records().length >= 2 ? true : undefined));
    await readsMore(kinesis, [0]);
    await stop();
    expect(h.delivered).toEqual([[puts[0], puts[4]]]);
    // The last record was skipped, and the checkpoint is past it: a restart reads nothing again.
    const last = kinesis.shards[0]!.records[puts.length - 1]!.SequenceNumber;
    expect(checkpoints.data.get('shop/clicks/clicks')?.[kinesis.shards[0]!.id]).toBe(last);
    const metric = (await h.metrics.metrics())
      .split('\n')
      .find((l) => l.startsWith('eddy_source_filtered_records_total{'));
    expect(metric).toBe(
      'eddy_source_filtered_records_total{namespace="shop",function="clicks",trigger="clicks"} 4',
    );
  });

  it('checkpoints a read whose records no filter passes without invoking', async () => {
    const kinesis = new FakeKinesis(1);
    for (const d of ['{"kind": "refund"}', '{"kind": "refund"}']) kinesis.put(0, d);
    const checkpoints = memoryCheckpoints();
    const h = harness(
      kinesis,
      { filterCriteria: { filters: [{ pattern: '{"data": {"kind": ["order"]}}' }] } },
      { checkpoints },
    );
    const stop = await h.start();
    const last = kinesis.shards[0]!.records[1]!.SequenceNumber;
    await until('the checkpoint past the skipped records', () =>
      checkpoints.data.get('shop/clicks/clicks')?.[kinesis.shards[0]!.id] === last
        ? true
        : undefined,
    );
    await stop();
    expect(h.invocations()).toBe(0);
  });

  it('does not read a trigger whose filter pattern is invalid, and says why', async () => {
    const kinesis = new FakeKinesis(1);
    kinesis.put(0, '{"kind": "order"}');
    const h = harness(kinesis, {
      filterCriteria: { filters: [{ pattern: '{"data": {"kind": "order"}}' }] },
    });
    await h.start();
    const state = await until('the trigger state', () => h.state());
    expect(state).toEqual({
      ready: false,
      reason: 'InvalidTrigger',
      message:
        'filterCriteria.filters[0].pattern is invalid: at data.kind: "order" must be in a list (["order"]) or be an object of nested fields',
    });
    expect(kinesis.calls).toEqual([]);
  });

  it('with readAhead, reads the next records while a batch is delivered, in order', async () => {
    const kinesis = new FakeKinesis(1);
    for (let i = 0; i < 4; i++) kinesis.put(0, `r${i}`);
    const h = harness(kinesis, { batchSize: 2 }, { invokeMs: 150, readAhead: 10 });
    /** For each answered read: whether a batch was being delivered when it came. */
    const duringBatch: boolean[] = [];
    const make = kinesis.client.bind(kinesis);
    kinesis.client = () => {
      const c = make();
      const send = c.send.bind(c) as (cmd: unknown, o?: unknown) => Promise<unknown>;
      (c as unknown as { send: typeof send }).send = async (cmd, o) => {
        const out = await send(cmd, o);
        if ((cmd as object).constructor.name === 'GetRecordsCommand') {
          duringBatch.push(h.active() > 0);
        }
        return out;
      };
      return c;
    };
    await h.start();
    await until('the first batch in flight', () => (h.invocations() >= 1 ? true : undefined));
    kinesis.put(0, 'r4');
    await until('every record', () => (h.records().length >= 5 ? true : undefined));
    expect(h.records()).toEqual(['r0', 'r1', 'r2', 'r3', 'r4']);
    expect(duringBatch).toContain(true);
  });

  it('starts the next GetRecords before the batch in flight answers, one batch at a time', async () => {
    const kinesis = new FakeKinesis(1);
    for (let i = 0; i < 4; i++) kinesis.put(0, `r${i}`);
    const reads: number[] = [];
    const h = harness(
      kinesis,
      { batchSize: 2 },
      {
        // The first batch answers only once a second GetRecords was made meanwhile.
        during: async (n) => {
          if (n === 1) await until('a read during the first batch', () => kinesis.reads(0) >= 2);
          reads.push(kinesis.reads(0));
        },
      },
    );
    await h.start();
    await until('the first batch in flight', () => (h.invocations() >= 1 ? true : undefined));
    kinesis.put(0, 'r4');
    await until('every record', () => (h.records().length >= 5 ? true : undefined));
    expect(h.records()).toEqual(['r0', 'r1', 'r2', 'r3', 'r4']);
    expect(reads[0]).toBeGreaterThanOrEqual(2);
  });

  it('keeps the checkpoint before a failing batch while the next records are read ahead', async () => {
    const kinesis = new FakeKinesis(1);
    for (let i = 0; i < 4; i++) kinesis.put(0, `r${i}`);
    const checkpoints = memoryCheckpoints();
    const saved = () => checkpoints.data.get('shop/clicks/clicks')?.[kinesis.shards[0]!.id];
    /** The checkpoint as each of the first batch's failing attempts answered. */
    const whileFailing: Array<string | undefined> = [];
    let attempts = 0;
    const h = harness(
      kinesis,
      { batchSize: 2 },
      {
        checkpoints,
        during: async (n) => {
          if (n === 1) await until('a read during the first batch', () => kinesis.reads(0) >= 2);
          if (n <= 3) whileFailing.push(saved());
        },
        answer: () =>
          ++attempts <= 3
            ? { ok: false, error: { errorType: 'Error', errorMessage: 'no' }, retryable: true }
            : { ok: true, status: 200 },
      },
    );
    await h.start();
    await until('the first batch failed once', () => (h.invocations() >= 1 ? true : undefined));
    kinesis.put(0, 'r4');
    const last = () => kinesis.shards[0]!.records.at(-1)!.SequenceNumber;
    await until('the checkpoint at the last record', () => (saved() === last() ? true : undefined));
    expect(whileFailing).toEqual([undefined, undefined, undefined]);
    expect(h.delivered.flat()).toEqual(['r0', 'r1', 'r2', 'r3', 'r4']);
    expect(h.delivered[0]).toEqual(['r0', 'r1']);
  });

  it('retries a record with no age limit only as long as the stream keeps it', async () => {
    const kinesis = new FakeKinesis(1);
    kinesis.retentionHours = 24;
    kinesis.put(0, 'expired', new Date(Date.now() - 25 * 3_600_000));
    kinesis.put(0, 'fresh');
    const h = harness(kinesis, { maxRetryAttempts: -1, maxRecordAgeSeconds: -1, batchSize: 1 });
    await h.start();
    await until('the fresh record', () => h.records().includes('fresh'));
    // The expired record was never sent: it went to the dead letter, and the fresh one followed.
    expect(h.delivered).toEqual([['fresh']]);
    expect(h.deadLettered).toEqual(['EventAgeExceeded']);
  });
});

describe('a call signal', () => {
  it('aborts after its time, follows its parent, and leaves no listener or timer behind', () => {
    vi.useFakeTimers();
    try {
      const parent = new AbortController();
      const listeners = () => getEventListeners(parent.signal, 'abort').length;
      const timed = callSignal(parent.signal, 20);
      expect(listeners()).toBe(1);
      expect(vi.getTimerCount()).toBe(1);
      vi.advanceTimersByTime(19);
      expect(timed.signal.aborted).toBe(false);
      vi.advanceTimersByTime(1);
      expect(timed.signal.aborted).toBe(true);
      expect((timed.signal.reason as Error).name).toBe('TimeoutError');
      timed.done();
      expect(listeners()).toBe(0);

      // Calls that settle in time, one after another on a long-lived parent, leave nothing.
      for (let i = 0; i < 100; i++) callSignal(parent.signal, 10_000).done();
      expect(listeners()).toBe(0);
      expect(vi.getTimerCount()).toBe(0);

      const follow = callSignal(parent.signal, 10_000);
      parent.abort(new Error('stopping'));
      expect(follow.signal.aborted).toBe(true);
      expect((follow.signal.reason as Error).message).toBe('stopping');
      follow.done();
      expect(listeners()).toBe(0);
      expect(vi.getTimerCount()).toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });
});
