/**
 * Eddy as one process: the manager with the gateway on every replica, the autoscaler (and, in a
 * cluster, the reconciler) while leading. `main.ts` (in a cluster) and `dev.ts` (the local
 * stack) differ only in what they pass here: the platform, where Functions and Secrets come
 * from, and how leadership is decided.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Authorizer } from './auth/authorizer.js';
import { createAutoscaler } from './autoscaler/autoscaler.js';
import type { LoadSource } from './autoscaler/load.js';
import type { FunctionStore, SecretReader } from './functions.js';
import { createGateway, type Gateway } from './gateway/app.js';
import { asyncInvokeVia, createEventSink } from './gateway/async.js';
import type { DeadLetterUrlOptions } from './gateway/dead-letter.js';
import { portTakenOr } from './errors.js';
import { Manager, type Elector, type Runnable } from './manager.js';
import { httpUrl, type Platform } from './platform/platform.js';
import { createJetStreamQueue, type JetStreamSettings } from './queue/jetstream.js';
import { memoryQueue, type EventQueue } from './queue/queue.js';
import { memoryCheckpoints, type CheckpointStore } from './sources/checkpoints.js';
import type { SourceContext, SourceFactory } from './sources/source.js';
import { TriggerStates } from './sources/states.js';

export interface EddyOptions {
  platform: Platform;
  store: FunctionStore;
  secrets: SecretReader;
  elector: Elector;
  log: (message: string) => void;
  /** Who may invoke and list functions on the gateway. */
  auth: Authorizer;
  /** burstScaleUp: false leaves scale-up past the first replica to the autoscaler (benches). */
  gateway: { port: number; host?: string; burstScaleUp?: boolean };
  /**
   * Where GET /metrics listens: a port of its own, so that the gateway's port (and Service)
   * does not expose them. Without it no metrics are served.
   */
  metrics?: { port: number; host?: string };
  /** Reads every gateway replica's load; by default only this process's gateway. */
  load?: (gateway: Gateway) => LoadSource;
  /** The shared caches, started once before any runnable. */
  startCaches?: (signal: AbortSignal) => Promise<void>;
  /**
   * More runnables: the reconciler in a cluster, and the Invoke API's access keys (a gateway
   * runs only those that are not leader-only).
   */
  runnables?: Runnable[];
  /** Event sources: each makes its runnables from the context (sink, states, checkpoints). */
  sources?: SourceFactory[];
  /** Where sources report each trigger's state; the reconciler reads it. */
  states?: TriggerStates;
  /** Where sources keep their progress. Default: in memory (lost on restart). */
  checkpoints?: CheckpointStore;
  /** Told where the gateway listens, once it does. */
  onListening?: (url: string) => void;
  /** Told where the metrics are (`<url>/metrics`), once they are served. */
  onMetricsListening?: (url: string) => void;
  autoscalerIntervalMs?: number;
  /** Invocations one function may hold waiting in this gateway before 429. Default 1000. */
  queueLimit?: number;
  /** Bytes of bodies and answers the gateway holds at most (429 or 503 past it). Default 64 MiB. */
  memoryBudget?: number;
  /** First delay before an asynchronous invocation is retried. Default 1 s. */
  retryBaseDelayMs?: number;
  /** Which addresses `deadLetter.url` may reach; only the local stack allows loopback. */
  deadLetterUrls?: DeadLetterUrlOptions;
  /**
   * How long a stopping gateway keeps serving after it reports not ready, so that load
   * balancers (kube-proxy) have stopped sending to it before it closes. Default 0.
   */
  drainDelayMs?: number;
  /** How long invocations in flight get to finish once the gateway stops (default 30 s). */
  drainMs?: number;
  /**
   * What runs here: everything (the default: the local stack, or one Deployment), or one side
   * of the chart's two Deployments. `controller`: the reconciler, autoscaler and leader-only
   * sources (Kinesis, schedules, the S3 notification writer). `gateway`: the invoke API, the
   * sources' intakes and the queue's consumers, with no leader.
   */
  role?: EddyRole;
  /**
   * The durable queue. Without it, accepted events wait in this process's memory (and a
   * process that stops loses the deliveries it had not finished).
   */
  jetstream?: JetStreamSettings;
  /** The pod's name, as NATS shows the connection. */
  name?: string;
}

export type EddyRole = 'all' | 'controller' | 'gateway';

export interface Eddy {
  manager: Manager;
  gateway: Gateway;
  /** What the sources were given. */
  sources: SourceContext;
  queue: EventQueue;
  /** Closes the queue's connection; after the manager has stopped. */
  close(): Promise<void>;
}

/** How long a stopping gateway lets invocations in flight finish, by default (the local stack). */
export const drainMs = 30_000;

/**
 * A gateway Deployment's drain: the longest a function may run (`timeoutSeconds` at most 900)
 * and a margin, so that a rollout never cuts an invocation that reached its replica (whose
 * caller, given a 5xx, would send it again while it still runs). The drain ends as soon as
 * nothing is in flight; the chart's terminationGracePeriodSeconds covers it.
 */
export const clusterDrainMs = (900 + 15) * 1000;

export function composeEddy(o: EddyOptions): Eddy {
  // Deliveries end after the gateway has drained, so retries in progress get their chance.
  const deliveries = new AbortController();
  const role = o.role ?? 'all';
  const gateway = createGateway({
    store: o.store,
    platform: o.platform,
    log: o.log,
    auth: o.auth,
    queueLimit: o.queueLimit,
    memoryBudget: o.memoryBudget,
    burstScaleUp: o.gateway.burstScaleUp,
    asyncInvoke: () => asyncInvokeVia(() => queue),
  });
  const sinkOptions = {
    dispatcher: gateway.dispatcher,
    store: o.store,
    metrics: gateway.metrics,
    secrets: o.secrets,
    log: o.log,
    baseDelayMs: o.retryBaseDelayMs,
    deadLetterUrls: o.deadLetterUrls,
  };
  const sink = createEventSink({ ...sinkOptions, signal: deliveries.signal });
  const jetstream = o.jetstream
    ? createJetStreamQueue({
        ...o.jetstream,
        log: o.log,
        registry: gateway.metrics.registry,
        ...(o.name ? { name: o.name } : {}),
      })
    : undefined;
  // Made once the gateway (its dispatcher and metrics) exists; the async API asks it later.
  const queue: EventQueue = jetstream ?? memoryQueue({ sink, signal: deliveries.signal });
  const serving: Runnable = {
    name: 'gateway',
    leaderOnly: false,
    async run(signal) {
      // Stopping goes in steps, each with its own signal: see below.
      const platformStop = new AbortController();
      const dispatching = new AbortController();
      await o.platform.start(platformStop.signal);
      gateway.start(dispatching.signal);
      const server = createServer((req, res) => gateway.handle(req, res));
      server.keepAliveTimeout = 65_000;
      try {
        await listen(server, o.gateway.port, o.gateway.host ?? '0.0.0.0', 'the gateway');
      } catch (err) {
        // Nothing was served: what started for serving stops, so the process can end.
        dispatching.abort();
        platformStop.abort();
        throw err;
      }
      const { address, port } = server.address() as AddressInfo;
      const url = httpUrl(address, port);
      o.log(`gateway listening on ${url}`);
      o.onListening?.(url);
      const metricsServer = o.metrics
        ? await serveMetrics(gateway, o.metrics, o.log).catch(async (err: unknown) => {
            await close(server, 0);
            dispatching.abort();
            platformStop.abort();
            throw err;
          })
        : undefined;
      if (metricsServer) o.onMetricsListening?.(metricsServer.url);
      gateway.setReady(true);
      await aborted(signal);
      // 1. Not ready: load balancers stop sending here, and asynchronous deliveries waiting for
      //    a retry end (interrupted, not dead-lettered). Invocations still arrive meanwhile.
      gateway.setReady(false);
      deliveries.abort();
      if (o.drainDelayMs) await new Promise((r) => setTimeout(r, o.drainDelayMs));
      // 2. No new invocations; those in flight finish, on replicas that still run.
      dispatching.abort();
      const drainFor = o.drainMs ?? drainMs;
      await close(server, drainFor, () => {
        // The drain has ended: invocations still open are answered, then their connections go.
        const cut = gateway.cutInFlight();
        if (cut > 0) {
          o.log(
            `${cut} invocation(s) still in flight after ${drainFor / 1000} s were answered 503 EddyShuttingDown`,
          );
        }
      });
      // Metrics until the gateway has drained: the last scrapes see its last invocations.
      if (metricsServer) await close(metricsServer.server, 1_000);
      gateway.dispatcher.close();
      // 3. Then the platform stops (locally: the replicas' processes).
      platformStop.abort();
      await o.platform.stopped;
    },
  };
  const sources: SourceContext = {
    store: o.store,
    secrets: o.secrets,
    sink,
    queue,
    states: o.states ?? new TriggerStates(),
    checkpoints: o.checkpoints ?? memoryCheckpoints(),
    metrics: gateway.metrics.registry,
    log: o.log,
    route: (path, handler, authorize) => gateway.route(path, handler, authorize),
  };
  const autoscaler = createAutoscaler({
    store: o.store,
    platform: o.platform,
    load: o.load?.(gateway) ?? (async () => [gateway.load()]),
    log: o.log,
    metrics: gateway.metrics.registry,
    ...(o.autoscalerIntervalMs !== undefined ? { intervalMs: o.autoscalerIntervalMs } : {}),
  });
  // The queue's consumers deliver what the gateways accepted; those in hand when the process
  // stops get their chance to finish (their own sink, not stopped with the gateway's retries).
  const consumers: Runnable | undefined =
    jetstream && role !== 'controller'
      ? {
          name: 'queue-consumers',
          leaderOnly: false,
          async run(signal) {
            const handing = new AbortController();
            try {
              await jetstream.consume({
                store: o.store,
                sink: createEventSink({ ...sinkOptions, signal: handing.signal }),
                metrics: gateway.metrics,
                log: o.log,
                signal,
                ...(o.retryBaseDelayMs !== undefined ? { baseDelayMs: o.retryBaseDelayMs } : {}),
              });
            } finally {
              handing.abort();
            }
          },
        }
      : undefined;
  const fromSources = (o.sources ?? []).flatMap((make) => make(sources));
  const manager = new Manager({
    elector: o.elector,
    log: o.log,
    startCaches: o.startCaches,
  }).add(
    serving,
    ...(consumers ? [consumers] : []),
    ...(role === 'gateway'
      ? // No leader here: the sources' intakes (their routes), and what serves invocations
        // (the Invoke API's access keys).
        [...(o.runnables ?? []), ...fromSources].filter((r) => !r.leaderOnly)
      : [
          {
            name: 'autoscaler',
            leaderOnly: true,
            run: (signal: AbortSignal) => autoscaler.run(signal),
          },
          ...(o.runnables ?? []),
          ...fromSources,
        ]),
  );
  return {
    manager,
    gateway,
    sources,
    queue,
    close: async () => {
      await jetstream?.close();
    },
  };
}

function listen(server: Server, port: number, host: string, listener: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const failed = (err: Error) => reject(portTakenOr(err, listener, host, port));
    server.once('error', failed);
    server.listen(port, host, () => {
      server.off('error', failed);
      resolve();
    });
  });
}

/** GET /metrics on a listener of its own; resolves once it listens. */
async function serveMetrics(
  gateway: Gateway,
  at: { port: number; host?: string },
  log: (message: string) => void,
): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => gateway.serveMetrics(req, res));
  await listen(server, at.port, at.host ?? '0.0.0.0', 'the metrics endpoint');
  const { address, port } = server.address() as AddressInfo;
  const url = httpUrl(address, port);
  log(`metrics on ${url}/metrics`);
  return { server, url };
}

/** How long answers cut at the drain's end have to leave before their connections close. */
const cutAnswersMs = 1_000;

/** Stops taking connections, lets requests in flight finish for up to `ms`, then cuts the rest. */
function close(server: Server, ms: number, cut?: () => void): Promise<void> {
  return new Promise((resolve) => {
    let last: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      if (!cut) return server.closeAllConnections();
      cut();
      server.closeIdleConnections();
      last = setTimeout(() => server.closeAllConnections(), cutAnswersMs);
    }, ms);
    server.close(() => {
      clearTimeout(timer);
      clearTimeout(last);
      resolve();
    });
    server.closeIdleConnections();
  });
}

function aborted(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) =>
    signal.addEventListener('abort', () => resolve(), { once: true }),
  );
}
