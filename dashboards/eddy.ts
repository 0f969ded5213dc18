/**
 * The Grafana dashboard, as code: `npm run dashboard` writes it to charts/eddy/dashboards/eddy.json,
 * which the chart ships as a ConfigMap. Every query reads a metric the operator exports (see
 * docs/dashboard.md); several gateways report the same function, so counters and per-gateway
 * gauges are summed, and what each replica reports alike (replicas, sources) takes the max.
 */
import * as common from '@grafana/grafana-foundation-sdk/common';
import * as dashboard from '@grafana/grafana-foundation-sdk/dashboard';
import * as prometheus from '@grafana/grafana-foundation-sdk/prometheus';
import * as stat from '@grafana/grafana-foundation-sdk/stat';
import * as timeseries from '@grafana/grafana-foundation-sdk/timeseries';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';

export const dashboardFile = fileURLToPath(
  new URL('../charts/eddy/dashboards/eddy.json', import.meta.url),
);

const datasource: common.DataSourceRef = { type: 'prometheus', uid: '${datasource}' };

/** The variables' selection, for every query. */
const sel = 'namespace=~"$namespace", function=~"$function"';
const window = '[$__rate_interval]';
const fn = '{{namespace}}/{{function}}';

const query = (refId: string, expr: string, legend: string) =>
  new prometheus.DataqueryBuilder()
    .datasource(datasource)
    .refId(refId)
    .expr(expr)
    .legendFormat(legend)
    .range();

const quantiles = (metric: string, by: string, legend: string) =>
  [0.5, 0.95, 0.99].map((q, i) =>
    query(
      String.fromCharCode(65 + i),
      `histogram_quantile(${q}, sum by (${by}, le) (rate(${metric}_bucket{${sel}}${window})))`,
      `${legend} p${Math.round(q * 100)}`,
    ),
  );

interface Panel {
  title: string;
  description: string;
  unit: string;
  targets: prometheus.DataqueryBuilder[];
  stacked?: boolean;
  width?: number;
}

let nextId = 1;

const chart = (p: Panel) =>
  new timeseries.PanelBuilder()
    .id(nextId++)
    .title(p.title)
    .description(p.description)
    .datasource(datasource)
    .unit(p.unit)
    .min(0)
    .height(8)
    .span(p.width ?? 12)
    .fillOpacity(p.stacked ? 30 : 10)
    .stacking(
      new common.StackingConfigBuilder().mode(
        p.stacked ? common.StackingMode.Normal : common.StackingMode.None,
      ),
    )
    .legend(
      new common.VizLegendOptionsBuilder()
        .showLegend(true)
        .displayMode(common.LegendDisplayMode.Table)
        .placement(common.LegendPlacement.Bottom)
        .calcs(['mean', 'max']),
    )
    .targets(p.targets);

const row = (title: string) => new dashboard.RowBuilder(title).id(nextId++);

const labelVariable = (name: string, label: string, selector: string) =>
  new dashboard.QueryVariableBuilder(name)
    .label(label)
    .datasource(datasource)
    .query({
      qryType: 1,
      query: `label_values(${selector}, ${name})`,
      refId: 'PrometheusVariableQueryEditor-VariableQuery',
    })
    .definition(`label_values(${selector}, ${name})`)
    .refresh(dashboard.VariableRefresh.OnTimeRangeChanged)
    .sort(dashboard.VariableSort.AlphabeticalAsc)
    .multi(true)
    .includeAll(true)
    .allValue('.*')
    .current({ text: 'All', value: '$__all' });

/** The dashboard, as Grafana stores it. */
export function buildDashboard(): dashboard.Dashboard {
  nextId = 1;
  const invocations = 'eddy_function_invocations_total';
  return new dashboard.DashboardBuilder('Eddy functions')
    .uid('eddy-functions')
    .description(
      'Invocations, errors, duration, scaling, delivery, sources and the GB-seconds bill of Eddy functions.',
    )
    .tags(['eddy', 'functions'])
    .editable()
    .tooltip(dashboard.DashboardCursorSync.Crosshair)
    .refresh('30s')
    .time({ from: 'now-1h', to: 'now' })
    .timezone('browser')
    .withVariable(
      new dashboard.DatasourceVariableBuilder('datasource').label('Data source').type('prometheus'),
    )
    .withVariable(labelVariable('namespace', 'Namespace', invocations))
    .withVariable(labelVariable('function', 'Function', `${invocations}{namespace=~"$namespace"}`))

    .withRow(row('Invocations'))
    .withPanel(
      chart({
        title: 'Invocations/s by outcome',
        description:
          'Every attempt, by how it ended: success, error, timeout, throttled, invalid, unavailable, cancelled.',
        unit: 'reqps',
        stacked: true,
        targets: [
          query('A', `sum by (outcome) (rate(${invocations}{${sel}}${window}))`, '{{outcome}}'),
        ],
      }),
    )
    .withPanel(
      chart({
        title: 'Error ratio',
        description:
          'Handler errors and timeouts over the attempts that reached a replica or its queue (throttled ones excluded, as Lambda counts them).',
        unit: 'percentunit',
        targets: [
          query(
            'A',
            `sum by (namespace, function) (rate(${invocations}{${sel}, outcome=~"error|timeout"}${window}))` +
              ` / sum by (namespace, function) (rate(${invocations}{${sel}, outcome!="throttled"}${window}))`,
            fn,
          ),
        ],
      }),
    )
    .withPanel(
      chart({
        title: 'Duration p50 / p95 / p99',
        description: "The handler's duration as the runtime reports it.",
        unit: 's',
        targets: quantiles('eddy_function_duration_seconds', 'namespace, function', fn),
      }),
    )
    .withPanel(
      chart({
        title: 'Throttles/s',
        description:
          'Invocations answered 429: the function was at its limit (maxReplicas x concurrency) and its queue was full or the wait ran out.',
        unit: 'reqps',
        targets: [
          query(
            'A',
            `sum by (namespace, function) (rate(${invocations}{${sel}, outcome="throttled"}${window}))`,
            fn,
          ),
        ],
      }),
    )

    .withRow(row('Scaling'))
    .withPanel(
      chart({
        title: 'Replicas desired vs ready',
        description: 'Replicas asked of the platform, and those ready to answer.',
        unit: 'short',
        targets: [
          query(
            'A',
            `max by (namespace, function, state) (eddy_function_replicas{${sel}})`,
            `${fn} {{state}}`,
          ),
        ],
      }),
    )
    .withPanel(
      chart({
        title: 'In flight and queued',
        description:
          'Invocations being answered by replicas, and those waiting for one (at zero, or beyond concurrency), over all gateways.',
        unit: 'short',
        targets: [
          query(
            'A',
            `sum by (namespace, function) (eddy_function_in_flight{${sel}})`,
            `${fn} in flight`,
          ),
          query('B', `sum by (namespace, function) (eddy_function_queued{${sel}})`, `${fn} queued`),
        ],
      }),
    )
    .withPanel(
      chart({
        title: 'Cold starts/s',
        description: "Invocations answered by a replica's first invocation.",
        unit: 'reqps',
        targets: [
          query(
            'A',
            `sum by (namespace, function) (rate(eddy_function_cold_starts_total{${sel}}${window}))`,
            fn,
          ),
        ],
      }),
    )
    .withPanel(
      chart({
        title: 'Activation time p50 / p95 / p99',
        description: 'How long invocations were held while their function had no ready replica.',
        unit: 's',
        targets: quantiles('eddy_function_activation_seconds', 'namespace, function', fn),
      }),
    )

    .withRow(row('Delivery and sources'))
    .withPanel(
      chart({
        title: 'Retries and dead letters/s',
        description:
          'Asynchronous invocations retried after a failed attempt, and events whose retries were spent (sent to the dead letter, or dropped).',
        unit: 'ops',
        targets: [
          query(
            'A',
            `sum by (namespace, function, trigger) (rate(eddy_function_retries_total{${sel}}${window}))`,
            `${fn} {{trigger}} retries`,
          ),
          query(
            'B',
            `sum by (namespace, function, trigger, outcome) (rate(eddy_function_dead_letters_total{${sel}}${window}))`,
            `${fn} {{trigger}} dead letter {{outcome}}`,
          ),
        ],
      }),
    )
    .withPanel(
      chart({
        title: 'Kinesis iterator age',
        description:
          "How far behind the stream's newest record each trigger reads: the oldest of its shards.",
        unit: 's',
        targets: [
          query(
            'A',
            `max by (namespace, function, trigger) (eddy_source_kinesis_iterator_age_seconds{${sel}})`,
            `${fn} {{trigger}}`,
          ),
        ],
      }),
    )
    .withPanel(
      chart({
        title: 'Schedule lag p99',
        description: 'How late schedules fired: the time each fired minus the tick it fired for.',
        unit: 's',
        targets: [
          query(
            'A',
            `histogram_quantile(0.99, sum by (namespace, function, trigger, le) (rate(eddy_source_schedule_lag_seconds_bucket{${sel}}${window})))`,
            `${fn} {{trigger}}`,
          ),
        ],
      }),
    )
    .withPanel(
      chart({
        title: 'Schedule ticks skipped',
        description:
          'Ticks not delivered: missed beyond startingDeadlineSeconds (deadline) or while deliveries overlapped (overlap).',
        unit: 'short',
        targets: [
          query(
            'A',
            `sum by (namespace, function, trigger, reason) (increase(eddy_source_schedule_skipped_ticks_total{${sel}}${window}))`,
            `${fn} {{trigger}} {{reason}}`,
          ),
        ],
      }),
    )

    .withRow(row('Cost'))
    .withPanel(
      chart({
        title: 'GB-seconds/s per function',
        description:
          'Billed duration times memory in GB, per second: the pay-per-use meter as it runs.',
        unit: 'short',
        width: 16,
        stacked: true,
        targets: [
          query(
            'A',
            `sum by (namespace, function) (rate(eddy_function_billed_gb_seconds_total{${sel}}${window}))`,
            fn,
          ),
        ],
      }),
    )
    .withPanel(
      new stat.PanelBuilder()
        .id(nextId++)
        .title('GB-seconds in the time range')
        .description('The bill: billed GB-seconds per function over the dashboard time range.')
        .datasource(datasource)
        .unit('short')
        .decimals(1)
        .height(8)
        .span(8)
        .graphMode(common.BigValueGraphMode.None)
        .textMode(common.BigValueTextMode.ValueAndName)
        .reduceOptions(new common.ReduceDataOptionsBuilder().calcs(['lastNotNull']))
        .withTarget(
          query(
            'A',
            `sum by (namespace, function) (increase(eddy_function_billed_gb_seconds_total{${sel}}[$__range]))`,
            fn,
          ).instant(),
        ),
    )
    .build();
}

/** The dashboard file's text: the JSON, formatted as the repository's prettier formats it. */
export async function dashboardJson(): Promise<string> {
  const options = (await prettier.resolveConfig(dashboardFile)) ?? {};
  return prettier.format(JSON.stringify(buildDashboard(), null, 2), {
    ...options,
    parser: 'json',
  });
}
