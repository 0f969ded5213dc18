/**
 * Lambda's Invoke API on the local stack (no authentication, as `npm start` runs), called the
 * way a Lambda user calls it: with `@aws-sdk/client-lambda` pointed at the gateway, and with the
 * AWS CLI (`aws lambda invoke --endpoint-url`). The SDK always signs; the local stack takes any
 * signature.
 */
import {
  InvokeCommand,
  InvokeWithResponseStreamCommand,
  LambdaClient,
  ListFunctionsCommand,
  type InvokeCommandOutput,
  type TooManyRequestsException,
} from '@aws-sdk/client-lambda';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { awsCli } from '../harness/components.js';
import { canRun } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';
import { inlineFunction, namespace, quiet, startStack, type Stack } from './stack.js';
import { awsLambdaInvoke, payload, refused } from './lambda-client.js';

const code = `
export const handler = async (event, context) => {
  if (event.fail) throw new TypeError('the event asked to fail');
  if (event.nothing) return undefined;
  if (event.report) {
    await fetch(event.report, { method: 'POST', body: JSON.stringify({ requestId: context.awsRequestId, event, clientContext: context.clientContext ?? null }) });
  }
  console.log('handling', JSON.stringify(event));
  console.error('first line\\nsecond line');
  return { event, clientContext: context.clientContext ?? null, requestId: context.awsRequestId };
};`;

/** The SDK pointed at the stack, trying once. It always signs; the local stack takes any signature. */
const sdkFor = (endpoint: string) =>
  new LambdaClient({
    endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    maxAttempts: 1,
  });

const decode = (p?: Uint8Array) => JSON.parse(Buffer.from(p ?? []).toString('utf8')) as unknown;

describe('Lambda Invoke API on the local stack', () => {
  let stack: Stack;
  let lambda: LambdaClient;
  let reports: Server;
  const reported: Array<{ requestId: string; event: unknown; clientContext: unknown }> = [];
  let reportUrl: string;

  beforeAll(async () => {
    reports = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        reported.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as (typeof reported)[0]);
        res.end('ok');
      });
    });
    await new Promise<void>((r) => reports.listen(0, '127.0.0.1', r));
    reportUrl = `http://127.0.0.1:${(reports.address() as AddressInfo).port}/`;
    stack = await startStack([
      inlineFunction('hello', code, quiet({ scaling: { minReplicas: 1 } })),
      inlineFunction(
        'ends',
        `export const handler = async (event) => {
          if (event.exit) process.exit(3);
          await new Promise((r) => setTimeout(r, 5_000));
        };`,
        quiet({ timeoutSeconds: 1 }),
      ),
    ]);
    lambda = sdkFor(stack.url);
  });

  afterAll(async () => {
    lambda?.destroy();
    await stack?.stop();
    await new Promise<void>((r) => (reports ? reports.close(() => r()) : r()));
  });

  it('answers RequestResponse with the raw result, the executed version and a request id', async () => {
    const out: InvokeCommandOutput = await lambda.send(
      new InvokeCommand({ FunctionName: 'hello', Payload: payload({ x: 1 }) }),
    );
    expect(out.StatusCode).toBe(200);
    expect(out.FunctionError).toBeUndefined();
    expect(out.ExecutedVersion).toBe('$LATEST');
    const result = decode(out.Payload) as { event: unknown; requestId: string };
    expect(result.event).toEqual({ x: 1 });
    expect(out.$metadata.requestId).toBe(result.requestId);
    // The same by ARN (the account field is the namespace), partial ARN, and with $LATEST.
    for (const FunctionName of [
      `arn:aws:lambda:us-east-1:${namespace}:function:hello`,
      `arn:aws:lambda:us-east-1:${namespace}:function:hello:$LATEST`,
      `${namespace}:function:hello`,
    ]) {
      const o = await lambda.send(new InvokeCommand({ FunctionName, Payload: payload({ y: 2 }) }));
      expect((decode(o.Payload) as { event: unknown }).event).toEqual({ y: 2 });
    }
    const q = await lambda.send(
      new InvokeCommand({ FunctionName: 'hello', Qualifier: '$LATEST', Payload: payload({}) }),
    );
    expect(q.StatusCode).toBe(200);
  });

  it("returns the invocation's log tail, START to REPORT, with each line of a message its own", async () => {
    const out = await lambda.send(
      new InvokeCommand({ FunctionName: 'hello', LogType: 'Tail', Payload: payload({ t: 1 }) }),
    );
    const { requestId } = decode(out.Payload) as { requestId: string };
    const tail = Buffer.from(out.LogResult ?? '', 'base64').toString('utf8');
    const lines = tail.trimEnd().split('\n');
    expect(lines[0]).toBe(`START RequestId: ${requestId} Version: $LATEST`);
    expect(lines).toContainEqual(expect.stringMatching(`\t${requestId}\tINFO\thandling {"t":1}$`));
    expect(lines).toContainEqual(expect.stringMatching(`\t${requestId}\tERROR\tfirst line$`));
    expect(lines).toContainEqual(expect.stringMatching(`\t${requestId}\tERROR\tsecond line$`));
    expect(lines.at(-2)).toBe(`END RequestId: ${requestId}`);
    expect(lines.at(-1)).toMatch(new RegExp(`^REPORT RequestId: ${requestId}\tDuration: `));
    // Without Tail, no log result.
    const plain = await lambda.send(
      new InvokeCommand({ FunctionName: 'hello', Payload: payload({}) }),
    );
    expect(plain.LogResult).toBeUndefined();
  });

  it('hands the client context to the handler as context.clientContext', async () => {
    const clientContext = {
      client: { installation_id: 'i-1', app_title: 'photos' },
      custom: { tenant: 'acme' },
      env: { locale: 'en_GB' },
    };
    const out = await lambda.send(
      new InvokeCommand({
        FunctionName: 'hello',
        ClientContext: Buffer.from(JSON.stringify(clientContext)).toString('base64'),
        Payload: payload({}),
      }),
    );
    expect((decode(out.Payload) as { clientContext: unknown }).clientContext).toEqual(
      clientContext,
    );
    const none = await lambda.send(
      new InvokeCommand({ FunctionName: 'hello', Payload: payload({}) }),
    );
    expect((decode(none.Payload) as { clientContext: unknown }).clientContext).toBeNull();
    const bad = await refused(
      lambda.send(
        new InvokeCommand({
          FunctionName: 'hello',
          ClientContext: 'bm90IGpzb24=',
          Payload: payload({}),
        }),
      ),
    );
    expect(bad.name).toBe('InvalidRequestContentException');
    expect(bad.$metadata.httpStatusCode).toBe(400);
  });

  it("answers a function error with 200, X-Amz-Function-Error and Lambda's error body", async () => {
    const out = await lambda.send(
      new InvokeCommand({ FunctionName: 'hello', Payload: payload({ fail: true }) }),
    );
    expect(out.StatusCode).toBe(200);
    expect(out.FunctionError).toBe('Unhandled');
    const body = decode(out.Payload) as {
      errorType: string;
      errorMessage: string;
      stackTrace: string[];
    };
    expect(body.errorType).toBe('TypeError');
    expect(body.errorMessage).toBe('the event asked to fail');
    expect(body.stackTrace.length).toBeGreaterThan(0);
    // A handler that returns nothing: null, as on Lambda.
    const nothing = await lambda.send(
      new InvokeCommand({ FunctionName: 'hello', Payload: payload({ nothing: true }) }),
    );
    expect(nothing.StatusCode).toBe(200);
    expect(Buffer.from(nothing.Payload ?? []).toString()).toBe('null');
  });

  it('takes an Event with 202 through the event queue, and a DryRun with 204 running nothing', async () => {
    const before = reported.length;
    const dry = await lambda.send(
      new InvokeCommand({
        FunctionName: 'hello',
        InvocationType: 'DryRun',
        Payload: payload({ report: reportUrl, dry: true }),
      }),
    );
    expect(dry.StatusCode).toBe(204);
    const out = await lambda.send(
      new InvokeCommand({
        FunctionName: 'hello',
        InvocationType: 'Event',
        Payload: payload({ report: reportUrl, n: 1 }),
        // Lambda hands the client context to synchronous invocations only.
        ClientContext: Buffer.from(JSON.stringify({ custom: { tenant: 'acme' } })).toString(
          'base64',
        ),
      }),
    );
    expect(out.StatusCode).toBe(202);
    const requestId = out.$metadata.requestId;
    const got = await waitFor('the event to be delivered', async () =>
      reported.find((r) => r.requestId === requestId),
    );
    expect(got.event).toEqual({ report: reportUrl, n: 1 });
    expect(got.clientContext).toBeNull();
    // The dry run ran nothing: only the event reported.
    expect(reported.slice(before).map((r) => r.requestId)).toEqual([requestId]);
    // It went through the queue, as /async does (counted once its handler has returned, which
    // is after it reported).
    await waitFor('the asynchronous invocation to be counted', async () =>
      /eddy_function_invocations_total\{[^}]*trigger="async"[^}]*\} [1-9]/.test(
        await (await fetch(`${stack.metricsUrl}/metrics`)).text(),
      )
        ? true
        : undefined,
    );
  });

  it("answers a missing function, another qualifier and a body that is not JSON with Lambda's errors", async () => {
    const missing = await refused(
      lambda.send(new InvokeCommand({ FunctionName: 'nope', Payload: payload({}) })),
    );
    expect(missing.name).toBe('ResourceNotFoundException');
    expect(missing.$metadata.httpStatusCode).toBe(404);
    expect(missing.message).toMatch(/nope/);
    expect(missing.$metadata.requestId).toBeTruthy();
    const elsewhere = await refused(
      lambda.send(
        new InvokeCommand({ FunctionName: 'other-ns:function:hello', Payload: payload({}) }),
      ),
    );
    expect(elsewhere.name).toBe('ResourceNotFoundException');
    expect(elsewhere.message).toMatch(
      /^Function not found: arn:aws:lambda:us-east-1:other-ns:function:hello/,
    );
    const version = await refused(
      lambda.send(
        new InvokeCommand({ FunctionName: 'hello', Qualifier: '7', Payload: payload({}) }),
      ),
    );
    expect(version.name).toBe('ResourceNotFoundException');
    expect(version.message).toMatch(
      new RegExp(`^Function not found: arn:aws:lambda:us-east-1:${namespace}:function:hello:7`),
    );
    const notJson = await refused(
      lambda.send(new InvokeCommand({ FunctionName: 'hello', Payload: Buffer.from('not json') })),
    );
    expect(notJson.name).toBe('InvalidRequestContentException');
    expect(notJson.$metadata.httpStatusCode).toBe(400);
    // Lambda's other operations: an error the SDK names and says, not an UnknownError.
    const list = await refused(lambda.send(new ListFunctionsCommand({})));
    expect(list.name).toBe('UnknownOperationException');
    expect(list.message).toMatch(
      /^GET \/2015-03-31\/functions\/?: this gateway serves only Lambda's Invoke/,
    );
    const streaming = await refused(
      lambda.send(
        new InvokeWithResponseStreamCommand({ FunctionName: 'hello', Payload: payload({}) }),
      ),
    );
    expect(streaming.name).toBe('UnknownOperationException');
    expect(streaming.message).toMatch(/InvokeWithResponseStream is not served/);
  });

  it('answers a timeout, and a replica that ended while it ran, as function errors the SDK does not send again', async () => {
    const late = await lambda.send(
      new InvokeCommand({ FunctionName: 'ends', Payload: payload({}) }),
    );
    expect(late.StatusCode).toBe(200);
    expect(late.FunctionError).toBe('Unhandled');
    expect(decode(late.Payload)).toEqual({
      errorType: 'Sandbox.Timedout',
      errorMessage: 'Task timed out after 1.00 seconds',
    });
    // Lambda's answer to a runtime that exited: 200 and Unhandled, so that the SDK, which sends
    // a 5xx again, runs the handler once.
    const ended = await lambda.send(
      new InvokeCommand({ FunctionName: 'ends', Payload: payload({ exit: true }) }),
    );
    expect(ended.StatusCode).toBe(200);
    expect(ended.FunctionError).toBe('Unhandled');
    const exited = decode(ended.Payload) as { errorType: string; errorMessage: string };
    expect(exited.errorType).toBe('Runtime.ExitError');
    expect(exited.errorMessage).toMatch(/ended while it ran the invocation/);
  });

  it('answers a body over 6 MB with 413 RequestTooLargeException', async () => {
    const big = Buffer.from(JSON.stringify({ x: 'a'.repeat(6 * 1024 * 1024) }));
    const e = await refused(
      lambda.send(new InvokeCommand({ FunctionName: 'hello', Payload: big })),
    );
    expect(e.name).toBe('RequestTooLargeException');
    expect(e.$metadata.httpStatusCode).toBe(413);
  });

  it.skipIf(!canRun('awscli'))('serves `aws lambda invoke --endpoint-url`', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'eddy-awscli-'));
    try {
      const out = join(dir, 'out.json');
      const stdout = await awsLambdaInvoke(awsCli, {
        endpoint: stack.url,
        region: 'us-east-1',
        keys: { accessKeyId: 'local', secretAccessKey: 'local' },
        out,
        args: ['--function-name', 'hello', '--payload', '{"cli":true}', '--log-type', 'Tail'],
        timeoutMs: 30_000,
      });
      const answer = JSON.parse(stdout) as {
        StatusCode: number;
        ExecutedVersion: string;
        LogResult: string;
      };
      expect(answer.StatusCode).toBe(200);
      expect(answer.ExecutedVersion).toBe('$LATEST');
      expect(Buffer.from(answer.LogResult, 'base64').toString()).toMatch(/^START RequestId: /);
      expect((JSON.parse(await readFile(out, 'utf8')) as { event: unknown }).event).toEqual({
        cli: true,
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('Lambda Invoke API throttling', () => {
  let stack: Stack;
  let lambda: LambdaClient;
  const gate = `/tmp/eddy-throttle-gate-${process.pid}`;

  beforeAll(async () => {
    stack = await startStack(
      [
        inlineFunction(
          'single',
          `import { existsSync } from 'node:fs';
          export const handler = async (event) => {
            while (event.wait && !existsSync(${JSON.stringify(gate)})) await new Promise((r) => setTimeout(r, 10));
            return 'done';
          };`,
          quiet({
            concurrency: 1,
            scaling: { minReplicas: 1, maxReplicas: 1 },
            timeoutSeconds: 30,
          }),
        ),
      ],
      // One invocation may wait; bodies past 64 KiB in all are refused.
      { queueLimit: 1, memoryBudget: 64 * 1024 },
    );
    lambda = sdkFor(stack.url);
  });

  afterAll(async () => {
    lambda?.destroy();
    await stack?.stop();
    await rm(gate, { force: true });
  });

  it("says in TooManyRequestsException's Reason whether the function or the gateway was at its limit", async () => {
    expect((await lambda.send(new InvokeCommand({ FunctionName: 'single' }))).StatusCode).toBe(200);
    // One in flight, held until the gate opens; one waiting for it; the third is refused.
    const held = lambda.send(
      new InvokeCommand({ FunctionName: 'single', Payload: payload({ wait: true }) }),
    );
    await waitFor(
      'the first invocation to be in flight',
      async () =>
        (await (await fetch(`${stack.metricsUrl}/metrics`)).text()).match(
          /eddy_function_in_flight\{[^}]*function="single"[^}]*\} 1/,
        ) ?? undefined,
    );
    const waiting = lambda.send(new InvokeCommand({ FunctionName: 'single' }));
    await waitFor(
      'the second invocation to wait',
      async () =>
        (await (await fetch(`${stack.metricsUrl}/metrics`)).text()).match(
          /eddy_function_queued\{[^}]*function="single"[^}]*\} 1/,
        ) ?? undefined,
    );
    const function_ = (await refused(
      lambda.send(new InvokeCommand({ FunctionName: 'single' })),
    )) as TooManyRequestsException;
    expect(function_.name).toBe('TooManyRequestsException');
    expect(function_.$metadata.httpStatusCode).toBe(429);
    expect(function_.Reason).toBe('ReservedFunctionConcurrentInvocationLimitExceeded');
    expect(function_.message).toMatch(/single is at its limit/);
    // A body the gateway's memory budget cannot hold: its shared capacity, not the function's.
    const gateway = (await refused(
      lambda.send(
        new InvokeCommand({
          FunctionName: 'single',
          Payload: payload({ pad: 'x'.repeat(100_000) }),
        }),
      ),
    )) as TooManyRequestsException;
    expect(gateway.name).toBe('TooManyRequestsException');
    expect(gateway.Reason).toBe('ConcurrentInvocationLimitExceeded');
    expect(gateway.message).toMatch(/memory budget/);
    await writeFile(gate, '');
    expect((await held).StatusCode).toBe(200);
    expect((await waiting).StatusCode).toBe(200);
  });
});
