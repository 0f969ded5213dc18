/**
 * The Kinesis source: for every `kinesis` trigger of every Function, one consumer per shard
 * (ListShards, GetShardIterator, GetRecords), as Lambda's event source mapping polls, with the
 * stream machinery of `stream-reader.ts`. Batches go to the function as `dev.eddy.kinesis.batch`
 * CloudEvents whose data is Lambda's Kinesis event.
 */
import {
  DescribeStreamSummaryCommand,
  GetRecordsCommand,
  GetShardIteratorCommand,
  KinesisClient,
  ListShardsCommand,
  type GetShardIteratorCommandInput,
  type Shard,
} from '@aws-sdk/client-kinesis';
import type { KinesisTrigger } from '../api/types.js';
import { eventTypes } from '../../../runtime/src/contract/index.js';
import { streamClientConfig, type ResolvedConnection } from './connection.js';
import { kinesisFilterView } from './event-filter.js';
import { shapeRecord } from './kinesis-batch.js';
import type { SourceFactory } from './source.js';
import {
  streamSource,
  type Position,
  type ShardInfo,
  type StreamKind,
  type StreamSourceOptions,
} from './stream-reader.js';

export { callSignal, shardEnd } from './stream-reader.js';

export type KinesisSourceOptions = StreamSourceOptions<KinesisClient>;

/** Records asked for per read: Kinesis's most (a read also stops at 10 MB). */
const readLimit = 10_000;

function iteratorInput(from: Position): Omit<GetShardIteratorCommandInput, 'ShardId'> {
  switch (from.type) {
    case 'AFTER_SEQUENCE_NUMBER':
      return {
        ShardIteratorType: 'AFTER_SEQUENCE_NUMBER',
        StartingSequenceNumber: from.sequenceNumber,
      };
    case 'AT_TIMESTAMP':
      return { ShardIteratorType: 'AT_TIMESTAMP', Timestamp: from.at };
    case 'TRIM_HORIZON':
      return { ShardIteratorType: 'TRIM_HORIZON' };
  }
}

/** Kinesis Data Streams, as the stream machinery reads it. */
export const kinesisKind: StreamKind<KinesisClient, KinesisTrigger> = {
  name: 'kinesis',
  spec: (t) => t.kinesis,
  what: (t) => `stream ${t.stream}`,
  ageMetric: {
    name: 'eddy_source_kinesis_iterator_age_seconds',
    help: "How far behind the stream's newest record a shard's consumer reads (GetRecords' MillisBehindLatest).",
  },
  eventType: eventTypes.kinesisBatch,
  matchOptions: {},
  timestamps: true,
  // The next GetRecords starts while a batch is delivered, once fewer records than one read
  // holds wait: a shard holds at most what waits plus one read ahead (10,000 records or 10 MB).
  readAhead: readLimit,
  throttles: new Set(['ProvisionedThroughputExceededException', 'LimitExceededException']),
  makeClient: kinesisClientFor,
  async describe(c, t, abortSignal) {
    const out = await c.send(new DescribeStreamSummaryCommand({ StreamName: t.stream }), {
      abortSignal,
    });
    const summary = out.StreamDescriptionSummary;
    const region = t.connection.region ?? 'us-east-1';
    return {
      arn: summary?.StreamARN ?? `arn:aws:kinesis:${region}:000000000000:stream/${t.stream}`,
      stream: t.stream,
      created: summary?.StreamCreationTimestamp?.toISOString(),
      retentionHours: summary?.RetentionPeriodHours,
    };
  },
  async listShards(c, stream, abortSignal) {
    const shards: Shard[] = [];
    let next: string | undefined;
    do {
      const out = await c.send(
        new ListShardsCommand(next ? { NextToken: next } : { StreamName: stream.stream }),
        { abortSignal },
      );
      shards.push(...(out.Shards ?? []));
      next = out.NextToken;
    } while (next);
    return shards.map((s): ShardInfo => ({
      id: s.ShardId!,
      parents: [s.ParentShardId, s.AdjacentParentShardId].filter(
        (p): p is string => p !== undefined,
      ),
    }));
  },
  async iterator(c, stream, shardId, from, abortSignal) {
    const out = await c.send(
      new GetShardIteratorCommand({
        StreamName: stream.stream,
        ShardId: shardId,
        ...iteratorInput(from),
      }),
      { abortSignal },
    );
    return out.ShardIterator;
  },
  async read(c, iterator, abortSignal) {
    const out = await c.send(new GetRecordsCommand({ ShardIterator: iterator, Limit: readLimit }), {
      abortSignal,
    });
    return {
      records: (out.Records ?? []).map((r) => ({
        sequenceNumber: r.SequenceNumber ?? '',
        arrivedAt: r.ApproximateArrivalTimestamp?.getTime() ?? Date.now(),
        filterView: () => kinesisFilterView(r.Data),
        shape: (origin) => shapeRecord(r, origin),
      })),
      next: out.NextShardIterator,
      behindMs: out.MillisBehindLatest ?? 0,
    };
  },
};

/** The Kinesis source: one leader-only runnable that follows the Functions' kinesis triggers. */
export function kinesisSource(options: KinesisSourceOptions = {}): SourceFactory {
  return streamSource(kinesisKind, options);
}

/** A Kinesis client with bounded waits. */
function kinesisClientFor(conn: ResolvedConnection): KinesisClient {
  return new KinesisClient(streamClientConfig(conn));
}
