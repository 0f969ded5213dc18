/**
 * The gateway's metrics: the numbers the Grafana dashboard reads. One Registry per gateway
 * (tests start many). Gauges of replicas, in-flight and queued work are read when scraped.
 */
import {
  Counter,
  Gauge,
  Histogram,
  Registry,
  collectDefaultMetrics,
  type LabelValues,
} from 'prom-client';

/** How an invocation ended, as counted in eddy_function_invocations_total. */
/** `cancelled`: the caller went away before the answer (the handler may still have run). */
export type InvocationOutcome =
  'success' | 'error' | 'timeout' | 'throttled' | 'invalid' | 'unavailable' | 'cancelled';

/** 1 ms to 900 s (Lambda's longest timeout). */
const durationBuckets = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
  900,
];
/** Activation: 10 ms to the 120 s default timeout and beyond. */
const activationBuckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

interface Snapshot {
  namespace: string;
  name: string;
  desired: number;
  ready: number;
  inFlight: number;
  queued: number;
}

export interface FunctionGaugeSource {
  /** Per function: replicas desired and ready, invocations in flight and queued. */
  snapshot(): Snapshot[];
}

/** One function's metrics, bound to its labels once. */
export interface FunctionMetrics {
  duration: { observe(seconds: number): void };
  activation: { observe(seconds: number): void };
  coldStarts: { inc(): void };
  billedGbSeconds: { inc(value: number): void };
}

export class GatewayMetrics {
  // Bound children, so the invocation path does not hash label sets on every call.
  private readonly perFunction = new Map<string, FunctionMetrics>();
  private readonly invocationChildren = new Map<string, { inc(): void }>();

  readonly registry = new Registry();
  readonly invocations: Counter<'namespace' | 'function' | 'trigger' | 'outcome'>;
  readonly duration: Histogram<'namespace' | 'function'>;
  readonly coldStarts: Counter<'namespace' | 'function'>;
  readonly activation: Histogram<'namespace' | 'function'>;
  readonly billedGbSeconds: Counter<'namespace' | 'function'>;
  readonly retries: Counter<'namespace' | 'function' | 'trigger'>;
  readonly deadLetters: Counter<'namespace' | 'function' | 'trigger' | 'outcome'>;
  readonly interrupted: Counter<'namespace' | 'function' | 'trigger'>;

  constructor(source: FunctionGaugeSource) {
    const registers = [this.registry];
    this.invocations = new Counter({
      name: 'eddy_function_invocations_total',
      help: 'Invocations (each attempt) by trigger and outcome.',
      labelNames: ['namespace', 'function', 'trigger', 'outcome'],
      registers,
    });
    this.duration = new Histogram({
      name: 'eddy_function_duration_seconds',
      help: 'Handler duration, as the runtime reports it (x-eddy-duration-ms).',
      labelNames: ['namespace', 'function'],
      buckets: durationBuckets,
      registers,
    });
    this.coldStarts = new Counter({
      name: 'eddy_function_cold_starts_total',
      help: 'Invocations answered by a replica that had just started (its first).',
      labelNames: ['namespace', 'function'],
      registers,
    });
    this.activation = new Histogram({
      name: 'eddy_function_activation_seconds',
      help: 'Time an invocation was held while its function had no ready replica.',
      labelNames: ['namespace', 'function'],
      buckets: activationBuckets,
      registers,
    });
    this.billedGbSeconds = new Counter({
      name: 'eddy_function_billed_gb_seconds_total',
      help: 'Billed duration times memory in GB: the pay-per-use meter.',
      labelNames: ['namespace', 'function'],
      registers,
    });
    this.retries = new Counter({
      name: 'eddy_function_retries_total',
      help: 'Asynchronous invocations retried after a failed attempt.',
      labelNames: ['namespace', 'function', 'trigger'],
      registers,
    });
    this.deadLetters = new Counter({
      name: 'eddy_function_dead_letters_total',
      help: 'Events whose retries were spent: sent to the dead letter, or dropped for want of one.',
      labelNames: ['namespace', 'function', 'trigger', 'outcome'],
      registers,
    });
    this.interrupted = new Counter({
      name: 'eddy_queue_interrupted_total',
      help: 'Deliveries of queued events cut short unfinished (the gateway stopping, or a dead letter failing): with NATS JetStream they are delivered again, in memory they are lost.',
      labelNames: ['namespace', 'function', 'trigger'],
      registers,
    });
    new Gauge({
      name: 'eddy_function_replicas',
      help: 'Replicas desired (asked of the platform) and ready.',
      labelNames: ['namespace', 'function', 'state'],
      registers,
      collect() {
        this.reset();
        for (const f of source.snapshot()) {
          this.set({ namespace: f.namespace, function: f.name, state: 'desired' }, f.desired);
          this.set({ namespace: f.namespace, function: f.name, state: 'ready' }, f.ready);
        }
      },
    });
    const perFunction = (name: string, help: string, value: (f: Snapshot) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['namespace', 'function'],
        registers,
        collect() {
          this.reset();
          for (const f of source.snapshot())
            this.set({ namespace: f.namespace, function: f.name }, value(f));
        },
      });
    perFunction(
      'eddy_function_in_flight',
      'Invocations being answered by replicas, as this gateway sees them.',
      (f) => f.inFlight,
    );
    perFunction(
      'eddy_function_queued',
      'Invocations waiting for a replica (at zero, or throttled), in this gateway.',
      (f) => f.queued,
    );
    collectDefaultMetrics({ register: this.registry, prefix: 'eddy_gateway_' });
  }

  of(namespace: string, name: string): FunctionMetrics {
    const key = `${namespace}/${name}`;
    let m = this.perFunction.get(key);
    if (!m) {
      const labels = { namespace, function: name };
      m = {
        duration: this.duration.labels(labels),
        activation: this.activation.labels(labels),
        coldStarts: this.coldStarts.labels(labels),
        billedGbSeconds: this.billedGbSeconds.labels(labels),
      };
      this.perFunction.set(key, m);
    }
    return m;
  }

  /**
   * Removes every series labelled with this function (a deleted Function's) from every metric of
   * the registry, the sources' included. The gauges read when scraped follow the Functions anyway.
   */
  async forget(namespace: string, name: string): Promise<void> {
    const key = `${namespace}/${name}`;
    this.perFunction.delete(key);
    for (const k of this.invocationChildren.keys()) {
      if (k.startsWith(`${key}\u0000`)) this.invocationChildren.delete(k);
    }
    for (const { name: metricName } of this.registry.getMetricsAsArray()) {
      const metric = this.registry.getSingleMetric(metricName);
      if (!metric) continue;
      const removed = new Set<string>();
      for (const { labels } of (await metric.get()).values) {
        if (labels.namespace !== namespace || labels.function !== name) continue;
        // A histogram's buckets and a summary's quantiles are parts of one series.
        const { le: _le, quantile: _quantile, ...series } = labels;
        const id = JSON.stringify(series);
        if (removed.has(id)) continue;
        removed.add(id);
        metric.remove(series as LabelValues<string>);
      }
    }
  }

  invocation(namespace: string, name: string, trigger: string, outcome: InvocationOutcome): void {
    const key = `${namespace}/${name}\u0000${trigger}\u0000${outcome}`;
    let child = this.invocationChildren.get(key);
    if (!child) {
      child = this.invocations.labels({ namespace, function: name, trigger, outcome });
      this.invocationChildren.set(key, child);
    }
    child.inc();
  }
}
