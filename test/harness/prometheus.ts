/** Debian's Prometheus on 127.0.0.1, scraping targets a test names, with a query helper. */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prometheusBinary } from './components.js';
import { freePort } from './ports.js';
import { launchInDir, type ManagedProcess } from './proc.js';

export interface PrometheusSample {
  metric: Record<string, string>;
  value: [number, string];
}

export interface Prometheus {
  url: string;
  processes: ManagedProcess[];
  /** Instant query; returns the vector result. */
  query(promql: string): Promise<PrometheusSample[]>;
  stop(): Promise<void>;
}

export interface ScrapeJob {
  job: string;
  /** host:port entries. */
  targets: string[];
  metricsPath?: string;
}

export async function startPrometheus(options: {
  jobs: ScrapeJob[];
  scrapeIntervalSeconds?: number;
}): Promise<Prometheus> {
  const dir = await mkdtemp(join(tmpdir(), 'eddy-prometheus-'));
  const interval = `${options.scrapeIntervalSeconds ?? 1}s`;
  const config = {
    global: { scrape_interval: interval, evaluation_interval: interval },
    scrape_configs: options.jobs.map((j) => ({
      job_name: j.job,
      metrics_path: j.metricsPath ?? '/metrics',
      static_configs: [{ targets: j.targets }],
    })),
  };
  // JSON is valid YAML, so the config needs no YAML writer.
  await writeFile(join(dir, 'prometheus.yml'), JSON.stringify(config, null, 2));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const { proc, stop } = await launchInDir(
    dir,
    'prometheus',
    prometheusBinary,
    [
      `--config.file=${join(dir, 'prometheus.yml')}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
    ],
    {},
    async () => (await fetch(`${url}/-/ready`)).status === 200,
    60_000,
  );
  return {
    url,
    processes: [proc],
    stop,
    async query(promql) {
      const res = await fetch(`${url}/api/v1/query?query=${encodeURIComponent(promql)}`);
      const body = (await res.json()) as {
        status: string;
        error?: string;
        data?: { resultType: string; result: PrometheusSample[] };
      };
      if (body.status !== 'success') throw new Error(`query ${promql} failed: ${body.error}`);
      return body.data?.result ?? [];
    },
  };
}
