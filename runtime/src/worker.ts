/**
 * The thread that runs the user's handler. It has its own heap limit (sized from the function's
 * memory), so a handler that exhausts it or blocks forever can be stopped without the HTTP side.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { performance } from 'node:perf_hooks';
import { format } from 'node:util';
import { parentPort, workerData } from 'node:worker_threads';
import { maxPayloadBytes, type ErrorBody, type ErrorCode } from './errors.js';
import { loadHandler, LoadError, type Handler } from './handler-loader.js';
import { consoleLine, startLine, write } from './logs.js';
import type { InvokeMessage, WorkerMessage, WorkerSettings } from './protocol.js';

const settings = workerData as WorkerSettings;
const port = parentPort!;
const post = (m: WorkerMessage) => port.postMessage(m);
const currentRequest = new AsyncLocalStorage<string>();
const inFlight = new Set<string>();

const invokedFunctionArn = `eddy:${settings.functionNamespace}:function:${settings.functionName}`;
const logGroupName = `/eddy/${settings.functionNamespace}/${settings.functionName}`;
const memoryLimitInMB = String(settings.memoryMb);

function patchConsole(): void {
  const levels: Array<[keyof Console, string]> = [
    ['log', 'INFO'],
    ['info', 'INFO'],
    ['warn', 'WARN'],
    ['error', 'ERROR'],
    ['debug', 'DEBUG'],
    ['trace', 'TRACE'],
  ];
  for (const [method, level] of levels) {
    (console as unknown as Record<string, unknown>)[method] = (...args: unknown[]) => {
      write(consoleLine(settings.logFormat, currentRequest.getStore(), level, format(...args)));
    };
  }
}

function errorBody(err: unknown): ErrorBody {
  if (err instanceof Error) {
    return {
      errorType: err.name || 'Error',
      errorMessage: err.message,
      stackTrace: err.stack ? err.stack.split('\n') : [],
    };
  }
  if (err !== null && typeof err === 'object') {
    const o = err as {
      errorType?: unknown;
      errorMessage?: unknown;
      name?: unknown;
      message?: unknown;
    };
    const str = (v: unknown) => (typeof v === 'string' ? v : undefined);
    return {
      errorType: str(o.errorType) ?? str(o.name) ?? 'object',
      errorMessage: str(o.errorMessage) ?? str(o.message) ?? JSON.stringify(err),
    };
  }
  return { errorType: typeof err, errorMessage: String(err) };
}

const textType = /^(text\/|application\/(json|[\w.+-]*\+json|xml|x-www-form-urlencoded))/i;
const jsonType = /^application\/(json|[\w.+-]*\+json)\s*(;|$)/i;

/** The event the handler sees, or a string saying why the event cannot be decoded. */
function decodeEvent(m: InvokeMessage): { event: unknown; data: unknown } | string {
  let data: unknown;
  if (m.mode === 'structured') {
    // data_base64 arrives as a Uint8Array (a Buffer does not survive the thread boundary).
    data =
      m.data instanceof Uint8Array
        ? Buffer.from(m.data.buffer, m.data.byteOffset, m.data.byteLength)
        : m.data;
  } else if (m.mode === 'direct') {
    const text = typeof m.body === 'string' ? m.body : Buffer.from(m.body ?? []).toString('utf8');
    if (text.trim() === '') {
      data = {};
    } else {
      try {
        data = JSON.parse(text);
      } catch (err) {
        return `the body of a direct invocation must be JSON: ${(err as Error).message}`;
      }
    }
  } else {
    const contentType = m.attributes?.datacontenttype;
    const body = m.body ?? '';
    if (contentType === undefined || jsonType.test(contentType)) {
      const text = typeof body === 'string' ? body : Buffer.from(body).toString('utf8');
      if (text === '') data = undefined;
      else {
        try {
          data = JSON.parse(text);
        } catch (err) {
          if (contentType !== undefined) {
            return `data is not valid JSON although datacontenttype is ${contentType}: ${(err as Error).message}`;
          }
          data = text;
        }
      }
    } else if (textType.test(contentType)) {
      data = typeof body === 'string' ? body : Buffer.from(body).toString('utf8');
    } else {
      data = typeof body === 'string' ? Buffer.from(body) : Buffer.from(body);
    }
  }
  const type = m.attributes?.type;
  if (type !== undefined && type.startsWith('com.amazonaws.s3.')) {
    if (data === null || typeof data !== 'object' || Array.isArray(data)) {
      return `an ${type} event must carry one S3 event record (a JSON object) as its data`;
    }
    return { event: { Records: [data] }, data };
  }
  return { event: data, data };
}

/** Runs the handler: a returned promise wins; otherwise a 3-argument handler answers by callback. */
function callHandler(handler: Handler, event: unknown, context: object): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const callback = (err?: unknown, result?: unknown) => {
      if (settled) return;
      settled = true;
      if (err !== undefined && err !== null) reject(err instanceof Error ? err : errorLike(err));
      else resolve(result);
    };
    let returned: unknown;
    try {
      returned = handler(event, context, callback);
    } catch (err) {
      settled = true;
      reject(err instanceof Error ? err : errorLike(err));
      return;
    }
    if (returned !== null && typeof (returned as { then?: unknown })?.then === 'function') {
      settled = true;
      (returned as Promise<unknown>).then(resolve, (err: unknown) =>
        reject(err instanceof Error ? err : errorLike(err)),
      );
    } else if (handler.length < 3) {
      // A synchronous handler that takes no callback answers with what it returns.
      settled = true;
      resolve(returned);
    }
  });
}

/** Keeps a non-Error rejection's shape for errorBody. */
function errorLike(value: unknown): Error {
  const e = new Error(typeof value === 'string' ? value : JSON.stringify(value));
  Object.assign(e, { thrown: value });
  return e;
}

async function invoke(handler: Handler, m: InvokeMessage): Promise<void> {
  const decoded = decodeEvent(m);
  if (typeof decoded === 'string') {
    post({ type: 'invalid', id: m.id, message: decoded });
    return;
  }
  const cloudEvent =
    m.mode === 'direct'
      ? {
          specversion: '1.0',
          id: m.requestId,
          source: `eddy:direct`,
          type: 'dev.eddy.invoke',
          data: decoded.data,
        }
      : { ...m.attributes, data: decoded.data };
  const context = {
    awsRequestId: m.requestId,
    functionName: settings.functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn,
    memoryLimitInMB,
    logGroupName,
    logStreamName: settings.logStreamName,
    callbackWaitsForEmptyEventLoop: true,
    cloudEvent,
    getRemainingTimeInMillis: () => Math.max(0, m.deadline - Date.now()),
  };
  write(startLine(settings.logFormat, m.requestId));
  inFlight.add(m.requestId);
  const started = performance.now();
  let result: WorkerMessage & { type: 'result' };
  try {
    const value = await currentRequest.run(m.requestId, () =>
      callHandler(handler, decoded.event, context),
    );
    const durationMs = performance.now() - started;
    result = { type: 'result', id: m.id, durationMs, ...serialize(value) };
  } catch (err) {
    const durationMs = performance.now() - started;
    const thrown = (err as { thrown?: unknown }).thrown;
    result = {
      type: 'result',
      id: m.id,
      durationMs,
      error: { code: 'Unhandled', body: errorBody(thrown !== undefined ? thrown : err) },
    };
  } finally {
    inFlight.delete(m.requestId);
  }
  post(result);
}

function serialize(value: unknown): {
  body?: string;
  error?: { code: ErrorCode; body: ErrorBody };
} {
  if (value === undefined) return {};
  let body: string | undefined;
  try {
    body = JSON.stringify(value);
  } catch (err) {
    return {
      error: {
        code: 'MalformedHandlerResponse',
        body: {
          errorType: 'Runtime.MalformedHandlerResponse',
          errorMessage: `the handler's result cannot be turned into JSON: ${(err as Error).message}`,
        },
      },
    };
  }
  if (body === undefined) return {};
  if (Buffer.byteLength(body) > maxPayloadBytes) {
    return {
      error: {
        code: 'ResponseSizeTooLarge',
        body: {
          errorType: 'Function.ResponseSizeTooLarge',
          errorMessage: `the handler's result is ${Buffer.byteLength(body)} bytes; the limit is ${maxPayloadBytes} bytes. Write large results to a bucket and return a reference.`,
        },
      },
    };
  }
  return { body };
}

async function main(): Promise<void> {
  patchConsole();
  const started = performance.now();
  let handler: Handler;
  try {
    handler = await loadHandler(settings.codeDir, settings.handler);
  } catch (err) {
    const initDurationMs = performance.now() - started;
    if (err instanceof LoadError)
      post({ type: 'init-error', code: err.code, error: err.body, initDurationMs });
    else
      post({
        type: 'init-error',
        code: 'ImportModuleError',
        error: errorBody(err),
        initDurationMs,
      });
    return;
  }
  post({ type: 'ready', initDurationMs: performance.now() - started });
  port.on('message', (m: InvokeMessage) => {
    void invoke(handler, m);
  });
}

// An exception that escapes the handler (a throw in a timer, an unhandled rejection) fails the
// invocation it came from, or every one in flight when that cannot be told.
function onEscape(err: unknown): void {
  const requestId = currentRequest.getStore();
  post({
    type: 'fatal',
    requestIds: requestId ? [requestId] : [...inFlight],
    error: errorBody(err),
  });
}
process.on('uncaughtException', onEscape);
process.on('unhandledRejection', onEscape);

void main();
