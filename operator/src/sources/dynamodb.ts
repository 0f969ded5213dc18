/**
 * The DynamoDB Streams source: for every `dynamodb` trigger of every Function, one consumer per
 * shard (DescribeStream, GetShardIterator, GetRecords), with the stream machinery Kinesis
 * triggers use (`stream-reader.ts`): parents before children, one batch at a time per shard,
 * checkpoints, partial batch failures, bisect, retries, record age and filters. Batches go to the
 * function as `dev.eddy.dynamodb.batch` CloudEvents whose data is Lambda's DynamoDB event; a
 * batch given up on is dead-lettered as Lambda's on-failure record (the shard and sequence
 * range), not its data.
 */
import {
  DescribeStreamCommand,
  DynamoDBStreamsClient,
  GetRecordsCommand,
  GetShardIteratorCommand,
  ListStreamsCommand,
  type AttributeValue,
  type _Record as StreamRecord,
  type Shard,
  type ShardIteratorType,
} from '@aws-sdk/client-dynamodb-streams';
import type { DynamoDBTrigger } from '../api/types.js';
import { eventTypes } from '../../../runtime/src/contract/index.js';
import type { DeliveryEvent } from '../gateway/delivery.js';
import { SourceProblem, streamClientConfig, type ResolvedConnection } from './connection.js';
import {
  batchEvent,
  DeferredRecord,
  type ShapedRecord,
  type StreamOrigin,
} from './kinesis-batch.js';
import type { SourceFactory } from './source.js';
import {
  streamSource,
  type Position,
  type ReadRecord,
  type StreamKind,
  type StreamSourceOptions,
} from './stream-reader.js';

export type DynamoDBSourceOptions = StreamSourceOptions<DynamoDBStreamsClient>;

/** Records asked for per read: DynamoDB Streams' most. */
const readLimit = 1_000;
/** DynamoDB Streams keeps records 24 hours. */
const retentionHours = 24;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

const base64 = (b: Uint8Array) =>
  Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');

/** An attribute value as Lambda's event writes it: binary as base64, the rest as it is. */
function attribute(v: AttributeValue): Json {
  if (v.B !== undefined) return { B: base64(v.B) };
  if (v.BS !== undefined) return { BS: v.BS.map(base64) };
  if (v.M !== undefined) return { M: image(v.M) };
  if (v.L !== undefined) return { L: v.L.map(attribute) };
  const [key] = Object.keys(v).filter((k) => k !== '$unknown');
  if (key === undefined) return {};
  return { [key]: (v as unknown as Record<string, Json>)[key]! };
}

function image(m: Record<string, AttributeValue>): { [key: string]: Json } {
  return Object.fromEntries(Object.entries(m).map(([k, v]) => [k, attribute(v)]));
}

/**
 * One record of Lambda's DynamoDB event, keys in the order of AWS SAM CLI's sample event:
 * `ApproximateCreationDateTime` in epoch seconds, images as DynamoDB writes them.
 */
export function lambdaDynamoDBRecord(r: StreamRecord, o: StreamOrigin): Record<string, Json> {
  const d = r.dynamodb ?? {};
  const created = d.ApproximateCreationDateTime?.getTime() ?? Date.now();
  return {
    eventID: r.eventID ?? '',
    eventName: r.eventName ?? '',
    eventVersion: r.eventVersion ?? '1.1',
    eventSource: r.eventSource ?? 'aws:dynamodb',
    awsRegion: r.awsRegion ?? o.region,
    dynamodb: {
      Keys: image(d.Keys ?? {}),
      ...(d.NewImage ? { NewImage: image(d.NewImage) } : {}),
      ...(d.OldImage ? { OldImage: image(d.OldImage) } : {}),
      ApproximateCreationDateTime: created / 1000,
      SequenceNumber: d.SequenceNumber ?? '',
      SizeBytes: d.SizeBytes ?? 0,
      StreamViewType: d.StreamViewType ?? '',
    },
    eventSourceARN: o.streamArn,
    // Deletions by time to live name DynamoDB's service principal.
    ...(r.userIdentity
      ? {
          userIdentity: {
            principalId: r.userIdentity.PrincipalId ?? '',
            type: r.userIdentity.Type ?? '',
          },
        }
      : {}),
  };
}

function readRecord(r: StreamRecord): ReadRecord {
  const sequenceNumber = r.dynamodb?.SequenceNumber ?? '';
  const arrivedAt = r.dynamodb?.ApproximateCreationDateTime?.getTime() ?? Date.now();
  // Filters see the record as the handler would: it is made once for both.
  let made: { o: StreamOrigin; record: Record<string, Json> } | undefined;
  const view = (o: StreamOrigin) =>
    made?.o === o ? made.record : (made = { o, record: lambdaDynamoDBRecord(r, o) }).record;
  return {
    sequenceNumber,
    arrivedAt,
    filterView: view,
    shape: (o): ShapedRecord =>
      new DeferredRecord(sequenceNumber, arrivedAt, () => JSON.stringify(view(o))),
  };
}

function iteratorType(from: Position): {
  ShardIteratorType: ShardIteratorType;
  SequenceNumber?: string;
} {
  if (from.type === 'AFTER_SEQUENCE_NUMBER') {
    return { ShardIteratorType: 'AFTER_SEQUENCE_NUMBER', SequenceNumber: from.sequenceNumber };
  }
  // DynamoDB Streams has no AT_TIMESTAMP: the reader starts at the oldest record and skips.
  return { ShardIteratorType: 'TRIM_HORIZON' };
}

/** The newest stream of a table (a table whose stream was turned off and on again has several). */
async function latestStream(
  c: DynamoDBStreamsClient,
  table: string,
  abortSignal: AbortSignal,
): Promise<string> {
  let best: { arn: string; label: string } | undefined;
  let next: string | undefined;
  do {
    const out = await c.send(
      new ListStreamsCommand({
        TableName: table,
        ...(next ? { ExclusiveStartStreamArn: next } : {}),
      }),
      { abortSignal },
    );
    for (const s of out.Streams ?? []) {
      if (s.StreamArn && (!best || (s.StreamLabel ?? '') > best.label)) {
        best = { arn: s.StreamArn, label: s.StreamLabel ?? '' };
      }
    }
    next = out.LastEvaluatedStreamArn;
  } while (next);
  if (!best) {
    throw new SourceProblem(
      'StreamNotFound',
      `table ${table} has no stream: turn on DynamoDB Streams for it (StreamSpecification, with NEW_AND_OLD_IMAGES for both images), or name the stream with streamArn`,
    );
  }
  return best.arn;
}

/**
 * What a dead letter of a DynamoDB batch holds: Lambda's on-failure record, which names the
 * shard and the range of sequence numbers to read again, not the records.
 */
export function onFailureEvent(
  records: readonly ShapedRecord[],
  o: StreamOrigin,
  trigger: string,
): DeliveryEvent {
  const event = batchEvent(records, o, trigger, eventTypes.dynamodbBatch);
  const first = records[0]!;
  const last = records[records.length - 1]!;
  const info = {
    DDBStreamBatchInfo: {
      shardId: o.shardId,
      startSequenceNumber: first.sequenceNumber,
      endSequenceNumber: last.sequenceNumber,
      approximateArrivalOfFirstRecord: new Date(first.arrivedAt).toISOString(),
      approximateArrivalOfLastRecord: new Date(last.arrivedAt).toISOString(),
      batchSize: records.length,
      streamArn: o.streamArn,
    },
  };
  return { ...event, body: Buffer.from(JSON.stringify(info)) };
}

/** DynamoDB Streams, as the stream machinery reads it. */
export const dynamodbKind: StreamKind<DynamoDBStreamsClient, DynamoDBTrigger> = {
  name: 'dynamodb',
  spec: (t) => t.dynamodb,
  what: (t) => (t.streamArn ? `stream ${t.streamArn}` : `the stream of table ${t.table ?? ''}`),
  ageMetric: {
    name: 'eddy_source_dynamodb_iterator_age_seconds',
    help: 'How far behind a DynamoDB stream shard its consumer reads: the age of the last record read, or while a batch is delivered, of its oldest record not yet done.',
  },
  eventType: eventTypes.dynamodbBatch,
  // DynamoDB writes numbers as strings ({"N": "150"}): numeric filters read them as numbers.
  matchOptions: { numericStrings: true },
  timestamps: false,
  // A read is at most 1 MB (and 1,000 records): one is read ahead while a batch is delivered.
  readAhead: readLimit,
  throttles: new Set([
    'LimitExceededException',
    'ThrottlingException',
    'ProvisionedThroughputExceededException',
  ]),
  deadLetterEvent: onFailureEvent,
  makeClient: dynamodbStreamsClientFor,
  async describe(c, t, abortSignal) {
    const arn = t.streamArn ?? (await latestStream(c, t.table ?? '', abortSignal));
    const out = await c.send(new DescribeStreamCommand({ StreamArn: arn }), { abortSignal });
    return { arn: out.StreamDescription?.StreamArn ?? arn, stream: arn, retentionHours };
  },
  async listShards(c, stream, abortSignal) {
    const shards: Shard[] = [];
    let next: string | undefined;
    do {
      const out = await c.send(
        new DescribeStreamCommand({
          StreamArn: stream.arn,
          ...(next ? { ExclusiveStartShardId: next } : {}),
        }),
        { abortSignal },
      );
      shards.push(...(out.StreamDescription?.Shards ?? []));
      next = out.StreamDescription?.LastEvaluatedShardId;
    } while (next);
    return shards.map((s) => ({
      id: s.ShardId!,
      parents: s.ParentShardId ? [s.ParentShardId] : [],
    }));
  },
  async iterator(c, stream, shardId, from, abortSignal) {
    const out = await c.send(
      new GetShardIteratorCommand({
        StreamArn: stream.arn,
        ShardId: shardId,
        ...iteratorType(from),
      }),
      { abortSignal },
    );
    return out.ShardIterator;
  },
  async read(c, iterator, abortSignal) {
    const out = await c.send(new GetRecordsCommand({ ShardIterator: iterator, Limit: readLimit }), {
      abortSignal,
    });
    const records = (out.Records ?? []).map(readRecord);
    const last = records[records.length - 1];
    return {
      records,
      next: out.NextShardIterator,
      // GetRecords does not say how far behind it is: the last record's age tells.
      behindMs: last ? Math.max(0, Date.now() - last.arrivedAt) : 0,
    };
  },
};

/** The DynamoDB Streams source: one leader-only runnable for the Functions' dynamodb triggers. */
export function dynamodbSource(options: DynamoDBSourceOptions = {}): SourceFactory {
  return streamSource(dynamodbKind, options);
}

/** A DynamoDB Streams client with bounded waits. */
function dynamodbStreamsClientFor(conn: ResolvedConnection): DynamoDBStreamsClient {
  return new DynamoDBStreamsClient(streamClientConfig(conn));
}
