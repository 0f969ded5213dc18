/**
 * `npm run bench:runtimes`: the same no-op Python handler under Eddy's runtime (the Runtime API,
 * awslambdaric) and under AWS's Runtime Interface Emulator (the same python and awslambdaric),
 * measured in one run, with Node, Go (provided, aws-lambda-go) and Java beside them.
 *   warm: invocations one at a time over one kept-alive connection, BENCH_ROUNDS rounds of
 *   BENCH_INVOCATIONS, the kinds alternating: p50, p99 (ms, added by the server in front) and
 *   invocations per second;
 *   cold: the process's spawn to its first answer (the first invocation's, polled every 2 ms),
 *   the median of BENCH_COLD_RUNS, the kinds interleaved.
 * Target: Eddy's Python at least as fast as the emulator on p99 and on the cold start.
 * Needs `npm run test:setup runtimes rie` (and `java` for the Java figures).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import {
  goBinaries,
  goBinaryPath,
  javaRicDir,
  missingReason,
  projectRoot,
  pythonRic,
} from '../test/harness/components.js';
import { freePort } from '../test/harness/ports.js';
import { envDefaults, nodeOptions } from '../runtime/src/contract/index.js';
import { loadAverage, machine } from './machine.js';

const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const invocations = Number(process.env.BENCH_INVOCATIONS ?? 1000);
const coldRuns = Number(process.env.BENCH_COLD_RUNS ?? 5);
/** A cold start not answered in this long fails the bench. */
const coldDeadlineMs = 30_000;
const runtimeMain = join(projectRoot, 'dist', 'runtime', 'main.js');
const rie = goBinaryPath(goBinaries.rie);

interface Kind {
  name: string;
  /** The invocation path on the server's port. */
  path: string;
  start(port: number): ChildProcess;
}

const quiet = { stdio: 'ignore', detached: true } as const;

/** The runtime as the platform starts it: a Node function's heap sized in NODE_OPTIONS (no relaunch). */
function eddy(codeDir: string, env: Record<string, string>): (port: number) => ChildProcess {
  return (port) =>
    spawn(process.execPath, [runtimeMain], {
      ...quiet,
      env: {
        PATH: process.env.PATH,
        NODE_OPTIONS: nodeOptions(
          env.EDDY_RUNTIME ?? envDefaults.runtime,
          Number(env.EDDY_MEMORY_MB ?? 128),
        ),
        EDDY_CODE_DIR: codeDir,
        EDDY_TIMEOUT_MS: '30000',
        PORT: String(port),
        HOST: '127.0.0.1',
        ...env,
      },
    });
}

async function kinds(dir: string): Promise<Kind[]> {
  const py = join(dir, 'python');
  const node = join(dir, 'node');
  await mkdir(py);
  await mkdir(node);
  await writeFile(join(py, 'index.py'), 'def handler(event, context):\n    return None\n');
  await writeFile(join(node, 'index.mjs'), 'export const handler = async () => null;\n');
  const list: Kind[] = [
    {
      name: 'python3.11 on Eddy',
      path: '/',
      start: eddy(py, {
        EDDY_RUNTIME: 'python3.11',
        EDDY_HANDLER: 'index.handler',
        EDDY_PYTHON: pythonRic,
      }),
    },
    {
      name: 'python3.11 on the emulator',
      path: '/2015-03-31/functions/function/invocations',
      start: (port) =>
        spawn(
          rie,
          [
            '--runtime-interface-emulator-address',
            `127.0.0.1:${port}`,
            pythonRic,
            '-m',
            'awslambdaric',
            'index.handler',
          ],
          { ...quiet, cwd: py, env: { PATH: process.env.PATH, PYTHONPATH: py } },
        ),
    },
    {
      name: 'nodejs on Eddy',
      path: '/',
      start: eddy(node, { EDDY_RUNTIME: 'nodejs20', EDDY_HANDLER: 'index.handler' }),
    },
    {
      name: 'provided (aws-lambda-go) on Eddy',
      path: '/',
      start: (port) => {
        const goDir = join(goBinaryPath(goBinaries.lambdaGoFunction), '..');
        return eddy(goDir, { EDDY_RUNTIME: 'provided', EDDY_HANDLER: 'bootstrap' })(port);
      },
    },
  ];
  if (!missingReason('java')) {
    const classes = join(dir, 'java');
    await mkdir(classes);
    await writeFile(
      join(classes, 'Noop.java'),
      'package bench;\nimport com.amazonaws.services.lambda.runtime.Context;\nimport com.amazonaws.services.lambda.runtime.RequestHandler;\nimport java.util.Map;\npublic class Noop implements RequestHandler<Map<String, Object>, Object> {\n  public Object handleRequest(Map<String, Object> event, Context context) { return null; }\n}\n',
    );
    await promisify(execFile)('javac', [
      '-cp',
      `${javaRicDir}/*`,
      '-d',
      classes,
      join(classes, 'Noop.java'),
    ]);
    list.push({
      name: 'java17 on Eddy',
      path: '/',
      start: eddy(classes, {
        EDDY_RUNTIME: 'java17',
        EDDY_HANDLER: 'bench.Noop::handleRequest',
        EDDY_MEMORY_MB: '512',
        EDDY_JAVA_CLASSPATH: `${javaRicDir}/*`,
      }),
    });
  }
  // BENCH_ONLY=python: only the kinds whose name holds it.
  const only = process.env.BENCH_ONLY;
  return only ? list.filter((k) => k.name.includes(only)) : list;
}

function post(port: number, path: string, agent: Agent | false): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: 'POST',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': 2 },
        timeout: 30_000,
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer from 127.0.0.1:${port} in 30 s`)));
    req.on('error', reject);
    req.end('{}');
  });
}

function stop(child: ChildProcess): void {
  try {
    if (child.pid) process.kill(-child.pid, 'SIGKILL');
  } catch {
    // gone
  }
}

/** Starts `kind` and polls until its first invocation is answered: the cold start in ms. */
async function coldStart(kind: Kind): Promise<{ child: ChildProcess; port: number; ms: number }> {
  const port = await freePort();
  const started = performance.now();
  const child = kind.start(port);
  let exited = false;
  child.once('exit', () => (exited = true));
  const agent = new Agent({ keepAlive: false });
  for (;;) {
    try {
      const status = await post(port, kind.path, agent);
      if (status >= 200 && status < 300) break;
      throw new Error(`${kind.name} answered ${status}`);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (e.code !== 'ECONNREFUSED' && e.code !== 'ECONNRESET') {
        stop(child);
        throw err;
      }
    }
    if (exited) throw new Error(`${kind.name} exited before it answered`);
    if (performance.now() - started > coldDeadlineMs) {
      stop(child);
      throw new Error(`${kind.name} did not answer within ${coldDeadlineMs} ms of its start`);
    }
    await sleep(2);
  }
  return { child, port, ms: performance.now() - started };
}

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;

interface Figures {
  cold: number[];
  latencies: number[];
  rates: number[];
}

async function main(): Promise<void> {
  for (const c of ['runtimes', 'rie'] as const) {
    const missing = missingReason(c);
    if (missing) throw new Error(`${missing} is missing: run npm run test:setup runtimes rie`);
  }
  if (!existsSync(runtimeMain)) throw new Error(`${runtimeMain} is missing: run npm run build`);
  const dir = await mkdtemp(join(tmpdir(), 'eddy-bench-runtimes-'));
  try {
    const list = await kinds(dir);
    console.log(machine());
    console.log(
      `${rounds} rounds of ${invocations} invocations one at a time, cold start the median of ${coldRuns}`,
    );
    const figures = new Map<string, Figures>(
      list.map((k) => [k.name, { cold: [], latencies: [], rates: [] }]),
    );
    for (let run = 0; run < Math.max(rounds, coldRuns); run++) {
      for (const kind of list) {
        const f = figures.get(kind.name)!;
        const { child, port, ms } = await coldStart(kind);
        try {
          if (run < coldRuns) f.cold.push(ms);
          if (run < rounds) {
            const agent = new Agent({ keepAlive: true, maxSockets: 1 });
            // A few to settle the connection and the process's first paths.
            for (let i = 0; i < 20; i++) await post(port, kind.path, agent);
            const began = performance.now();
            for (let i = 0; i < invocations; i++) {
              const t = performance.now();
              const status = await post(port, kind.path, agent);
              f.latencies.push(performance.now() - t);
              if (status !== 200) throw new Error(`${kind.name} answered ${status}`);
            }
            f.rates.push(invocations / ((performance.now() - began) / 1000));
            agent.destroy();
          }
        } finally {
          stop(child);
        }
      }
    }
    console.log(
      '\n| runtime | p50 ms | p99 ms | invocations/s | cold start ms (median) |\n| --- | ---: | ---: | ---: | ---: |',
    );
    for (const kind of list) {
      const f = figures.get(kind.name)!;
      const sorted = [...f.latencies].sort((a, b) => a - b);
      const cold = [...f.cold].sort((a, b) => a - b);
      console.log(
        `| ${kind.name} | ${percentile(sorted, 0.5).toFixed(2)} | ${percentile(sorted, 0.99).toFixed(2)} | ${f.rates.map((r) => r.toFixed(0)).join(' / ')} | ${percentile(cold, 0.5).toFixed(0)} (${cold.map((c) => c.toFixed(0)).join(', ')}) |`,
      );
    }
    const ours = figures.get(list[0]!.name)!;
    const theirs = figures.get(list[1]!.name)!;
    const p99 = (f: Figures) =>
      percentile(
        [...f.latencies].sort((a, b) => a - b),
        0.99,
      );
    const cold = (f: Figures) =>
      percentile(
        [...f.cold].sort((a, b) => a - b),
        0.5,
      );
    console.log(
      `\nEddy's Python against the emulator: p99 ${p99(ours).toFixed(2)} vs ${p99(theirs).toFixed(2)} ms (${p99(ours) <= p99(theirs) ? 'met' : 'missed'}), cold start ${cold(ours).toFixed(0)} vs ${cold(theirs).toFixed(0)} ms (${cold(ours) <= cold(theirs) ? 'met' : 'missed'}); load average ${loadAverage()}`,
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
