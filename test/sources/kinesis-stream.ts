/** Streams on kinesalite for the Kinesis source's tests and bench: create, fill, read back. */
import {
  CreateStreamCommand,
  KinesisClient,
  PutRecordsCommand,
  waitUntilStreamExists,
} from '@aws-sdk/client-kinesis';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { Kinesis } from '../harness/kinesis.js';

export function kinesisClient(k: Kinesis): KinesisClient {
  return new KinesisClient({
    endpoint: k.endpoint,
    region: k.region,
    credentials: { accessKeyId: k.accessKeyId, secretAccessKey: k.secretAccessKey },
    // The client defaults to HTTP/2; kinesalite speaks HTTP/1.1.
    requestHandler: new NodeHttpHandler(),
  });
}

export async function createStream(
  client: KinesisClient,
  name: string,
  shards: number,
): Promise<void> {
  await client.send(new CreateStreamCommand({ StreamName: name, ShardCount: shards }));
  await waitUntilStreamExists({ client, minDelay: 1, maxWaitTime: 30 }, { StreamName: name });
}

export interface Put {
  shardId: string;
  sequenceNumber: string;
  data: string;
}

/** Puts records (500 per call, the most PutRecords takes) and says where each went. */
export async function putRecords(
  client: KinesisClient,
  stream: string,
  records: Array<{ key: string; data: string }>,
): Promise<Put[]> {
  const puts: Put[] = [];
  for (let i = 0; i < records.length; i += 500) {
    const chunk = records.slice(i, i + 500);
    const out = await client.send(
      new PutRecordsCommand({
        StreamName: stream,
        Records: chunk.map((r) => ({ PartitionKey: r.key, Data: Buffer.from(r.data) })),
      }),
    );
    if (out.FailedRecordCount) throw new Error(`${out.FailedRecordCount} records were not put`);
    out.Records!.forEach((r, j) =>
      puts.push({ shardId: r.ShardId!, sequenceNumber: r.SequenceNumber!, data: chunk[j]!.data }),
    );
  }
  return puts;
}

/** Each shard's sequence numbers in the shard's order. */
export function shardOrder(puts: Put[]): Map<string, string[]> {
  const byShard = new Map<string, string[]>();
  for (const p of puts) {
    const list = byShard.get(p.shardId) ?? [];
    list.push(p.sequenceNumber);
    byShard.set(p.shardId, list);
  }
  for (const list of byShard.values()) list.sort((a, b) => (BigInt(a) < BigInt(b) ? -1 : 1));
  return byShard;
}
