/**
 * The Kinesis source's throughput: records per second from a kinesalite stream through the
 * source, the gateway and a no-op function, against reading the same stream with GetRecords and
 * nothing else, in the same run. The stream has 2 shards; the source reads it from TRIM_HORIZON
 * with batchSize 100 (Lambda's default) and then 1000, each a trigger of its own (so each reads
 * everything), in rounds (BENCH_KINESIS_ROUNDS, 3), each after a raw read of the whole stream
 * timed just before it: the median of the rounds' ratios is reported. The function is warm before
 * a trigger is added; the time ends when both shards' checkpoints reach their last record (saved
 * every 50 ms here rather than every second). Target: at batchSize 100, at least 80% of raw
 * GetRecords' records/s.
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

/** Rounds per batch size, each raw GetRecords then the trigger: the median ratio is reported. */
const rounds = Number(process.env.BENCH_KINESIS_ROUNDS ?? 3);

const rate = (n: number, ms: number) => Math.round((n / ms) * 1000);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

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
      const ratios: number[] = [];
      const rates: number[] = [];
      const raws: number[] = [];
      for (let round = 1; round <= rounds; round++) {
        // The baseline just before each trigger, so that both see the machine as it is then.
        const raw = await rawRead(k);
        if (raw.read !== records) throw new Error(`raw GetRecords read ${raw.read} of ${records}`);
        const name = `batch-${batchSize}-${round}`;
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
        raws.push(rate(raw.read, raw.ms));
        rates.push(rate(records, ms));
        ratios.push(raw.ms / ms);
      }
      const ratio = median(ratios);
      lines.push(
        `kinesis through Eddy (no-op function, batchSize ${batchSize}): ${records} records over 2 shards, ${rounds} rounds each after raw GetRecords: ` +
          `${rates.join(' / ')} records/s against raw ${raws.join(' / ')}; median ${Math.round(ratio * 100)}% of raw GetRecords (rounds: ${ratios.map((r) => Math.round(r * 100)).join(', ')}%)` +
          (batchSize === 100 ? ` (target at least 80%: ${ratio >= 0.8 ? 'met' : 'missed'})` : ''),
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
