/**
 * The runtime's HTTP side: `POST /` invokes the handler with a CloudEvent (binary or structured
 * mode) or a plain JSON body; `GET /healthz`, `/readyz`, `/metrics`. The invocation path reads
 * headers directly and allocates little; everything else is off that path.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { RuntimeConfig } from './config.js';
import { headers as h, requestIdPattern } from './contract/http.js';
import { binaryAttributes, classify, structuredEvent } from './cloudevents.js';
import {
  errorCodes,
  maxPayloadBytes,
  timeoutMessage,
  type ErrorBody,
  type ErrorCode,
} from './contract/errors.js';
import {
  initBudgetMs,
  type ClientContext,
  type EventAttributes,
  type FunctionInvoker,
  type InitResult,
  type Invocation,
  type Outcome,
} from './invocation.js';
import {
  endAndReport,
  maxMemoryUsedMb,
  queue,
  startTail,
  takeTail,
  timeoutLine,
  writeLine,
} from './logs.js';
import type { RuntimeMetrics } from './metrics.js';

export interface RuntimeDeps {
  config: RuntimeConfig;
  invoker: FunctionInvoker;
  metrics: RuntimeMetrics;
  /** Called once nothing is in flight after a drain or recycle began; the caller exits. */
  onIdle(reason: 'drained' | 'recycled'): void;
}

export interface RuntimeServer {
  server: Server;
  /** SIGTERM: readiness off now, let in-flight invocations finish, then onIdle('drained'). */
  drain(): void;
  /** After a timeout or an exception that escaped a handler: stop taking work, then onIdle('recycled'). */
  recycle(reason: string): void;
}

type State = 'starting' | 'ready' | 'failed' | 'draining' | 'recycling';

const hex: string[] = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** A random 32-bit word. */
const random32 = () => (Math.random() * 0x100000000) >>> 0;

/** Eight hex digits; a table beats Number#toString(16) several times over. */
const hex8 = (w: number) =>
  hex[w >>> 24]! + hex[(w >>> 16) & 0xff]! + hex[(w >>> 8) & 0xff]! + hex[w & 0xff]!;

/**
 * A random (version 4) UUID for an invocation. Math.random suffices for an id that only needs to
 * be unique, and spares a cold start loading node:crypto.
 */
export function newRequestId(): string {
  // Version 4 in the third group, variant 10xx at the start of the fourth.
  const b = hex8((random32() & 0xffff0fff) | 0x4000);
  const c = hex8(((random32() & 0x3fffffff) | 0x80000000) >>> 0);
  return `${hex8(random32())}-${b.slice(0, 4)}-${b.slice(4)}-${c.slice(0, 4)}-${c.slice(4)}${hex8(random32())}`;
}

/** Past this much, an oversized body is not read to its end but the connection is closed. */
const discardLimitBytes = 4 * maxPayloadBytes;
const emptyBody = Buffer.alloc(0);

export function createRuntimeServer(deps: RuntimeDeps): RuntimeServer {
  const { config, invoker, metrics } = deps;
  let state: State = 'starting';
  let init: InitResult | undefined;
  let initReported = false;
  let inFlight = 0;
  /** Admitted invocations: how many of their response's close and handler's end are to come. */
  const holds = new WeakMap<ServerResponse, number>();
  let stateReason = 'loading the handler';

  void invoker.ready.then((r) => {
    init = r;
    if (state !== 'starting') return;
    if (r.ok) {
      state = 'ready';
      metrics.initDurationSeconds = r.initDurationMs / 1000;
    } else {
      state = 'failed';
      stateReason = `${r.error.errorType}: ${r.error.errorMessage}`;
      writeLine(
        `${config.logFormat === 'json' ? JSON.stringify({ time: new Date().toISOString(), type: 'platform.initError', record: r.error }) : `INIT_ERROR ${r.error.errorType}: ${r.error.errorMessage}${r.error.stackTrace?.length ? `\n${r.error.stackTrace.join('\n')}` : ''}`}\n`,
      );
    }
  });

  const checkIdle = () => {
    if (inFlight > 0) return;
    if (state === 'draining') deps.onIdle('drained');
    else if (state === 'recycling') deps.onIdle('recycled');
  };

  function sendError(
    res: ServerResponse,
    code: ErrorCode,
    body: ErrorBody,
    headers?: Record<string, string>,
  ): void {
    const spec = errorCodes[code];
    const text = JSON.stringify(body);
    res.writeHead(spec.status, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(text),
      ...(spec.functionError ? { [h.functionError]: 'Unhandled' } : {}),
      ...headers,
    });
    res.end(text);
  }

  function reject(
    res: ServerResponse,
    code: ErrorCode,
    message: string,
    requestId: string,
    extra: Record<string, string> = {},
  ): void {
    sendError(
      res,
      code,
      { errorType: errorCodes[code].errorType, errorMessage: message },
      { [h.requestId]: requestId, ...extra },
    );
  }

  /**
   * Reads the request body, then calls `done` with it, or with 'too-large' past Lambda's 6 MB.
   * An oversized body is read to its end and dropped, so the client, still sending, gets to read
   * the 413; one far beyond the limit is cut off instead.
   */
  function readBody(
    req: IncomingMessage,
    done: (body: Buffer | 'too-large' | 'cut-off') => void,
  ): void {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > discardLimitBytes) {
      done('cut-off');
      return;
    }
    let first: Buffer | undefined;
    let chunks: Buffer[] | undefined;
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > discardLimitBytes) {
        req.removeListener('data', onData);
        req.removeListener('end', onEnd);
        done('cut-off');
      } else if (size <= maxPayloadBytes) {
        if (first === undefined) first = chunk;
        else (chunks ??= [first]).push(chunk);
      }
    };
    const onEnd = () => {
      if (size > maxPayloadBytes) done('too-large');
      else done(chunks ? Buffer.concat(chunks) : (first ?? emptyBody));
    };
    req.on('data', onData);
    req.on('end', onEnd);
  }

  function handleInvoke(req: IncomingMessage, res: ServerResponse): void {
    const given = req.headers[h.requestId];
    const requestId =
      typeof given === 'string' && requestIdPattern.test(given) ? given : newRequestId();
    if (state === 'starting') {
      waitForHandler(req, res, requestId).catch((err: Error) => failed(res, err));
      return;
    }
    if (state === 'failed' && init && !init.ok) {
      metrics.count('error');
      sendError(res, init.code, init.error, { [h.requestId]: requestId });
      return;
    }
    if (state === 'draining' || state === 'recycling') {
      reject(
        res,
        'NotAccepting',
        `the runtime is ${state === 'draining' ? 'shutting down' : 'recycling'} (${stateReason}); send the event to another replica`,
        requestId,
        { 'retry-after': '1' },
      );
      return;
    }
    if (inFlight >= config.concurrency) {
      metrics.count('throttled');
      reject(
        res,
        'Throttled',
        `the function is already running ${config.concurrency} invocation(s), its concurrency limit (EDDY_CONCURRENCY); retry later or raise the function's concurrency`,
        requestId,
        { 'retry-after': '1' },
      );
      return;
    }
    inFlight++;
    metrics.inFlight = inFlight;
    // An invocation ends when its answer has left (or its client went away), not before: a
    // drain or recycle must not cut a response short. Nor before its handler has finished: a
    // client that went away leaves the handler running, and its slot (a language process)
    // taken, until it ends or times out, as Lambda counts it.
    holds.set(res, 1);
    res.once('close', () => release(res));
    invokeAdmitted(req, res, requestId);
  }

  /** The invocation of `res` runs its handler: it ends once that has finished too. */
  function running(res: ServerResponse): void {
    const left = holds.get(res);
    if (left !== undefined) holds.set(res, left + 1);
  }

  function release(res: ServerResponse): void {
    const left = holds.get(res);
    if (left === undefined) return;
    if (left > 1) {
      holds.set(res, left - 1);
      return;
    }
    holds.delete(res);
    inFlight--;
    metrics.inFlight = inFlight;
    checkIdle();
  }

  /**
   * Waits for the handler to load (a language process to initialise), but no longer than
   * Lambda's init time or, if longer, than an invocation may take.
   */
  async function waitForHandler(
    req: IncomingMessage,
    res: ServerResponse,
    requestId: string,
  ): Promise<void> {
    const waitMs = Math.max(config.timeoutMs, initBudgetMs);
    let gone = false;
    const onGone = () => (gone = true);
    res.once('close', onGone);
    let timer: NodeJS.Timeout | undefined;
    const loaded = await Promise.race([
      invoker.ready.then(() => true),
      new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), waitMs))),
    ]);
    clearTimeout(timer);
    res.removeListener('close', onGone);
    // A caller that went away meanwhile is not admitted: nothing would ever release its slot.
    if (gone) return;
    if (!loaded) {
      reject(
        res,
        'NotAccepting',
        `the handler is still loading after ${waitMs} ms (its module is slow to import); retry shortly`,
        requestId,
        { 'retry-after': '1' },
      );
      return;
    }
    handleInvoke(req, res);
  }

  function invokeAdmitted(req: IncomingMessage, res: ServerResponse, requestId: string): void {
    const deadline = Date.now() + config.timeoutMs;
    const mode = classify(req.headers, req.rawHeaders);
    if (mode === 'batch') {
      reject(
        res,
        'BatchNotSupported',
        'batched CloudEvents (application/cloudevents-batch+json) are not supported: send one event per request, in binary or structured mode',
        requestId,
      );
      return;
    }
    let attributes: EventAttributes | undefined;
    if (mode === 'binary') {
      const checked = binaryAttributes(req.headers, req.rawHeaders);
      if (typeof checked === 'string') {
        reject(res, 'InvalidEvent', checked, requestId);
        return;
      }
      attributes = checked;
    }
    const clientContext = decodeClientContext(req.headers[h.clientContext]);
    if (typeof clientContext === 'string') {
      reject(res, 'InvalidEvent', clientContext, requestId);
      return;
    }
    const extras: Extras = { clientContext, tail: req.headers[h.logType] === 'Tail' };
    // A body still arriving at the deadline could not be run in time: the slot it holds is
    // given back rather than kept for a client that sends slowly.
    const late = setTimeout(() => {
      reject(
        res,
        'InvalidEvent',
        `the request's body did not arrive within the function's timeout (${config.timeoutMs} ms)`,
        requestId,
        { connection: 'close' },
      );
      req.destroy();
    }, config.timeoutMs);
    readBody(req, (body) => {
      clearTimeout(late);
      try {
        invokeWithBody(res, requestId, deadline, mode, attributes, body, extras);
      } catch (err) {
        failed(res, err as Error);
      }
    });
  }

  function invokeWithBody(
    res: ServerResponse,
    requestId: string,
    deadline: number,
    mode: Invocation['mode'],
    attributes: EventAttributes | undefined,
    body: Buffer | 'too-large' | 'cut-off',
    extras: Extras,
  ): void {
    if (body === 'too-large' || body === 'cut-off') {
      reject(
        res,
        'PayloadTooLarge',
        `the request body is larger than ${maxPayloadBytes} bytes (6 MB), Lambda's limit for an invocation: put large payloads in a bucket and send a reference`,
        requestId,
        body === 'cut-off' ? { connection: 'close' } : {},
      );
      return;
    }
    const message: Invocation = {
      requestId,
      deadline,
      mode,
      attributes,
      body: undefined,
      data: undefined,
      ...(extras.clientContext ? { clientContext: extras.clientContext } : {}),
    };
    if (mode === 'structured') {
      const parsed = structuredEvent(body.toString('utf8'));
      if (typeof parsed === 'string') {
        reject(res, 'InvalidEvent', parsed, requestId);
        return;
      }
      message.attributes = parsed.attributes;
      message.data = parsed.data;
    } else {
      message.body = body;
    }
    // The caller went away before its event could run: nothing runs for no one (a platform
    // that sends it again is not answered twice).
    if (!holds.has(res)) return;
    if (extras.tail) startTail(requestId);
    running(res);
    let invoked: Promise<Outcome>;
    try {
      invoked = invoker.invoke(message);
    } catch (err) {
      release(res);
      throw err;
    }
    invoked.finally(() => release(res)).catch(() => undefined);
    invoked.then(
      (outcome) => {
        try {
          respond(res, requestId, outcome, extras.tail);
        } catch (err) {
          takeTail(requestId);
          failed(res, err as Error);
        }
      },
      (err: Error) => {
        takeTail(requestId);
        failed(res, err);
      },
    );
  }

  function respond(res: ServerResponse, requestId: string, outcome: Outcome, tail = false): void {
    if (outcome.kind === 'invalid') {
      takeTail(requestId);
      reject(res, 'InvalidEvent', outcome.message, requestId);
      return;
    }
    // Once END and REPORT are written: the tail ends with them, as Lambda's does.
    const withTail = (headers: Record<string, string>) => {
      const result = tail ? takeTail(requestId) : undefined;
      if (result !== undefined) headers[h.logResult] = result;
      return headers;
    };
    const durationMs = outcome.kind === 'timeout' ? config.timeoutMs : outcome.durationMs;
    const billedMs = Math.max(1, Math.ceil(durationMs));
    const headers: Record<string, string> = {
      [h.requestId]: requestId,
      [h.durationMs]: durationMs.toFixed(2),
      [h.billedDurationMs]: String(billedMs),
    };
    let initDurationMs: number | undefined;
    if (outcome.kind !== 'crash' && outcome.initDurationMs !== undefined) {
      initDurationMs = outcome.initDurationMs;
      headers[h.initDurationMs] = initDurationMs.toFixed(2);
    } else if (!initReported && init?.ok && !invoker.initPerProcess) {
      initReported = true;
      initDurationMs = init.initDurationMs;
      headers[h.initDurationMs] = initDurationMs.toFixed(2);
    }
    metrics.observe(durationMs, billedMs);
    const report = {
      requestId,
      durationMs,
      billedDurationMs: billedMs,
      memorySizeMb: config.memoryMb,
      maxMemoryUsedMb:
        (outcome.kind !== 'crash' ? outcome.maxMemoryUsedMb : undefined) ?? maxMemoryUsedMb(),
      initDurationMs,
    };
    if (outcome.kind === 'timeout') {
      metrics.count('timeout');
      const message = timeoutMessage(config.timeoutMs);
      writeLine(
        timeoutLine(config.logFormat, requestId, message) +
          endAndReport(config.logFormat, { ...report, status: 'timeout' }),
        requestId,
      );
      sendError(
        res,
        'FunctionTimeout',
        { errorType: 'Sandbox.Timedout', errorMessage: message },
        withTail(headers),
      );
      // A language process that timed out has been replaced; this process is still sound.
      if (!outcome.restarted) recycle(`invocation ${requestId} timed out`);
      return;
    }
    if (outcome.kind === 'crash') {
      metrics.count('error');
      recycle('an exception escaped the handler');
      queue(endAndReport(config.logFormat, { ...report, status: 'error' }), requestId);
      sendError(res, outcome.code, outcome.body, withTail(headers));
      return;
    }
    queue(endAndReport(config.logFormat, report), requestId);
    withTail(headers);
    if (outcome.error) {
      metrics.count('error');
      sendError(res, outcome.error.code, outcome.error.body, headers);
      return;
    }
    metrics.count('success');
    if (outcome.body === undefined) {
      res.writeHead(204, headers);
      res.end();
      return;
    }
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(outcome.body));
    res.writeHead(200, headers);
    res.end(outcome.body);
  }

  function handleOther(req: IncomingMessage, res: ServerResponse): void {
    const path = req.url?.split('?')[0];
    const plain = (status: number, text: string) => {
      res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
      res.end(`${text}\n`);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      if (path === '/' || path === '/healthz' || path === '/readyz' || path === '/metrics') {
        sendError(
          res,
          'MethodNotAllowed',
          {
            errorType: 'MethodNotAllowed',
            errorMessage: `${req.method} ${path} is not supported: invoke with POST /, probe with GET`,
          },
          { allow: path === '/' ? 'POST' : 'GET' },
        );
      } else {
        sendError(res, 'NotFound', {
          errorType: 'NotFound',
          errorMessage: `no route ${req.method} ${path}: invoke with POST /`,
        });
      }
      return;
    }
    switch (path) {
      case '/healthz':
        plain(200, 'ok');
        return;
      case '/readyz':
        if (state === 'ready') plain(200, 'ready');
        else if (state === 'failed' && init && !init.ok) {
          // The handler failed to load: the error, as invocations get it, so that the platform
          // can answer invocations with it at once rather than wait for a readiness to come.
          const text = JSON.stringify({
            errorType: init.error.errorType,
            errorMessage: init.error.errorMessage,
          });
          res.writeHead(503, {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(text),
          });
          res.end(text);
        } else plain(503, `not ready: ${state} (${stateReason})`);
        return;
      case '/metrics':
        metrics.exposition().then(
          (text) => {
            res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
            res.end(text);
          },
          (err: Error) => plain(500, `metrics failed: ${err.message}`),
        );
        return;
      default:
        sendError(res, 'NotFound', {
          errorType: 'NotFound',
          errorMessage: `no route GET ${path}: invoke with POST /`,
        });
    }
  }

  /** The runtime itself failed an invocation (a bug, not the handler's doing). */
  function failed(res: ServerResponse, err: Error): void {
    if (!res.headersSent)
      sendError(res, 'ExitError', {
        errorType: 'Runtime.ExitError',
        errorMessage: `the runtime failed: ${err.message}`,
      });
    else res.destroy();
  }

  const server = createServer((req, res) => {
    if (req.method === 'POST' && (req.url === '/' || req.url?.startsWith('/?'))) {
      try {
        handleInvoke(req, res);
      } catch (err) {
        failed(res, err as Error);
      }
      return;
    }
    handleOther(req, res);
  });

  function recycle(reason: string): void {
    if (state === 'draining' || state === 'recycling') return;
    state = 'recycling';
    stateReason = reason;
    writeLine(
      `${config.logFormat === 'json' ? JSON.stringify({ time: new Date().toISOString(), type: 'platform.recycle', record: { reason } }) : `RECYCLE ${reason}: readiness off; the runtime exits once in-flight invocations end`}\n`,
    );
    // Let the response that caused it leave before deciding.
    setImmediate(checkIdle);
  }

  return {
    server,
    drain() {
      if (state === 'draining') return;
      state = 'draining';
      stateReason = 'SIGTERM';
      setImmediate(checkIdle);
    },
    recycle,
  };
}

/** What an invocation carries besides its event. */
interface Extras {
  clientContext?: ClientContext;
  /** The caller asked for the invocation's log tail. */
  tail: boolean;
}

/**
 * The client context the gateway forwards (base64 of a JSON object, as Lambda's
 * `X-Amz-Client-Context`), as the handler sees it: `client`, `custom` and `env`. A string says
 * what is wrong with it.
 */
export function decodeClientContext(
  value: string | string[] | undefined,
): ClientContext | undefined | string {
  if (value === undefined || value === '') return undefined;
  const text = Array.isArray(value) ? value[0]! : value;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(text, 'base64').toString('utf8'));
  } catch {
    parsed = undefined;
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    return `${h.clientContext} must be a base64-encoded JSON object (Lambda's client context: client, custom, env)`;
  }
  const { client, custom, env } = parsed as ClientContext;
  return { client, custom, env };
}
