/**
 * Every request the operator makes to the Kubernetes API has a deadline, as client-go gives each
 * request a context with one: an API server (or the network to it) that stops answering fails
 * the call within the deadline instead of holding a reconcile, a lease renewal, a scale call or
 * an activation forever. One KubeConfig patch covers every API client made from it (typed APIs
 * and KubernetesObjectApi alike: all are made by `makeApiClient`), and `boundedWatch` covers the
 * informers' watches, which are long-lived by design and bounded differently.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  IsomorphicFetchHttpLibrary,
  Observable,
  ResponseContext,
  ServerConfiguration,
  Watch,
  createConfiguration,
  wrapHttpLibrary,
  type ApiConstructor,
  type ApiType,
  type ConfigurationOptions,
  type KubeConfig,
  type PromiseHttpLibrary,
  type RequestContext,
} from '@kubernetes/client-node';
import { ApiRequestAbandoned, ApiRequestTimeout } from './errors.js';

/** The deadline of one API request unless the operator's settings say otherwise. */
export const defaultRequestTimeoutMs = 10_000;

/**
 * How long a watch may stay open: the API server ends it after a random time between this and
 * twice this (its `timeoutSeconds`, as client-go asks for), and the informer watches again from
 * where it was, without listing. A watch that the server has not ended `watchGraceMs` after that
 * is stalled: it is cut and the informer restarts it. One operator's few watches can afford a
 * new request every minute or two (client-go's 5 to 10 minutes are sized for a cluster's
 * thousands of clients), and a cache over a connection that stalled silently is then stale for
 * at most about two and a half minutes.
 */
export const defaultWatchSeconds = 60;
const defaultWatchGraceMs = 15_000;

const patched = new WeakMap<KubeConfig, number>();

/**
 * Gives every API request of clients made from `kc` a deadline of `timeoutMs` (the first call
 * for a KubeConfig decides it), covering the response's headers and its body. A caller that
 * needs a shorter one passes `withSignal(signal)` as the call's options.
 */
export function withRequestDeadlines(
  kc: KubeConfig,
  timeoutMs = defaultRequestTimeoutMs,
): KubeConfig {
  if (patched.has(kc)) return kc;
  patched.set(kc, timeoutMs);
  kc.makeApiClient = clientMaker(kc, timeoutMs);
  return kc;
}

/**
 * `kc` for work that must stop with `signal`: every API call of clients made from the result is
 * abandoned when `signal` aborts (as well as at its deadline). A leader's reconciler uses one, so
 * that a leader that steps down has no call of its left waiting to be written afterwards.
 */
export function boundTo(kc: KubeConfig, signal: AbortSignal): KubeConfig {
  const timeoutMs = requestTimeoutOf(kc);
  // Everything else (credentials, the shared agent, watches) is kc's own, through the prototype.
  const bound = Object.create(kc) as KubeConfig;
  bound.makeApiClient = clientMaker(kc, timeoutMs, signal);
  patched.set(bound, timeoutMs);
  return bound;
}

/** What KubeConfig.makeApiClient does, with the deadline's HTTP library in place of the default. */
function clientMaker(kc: KubeConfig, timeoutMs: number, signal?: AbortSignal) {
  const http = wrapHttpLibrary(new DeadlineHttpLibrary(timeoutMs, signal));
  return <T extends ApiType>(apiClientType: ApiConstructor<T>): T => {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('the kubeconfig names no current cluster');
    return new apiClientType(
      createConfiguration({
        baseServer: new ServerConfiguration(cluster.server, {}),
        authMethods: { default: kc },
        httpApi: http,
      }),
    );
  };
}

/** The request deadline of `kc`'s clients (the default if it has none of its own). */
export function requestTimeoutOf(kc: KubeConfig): number {
  return patched.get(kc) ?? defaultRequestTimeoutMs;
}

/**
 * Call options that abort one API call when `signal` aborts, within the client's own deadline:
 * `api.readNamespacedLease(params, withSignal(signal))`. Adds to `options`' middleware, if any.
 */
export function withSignal(
  signal: AbortSignal,
  options?: ConfigurationOptions,
): ConfigurationOptions {
  return {
    ...options,
    middleware: [
      ...((options?.middleware ?? []) as unknown[]),
      {
        // The typed APIs take the Observable form of middleware.
        pre: (context: RequestContext) => {
          const own = context.getSignal();
          context.setSignal(own ? AbortSignal.any([own, signal]) : signal);
          return new Observable(Promise.resolve(context));
        },
        post: (response: ResponseContext) => new Observable(Promise.resolve(response)),
      },
    ],
    middlewareMergeStrategy: 'append',
  } as unknown as ConfigurationOptions;
}

class DeadlineHttpLibrary implements PromiseHttpLibrary {
  private readonly inner = new IsomorphicFetchHttpLibrary();

  constructor(
    private readonly timeoutMs: number,
    private readonly bound?: AbortSignal,
  ) {}

  async send(request: RequestContext): Promise<ResponseContext> {
    // A timer cleared once the body is in, not AbortSignal.timeout: that one lives for the whole
    // deadline, and with it the request and its answer (about 20 MB more at 1,000 Functions).
    const timer = new AbortController();
    const pending = setTimeout(
      () => timer.abort(new DOMException('the request deadline passed', 'TimeoutError')),
      this.timeoutMs,
    );
    pending.unref();
    const settled = () => clearTimeout(pending);
    const deadline = timer.signal;
    const own = request.getSignal();
    const signals = [deadline, ...(own ? [own] : []), ...(this.bound ? [this.bound] : [])];
    request.setSignal(signals.length > 1 ? AbortSignal.any(signals) : deadline);
    const named = (err: unknown) => {
      const method = request.getHttpMethod();
      const path = pathOf(request.getUrl());
      if (this.bound?.aborted) return new ApiRequestAbandoned(method, path);
      if (deadline.aborted && !own?.aborted)
        return new ApiRequestTimeout(method, path, this.timeoutMs);
      return err;
    };
    try {
      let response = await this.inner.send(request).toPromise();
      // The API server asks for another try (429 from its priority and fairness queues, or a 5xx
      // with Retry-After while it starts): as client-go does, after the wait it names, up to
      // maxRetries times, all within the one deadline. The request was not taken, so a create is
      // as safe to send again as a read.
      for (let retries = 0; retries < maxRetries; retries++) {
        const waitMs = retryAfterMs(response);
        if (waitMs === undefined) break;
        await response.body.text().catch(() => undefined);
        await sleep(waitMs, undefined, { signal: request.getSignal() });
        response = await this.inner.send(request).toPromise();
      }
      // The body arrives after the headers; the same deadline bounds it.
      return new ResponseContext(response.httpStatusCode, response.headers, {
        text: () =>
          response.body
            .text()
            .catch((err: unknown) => {
              throw named(err);
            })
            .finally(settled),
        binary: () =>
          response.body
            .binary()
            .catch((err: unknown) => {
              throw named(err);
            })
            .finally(settled),
      });
    } catch (err) {
      settled();
      throw named(err);
    }
  }
}

/** How many times one request is sent again when the API server asks for it (client-go's). */
const maxRetries = 10;

/** The wait the API server asks for before another try, or undefined for an answer to keep. */
function retryAfterMs(response: ResponseContext): number | undefined {
  const status = response.httpStatusCode;
  if (status !== 429 && (status < 500 || status > 599)) return undefined;
  const header = response.headers['retry-after'];
  if (header === undefined || !/^\d+$/.test(header.trim())) return undefined;
  return Number(header.trim()) * 1000;
}

function pathOf(url: string): string {
  try {
    return new URL(url).pathname;
  } catch {
    return url;
  }
}

export interface BoundedWatchOptions {
  /** The deadline for the watch's response headers; the client's request deadline by default. */
  connectTimeoutMs?: number;
  /** The server ends the watch after a random time between this and twice this. */
  watchSeconds?: number;
  /** How long after that a watch the server has not ended is cut as stalled. */
  graceMs?: number;
}

type WatchCallback = (phase: string, apiObj: unknown, watchObj?: unknown) => void;
type WatchDone = (err: unknown) => void;

/**
 * A Watch for client-node's ListWatch whose every watch has a bound: its response headers must
 * arrive within the request deadline, the API server is asked to end it (`timeoutSeconds`, with
 * bookmarks so the informer resumes from the latest resourceVersion without a relist), and one
 * the server has not ended by then plus a grace is cut, so the informer reports an error and is
 * restarted. Without this a watch over a connection that stalled stays silent forever.
 */
export function boundedWatch(kc: KubeConfig, o: BoundedWatchOptions = {}): Watch {
  const connectTimeoutMs = o.connectTimeoutMs ?? requestTimeoutOf(kc);
  const watchSeconds = o.watchSeconds ?? defaultWatchSeconds;
  const graceMs = o.graceMs ?? defaultWatchGraceMs;
  // Watch reads only these two of its KubeConfig; node-fetch's `timeout` bounds the wait for the
  // response's headers (the stream that follows is bounded below).
  const config = {
    getCurrentCluster: () => kc.getCurrentCluster(),
    applyToFetchOptions: async (opts: object) => ({
      ...(await kc.applyToFetchOptions(opts)),
      timeout: connectTimeoutMs,
    }),
  } as unknown as KubeConfig;
  const inner = new Watch(config);
  const bounded = {
    async watch(
      path: string,
      queryParams: Record<string, unknown>,
      callback: WatchCallback,
      done: WatchDone,
    ): Promise<AbortController> {
      const timeoutSeconds = watchSeconds + Math.floor(Math.random() * watchSeconds);
      let ended = false;
      let stalled = false;
      let timer: NodeJS.Timeout | undefined;
      const controller = await inner.watch(
        path,
        { ...queryParams, timeoutSeconds, allowWatchBookmarks: true },
        callback,
        (err: unknown) => {
          ended = true;
          clearTimeout(timer);
          done(
            stalled
              ? new Error(
                  `the watch of ${path} was not ended by the API server within ${timeoutSeconds} s and ${graceMs} ms: the connection is stalled`,
                )
              : err,
          );
        },
      );
      if (!ended) {
        timer = setTimeout(
          () => {
            stalled = true;
            controller.abort();
          },
          timeoutSeconds * 1000 + graceMs,
        );
        timer.unref();
      }
      return controller;
    },
  };
  return bounded as unknown as Watch;
}
