/**
 * Test functions for the runtime images, one per language, each written for Lambda and run by
 * AWS's own runtime clients: what they do is chosen by the event (echo it with the context, fail
 * with an exception of the handler's own type, sleep past the timeout). The images test runs
 * them in containers, the cluster test as pods.
 */
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { goBinaries, goBinaryPath, javaRicDir } from '../harness/components.js';

/** python3.11, handler `app.handler`. */
export const pythonHandler = `import os
import time


class OrderNotFound(Exception):
    pass


def handler(event, context):
    print("python handling", context.aws_request_id)
    action = event.get("action")
    if action == "error":
        raise OrderNotFound(event["message"])
    if action == "sleep":
        time.sleep(event["sleepMs"] / 1000)
        return {"slept": event["sleepMs"]}
    return {
        "echo": event.get("payload"),
        "requestId": context.aws_request_id,
        "functionName": context.function_name,
        "memoryLimitInMB": int(context.memory_limit_in_mb),
        "remainingMs": context.get_remaining_time_in_millis(),
        "runtime": os.environ.get("AWS_EXECUTION_ENV"),
    }
`;

/**
 * java17, handler `Hello::handleRequest`: in the default package and without nested classes, so
 * its class files (Hello.class, OrderNotFound.class) sit at the code's root under names a
 * ConfigMap's keys may take.
 */
export const javaHandler = `import com.amazonaws.services.lambda.runtime.Context;
import com.amazonaws.services.lambda.runtime.RequestHandler;
import java.util.HashMap;
import java.util.Map;

class OrderNotFound extends RuntimeException {
  OrderNotFound(String message) {
    super(message);
  }
}

public class Hello implements RequestHandler<Map<String, Object>, Map<String, Object>> {
  public Map<String, Object> handleRequest(Map<String, Object> event, Context context) {
    context.getLogger().log("java handling " + context.getAwsRequestId());
    Object action = event.get("action");
    Map<String, Object> out = new HashMap<>();
    if ("error".equals(action)) throw new OrderNotFound(String.valueOf(event.get("message")));
    if ("sleep".equals(action)) {
      try {
        Thread.sleep(((Number) event.get("sleepMs")).longValue());
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
      out.put("slept", event.get("sleepMs"));
      return out;
    }
    out.put("echo", event.get("payload"));
    out.put("requestId", context.getAwsRequestId());
    out.put("functionName", context.getFunctionName());
    out.put("memoryLimitInMB", context.getMemoryLimitInMB());
    out.put("remainingMs", context.getRemainingTimeInMillis());
    out.put("runtime", System.getenv("AWS_EXECUTION_ENV"));
    return out;
  }
}
`;

/** The handler each runtime's test function names. */
export const handlers = {
  'python3.11': 'app.handler',
  java17: 'Hello::handleRequest',
  // aws-lambda-go ignores _HANDLER (the bootstrap is the handler); the CRD takes file.function.
  provided: 'function.handler',
} as const;

export type ApiRuntime = keyof typeof handlers;

/** The errorType each function's exception is reported under. */
export const errorTypes: Record<ApiRuntime, string> = {
  'python3.11': 'OrderNotFound',
  java17: 'OrderNotFound',
  provided: 'OrderNotFound',
};

/**
 * The events that make a function echo `payload` and report its context: one event for the
 * Python and Java functions; the Go function answers each in its own invocation.
 */
export const echoEvents = (runtime: ApiRuntime, payload: unknown): unknown[] =>
  runtime === 'provided' ? [{ payload }, { action: 'context' }] : [{ payload }];

/**
 * A directory holding the runtime's test function as its code directory (/var/task): app.py,
 * Hello.class compiled with the host's javac against the client's jars (`npm run test:setup
 * java`), or the Go function built with aws-lambda-go as `bootstrap` (`npm run test:setup
 * runtimes`). The caller removes it.
 */
export async function functionCode(runtime: ApiRuntime): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `eddy-fn-${runtime.replace('.', '')}-`));
  try {
    switch (runtime) {
      case 'python3.11':
        await writeFile(join(dir, 'app.py'), pythonHandler);
        break;
      case 'java17': {
        const src = join(dir, 'src');
        await mkdir(src);
        await writeFile(join(src, 'Hello.java'), javaHandler);
        await promisify(execFile)(
          'javac',
          ['--release', '17', '-cp', `${javaRicDir}/*`, '-d', dir, join(src, 'Hello.java')],
          { timeout: 120_000 },
        );
        await rm(src, { recursive: true });
        break;
      }
      case 'provided':
        await copyFile(goBinaryPath(goBinaries.lambdaGoFunction), join(dir, 'bootstrap'));
        break;
    }
    return dir;
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}
