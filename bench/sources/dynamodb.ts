/**
 * The DynamoDB Streams source's throughput: records per second from a table's stream on moto's
 * server through the source, the gateway and a no-op function, against reading the same stream
 * with GetRecords and nothing else, in the same run. moto gives a stream one shard; the source
 * reads it from TRIM_HORIZON with batchSize 100 (Lambda's default) and then 1000, each a trigger
 * of its own (so each reads everything). The function is warm before a trigger is added; the
 * time ends when the shard's checkpoint reaches its last record (saved every 50 ms here rather
 * than every second).
 *
 *   tsx bench/sources/dynamodb.ts      (after npm run build; BENCH_DYNAMODB_RECORDS=20000)
 */
import { BatchWriteItemCommand } from '@aws-sdk/client-dynamodb';
import {
  DescribeStreamCommand,
  GetRecordsCommand,
  GetShardIteratorCommand,
} from '@aws-sdk/client-dynamodb-streams';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import type { EddyFunction, Trigger } from '../../operator/src/api/types.js';
import { noAuth } from '../../operator/src/auth/authorizer.js';
import { composeEddy } from '../../operator/src/compose.js';
import { MemoryFunctionStore } from '../../operator/src/functions.js';
import { soleLeader } from '../../operator/src/manager.js';
import { createLocalPlatform } from '../../operator/src/platform/local.js';
import { memoryCheckpoints } from '../../operator/src/sources/checkpoints.js';
import { dynamodbSource } from '../../operator/src/sources/dynamodb.js';
import { startMoto, type Moto } from '../../test/harness/moto.js';
import { runtimeMain } from '../../test/harness/runtime.js';
import { createTable, dynamoClient, streamsClient } from '../../test/sources/dynamodb-table.js';

const records = Number(process.env.BENCH_DYNAMODB_RECORDS ?? 20_000);
const namespace = 'bench';
const table = 'bench';

const rate = (n: number, ms: number) => Math.round((n / ms) * 1000);

/**
 * Reads every shard with GetRecords alone until `expected` records came (or a read finds none);
 * says the last record's number per shard.
 */
async function rawRead(
  m: Moto,
  arn: string,
  expected: number,
): Promise<{ ms: number; read: number; last: Map<string, string> }> {
  const client = streamsClient(m);
  try {
    const described = await client.send(new DescribeStreamCommand({ StreamArn: arn }));
    const shards = described.StreamDescription?.Shards ?? [];
    const last = new Map<string, string>();
    const started = performance.now();
    let total = 0;
    const counts = await Promise.all(
      shards.map(async (shard) => {
        let { ShardIterator: iterator } = await client.send(
          new GetShardIteratorCommand({
            StreamArn: arn,
            ShardId: shard.ShardId!,
            ShardIteratorType: 'TRIM_HORIZON',
          }),
        );
        let read = 0;
        for (;;) {
          const out = await client.send(
            new GetRecordsCommand({ ShardIterator: iterator, Limit: 1_000 }),
          );
          const got = out.Records ?? [];
          read += got.length;
          total += got.length;
          if (got.length > 0) last.set(shard.ShardId!, got.at(-1)!.dynamodb!.SequenceNumber!);
          iterator = out.NextShardIterator;
          if (got.length === 0 || total >= expected) return read;
        }
      }),
    );
    return { ms: performance.now() - started, read: counts.reduce((a, b) => a + b, 0), last };
  } finally {
    client.destroy();
  }
}

export async function benchDynamoDB(): Promise<string[]> {
  const lines: string[] = [];
  const m = await startMoto();
  const workDir = await mkdtemp(join(tmpdir(), 'eddy-bench-dynamodb-'));
  const stop = new AbortController();
  let running: Promise<void> | undefined;
  try {
    const db = dynamoClient(m);
    const arn = await createTable(db, table);
    const amount = { N: '100' };
    const note = { S: 'x'.repeat(60) };
    // 25 items a call, DynamoDB's most; one call at a time, so each change has its own number.
    for (let i = 0; i < records; i += 25) {
      const items = Array.from({ length: Math.min(25, records - i) }, (_, j) => ({
        PutRequest: { Item: { id: { S: `item-${i + j}` }, amount, note } },
      }));
      await db.send(new BatchWriteItemCommand({ RequestItems: { [table]: items } }));
    }
    db.destroy();

    const raw = await rawRead(m, arn, records);
    if (raw.read !== records)
      throw new Error(`the stream holds ${raw.read} records, not ${records}`);

    const store = new MemoryFunctionStore();
    const fn: EddyFunction = {
      apiVersion: 'eddy.dev/v1alpha1',
      kind: 'Function',
      metadata: { name: 'noop', namespace, generation: 1, uid: 'uid-noop' },
      spec: {
        code: { inline: 'export const handler = async () => {};' },
        timeoutSeconds: 30,
        scaling: { minReplicas: 1 },
      },
    };
    store.set(fn);
    const checkpoints = memoryCheckpoints();
    let url = '';
    const eddy = composeEddy({
      platform: createLocalPlatform({ store, runtimeMain, workDir, log: () => undefined }),
      store,
      secrets: async () => ({ accessKeyId: m.accessKeyId, secretAccessKey: m.secretAccessKey }),
      elector: soleLeader,
      log: () => undefined,
      // The local stack's gateway, as npm start runs it: no authentication.
      auth: noAuth,
      gateway: { port: 0, host: '127.0.0.1' },
      onListening: (u) => (url = u),
      sources: [dynamodbSource({ checkpointIntervalMs: 50 })],
      checkpoints,
    });
    running = eddy.manager.start(stop.signal);
    for (let i = 0; ; i++) {
      if (url) {
        const res = await fetch(`${url}/functions/${namespace}/noop`, {
          method: 'POST',
          body: '{}',
        });
        if (res.ok) break;
      }
      if (i > 600) throw new Error('the no-op function did not answer within a minute');
      await sleep(100);
    }

    // The raw read is timed again before each trigger, so a machine that slows down meanwhile
    // shows in both.
    for (const batchSize of [100, 1000]) {
      const base = await rawRead(m, arn, records);
      lines.push(
        `dynamodb raw GetRecords (moto): ${base.read} records over ${base.last.size} shard(s) in ${Math.round(base.ms)} ms: ${rate(base.read, base.ms)} records/s`,
      );
      const name = `batch-${batchSize}`;
      const trigger: Trigger = {
        name,
        dynamodb: {
          streamArn: arn,
          batchSize,
          connection: { endpoint: m.endpoint, region: m.region, secretRef: { name: 'dynamodb' } },
        },
      };
      const started = performance.now();
      store.set({ ...fn, spec: { ...fn.spec, triggers: [trigger] } });
      const key = `${namespace}/noop/${name}`;
      for (;;) {
        const saved = checkpoints.data.get(key) ?? {};
        if ([...raw.last].every(([shard, seq]) => saved[shard] === seq)) break;
        if (performance.now() - started > 5 * 60_000) throw new Error(`${name} did not finish`);
        await sleep(10);
      }
      const ms = performance.now() - started;
      lines.push(
        `dynamodb through Eddy (no-op function, batchSize ${batchSize}): ${records} records in ${Math.round(ms)} ms: ` +
          `${rate(records, ms)} records/s, ${Math.round((base.ms / ms) * 100)}% of raw GetRecords`,
      );
    }
  } finally {
    stop.abort();
    await running?.catch(() => undefined);
    await m.stop();
    await rm(workDir, { recursive: true, force: true });
  }
  return lines;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const line of await benchDynamoDB()) console.log(line);
}
