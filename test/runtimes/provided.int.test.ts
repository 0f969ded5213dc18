/**
 * The provided runtime through the local stack's gateway: a Go function built with AWS's
 * aws-lambda-go v1.55, unmodified, and a shell-script bootstrap that speaks the Runtime API with
 * curl, as in AWS's custom runtime tutorial, and that tutorial's own bootstrap, unchanged.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { goBinaries, goBinaryPath } from '../harness/components.js';
import { canRun } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';
import { inline, manifest, startStack, type Stack } from './stack.js';

const goDir = dirname(goBinaryPath(goBinaries.lambdaGoFunction));
const goSpec = (extra = '', timeoutSeconds = 3) => `  image: example.com/go-function:1
  runtime: provided
  handler: orders.handler
  memory: 256Mi
  timeoutSeconds: ${timeoutSeconds}
  concurrency: 4
  scaling: {maxReplicas: 1}
${extra}`;
const goFn = (name: string, extra = '', timeoutSeconds = 3) =>
  manifest(name, goSpec(extra, timeoutSeconds), `eddy.dev/local-code-dir: ${goDir}`);

/** AWS's tutorial bootstrap, in spirit: next, handle, response, with curl. */
const shellBootstrap = `
#!/bin/sh
set -eu
API="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
if [ -n "\${FAIL_INIT:-}" ]; then
  echo "shell bootstrap failing its init"
  curl -sS -o /dev/null -H 'Lambda-Runtime-Function-Error-Type: Custom.ConfigMissing' -d '{"errorMessage":"CONFIG is not set","errorType":"Custom.ConfigMissing"}' "$API/init/error"
  exit 1
fi
while true; do
  HEADERS="$(mktemp)"
  EVENT=$(curl -sS -D "$HEADERS" "$API/invocation/next")
  ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  echo "shell handling $ID"
  case "$EVENT" in
    *probe*)
      # Answers the emulator gives: a wrong id, an init error after init, a bad response mode.
      WRONG=$(curl -sS -w ' %{http_code}' -d '{}' "$API/invocation/not-$ID/response")
      LATE=$(curl -sS -w ' %{http_code}' -d '{}' "$API/init/error")
      curl -sS -o /dev/null -H 'Transfer-Encoding: chunked' -H 'Lambda-Runtime-Function-Response-Mode: streaming' --data-binary "{\\"wrong\\":\\"$(echo $WRONG | sed 's/"/~/g')\\",\\"late\\":\\"$(echo $LATE | sed 's/"/~/g')\\"}" "$API/invocation/$ID/response"
      ;;
    *big*)
      head -c 7000000 /dev/zero | tr '\\0' a > "$HEADERS.big"
      BIG=$(curl -sS -w ' %{http_code}' --data-binary "@$HEADERS.big" "$API/invocation/$ID/response" | tr -d '\\n')
      echo "big response answered: $BIG"
      ;;
    *)
      curl -sS -o /dev/null -d "{\\"echo\\":$EVENT,\\"handler\\":\\"$_HANDLER\\"}" "$API/invocation/$ID/response"
      ;;
  esac
done
`;

describe.skipIf(!canRun('runtimes'))('provided: a Go function built with aws-lambda-go', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack([
      goFn('orders'),
      goFn('broken', '  env: [{name: FAIL_INIT, value: "1"}]'),
      goFn('wide', '', 60),
    ]);
  }, 60_000);
  afterAll(() => stack?.stop());
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') process.stderr.write(`--- dev.js log\n${stack.log()}\n`);
  });

  it('echoes the event, with its context, and logs START, its lines, END and REPORT', async () => {
    const first = await stack.invoke('orders', { payload: { order: 7, items: ['a', 'b'] } });
    expect(first).toMatchObject({ status: 200, body: { echo: { order: 7, items: ['a', 'b'] } } });
    expect(Number(first.initDurationMs)).toBeGreaterThan(0);

    const { status, requestId, body } = await stack.invoke('orders', { action: 'context' });
    expect(status).toBe(200);
    expect(body).toMatchObject({
      requestId,
      functionName: 'orders',
      functionVersion: '$LATEST',
      memoryLimitInMB: 256,
      invokedFunctionArn: 'arn:aws:lambda:us-east-1:dev:function:orders',
      logGroupName: '/eddy/dev/orders',
      handler: 'orders.handler',
      taskRoot: goDir,
      region: 'us-east-1',
      initializationType: 'on-demand',
      tz: ':UTC',
    });
    expect(body.traceId).toMatch(/^Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0$/);
    expect(body.logStreamName).toMatch(/^\d{4}\/\d{2}\/\d{2}\/\[\$LATEST\]/);
    expect(body.remainingMs).toBeGreaterThan(0);
    expect(body.remainingMs).toBeLessThanOrEqual(3000);

    const lines = await stack.linesOf(requestId);
    expect(lines[0]).toContain(`START RequestId: ${requestId} Version: $LATEST`);
    expect(lines[1]).toContain(`go handler ${requestId} action=context`);
    expect(lines.at(-2)).toContain(`END RequestId: ${requestId}`);
    expect(lines.at(-1)).toMatch(
      new RegExp(
        `REPORT RequestId: ${requestId}\\tDuration: [\\d.]+ ms\\tBilled Duration: \\d+ ms\\tMemory Size: 256 MB\\tMax Memory Used: [1-9]\\d* MB$`,
      ),
    );
  });

  it("answers a handler's error with its type and message", async () => {
    const { status, body } = await stack.invoke('orders', {
      action: 'error',
      message: 'no order 7',
    });
    expect(status).toBe(500);
    expect(body).toEqual({ errorType: 'OrderNotFound', errorMessage: 'no order 7' });
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
    expect(Number(after.initDurationMs)).toBeGreaterThan(0);
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

  it('fails each invocation of a process that exits in its init, starting it each time', async () => {
    for (let i = 0; i < 2; i++) {
      const { status, body } = await stack.invoke('broken', {});
      expect(status).toBe(502);
      expect(body.errorType).toBe('Runtime.ExitError');
      expect(body.errorMessage).toMatch(/Runtime exited with error: exit status 4$/);
    }
    expect(stack.log().match(/go handler failing its init/g)?.length).toBeGreaterThanOrEqual(2);
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

/** A bootstrap that streams its response (chunked), with an error in its trailers when asked. */
const streamingBootstrap = `
#!/usr/bin/env node
const http = require('node:http');
const [host, port] = process.env.AWS_LAMBDA_RUNTIME_API.split(':');
const api = '/2018-06-01/runtime/invocation';
function next() {
  http.get({ host, port, path: api + '/next' }, (res) => {
    let body = '';
    res.on('data', (c) => (body += c));
    res.on('end', () => handle(res.headers['lambda-runtime-aws-request-id'], JSON.parse(body)));
  });
}
function handle(id, event) {
  const headers = { 'Lambda-Runtime-Function-Response-Mode': event.mode || 'streaming', 'Transfer-Encoding': 'chunked' };
  if (event.fail) headers.Trailer = 'Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body';
  const req = http.request({ host, port, method: 'POST', path: api + '/' + id + '/response', headers }, (res) => {
    let body = '';
    res.on('data', (c) => (body += c));
    res.on('end', () => {
      console.log('streamer answered ' + res.statusCode + ' ' + body.trim());
      next();
    });
  });
  req.write('{"parts":[');
  req.write('"one",');
  if (event.fail) {
    const error = { errorType: 'Stream.Broken', errorMessage: 'the source went away' };
    req.addTrailers({
      'Lambda-Runtime-Function-Error-Type': 'Stream.Broken',
      'Lambda-Runtime-Function-Error-Body': Buffer.from(JSON.stringify(error)).toString('base64'),
    });
    req.end();
    return;
  }
  req.end('"two"]}');
}
next();
`;

describe.skipIf(!canRun('runtimes'))('provided: a bootstrap that streams its response', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack([
      manifest('streamer', `  runtime: provided\n${inline(streamingBootstrap)}`),
    ]);
  }, 60_000);
  afterAll(() => stack?.stop());
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') process.stderr.write(`--- dev.js log\n${stack.log()}\n`);
  });

  it('is answered whole once the stream ends', async () => {
    const { status, body } = await stack.invoke('streamer', {});
    expect(status).toBe(200);
    expect(body).toEqual({ parts: ['one', 'two'] });
  });

  it('fails with the error in its trailers', async () => {
    const { status, body } = await stack.invoke('streamer', { fail: true });
    expect(status).toBe(500);
    expect(body).toEqual({ errorType: 'Stream.Broken', errorMessage: 'the source went away' });
  });

  it('fails with Runtime.InvalidResponseModeHeader for a mode other than streaming', async () => {
    const { status, body } = await stack.invoke('streamer', { mode: 'buffered' });
    expect(status).toBe(502);
    expect(body.errorType).toBe('Runtime.InvalidResponseModeHeader');
    await waitFor('the bootstrap to log its answer', async () =>
      stack
        .log()
        .includes(
          'streamer answered 400 {"errorMessage":"Invalid function response mode","errorType":"InvalidFunctionResponseMode"}',
        )
        ? true
        : undefined,
    );
  });
});

describe.skipIf(!canRun('runtimes'))('provided: a shell-script bootstrap with curl', () => {
  let stack: Stack;
  beforeAll(async () => {
    const spec = `  runtime: provided\n  handler: function.handler\n  timeoutSeconds: 10\n${inline(shellBootstrap)}`;
    stack = await startStack([
      manifest('shell', spec),
      manifest('shell-init', `${spec}  env: [{name: FAIL_INIT, value: "1"}]\n`),
    ]);
  }, 60_000);
  afterAll(() => stack?.stop());
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') process.stderr.write(`--- dev.js log\n${stack.log()}\n`);
  });

  it('echoes the event', async () => {
    const { status, requestId, body } = await stack.invoke('shell', { hello: 'world' });
    expect(status).toBe(200);
    expect(body).toEqual({ echo: { hello: 'world' }, handler: 'function.handler' });
    const lines = await stack.linesOf(requestId);
    expect(lines[1]).toContain(`shell handling ${requestId}`);
  });

  it("answers the runtime as AWS's emulator does, and buffers a streamed response", async () => {
    const { status, body } = await stack.invoke('shell', { probe: true });
    expect(status).toBe(200);
    expect(body).toEqual({
      wrong: '{~errorMessage~:~Invalid request ID~,~errorType~:~InvalidRequestID~} 400',
      late: '{~errorMessage~:~State transition from Running to InitError failed for runtime. Error: State transition is not allowed~,~errorType~:~InvalidStateTransition~} 403',
    });
  });

  it('refuses a response over 6 MB with 413 and fails the invocation', async () => {
    const { status, body } = await stack.invoke('shell', { big: true });
    expect(status).toBe(502);
    expect(body).toEqual({
      errorType: 'Function.ResponseSizeTooLarge',
      errorMessage: 'Response payload size exceeded maximum allowed payload size (6291556 bytes).',
    });
    // The bootstrap says what it was answered after the invocation has been.
    await waitFor('the bootstrap to log the answer to its 6 MB response', async () =>
      /big response answered: \{"errorMessage":"Exceeded maximum allowed payload size \(6291556 bytes\)\.","errorType":"RequestEntityTooLarge"\} 413/.test(
        stack.log(),
      )
        ? true
        : undefined,
    );
  });

  it('fails the invocation with the init error the bootstrap reports, and starts it again for the next', async () => {
    for (let i = 0; i < 2; i++) {
      const { status, body } = await stack.invoke('shell-init', {});
      expect(status).toBe(502);
      expect(body).toEqual({
        errorType: 'Custom.ConfigMissing',
        errorMessage: 'CONFIG is not set',
      });
    }
    // The bootstrap's lines reach the stack's log through its output pipe, after its answer may.
    await waitFor('both starts of the bootstrap in the log', async () =>
      (stack.log().match(/shell bootstrap failing its init/g)?.length ?? 0) >= 2 ? true : undefined,
    );
    expect(stack.log()).toContain('INIT_ERROR Custom.ConfigMissing: CONFIG is not set');
  });
});

/** AWS's custom runtime tutorial, as its page writes the bootstrap and the handler's script. */
const tutorial = {
  bootstrap: `#!/bin/sh

set -euo pipefail

# Initialization - load function handler
source $LAMBDA_TASK_ROOT/"$(echo $_HANDLER | cut -d. -f1).sh"

# Processing
while true
do
  HEADERS="$(mktemp)"
  # Get an event. The HTTP request will block until one is received
  EVENT_DATA=$(curl -sS -LD "$HEADERS" "http://\${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/next")

  # Extract request ID by scraping response headers received above
  REQUEST_ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)

  # Run the handler function from the script
  RESPONSE=$($(echo "$_HANDLER" | cut -d. -f2) "$EVENT_DATA")

  # Send the response
  curl "http://\${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/$REQUEST_ID/response"  -d "$RESPONSE"
done
`,
  'function.sh': `function handler () {
  EVENT_DATA=$1
  echo "$EVENT_DATA" 1>&2;
  RESPONSE="Echoing request: '$EVENT_DATA'"

  echo $RESPONSE
}
`,
};

describe.skipIf(!canRun('runtimes'))("provided: AWS's custom runtime tutorial, unchanged", () => {
  let stack: Stack;
  let code: string;
  beforeAll(async () => {
    code = await mkdtemp(join(tmpdir(), 'eddy-tutorial-'));
    await writeFile(join(code, 'bootstrap'), tutorial.bootstrap, { mode: 0o755 });
    await writeFile(join(code, 'function.sh'), tutorial['function.sh']);
    const spec = `  image: example.com/tutorial:1\n  runtime: provided\n  handler: function.handler\n`;
    stack = await startStack([manifest('tutorial', spec, `eddy.dev/local-code-dir: ${code}`)]);
  }, 60_000);
  afterAll(async () => {
    await stack?.stop();
    await rm(code, { recursive: true, force: true });
  });
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') process.stderr.write(`--- dev.js log\n${stack.log()}\n`);
  });

  it('echoes the request, its #!/bin/sh run by bash as on Lambda', async () => {
    for (const order of [7, 8]) {
      const { status, body } = await stack.invoke('tutorial', { order });
      expect(status).toBe(200);
      expect(body).toEqual({ text: `Echoing request: '{"order":${order}}'` });
    }
  });
});
