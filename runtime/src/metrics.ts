/**
 * The runtime's metrics. The invocation path only bumps numbers here; the exposition text is
 * built when Prometheus scrapes. Node's default metrics come from prom-client, loaded on the
 * first scrape so that it costs nothing at cold start.
 */

export type Outcome = 'success' | 'error' | 'timeout' | 'throttled';
const outcomes: Outcome[] = ['success', 'error', 'timeout', 'throttled'];

/** 1 ms to 900 s (Lambda's longest timeout), roughly 1-2.5-5 per decade. */
export const durationBuckets = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
  900,
];

interface PromRegistry {
  metrics(): Promise<string>;
}

export class RuntimeMetrics {
  private readonly invocations = new Map<Outcome, number>(outcomes.map((o) => [o, 0]));
  private readonly bucketCounts = new Array<number>(durationBuckets.length).fill(0);
  private durationCount = 0;
  private durationSum = 0;
  private billedSecondsTotal = 0;
  inFlight = 0;
  initDurationSeconds: number | undefined;
  private registry: Promise<PromRegistry> | undefined;
  private readonly labels: string;

  constructor(private readonly constLabels: { namespace: string; function: string }) {
    this.labels = `namespace="${escapeLabel(constLabels.namespace)}",function="${escapeLabel(constLabels.function)}"`;
  }

  count(outcome: Outcome): void {
    this.invocations.set(outcome, (this.invocations.get(outcome) ?? 0) + 1);
  }

  /** One invocation's duration and billed duration, in ms. */
  observe(durationMs: number, billedMs: number): void {
    const seconds = durationMs / 1000;
    for (let i = 0; i < durationBuckets.length; i++) {
      if (seconds <= durationBuckets[i]!) {
        this.bucketCounts[i]!++;
        break;
      }
    }
    this.durationCount++;
    this.durationSum += seconds;
    this.billedSecondsTotal += billedMs / 1000;
  }

  /** The Prometheus text exposition: the runtime's metrics, then Node's defaults. */
  async exposition(): Promise<string> {
    const l = this.labels;
    const lines: string[] = [
      '# HELP eddy_runtime_invocations_total Invocations by outcome.',
      '# TYPE eddy_runtime_invocations_total counter',
      ...outcomes.map(
        (o) => `eddy_runtime_invocations_total{${l},outcome="${o}"} ${this.invocations.get(o)}`,
      ),
      '# HELP eddy_runtime_invocation_duration_seconds Handler duration of invocations.',
      '# TYPE eddy_runtime_invocation_duration_seconds histogram',
    ];
    let cumulative = 0;
    durationBuckets.forEach((le, i) => {
      cumulative += this.bucketCounts[i]!;
      lines.push(`eddy_runtime_invocation_duration_seconds_bucket{${l},le="${le}"} ${cumulative}`);
    });
    lines.push(
      `eddy_runtime_invocation_duration_seconds_bucket{${l},le="+Inf"} ${this.durationCount}`,
      `eddy_runtime_invocation_duration_seconds_sum{${l}} ${this.durationSum}`,
      `eddy_runtime_invocation_duration_seconds_count{${l}} ${this.durationCount}`,
      '# HELP eddy_runtime_in_flight Invocations running now.',
      '# TYPE eddy_runtime_in_flight gauge',
      `eddy_runtime_in_flight{${l}} ${this.inFlight}`,
      '# HELP eddy_runtime_billed_duration_seconds_total Billed duration (each invocation rounded up to 1 ms).',
      '# TYPE eddy_runtime_billed_duration_seconds_total counter',
      `eddy_runtime_billed_duration_seconds_total{${l}} ${this.billedSecondsTotal}`,
    );
    if (this.initDurationSeconds !== undefined) {
      lines.push(
        '# HELP eddy_runtime_init_duration_seconds Time to import the handler at start.',
        '# TYPE eddy_runtime_init_duration_seconds gauge',
        `eddy_runtime_init_duration_seconds{${l}} ${this.initDurationSeconds}`,
      );
    }
    const defaults = await (await this.defaultRegistry()).metrics();
    return `${lines.join('\n')}\n${defaults}`;
  }

  private defaultRegistry(): Promise<PromRegistry> {
    this.registry ??= import('prom-client').then(({ Registry, collectDefaultMetrics }) => {
      const registry = new Registry();
      registry.setDefaultLabels(this.constLabels);
      collectDefaultMetrics({ register: registry });
      return registry;
    });
    return this.registry;
  }
}

function escapeLabel(value: string): string {
  return value.replaceAll('\\', '\\\\').replaceAll('"', '\\"').replaceAll('\n', '\\n');
}
