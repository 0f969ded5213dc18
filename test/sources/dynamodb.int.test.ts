/**
 * The DynamoDB Streams source against moto's server, with the gateway, the local platform and
 * real runtime processes: Lambda's DynamoDB event reaching the handler, a filter that lets only
 * some changes through, a poison record isolated and dead-lettered alone while the shard flows,
 * and the local stack killed twice in the middle of 2,000 changes.
 */
import { existsSync } from 'node:fs';
import { appendFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import type { DynamoDBStreamsClient } from '@aws-sdk/client-dynamodb-streams';
import type { Trigger } from '../../operator/src/api/types.js';
import type { SecretReader } from '../../operator/src/functions.js';
import { fileCheckpoints } from '../../operator/src/sources/checkpoints.js';
import { dynamodbSource } from '../../operator/src/sources/dynamodb.js';
import { TriggerStates } from '../../operator/src/sources/states.js';
import { inlineFunction, namespace, quiet, startStack, type Stack } from '../gateway/stack.js';
import { projectRoot } from '../harness/components.js';
import { startMoto } from '../harness/moto.js';
import { startProcess, waitUntilReady, type ManagedProcess } from '../harness/proc.js';
import { runtimeMain } from '../harness/runtime.js';
import { canRun, useComponent } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';
import {
  createTable,
  dynamoClient,
  readStream,
  streamsClient,
  writeAll,
  type Change,
} from './dynamodb-table.js';

/** Distinctive, so that a test can prove it appears in no log, status or metric. */
const secretAccessKey = 'dynamodb-secret-4b9d2a';

const fast = () =>
  dynamodbSource({
    idlePollMs: 100,
    problemBaseMs: 100,
    retryBaseDelayMs: 50,
    retryMaxDelayMs: 200,
    shardSyncMs: 1_000,
  });

/** Writes every event it gets as one JSON line. */
const recorder = `import { appendFileSync } from 'node:fs';
export const handler = async (event) => {
  appendFileSync(process.env.SEEN, JSON.stringify(event) + '\\n');
  return {};
};`;

/**
 * Takes every record but the one whose id is "poison": reports it as a batch item failure, or
 * throws when the batch starts with it (so bisect narrows it down to the record alone).
 */
const poisoned = `import { appendFileSync } from 'node:fs';
const isPoison = (r) => r.dynamodb.Keys.id.S === 'poison';
export const handler = async (event) => {
  if (isPoison(event.Records[0])) throw new Error('cannot digest ' + event.Records[0].dynamodb.SequenceNumber);
  const at = event.Records.findIndex(isPoison);
  const taken = at < 0 ? event.Records : event.Records.slice(0, at);
  appendFileSync(process.env.SEEN, JSON.stringify({ Records: taken }) + '\\n');
  return at < 0 ? {} : { batchItemFailures: [{ itemIdentifier: event.Records[at].dynamodb.SequenceNumber }] };
};`;

interface DynamoRecord {
  eventID: string;
  eventName: string;
  dynamodb: {
    Keys: { id: { S: string } };
    NewImage?: { amount?: { N: string } };
    SequenceNumber: string;
  };
  [key: string]: unknown;
}

async function events(file: string): Promise<Array<{ Records: DynamoRecord[] }>> {
  const text = await readFile(file, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as { Records: DynamoRecord[] });
}
const records = async (file: string) => (await events(file)).flatMap((e) => e.Records);

describe.skipIf(!canRun('moto'))('the DynamoDB source', () => {
  const moto = useComponent(() => startMoto());
  let db: DynamoDBClient;
  let streams: DynamoDBStreamsClient;
  let scratch: string;
  let stack: Stack | undefined;
  let secrets: SecretReader;

  const trigger = (name: string, table: { table: string } | { streamArn: string }, extra = {}) =>
    ({
      name,
      dynamodb: {
        ...table,
        connection: {
          endpoint: moto().endpoint,
          region: moto().region,
          secretRef: { name: 'dynamodb-creds' },
        },
        ...extra,
      },
    }) satisfies Trigger;

  const fnWith = (name: string, code: string, seen: string, triggers: Trigger[], spec = {}) =>
    inlineFunction(name, code, quiet({ env: [{ name: 'SEEN', value: seen }], triggers, ...spec }));

  beforeAll(async () => {
    if (!existsSync(runtimeMain)) throw new Error(`${runtimeMain} is missing: run npm run build`);
    scratch = await mkdtemp(join(tmpdir(), 'eddy-dynamodb-source-'));
    db = dynamoClient(moto());
    streams = streamsClient(moto());
    secrets = async (ns, name) => {
      if (ns === namespace && name === 'dynamodb-creds') {
        return { accessKeyId: moto().accessKeyId, secretAccessKey };
      }
      throw new Error(`no Secret ${ns}/${name}`);
    };
  });
  afterAll(async () => {
    db?.destroy();
    streams?.destroy();
    await rm(scratch, { recursive: true, force: true });
  });
  afterEach(async (ctx) => {
    if (ctx.task.result?.state === 'fail' && stack) {
      process.stderr.write(`--- stack log\n${stack.logs.slice(-200).join('\n')}\n`);
    }
    await stack?.stop();
    stack = undefined;
  });

  it("hands the handler Lambda's DynamoDB event, in the table's order", async () => {
    const arn = await createTable(db, 'orders');
    await writeAll(db, 'orders', [
      { op: 'put', id: 'a', amount: 150 },
      { op: 'update', id: 'a', amount: 7 },
      { op: 'delete', id: 'a' },
    ]);
    const written = await readStream(streams, arn);
    const seen = join(scratch, 'orders.jsonl');
    const states = new TriggerStates();
    stack = await startStack(
      [fnWith('orders', recorder, seen, [trigger('orders', { streamArn: arn })])],
      { sources: [fast()], secrets, states },
    );
    await waitFor('the three changes', async () =>
      (await records(seen)).length >= 3 ? true : undefined,
    );
    const got = await records(seen);
    expect(got.map((r) => r.dynamodb.SequenceNumber)).toEqual(written.map((w) => w.sequenceNumber));
    const shard = written[0]!.shardId;
    // The shape of AWS SAM CLI's sample event (sam local generate-event dynamodb update).
    expect(got[1]).toEqual({
      eventID: expect.any(String) as unknown,
      eventName: 'MODIFY',
      eventVersion: expect.stringMatching(/^1\.[01]$/) as unknown,
      eventSource: 'aws:dynamodb',
      awsRegion: 'us-east-1',
      dynamodb: {
        Keys: { id: { S: 'a' } },
        NewImage: { id: { S: 'a' }, amount: { N: '7' } },
        OldImage: { id: { S: 'a' }, amount: { N: '150' } },
        ApproximateCreationDateTime: expect.any(Number) as unknown,
        SequenceNumber: written[1]!.sequenceNumber,
        SizeBytes: expect.any(Number) as unknown,
        StreamViewType: 'NEW_AND_OLD_IMAGES',
      },
      eventSourceARN: arn,
    });
    expect(Object.keys(got[1]!)).toEqual([
      'eventID',
      'eventName',
      'eventVersion',
      'eventSource',
      'awsRegion',
      'dynamodb',
      'eventSourceARN',
    ]);
    expect(got[0]!.eventName).toBe('INSERT');
    expect(got[2]).toMatchObject({
      eventName: 'REMOVE',
      dynamodb: { OldImage: { amount: { N: '7' } } },
    });
    expect(got[2]!.dynamodb.NewImage).toBeUndefined();
    const created = (got[0]!.dynamodb as unknown as { ApproximateCreationDateTime: number })
      .ApproximateCreationDateTime;
    expect(Math.abs(created - Date.now() / 1000)).toBeLessThan(120);

    expect(states.get(`${namespace}/orders`, 'orders')).toEqual({ ready: true });
    const metrics = await stack.eddy.gateway.metrics.registry.metrics();
    expect(metrics).toMatch(
      new RegExp(
        `eddy_source_dynamodb_iterator_age_seconds\\{namespace="${namespace}",function="orders",trigger="orders",shard="${shard}"\\} `,
      ),
    );
    expect(metrics).toMatch(
      /eddy_function_invocations_total\{[^}]*function="orders"[^}]*trigger="orders"[^}]*\} \d+/,
    );
    expect(stack.logs.join('\n')).not.toContain(secretAccessKey);
  });

  it('passes only the changes a filter lets through: INSERTs with amount > 100', async () => {
    const arn = await createTable(db, 'payments');
    const changes: Change[] = [];
    for (let i = 0; i < 40; i++) {
      const id = `p${i}`;
      changes.push({ op: 'put', id, amount: (i * 37) % 200 });
      if (i % 3 === 0) changes.push({ op: 'update', id, amount: 500 });
      if (i % 5 === 0) changes.push({ op: 'delete', id });
    }
    await writeAll(db, 'payments', changes);
    const expected = changes
      .filter((c) => c.op === 'put' && c.amount > 100)
      .map((c) => c.id)
      .sort();
    expect(expected.length).toBeGreaterThan(5);
    const written = await readStream(streams, arn);
    const seen = join(scratch, 'payments.jsonl');
    stack = await startStack(
      [
        fnWith('payments', recorder, seen, [
          trigger(
            'big-inserts',
            { table: 'payments' },
            {
              batchSize: 7,
              filterCriteria: {
                filters: [
                  {
                    pattern:
                      '{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"amount": {"N": [{"numeric": [">", 100]}]}}}}',
                  },
                ],
              },
            },
          ),
        ]),
      ],
      { sources: [fast()], secrets },
    );
    const metric = async () =>
      /eddy_source_filtered_records_total\{[^}]*function="payments"[^}]*\} (\d+)/.exec(
        await stack!.eddy.gateway.metrics.registry.metrics(),
      )?.[1];
    // Every record was either delivered or filtered out.
    await waitFor('every change seen or filtered', async () =>
      (await records(seen)).length + Number((await metric()) ?? 0) >= written.length
        ? true
        : undefined,
    );
    const got = await records(seen);
    expect(got.map((r) => r.dynamodb.Keys.id.S).sort()).toEqual(expected);
    expect(got.every((r) => r.eventName === 'INSERT')).toBe(true);
    expect(Number(await metric())).toBe(written.length - expected.length);
    for (const e of await events(seen)) expect(e.Records.length).toBeLessThanOrEqual(7);
  });

  it('isolates a poison record, dead-letters it alone, and keeps the shard flowing', async () => {
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
      const arn = await createTable(db, 'ledger');
      const ids = Array.from({ length: 10 }, (_, i) => (i === 3 ? 'poison' : `entry-${i}`));
      await writeAll(
        db,
        'ledger',
        ids.map((id, i) => ({ op: 'put', id, amount: i })),
      );
      const written = await readStream(streams, arn);
      const poison = written[3]!;
      expect(poison.id).toBe('poison');
      const seen = join(scratch, 'ledger.jsonl');
      stack = await startStack(
        [
          fnWith(
            'ledger',
            poisoned,
            seen,
            [
              trigger(
                'ledger',
                { streamArn: arn },
                { reportBatchItemFailures: true, bisectOnError: true, maxRetryAttempts: 1 },
              ),
            ],
            { deadLetter: { url: `${sinkUrl}/ledger` } },
          ),
        ],
        { sources: [fast()], secrets },
      );
      await waitFor('the dead letter', async () => (dead.length >= 1 ? true : undefined), 30_000);
      // Lambda's on-failure record: the shard and the range of the one record, not its data.
      expect(dead[0]!.body).toMatchObject({
        type: 'dev.eddy.dead-letter',
        data: {
          originalEvent: {
            type: 'dev.eddy.dynamodb.batch',
            subject: poison.shardId,
            data: {
              DDBStreamBatchInfo: {
                shardId: poison.shardId,
                startSequenceNumber: poison.sequenceNumber,
                endSequenceNumber: poison.sequenceNumber,
                batchSize: 1,
                streamArn: arn,
              },
            },
          },
          condition: 'RetriesExhausted',
          function: { namespace, name: 'ledger' },
          trigger: 'ledger',
        },
      });
      expect(JSON.stringify(dead[0]!.body)).not.toContain('"NewImage"');

      // The shard moves on: the records after the poison one, and one written later, arrive.
      await writeAll(db, 'ledger', [{ op: 'put', id: 'entry-10', amount: 10 }]);
      await waitFor('the entry after the poison', async () =>
        (await records(seen)).some((r) => r.dynamodb.Keys.id.S === 'entry-10') ? true : undefined,
      );
      const taken = (await records(seen)).map((r) => r.dynamodb.Keys.id.S);
      expect([...new Set(taken)]).toEqual([...ids.filter((id) => id !== 'poison'), 'entry-10']);
      expect(dead).toHaveLength(1);
    } finally {
      sink.closeAllConnections();
      await new Promise((resolve) => sink.close(resolve));
    }
  });

  it('keeps a LATEST start across a restart: no history replayed, nothing changed meanwhile lost', async () => {
    const arn = await createTable(db, 'carts');
    await writeAll(db, 'carts', [{ op: 'put', id: 'old', amount: 1 }]);
    const checkpoints = fileCheckpoints(join(scratch, 'checkpoints-latest'));
    const seen = join(scratch, 'carts.jsonl');
    const fn = fnWith('carts', recorder, seen, [
      trigger('carts', { table: 'carts' }, { startingPosition: 'LATEST' }),
    ]);
    // The history is older than the second the trigger starts in.
    const history = await readStream(streams, arn);
    await waitFor('a second after the history', async () =>
      Date.now() - history[0]!.arrivedAt > 1_000 ? true : undefined,
    );
    stack = await startStack([fn], { sources: [fast()], secrets, checkpoints });
    await waitFor('the start saved', async () =>
      (await checkpoints.load(fn, 'carts')).startedAt !== undefined ? true : undefined,
    );
    await writeAll(db, 'carts', [{ op: 'put', id: 'while up', amount: 2 }]);
    await waitFor('the change made while up', async () =>
      (await records(seen)).length >= 1 ? true : undefined,
    );
    const up = (await readStream(streams, arn)).find((w) => w.id === 'while up')!;
    await waitFor('the change made while up checkpointed', async () =>
      (await checkpoints.load(fn, 'carts'))[up.shardId] === up.sequenceNumber ? true : undefined,
    );
    await stack.stop();
    stack = undefined;

    await writeAll(db, 'carts', [{ op: 'put', id: 'while down', amount: 3 }]);
    stack = await startStack([fn], { sources: [fast()], secrets, checkpoints });
    await writeAll(db, 'carts', [{ op: 'put', id: 'after the restart', amount: 4 }]);
    await waitFor('the changes made while down and after', async () =>
      (await records(seen)).length >= 3 ? true : undefined,
    );
    expect((await records(seen)).map((r) => r.dynamodb.Keys.id.S)).toEqual([
      'while up',
      'while down',
      'after the restart',
    ]);
  });

  it('reports a table without a stream, and a missing one, in the trigger state', async () => {
    const states = new TriggerStates();
    stack = await startStack(
      [
        fnWith('nowhere', recorder, join(scratch, 'nowhere.jsonl'), [
          trigger('missing', { table: 'no-such-table' }),
        ]),
      ],
      { sources: [fast()], secrets, states },
    );
    const state = await waitFor('the problem reported', async () =>
      states.get(`${namespace}/nowhere`, 'missing'),
    );
    expect(state).toMatchObject({ ready: false, reason: 'StreamNotFound' });
    expect(state.message).toMatch(/no-such-table/);
    expect(stack.logs.join('\n')).not.toContain(secretAccessKey);
  });
});

describe.skipIf(!canRun('moto'))('the DynamoDB source through kills', () => {
  const moto = useComponent(() => startMoto());
  const devMain = join(projectRoot, 'dist', 'operator', 'dev.js');
  let dir: string;
  let dev: ManagedProcess | undefined;
  const logs: string[] = [];

  beforeAll(async () => {
    if (!existsSync(devMain)) throw new Error(`${devMain} is missing: run npm run build`);
    dir = await mkdtemp(join(tmpdir(), 'eddy-dynamodb-kills-'));
  });
  afterAll(async () => {
    if (dev) killGroup(dev);
    await rm(dir, { recursive: true, force: true });
  });
  afterEach((ctx) => {
    if (ctx.task.result?.state !== 'fail') return;
    process.stderr.write(logs.join('\n'));
    if (dev) process.stderr.write(`--- ${dev.name} (running)\n${dev.log()}\n`);
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

  it('handles 2,000 inserts, updates and deletes at least once, in order per key, through two SIGKILLs', async () => {
    const m = moto();
    const db = dynamoClient(m);
    const streams = streamsClient(m);
    const batchSize = 25;
    try {
      const arn = await createTable(db, 'accounts');
      // 500 keys, each inserted, updated twice and deleted: 2,000 changes.
      const changes: Change[] = [];
      for (let k = 0; k < 500; k++) {
        const id = `acct-${k}`;
        changes.push(
          { op: 'put', id, amount: 1 },
          { op: 'update', id, amount: 2 },
          { op: 'update', id, amount: 3 },
          { op: 'delete', id },
        );
      }
      await writeAll(db, 'accounts', changes);
      const written = await readStream(streams, arn);
      expect(written).toHaveLength(2_000);
      expect(new Set(written.map((w) => w.sequenceNumber)).size).toBe(2_000);
      const index = new Map(written.map((w, i) => [w.sequenceNumber, i]));
      const seen = join(dir, 'seen.txt');
      const manifest = join(dir, 'accounts.yaml');
      // One line per record: when it was handled, its sequence number, key and change. A short
      // pause per batch spreads the 2,000 records over a few seconds, so the kills land mid-stream.
      await writeFile(
        manifest,
        `apiVersion: v1
kind: Secret
metadata: {name: dynamodb-creds, namespace: dev, labels: {eddy.dev/connection: 'true'}}
stringData: {accessKeyId: ${m.accessKeyId}, secretAccessKey: ${secretAccessKey}}
---
apiVersion: eddy.dev/v1alpha1
kind: Function
metadata: {name: accounts, namespace: dev}
spec:
  memory: 128Mi
  timeoutSeconds: 10
  env: [{name: SEEN, value: ${seen}}]
  triggers:
    - name: accounts
      dynamodb:
        table: accounts
        batchSize: ${batchSize}
        connection: {endpoint: "${m.endpoint}", region: ${m.region}, secretRef: {name: dynamodb-creds}}
  code:
    inline: |
      import { appendFileSync } from 'node:fs';
      export const handler = async (event) => {
        const now = Date.now();
        appendFileSync(process.env.SEEN, event.Records.map((r) => [now, r.dynamodb.SequenceNumber, r.dynamodb.Keys.id.S, r.eventName].join(' ')).join('\\n') + '\\n');
        await new Promise((r) => setTimeout(r, 40));
      };
`,
      );
      const lines = async () =>
        (await readFile(seen, 'utf8').catch(() => ''))
          .split('\n')
          .filter((l) => /^\d+ \d+ /.test(l));
      const firstSeen = async () => new Set((await lines()).map((l) => l.split(' ')[1])).size;
      const kills: number[] = [];
      const started = Date.now();
      for (const [n, at] of [
        [1, 600],
        [2, 1_400],
      ] as const) {
        dev = await startDev(manifest, n);
        await waitFor(
          `${at} changes handled`,
          async () => ((await firstSeen()) >= at ? true : undefined),
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
        'every change handled',
        async () => ((await firstSeen()) >= written.length ? true : undefined),
        60_000,
      );
      const elapsed = Date.now() - started;
      logs.push(`--- dev-3\n${dev.log()}`);
      await dev.stop();
      dev = undefined;

      // Within a run, consecutive records in the stream's order; a run starts at or before
      // where the last one ended (never after: no gap), and together they cover all.
      const all = (await readFile(seen, 'utf8')).split('\n').filter((l) => l !== '');
      let last = -1;
      let run = 0;
      let restarted = false;
      let handled = 0;
      const duplicatesPerKill = [0, 0];
      const handledAt = new Map<string, number>();
      const perKey = new Map<string, string[]>();
      for (const line of all) {
        if (line === 'KILL') {
          run++;
          restarted = true;
          continue;
        }
        const [at, seq, id, eventName] = line.split(' ') as [string, string, string, string];
        handled++;
        const i = index.get(seq);
        expect(i, `a change that was never written: ${seq}`).toBeDefined();
        if (restarted) {
          expect(i!, `records skipped after restart ${run}`).toBeLessThanOrEqual(last + 1);
          duplicatesPerKill[run - 1]! += last + 1 - i!;
          restarted = false;
        } else {
          expect(i!, `out of order in run ${run}`).toBe(last + 1);
        }
        last = i!;
        if (!handledAt.has(seq)) {
          handledAt.set(seq, Number(at));
          perKey.set(id, [...(perKey.get(id) ?? []), eventName]);
        }
      }
      expect(last).toBe(written.length - 1);
      expect(handledAt.size).toBe(written.length);
      // Each key's changes, first seen, in the order they were made.
      for (const [id, names] of perKey) {
        expect(names, id).toEqual(['INSERT', 'MODIFY', 'MODIFY', 'REMOVE']);
      }
      expect(perKey.size).toBe(500);

      // Duplicates after a kill are what was handled since the last save: at most the
      // checkpoint interval's worth (1 s), plus the batch in flight, with 250 ms of slack.
      const bounds = kills.map((k) => {
        let recent = 0;
        for (const t of handledAt.values()) if (t > k - 1_250 && t <= k) recent++;
        return recent + batchSize;
      });
      const duplicates = handled - written.length;
      process.stdout.write(
        `dynamodb kills: ${written.length} changes, ${handled} handled, ${duplicates} duplicates ` +
          `(${duplicatesPerKill.join(' + ')}; bounds ${bounds.join(', ')}), ${elapsed} ms\n`,
      );
      expect(duplicates).toBe(duplicatesPerKill[0]! + duplicatesPerKill[1]!);
      duplicatesPerKill.forEach((d, i) => expect(d).toBeLessThanOrEqual(bounds[i]!));
    } finally {
      db.destroy();
      streams.destroy();
    }
  }, 180_000);
});
