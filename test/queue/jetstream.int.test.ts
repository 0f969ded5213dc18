/**
 * The durable queue against a real nats-server with JetStream: asynchronous invocations accepted
 * once the stream has them, delivered by each Function's consumer with its retry policy and dead
 * letter, one function's backlog apart from another's, and refusals while NATS is down.
 */
import { createServer, type Server } from 'node:http';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { consumerNameOf } from '../../operator/src/queue/jetstream.js';
import { startNats, type Nats } from '../harness/nats.js';
import { canRun } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';
import { inlineFunction, namespace, quiet, startStack, type Stack } from '../gateway/stack.js';

const run = canRun('nats');

/** A handler that writes each request id it handles to the file $OUT, then runs `body`. */
const recording = (body = '') => `
import { appendFileSync } from 'node:fs';
export const handler = async (event, context) => {
  appendFileSync(process.env.OUT, context.awsRequestId + '\\n');
  ${body}
  return { ok: true };
};`;

describe.skipIf(!run)('durable queue (NATS JetStream)', () => {
  let nats: Nats;
  let dir: string;
  beforeAll(async () => {
    nats = await startNats();
    dir = await mkdtemp(join(tmpdir(), 'eddy-queue-'));
  }, 60_000);
  afterAll(async () => {
    await nats?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const handled = async (file: string): Promise<string[]> =>
    (await readFile(file, 'utf8').catch(() => '')).split('\n').filter((l) => l !== '');

  const stackWith = (
    fns: Parameters<typeof startStack>[0],
    stream = `S${randomUUID().slice(0, 8)}`,
  ) =>
    startStack(fns, {
      jetstream: { servers: [nats.url], stream },
      retryBaseDelayMs: 50,
    });

  const outFile = (name: string) => join(dir, `${name}-${randomUUID()}.log`);
  const env = (file: string) => [{ name: 'OUT', value: file }];

  async function asyncInvoke(stack: Stack, name: string, body: unknown = {}) {
    return fetch(`${stack.url}/functions/${namespace}/${name}/async`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  }

  it('answers 202 once the stream has the event and delivers it through the function consumer', async () => {
    const out = outFile('hello');
    const stack = await stackWith([inlineFunction('hello', recording(), quiet({ env: env(out) }))]);
    try {
      expect(stack.eddy.queue.kind).toBe('jetstream');
      const ids: string[] = [];
      for (let i = 0; i < 20; i++) {
        const res = await waitFor('the queue to take events', async () => {
          const r = await asyncInvoke(stack, 'hello', { i });
          return r.status === 503 ? undefined : r;
        });
        expect(res.status).toBe(202);
        ids.push(((await res.json()) as { requestId: string }).requestId);
      }
      await waitFor('every event handled', async () =>
        (await handled(out)).length >= ids.length ? true : undefined,
      );
      expect((await handled(out)).sort()).toEqual([...ids].sort());
      const metrics = await (await fetch(`${stack.metricsUrl}/metrics`)).text();
      expect(metrics).toMatch(
        /eddy_queue_published_total\{namespace="data-path",function="hello",trigger="async",outcome="accepted"\} 20/,
      );
      expect(metrics).toMatch(/eddy_queue_publish_seconds_count 20/);
    } finally {
      await stack.stop();
    }
  }, 60_000);

  it('retries with the function retry policy, then acknowledges only once the dead letter is written', async () => {
    const out = outFile('fails');
    const received: Array<Record<string, unknown>> = [];
    const sink: Server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        received.push(JSON.parse(body) as Record<string, unknown>);
        res.end();
      });
    });
    await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
    const port = (sink.address() as { port: number }).port;
    const stream = `S${randomUUID().slice(0, 8)}`;
    const stack = await stackWith(
      [
        inlineFunction(
          'fails',
          recording("throw Object.assign(new Error('no luck'), { name: 'Unlucky' });"),
          quiet({
            env: env(out),
            retry: { maxAttempts: 2 },
            deadLetter: { url: `http://127.0.0.1:${port}/dead` },
          }),
        ),
      ],
      stream,
    );
    try {
      const res = await waitFor('the queue to take events', async () => {
        const r = await asyncInvoke(stack, 'fails', { n: 1 });
        return r.status === 503 ? undefined : r;
      });
      expect(res.status).toBe(202);
      const { requestId } = (await res.json()) as { requestId: string };
      await waitFor('the dead letter', async () => (received.length > 0 ? true : undefined));
      // One attempt and two retries, each under the same request id.
      expect(await handled(out)).toEqual([requestId, requestId, requestId]);
      expect(received[0]).toMatchObject({
        subject: requestId,
        data: {
          condition: 'RetriesExhausted',
          attempts: 3,
          error: { errorType: 'Unlucky', errorMessage: 'no luck' },
        },
      });
      // Acknowledged: nothing waits and nothing is in flight on the function's consumer.
      const nc = await connect({ servers: nats.url });
      try {
        const jsm = await jetstreamManager(nc);
        const info = await waitFor('the consumer to settle', async () => {
          const i = await jsm.consumers.info(stream, consumerNameOf(stack.store.list()[0]!));
          return i.num_pending === 0 && i.num_ack_pending === 0 ? i : undefined;
        });
        expect(info.num_redelivered).toBe(0);
      } finally {
        await nc.close();
      }
      expect(stack.logs.join('\n')).toMatch(
        /attempt 1 of event \S+ to data-path\/fails failed: Unlucky: no luck; retrying in \d+ ms/,
      );
    } finally {
      await stack.stop();
      sink.close();
    }
  }, 60_000);

  it('names the dead letter of an event once, whichever gateway writes it', async () => {
    // The first gateway's dead letters reach the sink, which leaves them unanswered until that
    // gateway stops: the event goes back to the stream, and the next gateway writes it again.
    const received: Array<{ id: string; subject: string }> = [];
    let answering = false;
    const sink: Server = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        received.push(JSON.parse(body) as { id: string; subject: string });
        if (answering) res.end();
      });
    });
    await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
    const port = (sink.address() as { port: number }).port;
    const stream = `S${randomUUID().slice(0, 8)}`;
    const fn = inlineFunction(
      'gives-up',
      "export const handler = async () => { throw new Error('never'); };",
      quiet({ retry: { maxAttempts: 0 }, deadLetter: { url: `http://127.0.0.1:${port}/dead` } }),
    );
    try {
      const first = await stackWith([fn], stream);
      try {
        const res = await waitFor('the queue to take events', async () => {
          const r = await asyncInvoke(first, 'gives-up', {});
          return r.status === 503 ? undefined : r;
        });
        expect(res.status).toBe(202);
        await waitFor('the first dead letter', async () =>
          received.length > 0 ? true : undefined,
        );
      } finally {
        await first.stop();
      }
      const fromFirst = received.length;
      answering = true;
      const second = await stackWith([fn], stream);
      try {
        await waitFor('the dead letter written again', async () =>
          received.length > fromFirst ? true : undefined,
        );
      } finally {
        await second.stop();
      }
      expect(received.at(-1)!.subject).toBe(received[0]!.subject);
      expect(received.at(-1)!.id).toBe(received[0]!.id);
    } finally {
      sink.closeAllConnections();
      sink.close();
    }
  }, 90_000);

  it("keeps one function's backlog from holding another's events", async () => {
    const slowOut = outFile('slow');
    const fastOut = outFile('fast');
    const stack = await stackWith([
      inlineFunction(
        'slow',
        recording('await new Promise((r) => setTimeout(r, 1500));'),
        quiet({ env: env(slowOut), scaling: { maxReplicas: 1 }, concurrency: 1 }),
      ),
      inlineFunction('fast', recording(), quiet({ env: env(fastOut) })),
    ]);
    try {
      for (let i = 0; i < 15; i++) {
        const r = await waitFor('the queue to take events', async () => {
          const res = await asyncInvoke(stack, 'slow', { i });
          return res.status === 503 ? undefined : res;
        });
        expect(r.status).toBe(202);
      }
      for (let i = 0; i < 15; i++)
        expect((await asyncInvoke(stack, 'fast', { i })).status).toBe(202);
      await waitFor('the fast function to handle its events', async () =>
        (await handled(fastOut)).length === 15 ? true : undefined,
      );
      // 15 slow events take over 20 s one at a time: most still wait when the fast ones are done.
      expect((await handled(slowOut)).length).toBeLessThan(15);
    } finally {
      await stack.stop();
    }
  }, 90_000);

  it('keeps an event queued twice under one id once', async () => {
    const out = outFile('once');
    const stack = await stackWith([inlineFunction('once', recording(), quiet({ env: env(out) }))]);
    try {
      const fn = stack.store.list()[0]!;
      const event = {
        id: randomUUID(),
        type: 'dev.eddy.test',
        source: '/test',
        time: new Date().toISOString(),
        body: Buffer.from('{}'),
        headers: { 'content-type': 'application/json' },
        trigger: 'photos',
      };
      await waitFor('the queue to take events', () =>
        stack.eddy.queue.enqueue(fn, event).catch(() => undefined),
      );
      expect(await stack.eddy.queue.enqueue(fn, event)).toEqual({ duplicate: true });
      await waitFor('the event handled', async () =>
        (await handled(out)).length ? true : undefined,
      );
      // A later event proves the duplicate would have come by now if it had been kept.
      const later = { ...event, id: randomUUID() };
      await stack.eddy.queue.enqueue(fn, later);
      await waitFor('the later event handled', async () =>
        (await handled(out)).length >= 2 ? true : undefined,
      );
      expect(await handled(out)).toEqual([event.id, later.id]);
    } finally {
      await stack.stop();
    }
  }, 60_000);

  it('makes the stream and the consumers again when NATS comes back without its store', async () => {
    const out = outFile('wiped');
    const stack = await stackWith([inlineFunction('wiped', recording(), quiet({ env: env(out) }))]);
    try {
      const send = async () => (await asyncInvoke(stack, 'wiped')).status;
      await waitFor('the queue to take events', async () =>
        (await send()) === 202 ? true : undefined,
      );
      await waitFor('the first event handled', async () =>
        (await handled(out)).length ? true : undefined,
      );
      await nats.kill();
      await nats.restart({ wipe: true });
      const res = await waitFor('the queue to take events again', async () => {
        const r = await asyncInvoke(stack, 'wiped');
        return r.status === 202 ? r : undefined;
      });
      const { requestId } = (await res.json()) as { requestId: string };
      await waitFor(
        'the event handled by the consumer made again',
        async () => ((await handled(out)).includes(requestId) ? true : undefined),
        30_000,
      );
    } finally {
      await stack.stop();
    }
  }, 90_000);

  it('refuses with 503 while NATS is down, takes events again once it is back, and loses none', async () => {
    const out = outFile('outage');
    const stack = await stackWith([
      inlineFunction('outage', recording(), quiet({ env: env(out) })),
    ]);
    try {
      const accepted: string[] = [];
      const send = async () => {
        const res = await asyncInvoke(stack, 'outage');
        if (res.status === 202)
          accepted.push(((await res.json()) as { requestId: string }).requestId);
        return res;
      };
      await waitFor('the queue to take events', async () =>
        (await send()).status === 202 ? true : undefined,
      );
      await nats.kill();
      const refused = await waitFor('a refusal', async () => {
        const res = await send();
        return res.status === 503 ? res : undefined;
      });
      expect(await refused.json()).toMatchObject({ errorType: 'EddyQueueUnavailable' });
      await nats.restart();
      await waitFor('the queue to take events again', async () =>
        (await send()).status === 202 ? true : undefined,
      );
      for (let i = 0; i < 10; i++) expect((await send()).status).toBe(202);
      // An event the consumer had pulled but not acknowledged when NATS died is sent again once
      // its ack wait (30 s) has passed, and a pull lost with the connection is made again
      // within that time too: the bound covers the ack wait, not a guess at the machine's speed.
      await waitFor(
        'every accepted event handled',
        async () => {
          const seen = new Set(await handled(out));
          return accepted.every((id) => seen.has(id)) ? true : undefined;
        },
        45_000,
      );
    } finally {
      await stack.stop();
    }
  }, 120_000);
});
