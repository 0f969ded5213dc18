/**
 * The Kinesis source against kinesalite, with the gateway, the local platform and real runtime
 * processes: Lambda's Kinesis event reaching the handler, order per shard, checkpoints across a
 * restart, a poison record retried, dead-lettered and passed, a missing stream reported, and the
 * local stack killed twice in the middle of 10,000 records.
 */
import { existsSync } from 'node:fs';
import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  DeleteStreamCommand,
  SplitShardCommand,
  waitUntilStreamExists,
  waitUntilStreamNotExists,
  type KinesisClient,
} from '@aws-sdk/client-kinesis';
import type { Trigger } from '../../operator/src/api/types.js';
import type { SecretReader } from '../../operator/src/functions.js';
import { fileCheckpoints } from '../../operator/src/sources/checkpoints.js';
import { kinesisSource } from '../../operator/src/sources/kinesis.js';
import { TriggerStates } from '../../operator/src/sources/states.js';
import { inlineFunction, namespace, quiet, startStack, type Stack } from '../gateway/stack.js';
import { projectRoot } from '../harness/components.js';
import { startKinesis } from '../harness/kinesis.js';
import { freePort } from '../harness/ports.js';
import { startProcess, waitUntilReady, type ManagedProcess } from '../harness/proc.js';
import { runtimeMain } from '../harness/runtime.js';
import { canRun, useComponent } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';
import { createStream, kinesisClient, putRecords, shardOrder } from './kinesis-stream.js';

/** Distinctive, so that a test can prove it appears in no log, status or metric. */
const secretAccessKey = 'kinesis-secret-6f1c9e';

const fast = () =>
  kinesisSource({
    idlePollMs: 100,
    problemBaseMs: 100,
    retryBaseDelayMs: 50,
    retryMaxDelayMs: 200,
    shardSyncMs: 1_000,
  });

/** Writes every event it gets as one JSON line; throws on a record whose data is "poison". */
const recorder = `import { appendFileSync } from 'node:fs';
export const handler = async (event) => {
  appendFileSync(process.env.SEEN, JSON.stringify(event) + '\\n');
  const poison = event.Records.find((r) => Buffer.from(r.kinesis.data, 'base64').toString() === 'poison');
  if (poison) throw new Error('cannot digest ' + poison.kinesis.sequenceNumber);
  return {};
};`;

/**
 * Records each batch, then takes a while to answer: a trigger changed in between stops its
 * consumer while the batch is in flight.
 */
const slowRecorder = `import { appendFileSync } from 'node:fs';
export const handler = async (event) => {
  appendFileSync(process.env.SEEN, JSON.stringify(event) + '\\n');
  await new Promise((r) => setTimeout(r, 300));
  return {};
};`;

/** Reports the poison record as a batch item failure and takes the others. */
const reporter = `import { appendFileSync } from 'node:fs';
export const handler = async (event) => {
  const failed = event.Records.filter((r) => Buffer.from(r.kinesis.data, 'base64').toString() === 'poison');
  const taken = event.Records.filter((r) => !failed.includes(r));
  appendFileSync(process.env.SEEN, JSON.stringify({ Records: taken }) + '\\n');
  return { batchItemFailures: failed.map((r) => ({ itemIdentifier: r.kinesis.sequenceNumber })) };
};`;

interface LambdaRecord {
  kinesis: { sequenceNumber: string; partitionKey: string; data: string };
  eventID: string;
  [key: string]: unknown;
}

async function events(file: string): Promise<Array<{ Records: LambdaRecord[] }>> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as { Records: LambdaRecord[] });
}

const shardOf = (r: LambdaRecord) => r.eventID.split(':')[0]!;
const dataOf = (r: LambdaRecord) => Buffer.from(r.kinesis.data, 'base64').toString();

/** Each shard's sequence numbers in the order the function saw them. */
function seenOrder(evs: Array<{ Records: LambdaRecord[] }>): Map<string, string[]> {
  const byShard = new Map<string, string[]>();
  for (const e of evs) {
    for (const r of e.Records) {
      const list = byShard.get(shardOf(r)) ?? [];
      list.push(r.kinesis.sequenceNumber);
      byShard.set(shardOf(r), list);
    }
  }
  return byShard;
}

describe.skipIf(!canRun('kinesis'))('the Kinesis source', () => {
  const kinesis = useComponent(() => startKinesis());
  let client: KinesisClient;
  let scratch: string;
  let stack: Stack | undefined;
  let secrets: SecretReader;

  const trigger = (name: string, stream: string, extra: object = {}): Trigger => ({
    name,
    kinesis: {
      stream,
      connection: {
        endpoint: kinesis().endpoint,
        region: kinesis().region,
        secretRef: { name: 'kinesis-creds' },
      },
      ...extra,
    },
  });

  const fnWith = (name: string, code: string, seen: string, triggers: Trigger[], spec = {}) =>
    inlineFunction(name, code, quiet({ env: [{ name: 'SEEN', value: seen }], triggers, ...spec }));

  beforeAll(async () => {
    if (!existsSync(runtimeMain)) throw new Error(`${runtimeMain} is missing: run npm run build`);
    scratch = await mkdtemp(join(tmpdir(), 'eddy-kinesis-source-'));
    client = kinesisClient(kinesis());
    secrets = async (ns, name) => {
      if (ns === namespace && name === 'kinesis-creds') {
        return { accessKeyId: kinesis().accessKeyId, secretAccessKey };
      }
      throw new Error(`no Secret ${ns}/${name}`);
    };
  });
  afterAll(async () => {
    client?.destroy();
    await rm(scratch, { recursive: true, force: true });
  });
  afterEach(async (ctx) => {
    if (ctx.task.result?.state === 'fail' && stack) {
      process.stderr.write(`--- stack log\n${stack.logs.slice(-200).join('\n')}\n`);
    }
    await stack?.stop();
    stack = undefined;
  });

  it("hands the handler Lambda's Kinesis event, batch by batch, in order per shard", async () => {
    await createStream(client, 'clicks', 2);
    const puts = await putRecords(
      client,
      'clicks',
      Array.from({ length: 40 }, (_, i) => ({ key: `user-${i % 7}`, data: `click ${i}` })),
    );
    const seen = join(scratch, 'clicks.jsonl');
    const states = new TriggerStates();
    stack = await startStack(
      [fnWith('clicks', recorder, seen, [trigger('clicks', 'clicks', { batchSize: 5 })])],
      { sources: [fast()], secrets, states },
    );
    await waitFor(
      'all 40 records',
      async () => ((await events(seen)).flatMap((e) => e.Records).length >= 40 ? true : undefined),
      30_000,
    );
    const evs = await events(seen);
    // Exactly once each, in each shard's order, at most batchSize per event, one shard per event.
    expect(seenOrder(evs)).toEqual(shardOrder(puts));
    for (const e of evs) {
      expect(e.Records.length).toBeLessThanOrEqual(5);
      expect(new Set(e.Records.map(shardOf)).size).toBe(1);
    }
    const first = puts[0]!;
    const record = evs.flatMap((e) => e.Records).find((r) => dataOf(r) === 'click 0')!;
    expect(record).toEqual({
      kinesis: {
        kinesisSchemaVersion: '1.0',
        partitionKey: 'user-0',
        sequenceNumber: first.sequenceNumber,
        data: Buffer.from('click 0').toString('base64'),
        approximateArrivalTimestamp: expect.any(Number) as unknown,
      },
      eventSource: 'aws:kinesis',
      eventVersion: '1.0',
      eventID: `${first.shardId}:${first.sequenceNumber}`,
      eventName: 'aws:kinesis:record',
      invokeIdentityArn: `system:serviceaccount:${namespace}:default`,
      awsRegion: 'us-east-1',
      eventSourceARN: expect.stringMatching(
        /^arn:aws:kinesis:us-east-1:\d+:stream\/clicks$/,
      ) as unknown,
    });
    const arrived = (record.kinesis as unknown as { approximateArrivalTimestamp: number })
      .approximateArrivalTimestamp;
    expect(Math.abs(arrived - Date.now() / 1000)).toBeLessThan(120);

    expect(states.get(`${namespace}/clicks`, 'clicks')).toEqual({ ready: true });
    const metrics = await stack.eddy.gateway.metrics.registry.metrics();
    for (const shard of shardOrder(puts).keys()) {
      expect(metrics).toContain(
        `eddy_source_kinesis_iterator_age_seconds{namespace="${namespace}",function="clicks",trigger="clicks",shard="${shard}"} 0`,
      );
    }
    expect(metrics).toMatch(
      /eddy_function_invocations_total\{[^}]*function="clicks"[^}]*trigger="clicks"[^}]*\} \d+/,
    );
    expect(metrics).not.toContain(secretAccessKey);
    expect(stack.logs.join('\n')).not.toContain(secretAccessKey);
  });

  it('resumes after the checkpoint when the consumer starts again', async () => {
    await createStream(client, 'orders', 1);
    const checkpoints = fileCheckpoints(join(scratch, 'checkpoints'));
    const before = await putRecords(
      client,
      'orders',
      Array.from({ length: 10 }, (_, i) => ({ key: 'k', data: `order ${i}` })),
    );
    const seenA = join(scratch, 'orders-a.jsonl');
    const fn = (seen: string) => fnWith('orders', recorder, seen, [trigger('orders', 'orders')]);
    stack = await startStack([fn(seenA)], { sources: [fast()], secrets, checkpoints });
    await waitFor('the first 10 orders', async () =>
      (await events(seenA)).flatMap((e) => e.Records).length >= 10 ? true : undefined,
    );
    // The handler writes before its invocation ends: stopped only once the gateway counted
    // every invocation, so none is cut short and delivered again.
    const written = (await events(seenA)).length;
    await waitFor('the invocations ended', async () => {
      const metrics = await stack!.eddy.gateway.metrics.registry.metrics();
      const counts = [
        ...metrics.matchAll(
          /eddy_function_invocations_total\{[^}]*function="orders"[^}]*\} (\d+)/g,
        ),
      ].map((m) => Number(m[1]));
      return counts.reduce((a, b) => a + b, 0) >= written ? true : undefined;
    });
    await stack.stop();
    stack = undefined;
    // Stopping saved the last sequence number delivered, whatever the interval.
    expect(await checkpoints.load(fn(seenA), 'orders')).toEqual({
      stream: 'orders',
      streamCreated: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) as unknown,
      'shardId-000000000000': before[9]!.sequenceNumber,
    });

    const after = await putRecords(
      client,
      'orders',
      Array.from({ length: 10 }, (_, i) => ({ key: 'k', data: `order ${10 + i}` })),
    );
    const seenB = join(scratch, 'orders-b.jsonl');
    stack = await startStack([fn(seenB)], { sources: [fast()], secrets, checkpoints });
    await waitFor('10 more orders', async () =>
      (await events(seenB)).flatMap((e) => e.Records).length >= 10 ? true : undefined,
    );
    // Nothing from before the checkpoint again: the first ten seen are the new ten.
    const again = (await events(seenB))
      .flatMap((e) => e.Records)
      .map((r) => r.kinesis.sequenceNumber);
    expect(again).toEqual(after.map((p) => p.sequenceNumber));
  });

  it('keeps a LATEST start across a restart: no history replayed, nothing put meanwhile lost', async () => {
    await createStream(client, 'views', 1);
    const history = await putRecords(client, 'views', [{ key: 'k', data: 'old' }]);
    const checkpoints = fileCheckpoints(join(scratch, 'checkpoints-latest'));
    const seen = join(scratch, 'views.jsonl');
    const fn = fnWith('views', recorder, seen, [
      trigger('views', 'views', { startingPosition: 'LATEST' }),
    ]);
    stack = await startStack([fn], { sources: [fast()], secrets, checkpoints });
    await waitFor('the start saved', async () =>
      (await checkpoints.load(fn, 'views')).startedAt !== undefined ? true : undefined,
    );
    const up = await putRecords(client, 'views', [{ key: 'k', data: 'while up' }]);
    await waitFor('the record put while up', async () =>
      (await events(seen)).length >= 1 ? true : undefined,
    );
    // Done once checkpointed: the handler writes before its invocation has ended.
    await waitFor('the record put while up checkpointed', async () =>
      Object.values(await checkpoints.load(fn, 'views')).includes(up[0]!.sequenceNumber)
        ? true
        : undefined,
    );
    await stack.stop();
    stack = undefined;

    const down = await putRecords(client, 'views', [{ key: 'k', data: 'while down' }]);
    stack = await startStack([fn], { sources: [fast()], secrets, checkpoints });
    const later = await putRecords(client, 'views', [{ key: 'k', data: 'after the restart' }]);
    await waitFor('the records put while down and after', async () =>
      (await events(seen)).flatMap((e) => e.Records).length >= 3 ? true : undefined,
    );
    const all = (await events(seen)).flatMap((e) => e.Records);
    expect(all.map(dataOf)).toEqual(['while up', 'while down', 'after the restart']);
    expect(all.map((r) => r.kinesis.sequenceNumber)).not.toContain(history[0]!.sequenceNumber);
    expect([...up, ...down, ...later].map((p) => p.sequenceNumber)).toEqual(
      all.map((r) => r.kinesis.sequenceNumber),
    );
  });

  it('delivers only records whose data a filter passes, and checkpoints past the others', async () => {
    await createStream(client, 'filtered', 1);
    const data = [
      '{"kind": "order", "amount": 150}',
      'not json',
      '{"kind": "refund", "amount": 900}',
      '{"kind": "order", "amount": 20}',
      '{"kind": "order", "amount": 101, "note": "last passed"}',
      '{"kind": "view"}',
    ];
    const puts = await putRecords(
      client,
      'filtered',
      data.map((d) => ({ key: 'k', data: d })),
    );
    const checkpoints = fileCheckpoints(join(scratch, 'checkpoints-filtered'));
    const seen = join(scratch, 'filtered.jsonl');
    const fn = fnWith('filtered', recorder, seen, [
      trigger('filtered', 'filtered', {
        filterCriteria: {
          filters: [
            { pattern: '{"data": {"kind": ["order"], "amount": [{"numeric": [">", 100]}]}}' },
          ],
        },
      }),
    ]);
    stack = await startStack([fn], { sources: [fast()], secrets, checkpoints });
    // The last record was filtered out: the checkpoint reaches it all the same.
    await waitFor('the checkpoint past the last record', async () =>
      (await checkpoints.load(fn, 'filtered'))[puts[5]!.shardId] === puts[5]!.sequenceNumber
        ? true
        : undefined,
    );
    expect((await events(seen)).flatMap((e) => e.Records).map(dataOf)).toEqual([data[0], data[4]]);
    const metrics = await stack.eddy.gateway.metrics.registry.metrics();
    expect(metrics).toContain(
      `eddy_source_filtered_records_total{namespace="${namespace}",function="filtered",trigger="filtered"} 4`,
    );
  });

  it('follows a changed trigger from where it was, and stops with a deleted Function', async () => {
    await createStream(client, 'carts', 1);
    const seen = join(scratch, 'carts.jsonl');
    const states = new TriggerStates();
    const fn = fnWith('carts', slowRecorder, seen, [trigger('carts', 'carts', { batchSize: 10 })]);
    stack = await startStack([fn], { sources: [fast()], secrets, states });
    const first = await putRecords(
      client,
      'carts',
      Array.from({ length: 6 }, (_, i) => ({ key: 'k', data: `cart ${i}` })),
    );
    const count = async () => (await events(seen)).flatMap((e) => e.Records).length;
    await waitFor('the first carts', async () => ((await count()) >= 6 ? true : undefined));
    const eventsBefore = (await events(seen)).length;

    stack.store.set({
      ...fn,
      metadata: { ...fn.metadata, generation: 2 },
      spec: { ...fn.spec, triggers: [trigger('carts', 'carts', { batchSize: 2 })] },
    });
    const second = await putRecords(
      client,
      'carts',
      Array.from({ length: 6 }, (_, i) => ({ key: 'k', data: `cart ${6 + i}` })),
    );
    await waitFor('the later carts', async () => ((await count()) >= 12 ? true : undefined));
    const evs = await events(seen);
    // The old consumer's batch in flight when the trigger changed was let finish and
    // checkpointed; the new consumer started after it: nothing twice, nothing skipped.
    expect(evs.flatMap((e) => e.Records).map((r) => r.kinesis.sequenceNumber)).toEqual(
      [...first, ...second].map((p) => p.sequenceNumber),
    );
    for (const e of evs.slice(eventsBefore)) expect(e.Records.length).toBeLessThanOrEqual(2);

    stack.store.delete(namespace, 'carts');
    await waitFor('the deleted Function forgotten', async () =>
      states.get(`${namespace}/carts`, 'carts') === undefined ? true : undefined,
    );
    await waitFor('its shard gone from the metrics', async () =>
      (await stack!.eddy.gateway.metrics.registry.metrics()).includes(
        `eddy_source_kinesis_iterator_age_seconds{namespace="${namespace}",function="carts"`,
      )
        ? undefined
        : true,
    );
  });

  it('reads the children of a split only after their parent, so a key stays in order', async () => {
    await createStream(client, 'split', 1);
    const key = (i: number) => ({ key: 'cart-42', data: `step ${i}` });
    const before = await putRecords(
      client,
      'split',
      Array.from({ length: 200 }, (_, i) => key(i)),
    );
    await client.send(
      new SplitShardCommand({
        StreamName: 'split',
        ShardToSplit: 'shardId-000000000000',
        NewStartingHashKey: (2n ** 127n).toString(),
      }),
    );
    await waitUntilStreamExists({ client, minDelay: 1, maxWaitTime: 30 }, { StreamName: 'split' });
    const after = await putRecords(
      client,
      'split',
      Array.from({ length: 20 }, (_, i) => key(200 + i)),
    );
    expect(after[0]!.shardId).not.toBe('shardId-000000000000');
    const seen = join(scratch, 'split.jsonl');
    stack = await startStack(
      [fnWith('split', recorder, seen, [trigger('split', 'split', { batchSize: 10 })])],
      { sources: [fast()], secrets },
    );
    await waitFor('every step', async () =>
      (await events(seen)).flatMap((e) => e.Records).length >= 220 ? true : undefined,
    );
    const steps = (await events(seen)).flatMap((e) => e.Records).map(dataOf);
    expect(steps).toEqual([...before, ...after].map((p) => p.data));
  });

  it('retries a poison record, dead-letters it alone, and keeps the shard flowing', async () => {
    const dead: Array<{ path: string; body: Record<string, unknown> }> = [];
    const sink: Server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        dead.push({ path: req.url ?? '', body: JSON.parse(body) as Record<string, unknown> });
        res.statusCode = 202;
        res.end();
      });
    });
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
    const sinkUrl = `http://127.0.0.1:${(sink.address() as AddressInfo).port}`;
    try {
      await createStream(client, 'payments', 1);
      const data = Array.from({ length: 10 }, (_, i) => (i === 3 ? 'poison' : `payment ${i}`));
      const puts = await putRecords(
        client,
        'payments',
        data.map((d) => ({ key: 'k', data: d })),
      );
      const poison = puts[3]!;
      const seenThrow = join(scratch, 'payments-throw.jsonl');
      const seenReport = join(scratch, 'payments-report.jsonl');
      stack = await startStack(
        [
          // Throws: bisect narrows the failing batch down to the poison record.
          fnWith(
            'thrower',
            recorder,
            seenThrow,
            [trigger('payments', 'payments', { bisectOnError: true, maxRetryAttempts: 2 })],
            { deadLetter: { url: `${sinkUrl}/thrower` } },
          ),
          // Answers with batchItemFailures: retried from the poison record on, as one batch.
          fnWith(
            'reporter',
            reporter,
            seenReport,
            [
              trigger('payments', 'payments', {
                reportBatchItemFailures: true,
                bisectOnError: true,
                maxRetryAttempts: 1,
              }),
            ],
            { deadLetter: { url: `${sinkUrl}/reporter` } },
          ),
        ],
        { sources: [fast()], secrets },
      );
      await waitFor('both dead letters', async () => (dead.length >= 2 ? true : undefined), 30_000);
      // Bisect narrows the thrower's batch down to the poison record; the reporter's remainder,
      // from the poison record on, is retried as it is and given up on as one.
      const lettered = {
        thrower: [poison.sequenceNumber],
        reporter: puts.slice(3).map((p) => p.sequenceNumber),
      };
      for (const name of ['thrower', 'reporter'] as const) {
        const letter = dead.find((d) => d.path === `/${name}`)!;
        expect(letter.body).toMatchObject({
          type: 'dev.eddy.dead-letter',
          data: {
            originalEvent: {
              type: 'dev.eddy.kinesis.batch',
              subject: poison.shardId,
              data: {
                Records: lettered[name].map((sequenceNumber) => ({ kinesis: { sequenceNumber } })),
              },
            },
            condition: 'RetriesExhausted',
            function: { namespace, name },
            trigger: 'payments',
          },
        });
      }
      const thrower = dead.find((d) => d.path === '/thrower')!.body.data as Record<string, unknown>;
      expect(thrower.error).toMatchObject({
        errorMessage: `cannot digest ${poison.sequenceNumber}`,
      });
      const reporterLetter = dead.find((d) => d.path === '/reporter')!.body.data as Record<
        string,
        unknown
      >;
      expect(reporterLetter.error).toMatchObject({ errorType: 'BatchItemFailures' });

      // The shard moves on: records after the poison one, and records put later, arrive.
      const later = await putRecords(client, 'payments', [{ key: 'k', data: 'payment 10' }]);
      const good = [...puts.filter((_, i) => i !== 3), ...later].map((p) => p.sequenceNumber);
      for (const seen of [seenThrow, seenReport]) {
        await waitFor('the payment after the poison', async () => {
          const all = (await events(seen)).flatMap((e) => e.Records);
          return all.some((r) => dataOf(r) === 'payment 10') ? true : undefined;
        });
        // Each good record was taken, in order (a record may be seen again in a retried batch).
        const taken = (await events(seen))
          .flatMap((e) => e.Records)
          .filter((r) => dataOf(r) !== 'poison')
          .map((r) => r.kinesis.sequenceNumber);
        expect([...new Set(taken)]).toEqual(good);
      }
      expect(dead).toHaveLength(2);
      const metrics = await stack.eddy.gateway.metrics.registry.metrics();
      expect(metrics).toMatch(
        /eddy_function_dead_letters_total\{[^}]*function="thrower"[^}]*trigger="payments"[^}]*\} 1/,
      );
    } finally {
      sink.closeAllConnections();
      await new Promise((resolve) => sink.close(resolve));
    }
  });

  it('does not move past records whose dead letter cannot be written: the shard waits for it, across a restart', async () => {
    let accepting = false;
    let refused = 0;
    const dead: Array<Record<string, unknown>> = [];
    const sink: Server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        if (!accepting) refused++;
        else dead.push(JSON.parse(body) as Record<string, unknown>);
        res.statusCode = accepting ? 202 : 503;
        res.end();
      });
    });
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
    const sinkUrl = `http://127.0.0.1:${(sink.address() as AddressInfo).port}`;
    try {
      await createStream(client, 'ledger', 1);
      const puts = await putRecords(
        client,
        'ledger',
        ['entry 0', 'poison', 'entry 2'].map((data) => ({ key: 'k', data })),
      );
      const seen = join(scratch, 'ledger.jsonl');
      const checkpoints = fileCheckpoints(join(scratch, 'checkpoints-ledger'));
      const states = new TriggerStates();
      const fn = fnWith(
        'ledger',
        recorder,
        seen,
        [trigger('ledger', 'ledger', { batchSize: 1, maxRetryAttempts: 0 })],
        { deadLetter: { url: `${sinkUrl}/ledger` } },
      );
      const options = { sources: [fast()], secrets, checkpoints, states, retryBaseDelayMs: 10 };
      stack = await startStack([fn], options);
      // Ten sends make one round of the dead letter: the eleventh is the shard trying again.
      await waitFor('the dead letter refused, and tried again', async () =>
        refused > 10 ? true : undefined,
      );
      const state = states.get(`${namespace}/ledger`, 'ledger');
      expect(state).toMatchObject({ ready: false, reason: 'SourceError' });
      expect(state!.message).toContain('could not be written');
      const taken = async () =>
        (await events(seen)).flatMap((e) => e.Records).map((r) => dataOf(r));
      // The shard waits at the poison record: what comes after it is not taken.
      expect(await taken()).not.toContain('entry 2');
      await stack.stop();
      stack = undefined;
      expect(await checkpoints.load(fn, 'ledger')).toMatchObject({
        'shardId-000000000000': puts[0]!.sequenceNumber,
      });

      // Started again with a sink that takes it: the dead letter is written, then the shard goes on.
      accepting = true;
      stack = await startStack([fn], options);
      await waitFor('the record after the poison one', async () =>
        (await taken()).includes('entry 2') ? true : undefined,
      );
      expect(dead).toHaveLength(1);
      expect(dead[0]).toMatchObject({
        data: {
          originalEvent: {
            data: { Records: [{ kinesis: { sequenceNumber: puts[1]!.sequenceNumber } }] },
          },
        },
      });
    } finally {
      sink.closeAllConnections();
      await new Promise((resolve) => sink.close(resolve));
      // kinesalite allows ten shards in all: this one goes back for the tests after.
      await stack?.stop();
      stack = undefined;
      await client.send(new DeleteStreamCommand({ StreamName: 'ledger' })).catch(() => undefined);
      await waitUntilStreamNotExists(
        { client, minDelay: 1, maxWaitTime: 30 },
        { StreamName: 'ledger' },
      );
    }
  });

  it('reports a missing stream in the trigger state, keeps the other trigger working, and recovers', async () => {
    await createStream(client, 'present', 1);
    const seen = join(scratch, 'watcher.jsonl');
    const states = new TriggerStates();
    const closed = `http://127.0.0.1:${await freePort()}`;
    const unreachable = trigger('unreachable', 'present');
    unreachable.kinesis!.connection.endpoint = closed;
    const noSecret = trigger('no-secret', 'present');
    noSecret.kinesis!.connection.secretRef = { name: 'nowhere' };
    const fn = fnWith('watcher', recorder, seen, [
      trigger('missing', 'not-yet'),
      trigger('present', 'present'),
      unreachable,
      noSecret,
    ]);
    stack = await startStack([fn], { sources: [fast()], secrets, states });
    const key = `${namespace}/watcher`;
    const reasonOf = (t: string) => async () => {
      const s = states.get(key, t);
      return s?.ready === false ? s : undefined;
    };
    expect(await waitFor('the closed endpoint reported', reasonOf('unreachable'))).toMatchObject({
      reason: 'EndpointUnreachable',
      message: expect.stringContaining(
        `stream present at ${closed}: the endpoint could not be reached`,
      ) as unknown,
    });
    expect(await waitFor('the missing Secret reported', reasonOf('no-secret'))).toMatchObject({
      reason: 'SecretNotFound',
      message: expect.stringContaining('spec.triggers[3].kinesis.connection') as unknown,
    });
    const problem = await waitFor('the missing stream reported', async () => {
      const s = states.get(key, 'missing');
      return s?.ready === false ? s : undefined;
    });
    expect(problem).toMatchObject({
      ready: false,
      reason: 'StreamNotFound',
      message: expect.stringContaining(
        `stream not-yet at ${kinesis().endpoint} does not exist`,
      ) as unknown,
    });
    expect(JSON.stringify(problem)).not.toContain(secretAccessKey);

    await putRecords(client, 'present', [{ key: 'k', data: 'still flowing' }]);
    await waitFor('the other trigger to deliver', async () =>
      (await events(seen)).some((e) => e.Records.some((r) => dataOf(r) === 'still flowing'))
        ? true
        : undefined,
    );
    expect(states.get(key, 'present')).toEqual({ ready: true });

    await createStream(client, 'not-yet', 1);
    await putRecords(client, 'not-yet', [{ key: 'k', data: 'finally' }]);
    await waitFor('the stream once it exists', async () =>
      (await events(seen)).some((e) => e.Records.some((r) => dataOf(r) === 'finally'))
        ? true
        : undefined,
    );
    expect(states.get(key, 'missing')).toEqual({ ready: true });

    // The trigger goes: its consumer stops and its state is forgotten.
    stack.store.set({
      ...fn,
      metadata: { ...fn.metadata, generation: 2 },
      spec: { ...fn.spec, triggers: [trigger('present', 'present')] },
    });
    await waitFor('the removed trigger forgotten', async () =>
      states.get(key, 'missing') === undefined ? true : undefined,
    );
    expect(states.get(key, 'present')).toEqual({ ready: true });
    expect(stack.logs.join('\n')).not.toContain(secretAccessKey);
  });
});

describe.skipIf(!canRun('kinesis'))('the Kinesis source through kills', () => {
  const kinesis = useComponent(() => startKinesis());
  const devMain = join(projectRoot, 'dist', 'operator', 'dev.js');
  let dir: string;
  let dev: ManagedProcess | undefined;
  const logs: string[] = [];

  beforeAll(async () => {
    if (!existsSync(devMain)) throw new Error(`${devMain} is missing: run npm run build`);
    dir = await mkdtemp(join(tmpdir(), 'eddy-kinesis-kills-'));
  });
  afterAll(async () => {
    if (dev) killGroup(dev);
    await rm(dir, { recursive: true, force: true });
  });
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') process.stderr.write(logs.join('\n'));
  });

  /** The local stack and its functions' processes, in a process group of their own, like a pod. */
  async function startDev(manifest: string, n: number): Promise<ManagedProcess> {
    const proc = startProcess(
      `dev-${n}`,
      process.execPath,
      [devMain, '--port', '0', '--metrics-port', '0', manifest],
      join(dir, `dev-${n}.log`),
      { cwd: dir, detached: true, env: { PATH: process.env.PATH, HOME: process.env.HOME } },
    );
    await waitUntilReady(proc, async () => /gateway listening on/.test(proc.log()), 30_000, 50);
    return proc;
  }

  function killGroup(proc: ManagedProcess): void {
    try {
      process.kill(-proc.child.pid!, 'SIGKILL');
    } catch {
      // already gone
    }
  }

  it('handles 10,000 records over 2 shards at least once, in order, through two SIGKILLs', async () => {
    const k = kinesis();
    const client = kinesisClient(k);
    const total = 10_000;
    const batchSize = 50;
    try {
      await createStream(client, 'events', 2);
      const puts = await putRecords(
        client,
        'events',
        Array.from({ length: total }, (_, i) => ({ key: `device-${i % 97}`, data: `event ${i}` })),
      );
      const expected = shardOrder(puts);
      expect(expected.size).toBe(2);
      const seen = join(dir, 'seen.txt');
      const manifest = join(dir, 'events.yaml');
      // One line per record: when it was handled, its shard and sequence number. A short pause
      // per batch spreads the 10,000 records over a few seconds, so the kills land mid-stream.
      await writeFile(
        manifest,
        `apiVersion: v1
kind: Secret
metadata: {name: kinesis-creds, namespace: dev, labels: {eddy.dev/connection: 'true'}}
stringData: {accessKeyId: ${k.accessKeyId}, secretAccessKey: ${secretAccessKey}}
---
apiVersion: eddy.dev/v1alpha1
kind: Function
metadata: {name: events, namespace: dev}
spec:
  memory: 128Mi
  timeoutSeconds: 10
  env: [{name: SEEN, value: ${seen}}]
  triggers:
    - name: events
      kinesis:
        stream: events
        batchSize: ${batchSize}
        connection: {endpoint: "${k.endpoint}", region: ${k.region}, secretRef: {name: kinesis-creds}}
  code:
    inline: |
      import { appendFileSync } from 'node:fs';
      export const handler = async (event) => {
        const now = Date.now();
        appendFileSync(process.env.SEEN, event.Records.map((r) => now + ' ' + r.eventID.replace(':', ' ')).join('\\n') + '\\n');
        await new Promise((r) => setTimeout(r, 40));
      };
`,
      );
      const handled = async () => {
        const text = await readFile(seen, 'utf8').catch(() => '');
        return text.split('\n').filter((l) => /^\d+ shardId/.test(l)).length;
      };
      const firstSeen = async () => {
        const text = await readFile(seen, 'utf8').catch(() => '');
        return new Set(
          text
            .split('\n')
            .filter((l) => /^\d+ shardId/.test(l))
            .map((l) => l.split(' ')[2]),
        ).size;
      };
      const kills: number[] = [];
      const started = Date.now();
      for (const [n, at] of [
        [1, 3_000],
        [2, 7_500],
      ] as const) {
        dev = await startDev(manifest, n);
        await waitFor(
          `${at} records handled`,
          async () => ((await handled()) >= at ? true : undefined),
          60_000,
        );
        killGroup(dev);
        await dev.exited;
        kills.push(Date.now());
        logs.push(`--- dev-${n}\n${dev.log()}`);
        await dev.stop();
        // Everything the killed processes wrote is in; what follows is the next run's.
        await appendFile(seen, 'KILL\n');
      }
      dev = await startDev(manifest, 3);
      await waitFor(
        'every record handled',
        async () => ((await firstSeen()) >= total ? true : undefined),
        60_000,
      );
      const elapsed = Date.now() - started;
      logs.push(`--- dev-3\n${dev.log()}`);
      await dev.stop();
      dev = undefined;

      // Per shard: within a run, consecutive records in the shard's order; a run starts at
      // or before where the last one ended (never after: no gap), and together they cover all.
      const lines = (await readFile(seen, 'utf8')).split('\n').filter((l) => l !== '');
      const index = new Map<string, number>();
      for (const list of expected.values()) list.forEach((seq, i) => index.set(seq, i));
      const last = new Map<string, number>();
      const duplicatesPerKill = [0, 0];
      const handledAt = new Map<string, number>();
      let run = 0;
      let total_seen = 0;
      const restartedAt = new Map<string, boolean>();
      for (const line of lines) {
        if (line === 'KILL') {
          run++;
          for (const shard of expected.keys()) restartedAt.set(shard, true);
          continue;
        }
        const [at, shard, seq] = line.split(' ') as [string, string, string];
        total_seen++;
        const i = index.get(seq);
        expect(i, `a record of ${shard} that was never put: ${seq}`).toBeDefined();
        const prev = last.get(shard) ?? -1;
        if (restartedAt.get(shard)) {
          expect(i!, `${shard} skipped records after restart ${run}`).toBeLessThanOrEqual(prev + 1);
          duplicatesPerKill[run - 1]! += prev + 1 - i!;
          restartedAt.set(shard, false);
        } else {
          expect(i!, `${shard} out of order in run ${run}`).toBe(prev + 1);
        }
        last.set(shard, i!);
        if (!handledAt.has(seq)) handledAt.set(seq, Number(at));
      }
      for (const [shard, list] of expected) expect(last.get(shard), shard).toBe(list.length - 1);
      expect(handledAt.size).toBe(total);

      // Duplicates after a kill are what was handled since the last save: at most the checkpoint
      // interval's worth (1 s), plus the batch each shard had in flight, with 250 ms of slack.
      const bounds = kills.map((k) => {
        let recent = 0;
        for (const t of handledAt.values()) if (t > k - 1_250 && t <= k) recent++;
        return recent + expected.size * batchSize;
      });
      const duplicates = total_seen - total;
      process.stdout.write(
        `kinesis kills: ${total} records, ${total_seen} handled, ${duplicates} duplicates ` +
          `(${duplicatesPerKill.join(' + ')}; bounds ${bounds.join(', ')}), ${elapsed} ms\n`,
      );
      expect(duplicates).toBe(duplicatesPerKill[0]! + duplicatesPerKill[1]!);
      duplicatesPerKill.forEach((d, i) => expect(d).toBeLessThanOrEqual(bounds[i]!));
    } finally {
      client.destroy();
    }
  }, 120_000);
});
