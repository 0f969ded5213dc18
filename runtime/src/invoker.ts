/**
 * Runs the user's handler in this process, as Lambda's Node.js runtime does: imported once at
 * start, called per invocation with a Lambda-style context, bounded by the function's timeout.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { format } from 'node:util';
import type { LogFormat } from './config.js';
import { eventTypes, isS3Type } from './contract/events.js';
import { maxPayloadBytes, type ErrorBody, type ErrorCode } from './contract/errors.js';
import { loadHandler, LoadError, type Handler } from './handler-loader.js';
import type { InitResult, Invocation, Outcome } from './invocation.js';
import { consoleLine, functionVersion, queue, startLine, write } from './logs.js';

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

export class Invoker {
  readonly ready: Promise<InitResult>;
  private handler: Handler | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  /** Called when an invocation starts or ends (the watchdog follows deadlines through it). */
  onDeadlinesChanged: (() => void) | undefined;
  /** Which invocation a console line belongs to; only needed when several run at once. */
  private readonly current: AsyncLocalStorage<string> | undefined;
  private readonly invokedFunctionArn: string;
  private readonly logGroupName: string;
  private readonly memoryLimitInMB: string;

  constructor(
    private readonly settings: InvokerSettings,
    /** Called when the process can no longer be trusted (an exception escaped a handler). */
    private readonly onBroken: (reason: string) => void,
  ) {
    this.invokedFunctionArn = `eddy:${settings.functionNamespace}:function:${settings.functionName}`;
    this.logGroupName = `/eddy/${settings.functionNamespace}/${settings.functionName}`;
    this.memoryLimitInMB = String(settings.memoryMb);
    // AsyncLocalStorage turns on promise hooks, a cost on every await; with one invocation at a
    // time the request id is simply the one in flight.
    this.current = settings.concurrency > 1 ? new AsyncLocalStorage<string>() : undefined;
    this.patchConsole();
    process.on('uncaughtException', (err) => this.onEscape(err));
    process.on('unhandledRejection', (err) => this.onEscape(err));
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
    if (this.current) return this.current.getStore();
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
        write(consoleLine(this.settings.logFormat, this.requestIdNow(), level, format(...args)));
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
      cloudEvent,
      getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    };
    return new Promise<Outcome>((resolve) => {
      const id = this.nextId++;
      const timer = setTimeout(
        () => settle({ kind: 'timeout' }),
        Math.max(0, deadline - Date.now()),
      );
      const settle = (outcome: Outcome) => {
        if (!this.pending.delete(id)) return; // already settled: a late answer is dropped
        clearTimeout(timer);
        this.onDeadlinesChanged?.();
        resolve(outcome);
      };
      const started = nowMs();
      this.pending.set(id, { requestId: m.requestId, deadline, started, settle });
      this.onDeadlinesChanged?.();
      queue(startLine(this.settings.logFormat, m.requestId));
      const run = () => callHandler(handler, decoded.event, context);
      const running = this.current ? this.current.run(m.requestId, run) : run();
      running.then(
        (value) => settle({ kind: 'result', durationMs: nowMs() - started, ...serialize(value) }),
        (err: unknown) => {
          const thrown = (err as { thrown?: unknown }).thrown;
          settle({
            kind: 'result',
            durationMs: nowMs() - started,
            error: { code: 'Unhandled', body: errorBody(thrown !== undefined ? thrown : err) },
          });
        },
      );
    });
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
    );
    this.onBroken(`an exception escaped the handler: ${body.errorType}: ${body.errorMessage}`);
  }
}

/** The event the handler sees, or a string saying why the event cannot be decoded. */
function decodeEvent(m: Invocation): { event: unknown; data: unknown } | string {
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
