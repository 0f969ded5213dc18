/**
 * Runs the user's handler in this process, as Lambda's Node.js runtime does: imported once at
 * start, called per invocation with a Lambda-style context, bounded by the function's timeout.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { Writable } from 'node:stream';
import type { LogFormat } from './config.js';
import { invokedFunctionArn } from './contract/env.js';
import { eventTypes, isS3Type } from './contract/events.js';
import { maxPayloadBytes, type ErrorBody, type ErrorCode } from './contract/errors.js';
import { loadHandler, LoadError, type Handler } from './handler-loader.js';
import type { FunctionInvoker, InitResult, Invocation, Outcome } from './invocation.js';
import {
  consoleCall,
  consoleLine,
  functionVersion,
  invokeErrorLine,
  queue,
  startLine,
  write,
} from './logs.js';

export interface InvokerSettings {
  codeDir: string;
  handler: string;
  functionName: string;
  functionNamespace: string;
  memoryMb: number;
  concurrency: number;
  logFormat: LogFormat;
  logStreamName: string;
}

interface Pending {
  requestId: string;
  deadline: number;
  started: number;
  settle(outcome: Outcome): void;
}

/** Milliseconds from a monotonic clock (process.hrtime: no module to load at cold start). */
function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

const textType = /^(text\/|application\/(json|[\w.+-]*\+json|xml|x-www-form-urlencoded))/i;
const jsonType = /^application\/(json|[\w.+-]*\+json)\s*(;|$)/i;

export class Invoker implements FunctionInvoker {
  readonly ready: Promise<InitResult>;
  readonly initPerProcess = false;
  private handler: Handler | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  /** Called when an invocation starts or ends (the watchdog follows deadlines through it). */
  onDeadlinesChanged: (() => void) | undefined;
  /**
   * Which invocation a console line belongs to, across awaits; made when a handler first logs
   * while several invocations may run at once (see patchConsole).
   */
  private current: AsyncLocalStorage<string> | undefined;
  /** The invocation whose handler is being called, while its synchronous part runs. */
  private calling: string | undefined;
  /** One timer for every deadline in flight, due at `timerDue` (epoch ms). */
  private deadlineTimer: NodeJS.Timeout | undefined;
  private timerDue = 0;
  private readonly invokedFunctionArn: string;
  private readonly logGroupName: string;
  private readonly memoryLimitInMB: string;

  constructor(
    private readonly settings: InvokerSettings,
    /** Called when the process can no longer be trusted (an exception escaped a handler). */
    private readonly onBroken: (reason: string) => void,
  ) {
    this.invokedFunctionArn = invokedFunctionArn(
      process.env,
      settings.functionNamespace,
      settings.functionName,
    );
    this.logGroupName = `/eddy/${settings.functionNamespace}/${settings.functionName}`;
    this.memoryLimitInMB = String(settings.memoryMb);
    this.patchConsole();
    process.on('uncaughtException', (err) => this.onEscape(err));
    process.on('unhandledRejection', (reason) => this.onEscape(unhandledRejection(reason)));
    installAwsLambdaGlobal();
    this.ready = this.load();
  }

  get inFlight(): number {
    return this.pending.size;
  }

  /** The earliest deadline among invocations in flight, or 0 when none are. */
  earliestDeadline(): number {
    let earliest = 0;
    for (const p of this.pending.values())
      if (earliest === 0 || p.deadline < earliest) earliest = p.deadline;
    return earliest;
  }

  private async load(): Promise<InitResult> {
    const started = nowMs();
    try {
      this.handler = await loadHandler(this.settings.codeDir, this.settings.handler);
      return { ok: true, initDurationMs: nowMs() - started };
    } catch (err) {
      const initDurationMs = nowMs() - started;
      if (err instanceof LoadError)
        return { ok: false, code: err.code, error: err.body, initDurationMs };
      return { ok: false, code: 'ImportModuleError', error: errorBody(err), initDurationMs };
    }
  }

  private requestIdNow(): string | undefined {
    const id = this.calling ?? this.current?.getStore();
    if (id !== undefined) return id;
    if (this.pending.size === 1) return this.pending.values().next().value?.requestId;
    return undefined;
  }

  private patchConsole(): void {
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
        // Following a request id across awaits takes AsyncLocalStorage, whose promise hooks cost
        // every invocation time whether or not it logs; so it starts with the first line a
        // handler logs. With one invocation at a time the id is simply the one in flight.
        if (this.current === undefined && this.settings.concurrency > 1) {
          this.current = new AsyncLocalStorage<string>();
          // The handler logging now keeps its id past its next await.
          if (this.calling !== undefined) this.current.enterWith(this.calling);
        }
        const requestId = this.requestIdNow();
        write(consoleCall(this.settings.logFormat, requestId, level, args), requestId);
      };
    }
  }

  /** Runs one invocation; resolves at the latest at its deadline. */
  invoke(m: Invocation): Promise<Outcome> {
    const handler = this.handler;
    if (!handler) throw new Error('invoke() before the handler loaded');
    const decoded = decodeEvent(m);
    if (typeof decoded === 'string') return Promise.resolve({ kind: 'invalid', message: decoded });
    const cloudEvent =
      m.mode === 'direct'
        ? {
            specversion: '1.0',
            id: m.requestId,
            source: 'eddy:direct',
            type: eventTypes.invoke,
            data: decoded.data,
          }
        : { ...m.attributes, data: decoded.data };
    const deadline = m.deadline;
    const context = {
      awsRequestId: m.requestId,
      functionName: this.settings.functionName,
      functionVersion,
      invokedFunctionArn: this.invokedFunctionArn,
      memoryLimitInMB: this.memoryLimitInMB,
      logGroupName: this.logGroupName,
      logStreamName: this.settings.logStreamName,
      callbackWaitsForEmptyEventLoop: true,
      clientContext: m.clientContext,
      cloudEvent,
      getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    };
    return new Promise<Outcome>((resolve) => {
      const id = this.nextId++;
      const settle = (outcome: Outcome) => {
        if (!this.pending.delete(id)) return; // already settled: a late answer is dropped
        this.onDeadlinesChanged?.();
        resolve(outcome);
      };
      const started = nowMs();
      this.pending.set(id, { requestId: m.requestId, deadline, started, settle });
      this.armDeadline(deadline);
      this.onDeadlinesChanged?.();
      queue(startLine(this.settings.logFormat, m.requestId), m.requestId);
      const succeed = (value: unknown) =>
        settle({ kind: 'result', durationMs: nowMs() - started, ...serialize(value) });
      const fail = (err: unknown) => {
        const e = err instanceof Error ? err : errorLike(err);
        const thrown = (e as { thrown?: unknown }).thrown;
        const body = errorBody(thrown !== undefined ? thrown : e);
        if (this.pending.has(id)) {
          write(invokeErrorLine(this.settings.logFormat, m.requestId, body), m.requestId);
        }
        settle({
          kind: 'result',
          durationMs: nowMs() - started,
          error: { code: 'Unhandled', body },
        });
      };
      // The first of the callback, context.succeed/fail/done and the returned promise answers.
      let answered = false;
      const callback = (err?: unknown, result?: unknown) => {
        if (answered) return;
        answered = true;
        if (err !== undefined && err !== null) fail(err);
        else succeed(result);
      };
      Object.assign(context, {
        succeed: (result?: unknown) => callback(null, result),
        // Lambda's fail() without an error fails with the string 'handled'.
        fail: (err?: unknown) => callback(err ?? 'handled'),
        done: callback,
      });
      this.calling = m.requestId;
      try {
        if (this.current) {
          this.current.run(m.requestId, callHandler, handler, decoded.event, context, callback);
        } else {
          callHandler(handler, decoded.event, context, callback);
        }
      } finally {
        this.calling = undefined;
      }
    });
  }

  /**
   * Makes sure the deadline timer fires by `deadline`. A timer per invocation costs every
   * invocation a timer list insertion and removal; this one is moved only when an earlier
   * deadline comes, and, when it fires, times out what is due and waits for the next deadline.
   */
  private armDeadline(deadline: number): void {
    if (this.deadlineTimer !== undefined && this.timerDue <= deadline) return;
    clearTimeout(this.deadlineTimer);
    this.timerDue = deadline;
    this.deadlineTimer = setTimeout(() => this.expire(), Math.max(0, deadline - Date.now()));
  }

  private expire(): void {
    this.deadlineTimer = undefined;
    const now = Date.now();
    let next = 0;
    for (const p of [...this.pending.values()]) {
      if (p.deadline <= now) p.settle({ kind: 'timeout' });
      else if (next === 0 || p.deadline < next) next = p.deadline;
    }
    if (next !== 0) this.armDeadline(next);
  }

  // An exception that escapes a handler (a throw in a timer, an unhandled rejection) fails the
  // invocation it came from, or every one in flight when that cannot be told; then the runtime
  // recycles, since the process may be in a state nobody planned for.
  private onEscape(err: unknown): void {
    const body = errorBody(err);
    const requestId = this.requestIdNow();
    for (const p of [...this.pending.values()]) {
      if (requestId === undefined || p.requestId === requestId) {
        p.settle({
          kind: 'crash',
          durationMs: nowMs() - p.started,
          code: 'Unhandled',
          body,
        });
      }
    }
    write(
      consoleLine(
        this.settings.logFormat,
        requestId,
        'ERROR',
        `Uncaught ${body.errorType}: ${body.errorMessage}`,
      ),
      requestId,
    );
    this.onBroken(`an exception escaped the handler: ${body.errorType}: ${body.errorMessage}`);
  }
}

/** The event the handler sees, or a string saying why the event cannot be decoded. */
export function decodeEvent(m: Invocation): { event: unknown; data: unknown } | string {
  let data: unknown;
  if (m.mode === 'structured') {
    data = m.data;
  } else if (m.mode === 'direct') {
    const text = m.body ? m.body.toString('utf8') : '';
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
    const body = m.body ?? Buffer.alloc(0);
    if (contentType === undefined || jsonType.test(contentType)) {
      if (body.length === 0) data = undefined;
      else {
        const text = body.toString('utf8');
        try {
          data = JSON.parse(text);
        } catch (err) {
          if (contentType !== undefined) {
            return `data is not valid JSON although datacontenttype is ${contentType}: ${(err as Error).message}`;
          }
          data = text;
        }
      }
    } else {
      data = textType.test(contentType) ? body.toString('utf8') : body;
    }
  }
  const type = m.attributes?.type;
  if (isS3Type(type)) {
    if (data === null || typeof data !== 'object' || Array.isArray(data) || Buffer.isBuffer(data)) {
      return `an ${type} event must carry one S3 event record (a JSON object) as its data`;
    }
    return { event: { Records: [data] }, data };
  }
  return { event: data, data };
}

/**
 * Runs the handler. Whichever answers first wins: a returned promise, or the callback (which
 * context.succeed/fail/done call), even from a handler that also returns a promise. A
 * synchronous handler taking fewer than 3 arguments answers with what it returns; one taking a
 * callback answers when it calls it.
 */
function callHandler(
  handler: Handler,
  event: unknown,
  context: object,
  callback: (err?: unknown, result?: unknown) => void,
): void {
  // A streaming handler is (event, responseStream, context): it answers when its stream ends,
  // and a promise that resolves with the stream still open ends it.
  const stream =
    (handler as unknown as Record<symbol, unknown>)[streamingMark] === 'response'
      ? responseStream(callback)
      : undefined;
  let returned: unknown;
  try {
    returned = stream ? handler(event, stream, context) : handler(event, context, callback);
  } catch (err) {
    callback(err ?? 'handled');
    return;
  }
  if (isThenable(returned)) {
    returned.then(
      (value) => {
        if (!stream) callback(null, value);
        else if (!stream.writableEnded) stream.end();
      },
      // A promise rejected with nothing still failed.
      (err: unknown) => callback(err ?? 'handled'),
    );
  } else if (!stream && handler.length < 3) {
    callback(null, returned);
  }
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && typeof (value as { then?: unknown })?.then === 'function';
}

/** Lambda's mark on a handler wrapped by `awslambda.streamifyResponse`. */
const streamingMark = Symbol.for('aws.lambda.runtime.handler.streaming');

/** What a streaming handler wrote, answered as it is (not as JSON). */
class StreamedBody {
  constructor(
    readonly bytes: Buffer,
    /** Bytes written in all: past the limit, only counted. */
    readonly size: number,
  ) {}
}

/**
 * The `awslambda` global Lambda's Node.js runtime defines before it imports the handler:
 * `streamifyResponse(handler)` marks a handler `(event, responseStream, context)`, and
 * `HttpResponseStream.from(stream, {statusCode, headers})` gives a function URL's status and
 * headers. Invocations here are answered whole, so a streamed response is buffered until the
 * stream ends, and the status and headers (a function URL's) are not applied.
 */
function installAwsLambdaGlobal(): void {
  const g = globalThis as { awslambda?: unknown };
  if (g.awslambda !== undefined) return;
  g.awslambda = {
    streamifyResponse(handler: unknown, _options?: { highWaterMark?: number }) {
      if (typeof handler !== 'function') {
        throw new TypeError('awslambda.streamifyResponse takes the handler function');
      }
      (handler as unknown as Record<symbol, unknown>)[streamingMark] = 'response';
      return handler;
    },
    HttpResponseStream: class HttpResponseStream {
      static from(stream: Writable, prelude?: unknown): Writable {
        Object.assign(stream, { prelude });
        return stream;
      }
    },
  };
}

/**
 * The stream a streaming handler writes to: what it wrote answers, as it is, once it ends; an
 * error on it fails the invocation.
 */
function responseStream(callback: (err?: unknown, result?: unknown) => void): Writable {
  const chunks: Buffer[] = [];
  let size = 0;
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      size += chunk.length;
      if (size <= maxPayloadBytes) chunks.push(chunk);
      done();
    },
  });
  Object.assign(stream, { setContentType: (_type: string) => undefined });
  stream.once('finish', () => callback(null, new StreamedBody(Buffer.concat(chunks), size)));
  stream.once('error', (err) => callback(err));
  return stream;
}

/**
 * A rejection nobody handled, as Lambda's Node.js runtime reports it: errorType
 * `Runtime.UnhandledPromiseRejection`, the reason as text (`Error: boom`) as the message.
 */
function unhandledRejection(reason: unknown): Error {
  let text: string;
  try {
    text = String(reason);
  } catch {
    text = Object.prototype.toString.call(reason);
  }
  const e = new Error(text);
  e.name = 'Runtime.UnhandledPromiseRejection';
  if (reason instanceof Error && reason.stack) e.stack = reason.stack;
  return e;
}

/** Keeps a non-Error rejection's value for errorBody. */
function errorLike(value: unknown): Error {
  const e = new Error(typeof value === 'string' ? value : JSON.stringify(value));
  Object.assign(e, { thrown: value });
  return e;
}

export function errorBody(err: unknown): ErrorBody {
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

function serialize(value: unknown): {
  body?: string | Buffer;
  error?: { code: ErrorCode; body: ErrorBody };
} {
  if (value === undefined) return {};
  if (value instanceof StreamedBody) {
    if (value.size <= maxPayloadBytes) return { body: value.bytes };
    return {
      error: {
        code: 'ResponseSizeTooLarge',
        body: {
          errorType: 'Function.ResponseSizeTooLarge',
          errorMessage: `the handler streamed ${value.size} bytes; an answered invocation holds at most ${maxPayloadBytes} bytes. Write large results to a bucket and return a reference.`,
        },
      },
    };
  }
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
  if (body.length > maxPayloadBytes / 3 && Buffer.byteLength(body) > maxPayloadBytes) {
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
