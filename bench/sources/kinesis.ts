/**
 * The Kinesis source's throughput: records per second from a kinesalite stream through the
 * source, the gateway and a no-op function, against reading the same stream with GetRecords and
 * nothing else, in the same run. The stream has 2 shards; the source reads it from TRIM_HORIZON
 * with batchSize 100 (Lambda's default) and then 1000, each a trigger of its own (so each reads
 * everything). The function is warm before a trigger is added; the time ends when both shards'
 * checkpoints reach their last record (saved every 50 ms here rather than every second).
 *
 *   tsx bench/sources/kinesis.ts      (after npm run build; BENCH_KINESIS_RECORDS=20000)
 */
import {
  GetRecordsCommand,
  GetShardIteratorCommand,
  ListShardsCommand,
} from '@aws-sdk/client-kinesis';
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
import { kinesisSource } from '../../operator/src/sources/kinesis.js';
import { startKinesis, type Kinesis } from '../../test/harness/kinesis.js';
import { runtimeMain } from '../../test/harness/runtime.js';
import {
  createStream,
  kinesisClient,
  putRecords,
  shardOrder,
} from '../../test/sources/kinesis-stream.js';

const records = Number(process.env.BENCH_KINESIS_RECORDS ?? 20_000);
const namespace = 'bench';
const stream = 'bench';

const rate = (n: number, ms: number) => Math.round((n / ms) * 1000);

/** Reads every shard to its newest record with GetRecords alone, the shards side by side. */
async function rawRead(k: Kinesis): Promise<{ ms: number; read: number }> {
  const client = kinesisClient(k);
  try {
    const { Shards = [] } = await client.send(new ListShardsCommand({ StreamName: stream }));
    const started = performance.now();
    const counts = await Promise.all(
      Shards.map(async (shard) => {
        let { ShardIterator: iterator } = await client.send(
          new GetShardIteratorCommand({
            StreamName: stream,
            ShardId: shard.ShardId!,
            ShardIteratorType: 'TRIM_HORIZON',
          }),
        );
        let read = 0;
        for (;;) {
          const out = await client.send(
            new GetRecordsCommand({ ShardIterator: iterator, Limit: 10_000 }),
          );
          read += out.Records?.length ?? 0;
          iterator = out.NextShardIterator;
          if (!out.Records?.length) return read;
        }
      }),
    );
    return { ms: performance.now() - started, read: counts.reduce((a, b) => a + b, 0) };
  } finally {
    client.destroy();
  }
}

export async function benchKinesis(): Promise<string[]> {
  const lines: string[] = [];
  const k = await startKinesis();
  const workDir = await mkdtemp(join(tmpdir(), 'eddy-bench-kinesis-'));
  const stop = new AbortController();
  let running: Promise<void> | undefined;
  try {
    const client = kinesisClient(k);
    await createStream(client, stream, 2);
    const data = 'x'.repeat(100);
    const puts = await putRecords(
      client,
      stream,
      Array.from({ length: records }, (_, i) => ({ key: `k-${i}`, data })),
    );
    client.destroy();
    const last = new Map([...shardOrder(puts)].map(([shard, seqs]) => [shard, seqs.at(-1)!]));

    const raw = await rawRead(k);
    lines.push(
      `kinesis raw GetRecords: ${raw.read} records over 2 shards in ${Math.round(raw.ms)} ms: ${rate(raw.read, raw.ms)} records/s`,
    );

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
      secrets: async () => ({ accessKeyId: k.accessKeyId, secretAccessKey: k.secretAccessKey }),
      elector: soleLeader,
      log: () => undefined,
      // The local stack's gateway, as npm start runs it: no authentication.
      auth: noAuth,
      gateway: { port: 0, host: '127.0.0.1' },
      onListening: (u) => (url = u),
      sources: [kinesisSource({ checkpointIntervalMs: 50 })],
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

    for (const batchSize of [100, 1000]) {
      const name = `batch-${batchSize}`;
      const trigger: Trigger = {
        name,
        kinesis: {
          stream,
          batchSize,
          connection: { endpoint: k.endpoint, region: k.region, secretRef: { name: 'kinesis' } },
        },
      };
      const started = performance.now();
      store.set({ ...fn, spec: { ...fn.spec, triggers: [trigger] } });
      const key = `${namespace}/noop/${name}`;
      for (;;) {
        const saved = checkpoints.data.get(key) ?? {};
        if ([...last].every(([shard, seq]) => saved[shard] === seq)) break;
        if (performance.now() - started > 5 * 60_000) throw new Error(`${name} did not finish`);
        await sleep(10);
      }
      const ms = performance.now() - started;
      lines.push(
        `kinesis through Eddy (no-op function, batchSize ${batchSize}): ${records} records in ${Math.round(ms)} ms: ` +
          `${rate(records, ms)} records/s, ${Math.round((raw.ms / ms) * 100)}% of raw GetRecords`,
      );
    }
  } finally {
    stop.abort();
    await running?.catch(() => undefined);
    await k.stop();
    await rm(workDir, { recursive: true, force: true });
  }
  return lines;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  for (const line of await benchKinesis()) console.log(line);
}
