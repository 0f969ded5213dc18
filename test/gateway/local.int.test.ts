/**
 * The data path on the local platform, with real runtime processes: activation from zero, scale
 * to zero, throttling, timeouts and crashes (an invocation runs once), a deleted function's queue,
 * the memory budget, asynchronous retries, and a burst at zero in which no event is lost.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { FunctionState } from '../../operator/src/gateway/app.js';
import { keyOf } from '../../operator/src/platform/platform.js';
import { runtimeMain } from '../harness/runtime.js';
import { waitFor } from '../harness/wait.js';
import { existsSync, readFileSync } from 'node:fs';
import { inlineFunction, namespace, startStack, type Stack } from './stack.js';

let stack: Stack | undefined;
let scratch: string;

beforeAll(async () => {
  if (!existsSync(runtimeMain)) throw new Error(`${runtimeMain} is missing: run npm run build`);
  scratch = await mkdtemp(join(tmpdir(), 'eddy-data-path-'));
  return () => rm(scratch, { recursive: true, force: true });
});

afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail' && stack) {
    process.stderr.write(`--- stack log\n${stack.logs.slice(-200).join('\n')}\n`);
  }
  await stack?.stop();
  stack = undefined;
});

const echo = `export const handler = async (event, context) => ({ got: event, id: context.awsRequestId, pid: process.pid });`;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The largest send buffer TCP grows a connection's to (net.ipv4.tcp_wmem's maximum). */
function sendBufferMaxBytes(): number {
  try {
    return Number(readFileSync('/proc/sys/net/ipv4/tcp_wmem', 'utf8').trim().split(/\s+/)[2]);
  } catch {
    return Infinity;
  }
}

/** Bytes this machine's IPv4 TCP connections to 127.0.0.1:`port` have not yet sent. */
function sendQueueTo(port: number): number {
  let queued = 0;
  for (const line of readFileSync('/proc/net/tcp', 'utf8').trim().split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[2] !== `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`) continue;
    queued += parseInt(f[4]!.split(':')[0]!, 16);
  }
  return queued;
}

async function functionsState(url: string) {
  const res = await fetch(`${url}/functions`);
  return ((await res.json()) as { functions: Array<Record<string, unknown>> }).functions;
}

/**
 * A function of one replica taking one invocation at a time, whose handler writes "start n" and,
 * a second later, "end n" to `log`.
 */
function oneAtATime(name: string, log: string) {
  const code = `import { appendFileSync } from 'node:fs';
    export const handler = async (event) => {
      appendFileSync(${JSON.stringify(log)}, 'start ' + event.n + '\\n');
      await new Promise((r) => setTimeout(r, 1000));
      appendFileSync(${JSON.stringify(log)}, 'end ' + event.n + '\\n');
      return event.n;
    };`;
  return inlineFunction(name, code, {
    concurrency: 1,
    scaling: { maxReplicas: 1 },
    timeoutSeconds: 5,
  });
}

describe('the gateway on the local platform', () => {
  it('starts a process for an invocation at zero, answers it, and scales back to zero when idle', async () => {
    stack = await startStack([
      inlineFunction('hello', echo, { scaling: { idleSeconds: 1 }, timeoutSeconds: 5 }),
    ]);
    const before = await functionsState(stack.url);
    expect(before).toEqual([
      expect.objectContaining({
        name: 'hello',
        state: 'ScaledToZero',
        replicas: { desired: 0, ready: 0 },
      }),
    ]);
    const res = await stack.invoke('hello', { name: 'eddy' });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { got: unknown; id: string; pid: number };
    expect(body.got).toEqual({ name: 'eddy' });
    expect(res.headers.get('x-eddy-request-id')).toBe(body.id);
    expect(res.headers.get('x-eddy-init-duration-ms')).not.toBeNull();
    expect(alive(body.pid)).toBe(true);

    const metrics = await (await fetch(`${stack.metricsUrl}/metrics`)).text();
    expect(metrics).toMatch(
      /eddy_function_invocations_total\{namespace="data-path",function="hello",trigger="invoke",outcome="success"\} 1/,
    );
    expect(metrics).toMatch(
      /eddy_function_cold_starts_total\{namespace="data-path",function="hello"\} 1/,
    );
    expect(metrics).toMatch(
      /eddy_function_activation_seconds_count\{namespace="data-path",function="hello"\} 1/,
    );

    // Idle for idleSeconds: the autoscaler scales to zero and the process ends.
    await waitFor(
      'hello to scale to zero',
      async () => (alive(body.pid) ? undefined : true),
      20_000,
    );
    expect(stack.platform.counts(`${namespace}/hello`)).toEqual({ desired: 0, ready: 0 });
    // And the next invocation starts it again.
    const again = await stack.invoke('hello', { n: 2 });
    expect(again.status).toBe(200);
  });

  it('answers 404 naming the functions that exist, 413 past 6 MB, 405 for GET', async () => {
    stack = await startStack([inlineFunction('hello', echo), inlineFunction('other', echo)]);
    const missing = await stack.invoke('nope');
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({
      errorType: 'ResourceNotFoundException',
      errorMessage: 'no function nope in namespace data-path; it has: hello, other',
    });
    const big = await fetch(`${stack.url}/functions/${namespace}/hello`, {
      method: 'POST',
      body: Buffer.alloc(6 * 1024 * 1024 + 1, 'a'),
    });
    expect(big.status).toBe(413);
    const get = await fetch(`${stack.url}/functions/${namespace}/hello`);
    expect(get.status).toBe(405);
    const badEscape = await fetch(`${stack.url}/functions/${namespace}/%E0`, { method: 'POST' });
    expect(badEscape.status).toBe(404);
  });

  it("runs inline code from the file its handler names, as Lambda's console names it", async () => {
    stack = await startStack([
      inlineFunction('named', 'export const greet = async (e) => ({ hi: e.name });', {
        handler: 'app.greet',
      }),
    ]);
    const res = await stack.invoke('named', { name: 'eddy' });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ hi: 'eddy' });
  });

  it('answers at once with the error of a handler that does not load, as the replica would', async () => {
    stack = await startStack([
      inlineFunction('broken', 'export const handler = async () => { return ( };'),
      inlineFunction('missing', 'export const other = async () => 1;', { handler: 'index.nope' }),
    ]);
    for (const [name, errorType] of [
      ['broken', 'Runtime.UserCodeSyntaxError'],
      ['missing', 'Runtime.HandlerNotFound'],
    ] as const) {
      // The first from zero, the next with the replica still starting: neither waits for it.
      for (let i = 0; i < 2; i++) {
        const started = Date.now();
        const res = await fetch(`${stack.url}/functions/${namespace}/${name}`, {
          method: 'POST',
          body: '{}',
          signal: AbortSignal.timeout(30_000),
        });
        expect(res.status).toBe(502);
        expect(res.headers.get('x-eddy-function-error')).toBe('Unhandled');
        expect(await res.json()).toMatchObject({ errorType });
        expect(Date.now() - started).toBeLessThan(20_000);
      }
    }
  });

  it('answers an invocation still in flight when the drain ends with 503, not a closed connection', async () => {
    stack = await startStack(
      [
        inlineFunction(
          'slow',
          `export const handler = async () => { console.log('slow started'); await new Promise((r) => setTimeout(r, 30000)); };`,
          { timeoutSeconds: 60 },
        ),
      ],
      { drainMs: 500 },
    );
    const answer = stack.invoke('slow');
    await waitFor(
      'the handler to start',
      async () => stack!.logs.some((l) => l.includes('slow started')) || undefined,
    );
    const stopping = stack.stop();
    stack = undefined;
    const res = await answer;
    expect(res.status).toBe(503);
    const body = (await res.json()) as { errorType: string; errorMessage: string };
    expect(body.errorType).toBe('EddyShuttingDown');
    expect(body.errorMessage).toMatch(/^the gateway stopped before the function answered/);
    await stopping;
  });

  it('ends its drain once the last invocation in flight has answered, though its caller keeps the connection', async () => {
    stack = await startStack(
      [
        inlineFunction(
          'second',
          `export const handler = async () => { console.log('second started'); await new Promise((r) => setTimeout(r, 1000)); return 'done'; };`,
          { timeoutSeconds: 10 },
        ),
      ],
      { drainMs: 60_000 },
    );
    // A caller that keeps its connections open for as long as the gateway does.
    const agent = new Agent({ keepAlive: true });
    const url = new URL(stack.url);
    const answer = new Promise<{ status: number; body: string; connection?: string }>(
      (resolve, reject) => {
        const req = httpRequest(
          {
            host: url.hostname,
            port: url.port,
            path: `/functions/${namespace}/second`,
            method: 'POST',
            agent,
          },
          (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (c: string) => (body += c));
            res.on('end', () =>
              resolve({ status: res.statusCode ?? 0, body, connection: res.headers.connection }),
            );
          },
        );
        req.on('error', reject);
        req.end('{}');
      },
    );
    await waitFor(
      'the handler to start',
      async () => stack!.logs.some((l) => l.includes('second started')) || undefined,
    );
    const began = Date.now();
    const stopping = stack.stop();
    stack = undefined;
    expect(await answer).toEqual({ status: 200, body: '"done"', connection: 'close' });
    await stopping;
    // Not the 60 s drain, nor the 65 s an idle kept-alive connection could last.
    expect(Date.now() - began).toBeLessThan(15_000);
    agent.destroy();
  });

  it('holds invocations past maxReplicas x concurrency in a bounded queue, then answers 429', async () => {
    const slow = `export const handler = async () => { await new Promise((r) => setTimeout(r, 1500)); return 'done'; };`;
    stack = await startStack(
      [
        inlineFunction('slow', slow, {
          concurrency: 1,
          scaling: { maxReplicas: 1 },
          timeoutSeconds: 10,
        }),
      ],
      { queueLimit: 2 },
    );
    // Warm it first, so the burst measures throttling rather than activation.
    expect((await stack.invoke('slow')).status).toBe(200);
    const answers = await Promise.all(Array.from({ length: 5 }, () => stack!.invoke('slow')));
    const statuses = answers.map((a) => a.status).sort();
    // One in flight, two waiting, two refused.
    expect(statuses).toEqual([200, 200, 200, 429, 429]);
    const refused = answers.find((a) => a.status === 429)!;
    expect(refused.headers.get('retry-after')).toBe('1');
    expect(((await refused.json()) as { errorType: string }).errorType).toBe(
      'TooManyRequestsException',
    );
  });

  it('keeps a slot taken until the handler is done, though its caller went away', async () => {
    const log = join(scratch, 'overlap.log');
    stack = await startStack([oneAtATime('single', log)]);
    expect((await stack.invoke('single', { n: 0 })).status).toBe(200);
    const impatient = new AbortController();
    const first = stack
      .invoke('single', { n: 1 }, { signal: impatient.signal })
      .catch(() => 'gone');
    await waitFor('the first invocation to start', async () =>
      (await readFile(log, 'utf8')).includes('start 1') ? true : undefined,
    );
    impatient.abort();
    expect(await first).toBe('gone');
    const second = await stack.invoke('single', { n: 2 });
    expect(second.status).toBe(200);
    // One at a time, as concurrency 1 promises: 2 started only once 1 had ended.
    expect((await readFile(log, 'utf8')).trim().split('\n')).toEqual([
      'start 0',
      'end 0',
      'start 1',
      'end 1',
      'start 2',
      'end 2',
    ]);
    const metrics = await (await fetch(`${stack.metricsUrl}/metrics`)).text();
    expect(metrics).toMatch(/function="single",trigger="invoke",outcome="cancelled"\} 1/);
  });

  it('drops a queued invocation whose caller went away before a replica took it', async () => {
    const log = join(scratch, 'queued.log');
    stack = await startStack([oneAtATime('queued', log)]);
    expect((await stack.invoke('queued', { n: 0 })).status).toBe(200);
    const running = stack.invoke('queued', { n: 1 });
    await waitFor('the first invocation to start', async () =>
      (await readFile(log, 'utf8')).includes('start 1') ? true : undefined,
    );
    const impatient = new AbortController();
    const waiting = stack
      .invoke('queued', { n: 2 }, { signal: impatient.signal })
      .catch(() => 'gone');
    const queued = async () => {
      const res = await fetch(`${stack!.url}/functions`);
      const { functions } = (await res.json()) as { functions: FunctionState[] };
      return functions.find((f) => f.name === 'queued')!.queued;
    };
    await waitFor('the second invocation to wait', async () =>
      (await queued()) === 1 ? true : undefined,
    );
    impatient.abort();
    expect(await waiting).toBe('gone');
    await waitFor('the queue to let it go', async () =>
      (await queued()) === 0 ? true : undefined,
    );
    expect((await running).status).toBe(200);
    expect((await stack.invoke('queued', { n: 3 })).status).toBe(200);
    // The invocation whose caller left while it waited never ran.
    expect((await readFile(log, 'utf8')).trim().split('\n')).toEqual([
      'start 0',
      'end 0',
      'start 1',
      'end 1',
      'start 3',
      'end 3',
    ]);
    const metrics = await (await fetch(`${stack.metricsUrl}/metrics`)).text();
    expect(metrics).toMatch(/function="queued",trigger="invoke",outcome="cancelled"\} 1/);
  });

  it('recycles only the replica whose handler timed out', async () => {
    const code = `export const handler = async (event) => {
      if (event.hang) await new Promise((r) => setTimeout(r, 60_000));
      return { pid: process.pid };
    };`;
    stack = await startStack([
      inlineFunction('timer', code, {
        timeoutSeconds: 1,
        concurrency: 1,
        scaling: { minReplicas: 2, maxReplicas: 2 },
      }),
    ]);
    const key = `${namespace}/timer`;
    await stack.platform.scale(stack.store.get(namespace, 'timer')!, 2);
    await waitFor('two ready replicas', async () =>
      stack!.platform.ready(key).length === 2 ? true : undefined,
    );
    const pids = new Set(stack.platform.ready(key).map((r) => r.id));
    const hung = stack.invoke('timer', { hang: true });
    // While one replica times out, the other keeps answering.
    const others = await Promise.all([stack.invoke('timer'), stack.invoke('timer')]);
    expect(others.map((r) => r.status)).toEqual([200, 200]);
    const timedOut = await hung;
    expect(timedOut.status).toBe(504);
    expect(((await timedOut.json()) as { errorType: string }).errorType).toBe('Sandbox.Timedout');
    // The timed-out replica is replaced; the other one is still the same process.
    await waitFor(
      'the recycled replica to be replaced',
      async () => {
        const now = stack!.platform.ready(key).map((r) => r.id);
        return now.length === 2 && now.filter((id) => pids.has(id)).length === 1 ? true : undefined;
      },
      20_000,
    );
  });

  it('answers 502 Runtime.ExitError when a replica dies mid-invocation, and retries an async one on a new replica', async () => {
    const marker = join(scratch, 'exited-once');
    const code = `import { existsSync, writeFileSync, appendFileSync } from 'node:fs';
      export const handler = async (event) => {
        if (event.exit === 'always') process.exit(3);
        if (event.exit === 'once' && !existsSync(${JSON.stringify(marker)})) {
          writeFileSync(${JSON.stringify(marker)}, 'x');
          process.exit(3);
        }
        appendFileSync(${JSON.stringify(join(scratch, 'done'))}, process.pid + '\\n');
        return 'ok';
      };`;
    stack = await startStack([inlineFunction('crashy', code, { timeoutSeconds: 5 })], {
      retryBaseDelayMs: 50,
    });
    const sync = await stack.invoke('crashy', { exit: 'always' });
    expect(sync.status).toBe(502);
    expect(sync.headers.get('x-eddy-function-error')).toBe('Unhandled');
    expect(((await sync.json()) as { errorType: string }).errorType).toBe('Runtime.ExitError');

    const accepted = await fetch(`${stack.url}/functions/${namespace}/crashy/async`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ exit: 'once' }),
    });
    expect(accepted.status).toBe(202);
    const { requestId } = (await accepted.json()) as { requestId: string };
    expect(requestId).toMatch(/^[0-9a-f-]{36}$/);
    const done = await waitFor(
      'the retried invocation to succeed',
      async () => {
        const text = await readFile(join(scratch, 'done'), 'utf8').catch(() => '');
        return text.trim() ? text : undefined;
      },
      20_000,
    );
    expect(done.trim().split('\n')).toHaveLength(1);
    const metrics = await (await fetch(`${stack.metricsUrl}/metrics`)).text();
    expect(metrics).toMatch(
      /eddy_function_retries_total\{namespace="data-path",function="crashy",trigger="async"\} 1/,
    );
  });

  it('runs an invocation once when its replica dies mid-handler on a kept-alive connection: 502 Runtime.ExitError, never sent again', async () => {
    const runs = join(scratch, 'runs.log');
    const code = `import { appendFileSync } from 'node:fs';
      export const handler = async (event) => {
        appendFileSync(${JSON.stringify(runs)}, (event.exit ? 'exit ' : 'run ') + process.pid + '\\n');
        if (event.exit) process.exit(3);
        return process.pid;
      };`;
    stack = await startStack([
      inlineFunction('once', code, {
        concurrency: 1,
        scaling: { maxReplicas: 1 },
        timeoutSeconds: 5,
      }),
    ]);
    // The first invocation leaves its connection to the replica open (kept alive): the next one
    // goes out on it, the normal case under load.
    const warm = await stack.invoke('once', {});
    expect(warm.status).toBe(200);
    const first = (await warm.json()) as number;
    const died = await stack.invoke('once', { exit: true });
    expect(died.status).toBe(502);
    expect(died.headers.get('x-eddy-function-error')).toBe('Unhandled');
    expect(((await died.json()) as { errorType: string }).errorType).toBe('Runtime.ExitError');
    // Once the process that died is gone (until then the kernel may still take a connection on
    // its listening socket, and a request written there is lost with it: a 502 of its own), the
    // next invocation is answered by the replica that replaced it; had the one that died been
    // sent again, its run would stand between.
    await waitFor('the replica that died to be gone', async () => {
      try {
        process.kill(first, 0);
        return undefined;
      } catch {
        return true;
      }
    });
    const after = await stack.invoke('once', {});
    expect(after.status).toBe(200);
    const second = (await after.json()) as number;
    expect((await readFile(runs, 'utf8')).trim().split('\n')).toEqual([
      `run ${first}`,
      `exit ${first}`,
      `run ${second}`,
    ]);
    const metrics = await (await fetch(`${stack.metricsUrl}/metrics`)).text();
    expect(metrics).toMatch(/function="once",trigger="invoke",outcome="error"\} 1\n/);
  });

  // 6 MB must not fit in the sockets' buffers (a few MB on loopback with Linux's defaults).
  it.runIf(sendBufferMaxBytes() < 5 * 2 ** 20)(
    'sends an invocation again when its connection failed before the request was written whole: the handler runs once',
    async () => {
      const runs = join(scratch, 'resend.log');
      const code = `import { appendFileSync } from 'node:fs';
      export const handler = async (event) => {
        appendFileSync(${JSON.stringify(runs)}, 'run ' + process.pid + ' ' + (event.pad ?? '').length + '\\n');
        return process.pid;
      };`;
      stack = await startStack([
        inlineFunction('resend', code, {
          concurrency: 1,
          scaling: { maxReplicas: 1 },
          timeoutSeconds: 10,
          memory: '512Mi',
        }),
      ]);
      const key = `${namespace}/resend`;
      const warm = await stack.invoke('resend', {});
      expect(warm.status).toBe(200);
      const first = (await warm.json()) as number;
      const port = new URL(stack.platform.ready(key)[0]!.url).port;
      // A replica that takes no more bytes: 6 MB cannot all fit in the sockets' buffers (a few MB
      // on loopback), so the request cannot be written whole.
      process.kill(first, 'SIGSTOP');
      const pad = 'x'.repeat(6_000_000);
      const big = stack.invoke('resend', { pad });
      await waitFor('bytes waiting to go out to the stopped replica', async () =>
        sendQueueTo(Number(port)) > 0 ? true : undefined,
      );
      process.kill(first, 'SIGKILL');
      const res = await big;
      expect(res.status).toBe(200);
      const second = (await res.json()) as number;
      expect(second).not.toBe(first);
      expect((await readFile(runs, 'utf8')).trim().split('\n')).toEqual([
        `run ${first} 0`,
        `run ${second} ${pad.length}`,
      ]);
      expect(stack.logs.join('\n')).toMatch(/failed before the invocation was written/);
    },
  );

  it("drops a deleted function's queue: waiting invocations get 404, the one in flight finishes, and a delivery waiting for its retry ends", async () => {
    const gate = join(scratch, 'gate-open');
    const received: Array<{ condition: string; attempts: number }> = [];
    const sink = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const ce = JSON.parse(Buffer.concat(chunks).toString('utf8')) as {
          data: { condition: string; attempts: number };
        };
        received.push(ce.data);
        res.writeHead(202).end();
      });
    });
    await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
    const { port } = sink.address() as AddressInfo;
    try {
      const code = `import { existsSync } from 'node:fs';
        export const handler = async (event) => {
          while (event.wait && !existsSync(${JSON.stringify(gate)})) await new Promise((r) => setTimeout(r, 10));
          if (event.fail) throw new Error('not today');
          return 'ok';
        };`;
      stack = await startStack(
        [
          inlineFunction('doomed', code, {
            concurrency: 1,
            scaling: { maxReplicas: 1 },
            timeoutSeconds: 30,
          }),
          // Its own function, so that a retry that comes early cannot join the queue above.
          inlineFunction('doomed-async', code, {
            timeoutSeconds: 30,
            retry: { maxAttempts: 2 },
            deadLetter: { url: `http://127.0.0.1:${port}/dead` },
          }),
        ],
        // Retries wait up to a minute: long past this test unless the wait is cut short.
        { retryBaseDelayMs: 60_000 },
      );
      const key = `${namespace}/doomed`;
      expect((await stack.invoke('doomed', {})).status).toBe(200);
      const accepted = await fetch(`${stack.url}/functions/${namespace}/doomed-async/async`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ fail: true }),
      });
      expect(accepted.status).toBe(202);
      await waitFor('the asynchronous invocation to wait for its retry', async () =>
        /function="doomed-async",trigger="async"\} [12]\n/.test(
          await (await fetch(`${stack!.metricsUrl}/metrics`)).text(),
        )
          ? true
          : undefined,
      );
      const inFlight = stack.invoke('doomed', { wait: true });
      await waitFor('one invocation in flight', async () =>
        stack!.eddy.gateway.load()[key]?.inFlight === 1 ? true : undefined,
      );
      const waiting = stack.invoke('doomed', {});
      await waitFor('one invocation waiting', async () =>
        stack!.eddy.gateway.load()[key]?.queued === 1 ? true : undefined,
      );

      stack.store.delete(namespace, 'doomed');
      stack.store.delete(namespace, 'doomed-async');
      const refused = await waiting;
      expect(refused.status).toBe(404);
      expect(await refused.json()).toEqual({
        errorType: 'ResourceNotFoundException',
        errorMessage: `function ${key} was deleted while the invocation waited; it was not run`,
      });
      expect(stack.eddy.gateway.load()[key]).toBeUndefined();
      // The delivery does not wait out its backoff: it ends now, to the dead letter it had.
      await waitFor(
        'the dead letter',
        async () => (received.length > 0 ? true : undefined),
        10_000,
      );
      expect(received[0]).toMatchObject({ condition: 'NotRetryable' });
      await writeFile(gate, '');
      expect((await inFlight).status).toBe(200);
      await waitFor('every byte given back', async () =>
        stack!.eddy.gateway.budget.held === 0 ? true : undefined,
      );
    } finally {
      sink.close();
    }
  });

  it('refuses bodies past the memory budget, 429 for an invocation and 503 at an intake, and gives every byte back', async () => {
    const gate = join(scratch, 'budget-gate');
    const code = `import { existsSync } from 'node:fs';
      export const handler = async (event) => {
        while (event.wait && !existsSync(${JSON.stringify(gate)})) await new Promise((r) => setTimeout(r, 10));
        return (event.pad ?? '').length;
      };`;
    const MiB = 2 ** 20;
    stack = await startStack(
      [
        inlineFunction('big', code, {
          concurrency: 4,
          scaling: { maxReplicas: 1 },
          timeoutSeconds: 30,
          memory: '512Mi',
        }),
      ],
      { memoryBudget: 8 * MiB },
    );
    const key = `${namespace}/big`;
    const intake: number[] = [];
    stack.eddy.gateway.route('/sources/budget-test', async (_req, body) => {
      intake.push(body.length);
      return { status: 200, body: { bytes: body.length } };
    });
    const pad = 'x'.repeat(5 * MiB);
    expect((await stack.invoke('big', {})).status).toBe(200);
    const held = stack.invoke('big', { wait: true, pad });
    await waitFor('the 5 MiB invocation in flight', async () =>
      stack!.eddy.gateway.load()[key]?.inFlight === 1 ? true : undefined,
    );
    expect(stack.eddy.gateway.budget.held).toBeGreaterThan(5 * MiB);

    const refused = await stack.invoke('big', { pad });
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    const why = (await refused.json()) as { errorType: string; errorMessage: string };
    expect(why.errorType).toBe('TooManyRequestsException');
    expect(why.errorMessage).toMatch(
      /^the gateway holds 5\.0 MiB of bodies and answers and 5\.0 MiB more would pass its memory budget of 8\.0 MiB \(EDDY_GATEWAY_MEMORY_BUDGET/,
    );
    // A body without a declared length is counted as it arrives.
    const chunked = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const out = httpRequest(
        `${stack!.url}/functions/${namespace}/big`,
        { method: 'POST', headers: { 'content-type': 'application/json' } },
        (res) => {
          let text = '';
          res.on('data', (c: Buffer) => (text += c.toString('utf8')));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        },
      );
      out.on('error', reject);
      out.write(`{"pad":"`);
      for (let i = 0; i < 5; i++) out.write('x'.repeat(MiB));
      out.end(`"}`);
    });
    expect(chunked.status).toBe(429);
    expect(chunked.body).toMatch(/memory budget of 8\.0 MiB/);

    const busy = await fetch(`${stack.url}/sources/budget-test`, { method: 'POST', body: pad });
    expect(busy.status).toBe(503);
    expect(busy.headers.get('retry-after')).toBe('1');
    expect(((await busy.json()) as { errorType: string }).errorType).toBe('EddyGatewayBusy');
    const small = await fetch(`${stack.url}/sources/budget-test`, { method: 'POST', body: 'ok' });
    expect(small.status).toBe(200);
    expect(intake).toEqual([2]);

    await writeFile(gate, '');
    const answer = await held;
    expect(answer.status).toBe(200);
    expect(await answer.json()).toBe(5 * MiB);
    await waitFor('every byte given back', async () =>
      stack!.eddy.gateway.budget.held === 0 ? true : undefined,
    );
    // With the budget free again, the same body is taken.
    expect((await stack.invoke('big', { pad })).status).toBe(200);
  });

  it("counts an asynchronous invocation's body against the memory budget until its delivery ends", async () => {
    const MiB = 2 ** 20;
    const code = `export const handler = async (event) => {
      if (event.fail) throw new Error('not yet');
      return (event.pad ?? '').length;
    };`;
    stack = await startStack(
      [
        inlineFunction('later', code, { retry: { maxAttempts: 2 }, memory: '512Mi' }),
        inlineFunction('now', code, { memory: '512Mi' }),
      ],
      // Its retries wait up to a minute: the body stays held meanwhile.
      { memoryBudget: 8 * MiB, retryBaseDelayMs: 60_000 },
    );
    const pad = 'x'.repeat(5 * MiB);
    const accepted = await fetch(`${stack.url}/functions/${namespace}/later/async`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ fail: true, pad }),
    });
    expect(accepted.status).toBe(202);
    expect(stack.eddy.gateway.budget.held).toBeGreaterThan(5 * MiB);
    const refused = await stack.invoke('now', { pad });
    expect(refused.status).toBe(429);
    expect(((await refused.json()) as { errorMessage: string }).errorMessage).toMatch(
      /memory budget of 8\.0 MiB/,
    );
    // Deleted, the Function's delivery ends at once (dropped: it has no dead letter), and with
    // it the hold on its body.
    stack.store.delete(namespace, 'later');
    await waitFor('the body to be given back', async () =>
      stack!.eddy.gateway.budget.held === 0 ? true : undefined,
    );
    expect(stack.logs.join('\n')).toMatch(
      /DROPPED event .* for function data-path\/later .*NotRetryable/,
    );
    const taken = await stack.invoke('now', { pad });
    expect(taken.status).toBe(200);
    expect(await taken.json()).toBe(5 * MiB);
  });

  it('sends an async invocation that keeps failing to the dead letter after its retries', async () => {
    const received: Array<{ headers: Record<string, unknown>; body: string }> = [];
    const sink = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
        res.writeHead(202).end();
      });
    });
    await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
    const { port } = sink.address() as AddressInfo;
    try {
      stack = await startStack(
        [
          inlineFunction(
            'failing',
            `export const handler = async () => { throw new TypeError('no thumbnail today'); };`,
            {
              retry: { maxAttempts: 1, maxEventAgeSeconds: 60 },
              deadLetter: { url: `http://127.0.0.1:${port}/dead` },
            },
          ),
        ],
        { retryBaseDelayMs: 50 },
      );
      const accepted = await fetch(`${stack.url}/functions/${namespace}/failing/async`, {
        method: 'POST',
        body: JSON.stringify({ key: 'cat.jpg' }),
      });
      expect(accepted.status).toBe(202);
      const { requestId } = (await accepted.json()) as { requestId: string };
      await waitFor(
        'the dead letter',
        async () => (received.length > 0 ? true : undefined),
        20_000,
      );
      expect(received[0]!.headers['content-type']).toBe('application/cloudevents+json');
      const ce = JSON.parse(received[0]!.body) as {
        type: string;
        data: {
          originalEvent: { id: string; data: unknown };
          error: { errorType: string; errorMessage: string };
          attempts: number;
        };
      };
      expect(ce.type).toBe('dev.eddy.dead-letter');
      expect(ce.data.originalEvent.id).toBe(requestId);
      expect(ce.data.originalEvent.data).toEqual({ key: 'cat.jpg' });
      expect(ce.data.error).toEqual({ errorType: 'TypeError', errorMessage: 'no thumbnail today' });
      expect(ce.data.attempts).toBe(2);
      const metrics = await (await fetch(`${stack.metricsUrl}/metrics`)).text();
      expect(metrics).toMatch(
        /eddy_function_invocations_total\{namespace="data-path",function="failing",trigger="async",outcome="error"\} 2/,
      );
      expect(metrics).toMatch(
        /eddy_function_dead_letters_total\{namespace="data-path",function="failing",trigger="async",outcome="sent"\} 1/,
      );
    } finally {
      sink.close();
    }
  });

  it('handles every one of 500 events sent at once to a function at zero', async () => {
    const log = join(scratch, 'burst.log');
    const code = `import { appendFileSync } from 'node:fs';
      export const handler = async (event) => {
        await new Promise((r) => setTimeout(r, 20));
        appendFileSync(${JSON.stringify(log)}, event.n + '\\n');
        return event.n;
      };`;
    stack = await startStack([
      inlineFunction('burst', code, {
        concurrency: 10,
        scaling: { maxReplicas: 4 },
        timeoutSeconds: 10,
      }),
    ]);
    const answers = await Promise.all(
      Array.from({ length: 500 }, (_, n) =>
        stack!.invoke('burst', { n }).then(async (r) => [r.status, await r.text()] as const),
      ),
    );
    const failures = answers.filter(([status]) => status !== 200);
    expect(failures).toEqual([]);
    const seen = (await readFile(log, 'utf8')).trim().split('\n').map(Number);
    expect(new Set(seen).size).toBe(500);
    expect(seen).toHaveLength(500);
    expect(
      stack.platform.counts(keyOf(stack.store.get(namespace, 'burst')!)).desired,
    ).toBeGreaterThanOrEqual(1);
  });
});
