/** Tables with streams on moto for the DynamoDB source's tests and bench: create, write, read back. */
import {
  CreateTableCommand,
  DeleteItemCommand,
  DynamoDBClient,
  PutItemCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import {
  DescribeStreamCommand,
  DynamoDBStreamsClient,
  GetRecordsCommand,
  GetShardIteratorCommand,
} from '@aws-sdk/client-dynamodb-streams';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { Moto } from '../harness/moto.js';

const config = (m: Moto) => ({
  endpoint: m.endpoint,
  region: m.region,
  credentials: { accessKeyId: m.accessKeyId, secretAccessKey: m.secretAccessKey },
  requestHandler: new NodeHttpHandler({ connectionTimeout: 5_000, requestTimeout: 30_000 }),
});

export const dynamoClient = (m: Moto) => new DynamoDBClient(config(m));
export const streamsClient = (m: Moto) => new DynamoDBStreamsClient(config(m));

/** A table keyed by `id` (a string) with a NEW_AND_OLD_IMAGES stream; returns the stream's ARN. */
export async function createTable(client: DynamoDBClient, name: string): Promise<string> {
  const out = await client.send(
    new CreateTableCommand({
      TableName: name,
      KeySchema: [{ AttributeName: 'id', KeyType: 'HASH' }],
      AttributeDefinitions: [{ AttributeName: 'id', AttributeType: 'S' }],
      BillingMode: 'PAY_PER_REQUEST',
      StreamSpecification: { StreamEnabled: true, StreamViewType: 'NEW_AND_OLD_IMAGES' },
    }),
  );
  const arn = out.TableDescription?.LatestStreamArn;
  if (!arn) throw new Error(`table ${name} has no stream`);
  return arn;
}

/** One change to an item: an insert or update (`put`, `update`) with an amount, or a delete. */
export type Change =
  | { op: 'put'; id: string; amount: number }
  | { op: 'update'; id: string; amount: number }
  | { op: 'delete'; id: string };

export async function write(client: DynamoDBClient, table: string, c: Change): Promise<void> {
  const Key = { id: { S: c.id } };
  if (c.op === 'put') {
    await client.send(
      new PutItemCommand({ TableName: table, Item: { ...Key, amount: { N: String(c.amount) } } }),
    );
  } else if (c.op === 'update') {
    await client.send(
      new UpdateItemCommand({
        TableName: table,
        Key,
        UpdateExpression: 'SET amount = :a',
        ExpressionAttributeValues: { ':a': { N: String(c.amount) } },
      }),
    );
  } else {
    await client.send(new DeleteItemCommand({ TableName: table, Key }));
  }
}

/**
 * Writes changes `concurrency` at a time, each key's changes in order (keys never overlap). One
 * at a time by default: moto's server, written to concurrently, can give two changes one
 * sequence number.
 */
export async function writeAll(
  client: DynamoDBClient,
  table: string,
  changes: Change[],
  concurrency = 1,
): Promise<void> {
  const byKey = new Map<string, Change[]>();
  for (const c of changes) byKey.set(c.id, [...(byKey.get(c.id) ?? []), c]);
  const queues = [...byKey.values()];
  const worker = async () => {
    for (let q = queues.shift(); q; q = queues.shift()) {
      for (const c of q) await write(client, table, c);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

export interface StreamEntry {
  shardId: string;
  sequenceNumber: string;
  id: string;
  eventName: string;
  /** The record's ApproximateCreationDateTime, in milliseconds. */
  arrivedAt: number;
}

/** Every record of every shard of the stream, in each shard's order, read raw. */
export async function readStream(
  client: DynamoDBStreamsClient,
  streamArn: string,
): Promise<StreamEntry[]> {
  const out = await client.send(new DescribeStreamCommand({ StreamArn: streamArn }));
  const entries: StreamEntry[] = [];
  for (const shard of out.StreamDescription?.Shards ?? []) {
    let iterator = (
      await client.send(
        new GetShardIteratorCommand({
          StreamArn: streamArn,
          ShardId: shard.ShardId,
          ShardIteratorType: 'TRIM_HORIZON',
        }),
      )
    ).ShardIterator;
    while (iterator) {
      const page = await client.send(
        new GetRecordsCommand({ ShardIterator: iterator, Limit: 1000 }),
      );
      const records = page.Records ?? [];
      for (const r of records) {
        entries.push({
          shardId: shard.ShardId!,
          sequenceNumber: r.dynamodb!.SequenceNumber!,
          id: r.dynamodb!.Keys!.id!.S!,
          eventName: r.eventName!,
          arrivedAt: r.dynamodb!.ApproximateCreationDateTime!.getTime(),
        });
      }
      if (records.length === 0) break;
      iterator = page.NextShardIterator;
    }
  }
  return entries;
}
