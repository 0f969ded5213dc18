/**
 * The python3.11 runtime through the local stack's gateway: a handler written for Lambda, run
 * by AWS's own runtime interface client (awslambdaric from PyPI) on Debian's python3.
 */
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cacheRoot } from '../harness/components.js';
import { canRun } from '../harness/suite.js';
import { inline, manifest, startStack, type Stack } from './stack.js';

const handler = `
import logging
import os
import time

logger = logging.getLogger()
logger.setLevel(logging.INFO)

if os.environ.get("FAIL_INIT"):
    raise RuntimeError("CONFIG is not set")


class OrderNotFound(Exception):
    pass


def handler(event, context):
    logger.info("python handling %s", event.get("action", "echo"))
    action = event.get("action")
    if action == "context":
        return {
            "requestId": context.aws_request_id,
            "functionName": context.function_name,
            "functionVersion": context.function_version,
            "memoryLimitInMB": context.memory_limit_in_mb,
            "invokedFunctionArn": context.invoked_function_arn,
            "logGroupName": context.log_group_name,
            "logStreamName": context.log_stream_name,
            "remainingMs": context.get_remaining_time_in_millis(),
            "traceId": os.environ.get("_X_AMZN_TRACE_ID"),
            "handler": os.environ.get("_HANDLER"),
            "taskRoot": os.environ.get("LAMBDA_TASK_ROOT"),
            "region": os.environ.get("AWS_REGION"),
            "tz": os.environ.get("TZ"),
            "pid": os.getpid(),
        }
    if action == "error":
        raise OrderNotFound(event["message"])
    if action == "sleep":
        time.sleep(event["sleepMs"] / 1000)
        return {"slept": event["sleepMs"], "pid": os.getpid()}
    if action == "barrier":
        # Waits until event["count"] invocations have arrived (one file each in event["dir"]):
        # only invocations running at once get past it.
        open(os.path.join(event["dir"], str(os.getpid())), "w").close()
        while len(os.listdir(event["dir"])) < event["count"]:
            time.sleep(0.01)
        return {"pid": os.getpid()}
    if action == "crash":
        os._exit(3)
    if action == "partial":
        print("working...", end="")
    return {"echo": event.get("payload")}
`;

const specWith = (timeoutSeconds: number) => `  runtime: python3.11
  handler: index.handler
  memory: 256Mi
  timeoutSeconds: ${timeoutSeconds}
  concurrency: 4
  scaling: {maxReplicas: 1}
${inline(handler)}`;
const spec = specWith(3);

describe.skipIf(!canRun('runtimes'))('python3.11: a handler run by awslambdaric', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack([
      manifest('orders', spec),
      manifest('broken', `${spec}  env: [{name: FAIL_INIT, value: "1"}]\n`),
      manifest('wide', specWith(60)),
    ]);
  }, 60_000);
  afterAll(() => stack?.stop());
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') process.stderr.write(`--- dev.js log\n${stack.log()}\n`);
  });

  it('echoes the event, with its context, and logs its lines with the request id', async () => {
    const first = await stack.invoke('orders', { payload: { order: 7, items: ['a', 'b'] } });
    expect(first).toMatchObject({ status: 200, body: { echo: { order: 7, items: ['a', 'b'] } } });
    expect(Number(first.initDurationMs)).toBeGreaterThan(0);

    const { status, requestId, body } = await stack.invoke('orders', { action: 'context' });
    expect(status).toBe(200);
    expect(body).toMatchObject({
      requestId,
      functionName: 'orders',
      functionVersion: '$LATEST',
      memoryLimitInMB: '256',
      invokedFunctionArn: 'arn:aws:lambda:us-east-1:dev:function:orders',
      logGroupName: '/eddy/dev/orders',
      handler: 'index.handler',
      region: 'us-east-1',
      tz: ':UTC',
    });
    expect(body.traceId).toMatch(/^Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0$/);
    expect(body.remainingMs).toBeGreaterThan(0);
    expect(body.remainingMs).toBeLessThanOrEqual(3000);

    const lines = await stack.linesOf(requestId);
    expect(lines[0]).toContain(`START RequestId: ${requestId} Version: $LATEST`);
    expect(lines.some((l) => l.includes(`\t${requestId}\tpython handling context`))).toBe(true);
    expect(lines.at(-2)).toContain(`END RequestId: ${requestId}`);
    expect(lines.at(-1)).toMatch(
      new RegExp(
        `REPORT RequestId: ${requestId}\\tDuration: [\\d.]+ ms\\tBilled Duration: \\d+ ms\\tMemory Size: 256 MB\\tMax Memory Used: [1-9]\\d* MB$`,
      ),
    );
  });

  it("gives Lambda's Invoke API the invocation's log tail: START, the handler's lines, END, REPORT", async () => {
    for (const action of ['echo', 'error']) {
      const res = await fetch(`${stack.url}/2015-03-31/functions/orders/invocations`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-amz-log-type': 'Tail' },
        body: JSON.stringify({ action, message: 'no order 8' }),
        signal: AbortSignal.timeout(30_000),
      });
      expect(res.status).toBe(200);
      const requestId = res.headers.get('x-amzn-requestid');
      const tail = Buffer.from(res.headers.get('x-amz-log-result') ?? '', 'base64').toString();
      const lines = tail.split('\n').filter((l) => l !== '');
      expect(lines[0]).toBe(`START RequestId: ${requestId} Version: $LATEST`);
      expect(lines[1]).toMatch(new RegExp(`\\t${requestId}\\tpython handling ${action}$`));
      if (action === 'error') {
        // awslambdaric logs the exception as the invocation's own line.
        expect(tail).toContain('OrderNotFound');
        expect(res.headers.get('x-amz-function-error')).toBe('Unhandled');
      }
      expect(lines.at(-2)).toBe(`END RequestId: ${requestId}`);
      expect(lines.at(-1)).toMatch(new RegExp(`^REPORT RequestId: ${requestId}\\t`));
    }
  });

  it('puts END on a line of its own after a print that did not end its line', async () => {
    const res = await fetch(`${stack.url}/2015-03-31/functions/orders/invocations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-amz-log-type': 'Tail' },
      body: JSON.stringify({ action: 'partial' }),
      signal: AbortSignal.timeout(30_000),
    });
    expect(res.status).toBe(200);
    const requestId = res.headers.get('x-amzn-requestid');
    const tail = Buffer.from(res.headers.get('x-amz-log-result') ?? '', 'base64').toString();
    expect(tail.split('\n').slice(-4)).toEqual([
      'working...',
      `END RequestId: ${requestId}`,
      expect.stringMatching(new RegExp(`^REPORT RequestId: ${requestId}\\t`)),
      '',
    ]);
    const lines = await stack.linesOf(requestId!);
    expect(lines.at(-3)).toMatch(/working\.\.\.$/);
    expect(lines.at(-2)).toMatch(new RegExp(`END RequestId: ${requestId}$`));
  });

  it('answers an exception with its type, message and stack', async () => {
    const { status, body } = await stack.invoke('orders', {
      action: 'error',
      message: 'no order 7',
    });
    expect(status).toBe(500);
    expect(body).toMatchObject({ errorType: 'OrderNotFound', errorMessage: 'no order 7' });
    expect(body.stackTrace).toEqual(
      expect.arrayContaining([expect.stringContaining('raise OrderNotFound(event["message"])')]),
    );
  });

  it('times out, and the next invocation runs in a new process', async () => {
    const before = await stack.invoke('orders', { action: 'context' });
    const late = await stack.invoke('orders', { action: 'sleep', sleepMs: 30_000 });
    expect(late.status).toBe(504);
    expect(late.body).toEqual({
      errorType: 'Sandbox.Timedout',
      errorMessage: 'Task timed out after 3.00 seconds',
    });
    const after = await stack.invoke('orders', { action: 'context' });
    expect(after.status).toBe(200);
    expect(after.body.pid).not.toBe(before.body.pid);
  });

  it('answers Runtime.ExitError when the process exits mid-invocation, and starts it again', async () => {
    const crash = await stack.invoke('orders', { action: 'crash' });
    expect(crash.status).toBe(502);
    expect(crash.body).toEqual({
      errorType: 'Runtime.ExitError',
      errorMessage: `RequestId: ${crash.requestId} Error: Runtime exited with error: exit status 3`,
    });
    expect((await stack.invoke('orders', { payload: 1 })).body).toEqual({ echo: 1 });
  });

  it('fails each invocation with the init error awslambdaric reports, starting the process again', async () => {
    for (let i = 0; i < 2; i++) {
      const { status, body } = await stack.invoke('broken', {});
      expect(status).toBe(502);
      // awslambdaric reports an exception raised at import under its own type.
      expect(body).toMatchObject({ errorType: 'RuntimeError', errorMessage: 'CONFIG is not set' });
    }
    expect(
      stack.log().match(/INIT_ERROR RuntimeError: CONFIG is not set/g)?.length,
    ).toBeGreaterThanOrEqual(2);
  });

  it('gives the log tail of an invocation failed by the init error what the process logged for it', async () => {
    const res = await fetch(`${stack.url}/2015-03-31/functions/broken/invocations`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-amz-log-type': 'Tail' },
      body: '{}',
      signal: AbortSignal.timeout(30_000),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-amz-function-error')).toBe('Unhandled');
    const requestId = res.headers.get('x-amzn-requestid');
    const tail = Buffer.from(res.headers.get('x-amz-log-result') ?? '', 'base64').toString();
    const lines = tail.split('\n').filter((l) => l !== '');
    expect(lines[0]).toBe(`START RequestId: ${requestId} Version: $LATEST`);
    // awslambdaric's own line about the exception, then the runtime's.
    expect(tail).toMatch(
      /RuntimeError[\s\S]*CONFIG is not set[\s\S]*\nINIT_ERROR RuntimeError: CONFIG is not set\n/,
    );
    expect(lines.at(-2)).toBe(`END RequestId: ${requestId}`);
    expect(lines.at(-1)).toMatch(new RegExp(`^REPORT RequestId: ${requestId}\\t`));
  });

  it('runs concurrency 4 as four processes at once', async () => {
    // Each invocation waits until all four have arrived: they pass only if they run at once.
    const dir = await mkdtemp(join(tmpdir(), 'eddy-barrier-'));
    try {
      const answers = await Promise.all(
        [0, 1, 2, 3].map(() => stack.invoke('wide', { action: 'barrier', dir, count: 4 })),
      );
      for (const a of answers) expect(a.status).toBe(200);
      expect(new Set(answers.map((a) => a.body.pid)).size).toBe(4);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe.skipIf(!canRun('runtimes'))('python3.11 on the local stack without EDDY_PYTHON', () => {
  let stack: Stack | undefined;
  afterAll(() => stack?.stop());

  it('makes a virtual environment with awslambdaric under .eddy/ once, and says so', async () => {
    stack = await startStack([manifest('hello', spec)], { EDDY_PYTHON: '' });
    const { status, body } = await stack.invoke('hello', { payload: 'hi' });
    expect(status).toBe(200);
    expect(body).toEqual({ echo: 'hi' });
    const venv = join(stack.dir, '.eddy', 'python3.11-awslambdaric-4.2.2');
    expect(stack.log()).toContain(
      `eddy: python3.11 functions run on /usr/bin/python3.11 with awslambdaric 4.2.2; making its virtual environment in ${venv} (once)`,
    );
    expect(existsSync(join(venv, 'bin', 'python'))).toBe(true);
  }, 180_000);
});

describe.skipIf(!canRun('runtimes'))('python3.11 with a requirements.txt', () => {
  let stack: Stack | undefined;
  let code: string;
  afterAll(async () => {
    await stack?.stop();
    if (code) await rm(code, { recursive: true, force: true });
  });

  it('installs the function’s requirements into a virtual environment of its own, made once', async () => {
    code = await mkdtemp(join(tmpdir(), 'eddy-python-requirements-'));
    await writeFile(
      join(code, 'index.py'),
      'import six\n\ndef handler(event, context):\n    return {"six": six.__version__}\n',
    );
    await writeFile(join(code, 'requirements.txt'), '# the one package\nsix==1.17.0\n');
    // The harness's cache as the languages directory: later runs install nothing.
    stack = await startStack(
      [
        manifest(
          'withsix',
          `  image: example.com/withsix:1\n  runtime: python3.11\n  handler: index.handler\n  timeoutSeconds: 30\n`,
          `eddy.dev/local-code-dir: ${code}`,
        ),
      ],
      { EDDY_PYTHON: '', EDDY_LANGUAGES_DIR: join(cacheRoot, 'languages') },
    );
    const { status, body } = await stack.invoke('withsix', {});
    expect(status).toBe(200);
    expect(body).toEqual({ six: '1.17.0' });
    const venvs = readdirSync(join(cacheRoot, 'languages')).filter((d) =>
      /^python3\.11-awslambdaric-4\.2\.2-requirements-[0-9a-f]{16}$/.test(d),
    );
    expect(venvs.length).toBeGreaterThan(0);
  }, 600_000);
});
