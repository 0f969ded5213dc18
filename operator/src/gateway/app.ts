/**
 * The gateway's HTTP API, on every operator replica:
 *   POST /functions/{namespace}/{name}        synchronous invocation: the runtime's answer
 *   POST /functions/{namespace}/{name}/async  202 with an id; delivered with retries and dead letters
 *   GET  /functions                           state, replicas, in flight and queued per function
 *   POST /2015-03-31/functions/{name}/invocations  Lambda's Invoke API (lambda-api.ts)
 *   POST <route>                              a source's intake (POST /sources/s3), added by it
 *   GET  /healthz, /readyz
 * and, on a listener of its own (`serveMetrics`), GET /metrics.
 * `createGateway` builds it; the caller decides where it listens.
 */
import { randomUUID } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { EddyFunction } from '../api/types.js';
import {
  authorize,
  invokeVerb,
  visibleTo,
  type Authorizer,
  type Caller,
} from '../auth/authorizer.js';
import type { FunctionStore } from '../functions.js';
import type { LoadReport } from '../autoscaler/load.js';
import { keyOf, type Platform } from '../platform/platform.js';
import {
  headers as h,
  maxPayloadBytes,
  requestIdPattern,
} from '../../../runtime/src/contract/index.js';
import { responseGone } from './caller-gone.js';
import { Dispatcher, type InvokeRequest } from './dispatcher.js';
import { MemoryBudget, registerBudgetMetrics, type Hold } from './budget.js';
import { gatewayError, GatewayError } from './errors.js';
import { GatewayMetrics } from './metrics.js';
import { createLambdaApi, lambdaApiPath } from './lambda-api.js';

/** What the gateway does with an accepted asynchronous invocation. */
/**
 * What the gateway does with an accepted asynchronous invocation: resolves (never rejects) once
 * its delivery has ended, until when the gateway counts its body against the memory budget.
 */
/**
 * Accepts an asynchronous invocation: resolves once it is accepted (with the delivery, when
 * the queue is this process's memory), rejects with a GatewayError when it was not.
 */
export type AsyncInvoke = (
  fn: EddyFunction,
  req: InvokeRequest,
  acceptedAt: Date,
) => Promise<{ delivered?: Promise<unknown> }>;

export interface GatewayDeps {
  store: FunctionStore;
  platform: Platform;
  log: (message: string) => void;
  /**
   * Who may invoke and list: asked before a function's body is read and for every listing
   * (`noAuth` lets everyone, for the local stack).
   */
  auth: Authorizer;
  /** Delivers asynchronous invocations (retries, dead letters); given the dispatcher. */
  asyncInvoke?: (dispatcher: Dispatcher, metrics: GatewayMetrics) => AsyncInvoke;
  queueLimit?: number;
  /** See DispatcherOptions.burstScaleUp. */
  burstScaleUp?: boolean;
  /** Bytes of bodies and answers the gateway holds at most; default 64 MiB. */
  memoryBudget?: number;
}

export interface FunctionState {
  namespace: string;
  name: string;
  /** Ready: a replica takes invocations; Activating: one is starting; ScaledToZero: none runs. */
  state: 'Ready' | 'Activating' | 'ScaledToZero';
  replicas: { desired: number; ready: number };
  inFlight: number;
  queued: number;
  concurrencySeconds: number;
  requests: number;
  /** Replicas a burst asked for that have yet to serve: the autoscaler keeps them. */
  burstReplicas?: number;
}

export interface Gateway {
  handle(req: IncomingMessage, res: ServerResponse): void;
  /** The metrics listener's one endpoint, GET /metrics: a port of its own, not the gateway's. */
  serveMetrics(req: IncomingMessage, res: ServerResponse): void;
  dispatcher: Dispatcher;
  metrics: GatewayMetrics;
  /** The bytes of bodies and answers this gateway holds. */
  budget: MemoryBudget;
  /** The counters the autoscaler reads, by function. */
  load(): LoadReport;
  functions(): FunctionState[];
  /** Starts following the platform; stops (queued invocations get 503) when `signal` aborts. */
  start(signal: AbortSignal): void;
  /** /readyz answers 200 once set. */
  setReady(ready: boolean): void;
  /**
   * Answers every invocation still waiting for its function with 503 `EddyShuttingDown` (the
   * drain has ended): callers get an answer rather than a closed connection. Returns how many.
   */
  cutInFlight(): number;
  /**
   * Serves `POST path` (a source's intake): the handler's answer, or its GatewayError.
   * `authorize` runs on the headers before the body is read, and throws to refuse.
   */
  route(path: string, handler: RouteHandler, authorize?: (req: IncomingMessage) => void): void;
}

/** Answers one POST to a route; throws a GatewayError to refuse it. */
export type RouteHandler = (
  req: IncomingMessage,
  body: Buffer,
  requestId: string,
) => Promise<{ status: number; body: unknown }>;

/** What one request holds of the memory budget, and when it lets go. */
interface Held {
  hold: Hold;
  /** An asynchronous delivery now holds the body: let go once it has ended. */
  keep(delivery: Promise<unknown>): void;
  /** The request's handling has ended. */
  done(): void;
}

const functionPath = /^\/functions\/([^/]+)\/([^/]+?)(\/async)?\/?$/;
/** Headers a caller's CloudEvent (binary mode) or body type travels in. */
const forwarded = (name: string) => name === 'content-type' || name.startsWith('ce-');
const hopByHop = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length']);

export function createGateway(deps: GatewayDeps): Gateway {
  let ready = false;
  const routes = new Map<
    string,
    { handler: RouteHandler; authorize?: (req: IncomingMessage) => void }
  >();
  const functions = (): FunctionState[] => {
    const load = dispatcher.load();
    return deps.store.list().map((fn) => {
      const key = keyOf(fn);
      const counts = deps.platform.counts(key);
      const l = load[key] ?? { inFlight: 0, queued: 0, concurrencySeconds: 0, requests: 0 };
      return {
        namespace: fn.metadata.namespace,
        name: fn.metadata.name,
        state: counts.ready > 0 ? 'Ready' : counts.desired > 0 ? 'Activating' : 'ScaledToZero',
        replicas: counts,
        ...l,
      };
    });
  };
  const budget = new MemoryBudget(deps.memoryBudget);
  /**
   * The bytes one request holds: its body, then its answer. Given back once both its answer is
   * written (or its caller is gone) and its invocation, or asynchronous delivery, has ended.
   */
  const holdFor = (res: ServerResponse): Held => {
    const hold = budget.hold();
    let ends = 0;
    let delivery: Promise<unknown> | undefined;
    const end = () => {
      if (++ends === 2) hold.release();
    };
    res.once('close', end);
    return {
      hold,
      keep: (p) => {
        delivery = p;
      },
      done: () => {
        if (delivery) void delivery.finally(end);
        else end();
      },
    };
  };
  const metrics = new GatewayMetrics({
    snapshot: () =>
      functions().map((f) => ({
        namespace: f.namespace,
        name: f.name,
        desired: f.replicas.desired,
        ready: f.replicas.ready,
        inFlight: f.inFlight,
        queued: f.queued,
      })),
  });
  registerBudgetMetrics(budget, metrics.registry);
  const dispatcher = new Dispatcher({
    platform: deps.platform,
    metrics,
    log: deps.log,
    queueLimit: deps.queueLimit,
    budget,
    burstScaleUp: deps.burstScaleUp,
  });
  const asyncInvoke = deps.asyncInvoke?.(dispatcher, metrics);

  /** The function; its 404 names only the functions the caller may see. */
  const find = async (caller: Caller, namespace: string, name: string): Promise<EddyFunction> => {
    const fn = deps.store.get(namespace, name);
    if (fn) return fn;
    const others = (
      await visibleTo(
        caller,
        deps.store.list(namespace).map((f) => ({ namespace, name: f.metadata.name })),
      )
    )
      .map((f) => f.name)
      .sort();
    throw gatewayError(
      'FunctionNotFound',
      others.length > 0
        ? `no function ${name} in namespace ${namespace}; it has: ${others.join(', ')}`
        : `no function ${name} in namespace ${namespace}, which has no functions: kubectl apply one first`,
    );
  };

  /** Invocations not answered yet, and how to answer each with an error. */
  const open = new Map<ServerResponse, (err: GatewayError) => void>();
  /** Requests not yet answered: going not ready, their answers close their connections too. */
  const answering = new Set<ServerResponse>();

  const lambdaApi = createLambdaApi({
    auth: deps.auth,
    find,
    namespacesOf: (name) =>
      deps.store
        .list()
        .filter((f) => f.metadata.name === name)
        .map((f) => f.metadata.namespace),
    readBody: (req, hold) =>
      readBody(req, hold, (bytes) =>
        gatewayError('Throttled', `${budget.refusal(bytes)}: retry in a moment`, 1),
      ),
    holdFor,
    dispatcher,
    asyncInvoke,
    log: deps.log,
    open,
  });

  async function invoke(
    req: IncomingMessage,
    res: ServerResponse,
    requestId: string,
    m: RegExpExecArray,
    held: Held,
  ) {
    const namespace = decodePart(m[1]!);
    const name = decodePart(m[2]!);
    const isAsync = m[3] !== undefined;
    // Before anything of the function is looked at or the body read.
    const caller = await authorize(deps.auth, req.headers, { verb: invokeVerb, namespace, name });
    const fn = await find(caller, namespace, name);
    const body = await readBody(req, held.hold, (bytes) =>
      gatewayError('Throttled', `${budget.refusal(bytes)}: retry in a moment`, 1),
    );
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (typeof v === 'string' && forwarded(k)) headers[k] = v;
    }
    if (isAsync) {
      if (!asyncInvoke)
        throw gatewayError('NotFound', 'asynchronous invocation is not enabled here');
      // 202 once the queue has it: durably, when the queue is JetStream.
      const { delivered } = await asyncInvoke(
        fn,
        { requestId, body, headers, trigger: 'async' },
        new Date(),
      );
      if (delivered) held.keep(delivered);
      send(
        res,
        202,
        { 'content-type': 'application/json', [h.requestId]: requestId },
        JSON.stringify({ requestId }),
      );
      return;
    }
    const answer = await dispatcher.invoke(fn, {
      requestId,
      body,
      headers,
      trigger: 'invoke',
      signal: responseGone(res),
    });
    const out: Record<string, string> = {};
    for (const [k, v] of Object.entries(answer.headers)) if (!hopByHop.has(k)) out[k] = v;
    // The answer is held until the caller has it; its handler has run, so it is always taken.
    held.hold.force(answer.body.length);
    send(res, answer.status, out, answer.body);
  }

  function handle(req: IncomingMessage, res: ServerResponse): void {
    // Draining: each answer closes its connection, so that callers reconnect to another replica
    // (and the drain ends once the last answer has left, not when idle connections time out).
    if (!ready) res.setHeader('connection', 'close');
    else {
      answering.add(res);
      res.once('close', () => answering.delete(res));
    }
    const given = firstHeader(req.headers[h.requestId]);
    // The ids the runtime takes (it would make up its own for others, and the two would differ).
    const requestId = given !== undefined && requestIdPattern.test(given) ? given : randomUUID();
    const path = (req.url ?? '/').split('?')[0]!;
    const fail = (err: unknown) => {
      // The caller went away (and with it, the invocation): nobody to answer, nothing to report.
      if (res.destroyed) return;
      const e =
        err instanceof GatewayError
          ? err
          : (() => {
              deps.log(
                `${req.method} ${path}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
              );
              return new GatewayError('ExitError', 'the gateway failed to handle the request');
            })();
      const headers: Record<string, string> = {
        'content-type': 'application/json',
        [h.requestId]: requestId,
      };
      if (e.retryAfterSeconds !== undefined) headers['retry-after'] = String(e.retryAfterSeconds);
      if (e.status === 401) headers['www-authenticate'] = 'Bearer';
      if (e.functionError) headers[h.functionError] = 'Unhandled';
      if (!res.headersSent) send(res, e.status, headers, JSON.stringify(e.body()));
      else res.destroy();
    };
    try {
      if (lambdaApiPath.test(path)) {
        lambdaApi.handle(req, res, requestId);
        return;
      }
      const m = functionPath.exec(path);
      if (m) {
        if (req.method !== 'POST') {
          throw gatewayError('MethodNotAllowed', `${req.method} ${path}: invoke with POST`);
        }
        const held = holdFor(res);
        open.set(res, fail);
        invoke(req, res, requestId, m, held)
          .catch(fail)
          .finally(() => {
            open.delete(res);
            held.done();
          });
        return;
      }
      const route = routes.get(path);
      if (route) {
        if (req.method !== 'POST') {
          throw gatewayError('MethodNotAllowed', `${req.method} ${path}: use POST`);
        }
        route.authorize?.(req);
        const held = holdFor(res);
        readBody(req, held.hold, (bytes) =>
          gatewayError('GatewayBusy', `${budget.refusal(bytes)}: post it again in a moment`, 1),
        )
          .then((body) => route.handler(req, body, requestId))
          .then((answer) =>
            send(
              res,
              answer.status,
              { 'content-type': 'application/json', [h.requestId]: requestId },
              JSON.stringify(answer.body),
            ),
          )
          .catch(fail)
          .finally(() => held.done());
        return;
      }
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        throw gatewayError(
          'NotFound',
          `${req.method} ${path}: no such endpoint; invoke with POST /functions/{namespace}/{name}`,
        );
      }
      switch (path) {
        case '/healthz':
          send(res, 200, { 'content-type': 'text/plain' }, 'ok\n');
          return;
        case '/readyz':
          send(
            res,
            ready ? 200 : 503,
            { 'content-type': 'text/plain' },
            ready ? 'ready\n' : 'starting\n',
          );
          return;
        case '/functions':
          // Only the functions the caller may get (the autoscaler, with the operator's token, all).
          deps.auth
            .authenticate(req.headers)
            .then((caller) => visibleTo(caller, functions()))
            .then((visible) =>
              send(
                res,
                200,
                { 'content-type': 'application/json' },
                JSON.stringify({ functions: visible }),
              ),
            )
            .catch(fail);
          return;
        case '/metrics':
          throw gatewayError(
            'NotFound',
            `${path}: metrics are served on a port of their own (EDDY_METRICS_PORT, 9090 unless set; in a cluster the <release>-metrics Service), not on the gateway's`,
          );
        default:
          throw gatewayError(
            'NotFound',
            `${path}: no such endpoint; invoke with POST /functions/{namespace}/{name}`,
          );
      }
    } catch (err) {
      fail(err);
    }
  }

  function serveMetrics(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0]!;
    const json = { 'content-type': 'application/json' };
    if (path !== '/metrics' || (req.method !== 'GET' && req.method !== 'HEAD')) {
      const e = gatewayError(
        'NotFound',
        `${req.method} ${path}: this port serves only GET /metrics; invoke functions on the gateway's port`,
      );
      send(res, e.status, json, JSON.stringify(e.body()));
      return;
    }
    metrics.registry
      .metrics()
      .then((text) => send(res, 200, { 'content-type': metrics.registry.contentType }, text))
      .catch((err: unknown) => {
        deps.log(
          `GET /metrics: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
        );
        const e = new GatewayError('ExitError', 'the gateway failed to collect its metrics');
        if (!res.headersSent) send(res, e.status, json, JSON.stringify(e.body()));
        else res.destroy();
      });
  }

  return {
    handle,
    serveMetrics,
    dispatcher,
    metrics,
    budget,
    load: () => dispatcher.load(),
    functions,
    start(signal) {
      dispatcher.start(signal);
      const unsubscribe = deps.store.onChange((fn, deleted) => {
        if (!deleted) return;
        dispatcher.forget(keyOf(fn));
        // Its series go with it: a deleted function does not linger on dashboards and in memory.
        metrics
          .forget(fn.metadata.namespace, fn.metadata.name)
          .catch((err: unknown) =>
            deps.log(`forgetting the metrics of ${keyOf(fn)}: ${String(err)}`),
          );
      });
      signal.addEventListener('abort', unsubscribe, { once: true });
    },
    setReady(r) {
      ready = r;
      if (ready) return;
      for (const res of answering) if (!res.headersSent) res.setHeader('connection', 'close');
      answering.clear();
    },
    cutInFlight() {
      const cut = [...open.values()];
      open.clear();
      for (const answer of cut) {
        answer(
          gatewayError(
            'ShuttingDown',
            'the gateway stopped before the function answered: the invocation may have run; retry it if it may run twice',
            1,
          ),
        );
      }
      return cut.length;
    },
    route(path, handler, authorize) {
      routes.set(path, { handler, ...(authorize ? { authorize } : {}) });
    },
  };
}

function decodePart(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    throw gatewayError('NotFound', `${part}: not a namespace or function name (bad %-escape)`);
  }
}

function firstHeader(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function send(
  res: ServerResponse,
  status: number,
  headers: Record<string, string>,
  body: string | Buffer,
): void {
  const buf = typeof body === 'string' ? Buffer.from(body) : body;
  res.writeHead(status, { ...headers, 'content-length': String(buf.length) });
  res.end(buf);
}

/**
 * The body, up to the 6 MB payload limit; past it, 413 (the rest is read and dropped). Its bytes
 * are reserved in `hold` before they are kept (the declared length at once, else as they
 * arrive); what does not fit is read and dropped and the request refused with `overBudget`.
 */
function readBody(
  req: IncomingMessage,
  hold: Hold,
  overBudget: (bytes: number) => GatewayError,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    const tooLarge = () =>
      gatewayError(
        'PayloadTooLarge',
        `the event is larger than ${maxPayloadBytes} bytes (6 MB, Lambda's limit): put large data in a bucket and send its key`,
      );
    let refusal: GatewayError | undefined =
      declared > maxPayloadBytes
        ? tooLarge()
        : declared > 0 && !hold.take(declared)
          ? overBudget(declared)
          : undefined;
    // With a declared length the body is copied into one buffer as it arrives: no second copy.
    const whole = declared > 0 && !refusal ? Buffer.allocUnsafe(declared) : undefined;
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      if (refusal) return;
      const end = size + c.length;
      if (end > maxPayloadBytes) refusal = tooLarge();
      else if (end > hold.bytes && !hold.take(end - hold.bytes)) refusal = overBudget(end);
      else if (whole) c.copy(whole, size);
      else chunks.push(c);
      size = end;
      if (refusal) chunks.length = 0;
    });
    req.on('end', () => {
      if (refusal) return reject(refusal);
      // The declared length is what the parser reads, so the buffer is full.
      hold.shrinkTo(size);
      resolve(whole ?? Buffer.concat(chunks, size));
    });
    req.on('error', reject);
    // A caller gone before the end: nothing to answer, and nothing more to hold.
    req.on('close', () => {
      if (!req.complete) reject(new Error('the caller went away before the body was read'));
    });
  });
}
