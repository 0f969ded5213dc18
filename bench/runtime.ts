/**
 * `npm run bench:runtime`: the function runtime against a bare node:http server calling the same
 * no-op handler, measured in the same run on this machine.
 *   warm: requests/s, p50 and p99 at concurrency 1 and 32 (autocannon, latencies in µs), the
 *   median of 3 rounds that alternate the two servers;
 *   cold: process spawn to first successful response, median of 10, the kinds interleaved.
 * Targets: at least 50% of the bare server's throughput, under +0.5 ms at p50 at concurrency 1,
 * and a cold start within 1.5x of the bare server's.
 * BENCH_NODE names the node binary both servers run on (default: the one running the bench), so
 * the runtime can be measured on the Node major of the function images.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once, type EventEmitter } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { openSync, closeSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import { freePort } from '../test/harness/ports.js';
import { projectRoot } from '../test/harness/components.js';
import { heapFlags } from '../runtime/src/heap.js';
import { loadAverage, machine } from './machine.js';

const node = process.env.BENCH_NODE ?? process.execPath;
const warmSeconds = Number(process.env.BENCH_SECONDS ?? 3);
const warmRounds = Number(process.env.BENCH_ROUNDS ?? 3);
const coldRuns = Number(process.env.BENCH_COLD_RUNS ?? 10);
const event = JSON.stringify({ n: 1 });
// What the gateway sends: a binary-mode CloudEvent.
const headers = {
  'content-type': 'application/json',
  'ce-specversion': '1.0',
  'ce-id': 'bench-1',
  'ce-source': '/bench',
  'ce-type': 'dev.eddy.bench',
};

// `runtime` is started as the platform starts it, with the heap sized in NODE_OPTIONS;
// `runtime-unsized` is a plain `node dist/runtime/main.js`, which starts itself again to size it.
// `bare-sized` is the bare server under the same heap flags, to show what the flags themselves cost.
type Kind = 'bare' | 'bare-sized' | 'runtime' | 'runtime-unsized';
const label: Record<Kind, string> = {
  bare: 'bare node:http',
  runtime: 'eddy runtime',
  'runtime-unsized': 'eddy runtime without NODE_OPTIONS',
  'bare-sized': 'bare node:http with the same heap flags',
};

interface Server {
  child: ChildProcess;
  port: number;
}

async function startServer(kind: Kind, codeDir: string, logFile: string): Promise<Server> {
  const port = await freePort();
  const script =
    kind === 'bare'
      ? join(projectRoot, 'bench', 'bare-server.mjs')
      : join(projectRoot, 'dist', 'runtime', 'main.js');
  const out = openSync(logFile, 'a');
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    EDDY_CODE_DIR: codeDir,
    PORT: String(port),
    HOST: '127.0.0.1',
    EDDY_CONCURRENCY: '64',
  };
  if (kind === 'runtime' || kind === 'bare-sized') env.NODE_OPTIONS = heapFlags(128).join(' ');
  const child = spawn(node, [script], {
    env,
    stdio: ['ignore', out, out],
  });
  closeSync(out);
  return { child, port };
}

async function stopServer(s: Server): Promise<void> {
  if (s.child.exitCode === null) {
    s.child.kill('SIGTERM');
    await once(s.child, 'exit');
  }
}

/** One POST; resolves with the status, or rejects if the connection fails. */
function post(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, method: 'POST', path: '/', headers, agent: false },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(event);
  });
}

async function waitUntilAnswering(port: number, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      const status = await post(port);
      if (status >= 200 && status < 300) return;
    } catch {
      // not listening yet
    }
    await sleep(2);
  }
  throw new Error(`no successful answer on port ${port} within ${timeoutMs} ms`);
}

interface Warm {
  rps: number;
  p50: number;
  p99: number;
  errors: number;
}

function percentile(sorted: Float64Array, p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function warm(port: number, connections: number): Promise<Warm> {
  const latencies: number[] = [];
  let recording = false;
  let finish: (r: autocannon.Result) => void = () => undefined;
  const done = new Promise<autocannon.Result>((resolve) => (finish = resolve));
  const instance = autocannon(
    {
      url: `http://127.0.0.1:${port}/`,
      method: 'POST',
      headers,
      body: event,
      connections,
      duration: warmSeconds,
    },
    (err, result) => {
      if (err) throw err;
      finish(result);
    },
  );
  // autocannon emits each response's latency (in ms, with fractions); its own histogram rounds to ms.
  (instance as EventEmitter).on(
    'response',
    (_client: unknown, status: number, _bytes: number, ms: number) => {
      if (recording && status < 300) latencies.push(ms);
    },
  );
  // The first half second warms the JIT and is not counted.
  const startCounting = setTimeout(() => (recording = true), 500);
  const result = await done;
  clearTimeout(startCounting);
  const sorted = Float64Array.from(latencies).sort();
  return {
    rps: latencies.length / (warmSeconds - 0.5),
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    errors: result.errors + result.non2xx,
  };
}

async function coldStart(kind: Kind, codeDir: string, logFile: string): Promise<number> {
  const t0 = performance.now();
  const s = await startServer(kind, codeDir, logFile);
  await waitUntilAnswering(s.port);
  const ms = performance.now() - t0;
  await stopServer(s);
  return ms;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const fmt = (n: number, digits = 2) => n.toFixed(digits);

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'eddy-bench-'));
  const codeDir = join(dir, 'code');
  await writeFile(join(dir, 'package.json'), '{}');
  await import('node:fs/promises').then((fs) => fs.mkdir(codeDir));
  await writeFile(join(codeDir, 'index.mjs'), 'export const handler = async () => {};\n');
  const logs: Record<Kind, string> = {
    bare: join(dir, 'bare.log'),
    runtime: join(dir, 'runtime.log'),
    'runtime-unsized': join(dir, 'runtime.log'),
    'bare-sized': join(dir, 'bare.log'),
  };
  const version = execFileSync(node, ['--version']).toString().trim();
  console.log(`${machine()}; servers on node ${version} (${node})`);
  console.log(
    `no-op handler, binary-mode CloudEvent, ${warmRounds} rounds of ${warmSeconds} s warm runs (medians), ${coldRuns} cold starts each; runtime logs go to ${logs.runtime}`,
  );

  // Rounds of bare then runtime, each figure the median of its rounds: one run of either can
  // land on a moment of other work, or a better placement of client and server on the cores.
  const rounds: Record<'bare' | 'runtime', Record<number, Warm[]>> = {
    bare: { 1: [], 32: [] },
    runtime: { 1: [], 32: [] },
  };
  for (const connections of [1, 32]) {
    for (let round = 1; round <= warmRounds; round++) {
      for (const kind of ['bare', 'runtime'] as const) {
        const s = await startServer(kind, codeDir, logs[kind]);
        await waitUntilAnswering(s.port);
        process.stdout.write(
          `warm ${label[kind]} at concurrency ${connections}, round ${round} ... `,
        );
        const r = await warm(s.port, connections);
        rounds[kind][connections]!.push(r);
        console.log(
          `${Math.round(r.rps)} req/s, p50 ${fmt(r.p50 * 1000, 0)} µs, p99 ${fmt(r.p99 * 1000, 0)} µs, ${r.errors} errors`,
        );
        await stopServer(s);
      }
    }
  }
  const medianOf = (runs: Warm[]): Warm => ({
    rps: median(runs.map((r) => r.rps)),
    p50: median(runs.map((r) => r.p50)),
    p99: median(runs.map((r) => r.p99)),
    errors: runs.reduce((n, r) => n + r.errors, 0),
  });
  const results: Record<'bare' | 'runtime', Record<number, Warm>> = { bare: {}, runtime: {} };
  for (const kind of ['bare', 'runtime'] as const) {
    for (const c of [1, 32]) results[kind][c] = medianOf(rounds[kind][c]!);
  }
  console.log(`warm runs done, load average ${loadAverage()}`);

  const coldTimes: Record<Kind, number[]> = {
    bare: [],
    'bare-sized': [],
    runtime: [],
    'runtime-unsized': [],
  };
  const kinds: Kind[] = ['bare', 'bare-sized', 'runtime', 'runtime-unsized'];
  // Interleaved, so that other work on the machine weighs on every kind alike.
  process.stdout.write(`cold starts, ${kinds.length} kinds interleaved ... `);
  for (let i = 0; i < coldRuns; i++) {
    for (const kind of kinds) coldTimes[kind].push(await coldStart(kind, codeDir, logs[kind]));
  }
  console.log(`done, load average ${loadAverage()}`);
  for (const kind of kinds) {
    console.log(
      `cold ${label[kind]}: median ${fmt(median(coldTimes[kind]), 1)} ms (${coldTimes[kind].map((t) => fmt(t, 0)).join(', ')})`,
    );
  }

  console.log('\n| measure | bare node:http | eddy runtime | runtime vs bare | target |');
  console.log('| --- | --- | --- | --- | --- |');
  for (const c of [1, 32]) {
    const b = results.bare[c]!;
    const r = results.runtime[c]!;
    const share = (r.rps / b.rps) * 100;
    console.log(
      `| req/s, concurrency ${c} | ${Math.round(b.rps)} | ${Math.round(r.rps)} | ${fmt(share, 0)}% | >= 50% ${share >= 50 ? 'met' : 'MISSED'} |`,
    );
    const added = r.p50 - b.p50;
    const target = c === 1 ? `< +0.50 ms ${added < 0.5 ? 'met' : 'MISSED'}` : '';
    console.log(
      `| p50 ms, concurrency ${c} | ${fmt(b.p50, 3)} | ${fmt(r.p50, 3)} | +${fmt(added, 3)} ms | ${target} |`,
    );
    console.log(
      `| p99 ms, concurrency ${c} | ${fmt(b.p99, 3)} | ${fmt(r.p99, 3)} | +${fmt(r.p99 - b.p99, 3)} ms | |`,
    );
  }
  const ratio = median(coldTimes.runtime) / median(coldTimes.bare);
  console.log(
    `| cold start ms (median of ${coldRuns}) | ${fmt(median(coldTimes.bare), 1)} | ${fmt(median(coldTimes.runtime), 1)} | ${fmt(ratio, 2)}x | <= 1.5x ${ratio <= 1.5 ? 'met' : 'MISSED'} |`,
  );
  const sized = median(coldTimes.runtime) / median(coldTimes['bare-sized']);
  console.log(
    `| cold start ms, both with the heap flags | ${fmt(median(coldTimes['bare-sized']), 1)} | ${fmt(median(coldTimes.runtime), 1)} | ${fmt(sized, 2)}x | (what the runtime itself adds) |`,
  );
  const unsized = median(coldTimes['runtime-unsized']) / median(coldTimes.bare);
  console.log(
    `| cold start ms, runtime started without NODE_OPTIONS | ${fmt(median(coldTimes.bare), 1)} | ${fmt(median(coldTimes['runtime-unsized']), 1)} | ${fmt(unsized, 2)}x | (the platform always sets it) |`,
  );
  await rm(dir, { recursive: true, force: true });
}

await main();
