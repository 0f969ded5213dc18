/**
 * The java17 runtime, on its own and on the local stack: a handler written for Lambda, run by
 * AWS's Java runtime interface client from Maven Central on Debian's OpenJDK 17.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { javaRicDir } from '../harness/components.js';
import { startRuntime, waitForReadyz, type Runtime } from '../harness/runtime.js';
import { canRun } from '../harness/suite.js';
import { manifest, startStack, type Stack } from './stack.js';

const handler = `
package example;

import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.io.File;
import java.util.HashMap;
import java.util.Map;

public class Orders implements RequestHandler<Map<String, Object>, Map<String, Object>> {
  public Map<String, Object> handleRequest(Map<String, Object> event, Context context) {
    context.getLogger().log("java handling " + context.getAwsRequestId());
    Object action = event.get("action");
    Map<String, Object> out = new HashMap<>();
    out.put("pid", ProcessHandle.current().pid());
    if ("error".equals(action)) throw new IllegalStateException(String.valueOf(event.get("message")));
    if ("sleep".equals(action)) sleep(30_000);
    if ("crash".equals(action)) Runtime.getRuntime().halt(3);
    if ("barrier".equals(action)) {
      // Waits until "count" invocations have arrived (one file each): only those running at once pass.
      File dir = new File((String) event.get("dir"));
      try {
        new File(dir, String.valueOf(ProcessHandle.current().pid())).createNewFile();
      } catch (java.io.IOException e) {
        throw new RuntimeException(e);
      }
      while (dir.list().length < ((Number) event.get("count")).intValue()) sleep(10);
      return out;
    }
    out.put("echo", event.get("payload"));
    out.put("requestId", context.getAwsRequestId());
    out.put("functionName", context.getFunctionName());
    out.put("memoryLimitInMB", context.getMemoryLimitInMB());
    out.put("remainingMs", context.getRemainingTimeInMillis());
    out.put("invokedFunctionArn", context.getInvokedFunctionArn());
    return out;
  }

  private static void sleep(long ms) {
    try {
      Thread.sleep(ms);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }
}
`;

async function invoke(url: string, event: unknown) {
  const res = await fetch(url, {
    method: 'POST',
    body: JSON.stringify(event),
    signal: AbortSignal.timeout(60_000),
  });
  return {
    status: res.status,
    requestId: res.headers.get('x-eddy-request-id') ?? '',
    body: (await res.json()) as Record<string, unknown>,
  };
}

describe.skipIf(!canRun('java'))(
  'java17: a handler run by AWS’s Java runtime interface client',
  () => {
    let rt: Runtime;
    let classes: string;
    beforeAll(async () => {
      // Compiled before the runtime starts: its processes start (and load the class) with it.
      classes = await mkdtemp(join(tmpdir(), 'eddy-java-classes-'));
      await writeFile(join(classes, 'Orders.java'), handler);
      await promisify(execFile)('javac', [
        '-cp',
        `${javaRicDir}/*`,
        '-d',
        classes,
        join(classes, 'Orders.java'),
      ]);
      rt = await startRuntime(
        {},
        {
          EDDY_RUNTIME: 'java17',
          EDDY_HANDLER: 'example.Orders::handleRequest',
          EDDY_MEMORY_MB: '512',
          EDDY_TIMEOUT_MS: '20000',
          EDDY_CONCURRENCY: '4',
          EDDY_JAVA_CLASSPATH: `${classes}:${javaRicDir}/*`,
        },
      );
      await waitForReadyz(rt.url, 200);
    }, 120_000);
    afterAll(async () => {
      await rt?.stop();
      await rm(classes, { recursive: true, force: true });
    });
    afterEach((ctx) => {
      if (ctx.task.result?.state === 'fail') process.stderr.write(`--- runtime log\n${rt.log()}\n`);
    });

    it('echoes the event with its context', async () => {
      const { status, requestId, body } = await invoke(rt.url, { payload: { order: 7 } });
      expect(status).toBe(200);
      expect(body).toMatchObject({
        echo: { order: 7 },
        requestId,
        functionName: 'hello',
        memoryLimitInMB: 512,
        invokedFunctionArn: 'arn:aws:lambda:us-east-1:tests:function:hello',
      });
      expect(body.remainingMs).toBeGreaterThan(0);
      await rt.waitForLog(new RegExp(`java handling ${requestId}`));
    });

    it('answers an exception with its class, message and stack', async () => {
      const { status, body } = await invoke(rt.url, { action: 'error', message: 'no order 7' });
      expect(status).toBe(500);
      expect(body).toMatchObject({
        errorType: 'java.lang.IllegalStateException',
        errorMessage: 'no order 7',
      });
      expect(body.stackTrace).toEqual(
        expect.arrayContaining([
          expect.stringMatching(/^example\.Orders\.handleRequest\(Orders\.java:\d+\)$/),
        ]),
      );
    });

    it('answers Runtime.ExitError when the JVM exits mid-invocation, and starts it again', async () => {
      const crash = await invoke(rt.url, { action: 'crash' });
      expect(crash.status).toBe(502);
      expect(crash.body).toEqual({
        errorType: 'Runtime.ExitError',
        errorMessage: `RequestId: ${crash.requestId} Error: Runtime exited with error: exit status 3`,
      });
      const after = await invoke(rt.url, { payload: 1 });
      expect(after.status).toBe(200);
      expect(after.body.echo).toBe(1);
    });

    it('times out: the JVM is killed, and the next invocation runs in a new one', async () => {
      // A runtime of its own with one JVM and a short timeout (a new JVM starts well within it).
      const short = await startRuntime(
        {},
        {
          EDDY_RUNTIME: 'java17',
          EDDY_HANDLER: 'example.Orders::handleRequest',
          EDDY_MEMORY_MB: '512',
          EDDY_TIMEOUT_MS: '8000',
          EDDY_CONCURRENCY: '1',
          EDDY_JAVA_CLASSPATH: `${classes}:${javaRicDir}/*`,
        },
      );
      try {
        await waitForReadyz(short.url, 200);
        const before = await invoke(short.url, { payload: 'first' });
        expect(before.status).toBe(200);
        const late = await invoke(short.url, { action: 'sleep' });
        expect(late.status).toBe(504);
        expect(late.body).toEqual({
          errorType: 'Sandbox.Timedout',
          errorMessage: 'Task timed out after 8.00 seconds',
        });
        const after = await invoke(short.url, { payload: 'again' });
        expect(after.status).toBe(200);
        expect(after.body.echo).toBe('again');
        expect(after.body.pid).not.toBe(before.body.pid);
      } catch (err) {
        process.stderr.write(`--- short runtime log\n${short.log()}\n`);
        throw err;
      } finally {
        await short.stop();
      }
    }, 60_000);

    it('runs concurrency 4 as four JVMs, each with its own copy of the client’s JNI library', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'eddy-barrier-'));
      try {
        const answers = await Promise.all(
          [0, 1, 2, 3].map(() => invoke(rt.url, { action: 'barrier', dir, count: 4 })),
        );
        for (const a of answers) expect(a.status).toBe(200);
        expect(new Set(answers.map((a) => a.body.pid)).size).toBe(4);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
      // Four clients unpacking to the one fixed file at once crash the JVM that loads it (SIGBUS).
      expect(rt.log()).not.toContain(
        'A fatal error has been detected by the Java Runtime Environment',
      );
    });
  },
);

describe.skipIf(!canRun('java'))('java17 on the local stack', () => {
  let stack: Stack | undefined;
  let classes: string;
  beforeAll(async () => {
    classes = await mkdtemp(join(tmpdir(), 'eddy-java-classes-'));
    await writeFile(join(classes, 'Orders.java'), handler);
    await promisify(execFile)('javac', [
      '-cp',
      `${javaRicDir}/*`,
      '-d',
      classes,
      join(classes, 'Orders.java'),
    ]);
  }, 120_000);
  afterAll(async () => {
    await stack?.stop();
    await rm(classes, { recursive: true, force: true });
  });
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail' && stack)
      process.stderr.write(`--- dev.js log\n${stack.log()}\n`);
  });

  it('copies the client from Maven Central under .eddy/ once, says so, and runs the handler', async () => {
    stack = await startStack(
      [
        manifest(
          'orders',
          `  image: example.com/orders:1\n  runtime: java17\n  handler: example.Orders::handleRequest\n  memory: 512Mi\n  timeoutSeconds: 20\n`,
          `eddy.dev/local-code-dir: ${classes}`,
        ),
      ],
      { EDDY_JAVA_CLASSPATH: '' },
    );
    const { status, requestId, body } = await stack.invoke('orders', { payload: 'hi' });
    expect(status).toBe(200);
    expect(body).toMatchObject({ echo: 'hi', requestId, functionName: 'orders' });
    const target = join(stack.dir, '.eddy', 'java-ric-2.10.1');
    expect(stack.log()).toContain(
      `eddy: java17 functions run on /usr/bin/java with AWS's Java runtime interface client 2.10.1; copying it from Maven Central into ${target} (once)`,
    );
  }, 180_000);
});
