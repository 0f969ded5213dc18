/**
 * `npm run bench:gateway`: what the gateway adds on the data path, against the function runtime
 * called directly, measured in the same run on this machine.
 *   1. warm: a no-op handler at concurrency 1 and 32 (autocannon, one replica both ways):
 *      throughput ratio, added p50 and p99;
 *   2. steady: a 100 ms handler at an open-loop 200 req/s: added p95;
 *   3. cold: event arrival to answer at zero (a fresh Function per sample), against a bare runtime
 *      process's spawn to first answer; the difference is the activation overhead;
 *   4. burst: 500 events at once to a Function at zero: all answered, and when the last one was;
 *   5. queue: asynchronous events through NATS JetStream beside the in-memory path, and the
 *      publish acknowledgement's p50/p99 (`-- --queue-only` runs this section alone);
 *   6. burst at one warm replica: 16 invocations at once of a 200 ms handler at concurrency 1,
 *      time until all have answered, with the gateway's burst scale-up off (the autoscaler alone
 *      scales up) and on; target: under one cold start plus 2 x 200 ms (`-- --burst-only` runs
 *      this section alone).
 * `-- --throughput-only` runs section 1 alone, twice in a row, without authentication; with
 * BENCH_GATEWAY_PROFILE=<dir> the gateway's process writes a CPU profile there.
 * The no-op at concurrency 1 also runs with authentication on (bearer token, TokenReview and
 * SubjectAccessReview against a real kube-apiserver, the answers cached), in rounds alternating
 * with auth off: what a warm caller adds, at most +0.1 ms at p50 (the medians of the rounds).
 * Targets: +2 ms at p95 for the 100 ms handler (Knative's SLA allows +10 ms), activation overhead
 * under 20 ms, no event of the burst lost.
 *
 * The gateway, autoscaler and local platform run composed as the local stack composes them, in a
 * process of their own (this file started again with `--serve`), so the load generator does not
 * share their event loop. The direct runtime is started as the local platform starts a replica.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { EventEmitter } from 'node:events';
import { closeSync, existsSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { cp, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { Agent, request, type IncomingHttpHeaders } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import { build } from 'esbuild';
import { mebibytes } from '../operator/src/api/quantity.js';
import type { EddyFunction, FunctionSpec } from '../operator/src/api/types.js';
import * as k8s from '@kubernetes/client-node';
import type { FunctionState } from '../operator/src/gateway/app.js';
import { functionEnv } from '../operator/src/platform/local.js';
import { headers as eddyHeaders, runtimeEnv } from '../runtime/src/contract/index.js';
import { projectRoot } from '../test/harness/components.js';
import { serviceAccountKubeConfig, startKube, type Kube } from '../test/harness/kube.js';
import { formatElapsed } from '../test/harness/progress.js';
import { loadAverage, machine } from './machine.js';

const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const warmUpSeconds = Number(process.env.BENCH_WARMUP_SECONDS ?? 2);
const coldRuns = Number(process.env.BENCH_COLD_RUNS ?? 10);
const steadyRate = 200;
/** Rounds of auth off and on that alternate, and their length. */
const authRounds = 5;
const authRoundSeconds = 3;
const burstSize = 500;
/**
 * A pause before each cold sample: a runtime starts its watchdog thread (a V8 isolate) just after
 * its first answer, and a stopped one exits; neither must land on the next sample.
 */
const settleMs = 300;
/** The whole bench is stopped (processes included) past this. */
const overallLimitMs = 8 * 60_000;

const namespace = 'bench';
const builtRuntime = join(projectRoot, 'dist', 'runtime');
const event = JSON.stringify({ n: 1 });
// What a caller sends: a binary-mode CloudEvent, forwarded by the gateway as it is.
const headers = {
  'content-type': 'application/json',
  'ce-specversion': '1.0',
  'ce-id': 'bench-1',
  'ce-source': '/bench',
  'ce-type': 'dev.eddy.bench',
};

const noopCode = 'export const handler = async () => ({ ok: true });\n';
const waitCode = (ms: number) =>
  `export const handler = async () => {\n  await new Promise((resolve) => setTimeout(resolve, ${ms}));\n  return { ok: true };\n};\n`;

function inlineFunction(name: string, code: string, spec: FunctionSpec = {}): EddyFunction {
  return {
    apiVersion: 'eddy.dev/v1alpha1',
    kind: 'Function',
    metadata: { name, namespace, generation: 1, uid: `uid-${name}` },
    spec: { ...spec, code: { inline: code } },
  };
}

// One replica both ways, kept up for the whole bench, with room for every connection.
const oneReplica: FunctionSpec = { concurrency: 64, scaling: { minReplicas: 1, maxReplicas: 1 } };
const noop = inlineFunction('noop', noopCode, oneReplica);
const slow = inlineFunction('slow', waitCode(100), oneReplica);
// A fresh Function per cold sample: each is at zero without waiting on the autoscaler, and none
// is scaled down (a process stopping) while the others are measured.
const colds = Array.from({ length: coldRuns }, (_, i) => inlineFunction(`cold-${i + 1}`, noopCode));
const burst = inlineFunction('burst', waitCode(20), {
  concurrency: 10,
  scaling: { maxReplicas: 4 },
});

// ---------------------------------------------------------------------------------------------
// Processes: every one started here is stopped on the way out, also when the bench fails.

interface Proc {
  name: string;
  child: ChildProcess;
  /** Its own process group (the gateway and its replicas): killed as a group as a last resort. */
  group: boolean;
  exited: Promise<void>;
}

const procs = new Set<Proc>();

function track(name: string, child: ChildProcess, group = false): Proc {
  const p: Proc = {
    name,
    child,
    group,
    exited: new Promise((resolve) => {
      child.once('exit', () => resolve());
      child.once('error', () => resolve());
    }),
  };
  procs.add(p);
  void p.exited.then(() => procs.delete(p));
  return p;
}

const running = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;

function kill(p: Proc, signal: NodeJS.Signals, group = p.group): void {
  if (p.child.pid === undefined) return;
  try {
    process.kill(group ? -p.child.pid : p.child.pid, signal);
  } catch {
    // already gone
  }
}

/** SIGTERM (the gateway drains and stops its replicas), SIGKILL after `graceMs`. */
async function stop(p: Proc, graceMs = 15_000): Promise<void> {
  if (running(p.child)) {
    kill(p, 'SIGTERM', false);
    const timer = setTimeout(() => kill(p, 'SIGKILL'), graceMs);
    await p.exited;
    clearTimeout(timer);
  }
  // Replicas left behind by a gateway that was killed.
  if (p.group) kill(p, 'SIGKILL');
}

const stopAll = () => Promise.all([...procs].map((p) => stop(p)));

/** Temporary directories to remove when the bench is interrupted. */
const tempDirs = new Set<string>();

process.on('exit', () => {
  for (const p of procs) kill(p, 'SIGKILL');
});

/** Resolves with the first match of `pattern` in `stream`; the rest of the stream is dropped. */
function firstMatch(
  p: Proc,
  stream: Readable,
  pattern: RegExp,
  timeoutMs: number,
): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const finish = () => {
      clearTimeout(timer);
      stream.off('data', onData);
      p.child.off('exit', onExit);
      stream.resume();
    };
    const onData = (chunk: Buffer) => {
      seen = (seen + chunk.toString('utf8')).slice(-65_536);
      const match = pattern.exec(seen);
      if (match) {
        finish();
        resolve(match);
      }
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => {
      finish();
      reject(new Error(`${p.name} ended (${signal ?? `code ${code}`}) before it listened`));
    };
    const timer = setTimeout(() => {
      finish();
      reject(new Error(`${p.name} did not listen within ${timeoutMs} ms`));
    }, timeoutMs);
    stream.on('data', onData);
    p.child.once('exit', onExit);
  });
}

function tail(file: string, lines = 40): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** The environment a replica gets from the local platform: a base, the Function's, the contract. */
function replicaEnv(fn: EddyFunction, codeDir: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const variable of ['PATH', 'HOME', 'TMPDIR']) {
    const value = process.env[variable];
    if (value !== undefined) env[variable] = value;
  }
  Object.assign(env, functionEnv(fn).env);
  return Object.assign(
    env,
    runtimeEnv({
      handler: fn.spec.handler ?? 'index.handler',
      codeDir,
      functionName: fn.metadata.name,
      functionNamespace: fn.metadata.namespace,
      memoryMb: mebibytes(fn.spec.memory ?? '128Mi'),
      timeoutMs: (fn.spec.timeoutSeconds ?? 3) * 1000,
      concurrency: fn.spec.concurrency ?? 1,
      port: 0,
      host: '127.0.0.1',
    }),
  );
}

interface Runtime {
  proc: Proc;
  url: string;
}

const listening = /listening on 127\.0\.0\.1:(\d+)/;

/**
 * A runtime process for `fn`, started as the local platform starts a replica. Its output goes to
 * `logFile` when it will run under load (nothing here reads it then), else through a pipe, read
 * as the platform reads it, so the port is known the moment it is printed.
 */
async function startRuntime(
  runtimeMain: string,
  fn: EddyFunction,
  codeDir: string,
  logFile?: string,
): Promise<Runtime> {
  const out = logFile === undefined ? 'pipe' : openSync(logFile, 'a');
  const child = spawn(process.execPath, [runtimeMain], {
    env: replicaEnv(fn, codeDir),
    cwd: codeDir,
    stdio: ['ignore', out, out],
  });
  if (typeof out === 'number') closeSync(out);
  const proc = track(`runtime ${fn.metadata.name}`, child);
  let port: string | undefined;
  if (child.stdout) {
    child.stderr?.resume();
    port = (await firstMatch(proc, child.stdout, listening, 15_000))[1];
  } else {
    const deadline = Date.now() + 15_000;
    while (port === undefined) {
      port = listening.exec(tail(logFile!, 5))?.[1];
      if (!running(child)) throw new Error(`${proc.name} ended:\n${tail(logFile!)}`);
      if (Date.now() > deadline) throw new Error(`${proc.name} did not listen:\n${tail(logFile!)}`);
      if (port === undefined) await sleep(10);
    }
  }
  return { proc, url: `http://127.0.0.1:${port}` };
}

async function writeCodeDir(dir: string, code: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'index.mjs'), code);
  return dir;
}

/**
 * A copy of the built runtime that the bench runs, both ways. Integration tests rebuild dist/
 * (removing it first) when they start, and other runs of them may start while this one runs.
 * Its one package import (prom-client) resolves through a link to the project's node_modules.
 */
async function snapshotRuntime(dir: string): Promise<string> {
  const deadline = Date.now() + 60_000;
  const files = ['main.js', 'watchdog-thread.js'];
  while (!files.every((f) => existsSync(join(builtRuntime, f)))) {
    if (Date.now() > deadline)
      throw new Error(`${builtRuntime} is incomplete: npm run build first`);
    await sleep(500);
  }
  const root = join(dir, 'runtime');
  await cp(builtRuntime, join(root, 'dist', 'runtime'), { recursive: true });
  await writeFile(join(root, 'package.json'), '{"type":"module"}\n');
  await symlink(join(projectRoot, 'node_modules'), join(root, 'node_modules'), 'dir');
  return join(root, 'dist', 'runtime', 'main.js');
}

/** The gateway process's code, bundled by `bundleGateway` before the first gateway starts. */
let gatewayMain: string | undefined;

/**
 * Bundles bench/gateway-serve.ts into `dir` as `npm run build` bundles the operator (esbuild,
 * ESM, node20), so that the gateway measured is the code that ships.
 */
async function bundleGateway(dir: string): Promise<string> {
  const outfile = join(dir, 'gateway-serve.mjs');
  await build({
    entryPoints: [join(projectRoot, 'bench', 'gateway-serve.ts')],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    sourcemap: true,
    logLevel: 'warning',
    banner: {
      js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);",
    },
  });
  return outfile;
}

interface GatewayProcess {
  proc: Proc;
  url: string;
  metricsUrl: string;
  logFile: string;
}

async function startGateway(
  dir: string,
  runtimeMain: string,
  fns: EddyFunction[],
  extraEnv: Record<string, string> = {},
): Promise<GatewayProcess> {
  const functionsFile = join(dir, 'functions.json');
  const logFile = join(dir, 'gateway.log');
  await writeFile(functionsFile, JSON.stringify(fns));
  const err = openSync(logFile, 'a');
  const env: Record<string, string> = { ...extraEnv };
  for (const variable of ['PATH', 'HOME', 'TMPDIR']) {
    const value = process.env[variable];
    if (value !== undefined) env[variable] = value;
  }
  const child = spawn(
    process.execPath,
    [
      // BENCH_GATEWAY_PROFILE=<dir>: the gateway's CPU profile, written there as it stops.
      ...(process.env.BENCH_GATEWAY_PROFILE
        ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_GATEWAY_PROFILE]
        : []),
      gatewayMain ?? (await bundleGateway(dir)),
      functionsFile,
      runtimeMain,
      logFile,
    ],
    { cwd: projectRoot, env, stdio: ['pipe', 'pipe', err], detached: true },
  );
  closeSync(err);
  const proc = track('gateway', child, true);
  try {
    const match = await firstMatch(
      proc,
      child.stdout!,
      /gateway listening on (http:\/\/\S+)[\s\S]*metrics on (http:\/\/\S+)/,
      30_000,
    );
    return { proc, url: match[1]!, metricsUrl: match[2]!, logFile };
  } catch (e) {
    throw new Error(`${e instanceof Error ? e.message : String(e)}\n${tail(logFile)}`);
  }
}

async function functionStates(gatewayUrl: string): Promise<Map<string, FunctionState>> {
  const res = await fetch(`${gatewayUrl}/functions`);
  const body = (await res.json()) as { functions: FunctionState[] };
  return new Map(body.functions.map((f) => [f.name, f]));
}

async function waitForReplicas(
  gatewayUrl: string,
  names: string[],
  want: { desired: number; ready: number },
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const states = await functionStates(gatewayUrl);
    const off = names.filter((n) => {
      const r = states.get(n)?.replicas;
      return r?.desired !== want.desired || r.ready !== want.ready;
    });
    if (off.length === 0) return;
    if (Date.now() > deadline) {
      const seen = off.map((n) => `${n} ${JSON.stringify(states.get(n)?.replicas)}`).join(', ');
      throw new Error(`replicas not at ${JSON.stringify(want)} within ${timeoutMs} ms: ${seen}`);
    }
    await sleep(50);
  }
}

// ---------------------------------------------------------------------------------------------
// Load.

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  ms: number;
}

/** One POST of the event; `ms` from the request's start to the answer's end. */
function post(url: string, agent: Agent | false, timeoutMs = 30_000): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = request(url, { method: 'POST', headers, agent }, (res) => {
      res.resume();
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          ms: performance.now() - started,
        }),
      );
      res.on('error', reject);
    });
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(event);
  });
}

/** True once the runtime's /readyz answers 200. */
function readyz(url: string, agent: Agent): Promise<boolean> {
  return new Promise((resolve) => {
    request(`${url}/readyz`, { agent }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200));
    })
      .on('error', () => resolve(false))
      .end();
  });
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

interface Latencies {
  count: number;
  errors: number;
  rps: number;
  p50: number;
  p95: number;
  p99: number;
}

function summarize(ms: number[], errors: number, durationS: number): Latencies {
  const sorted = Float64Array.from(ms).sort();
  return {
    count: ms.length,
    errors,
    rps: ms.length / durationS,
    p50: percentile(sorted, 50),
    p95: percentile(sorted, 95),
    p99: percentile(sorted, 99),
  };
}

/** A closed loop: `connections` each sending the next event when the last is answered. */
async function closedLoop(
  url: string,
  connections: number,
  durationS: number,
  extraHeaders: Record<string, string> = {},
): Promise<Latencies> {
  const ms: number[] = [];
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url,
        method: 'POST',
        headers: { ...headers, ...extraHeaders },
        body: event,
        connections,
        duration: durationS,
      },
      (err, r) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(r)),
    );
    // autocannon emits each response's latency in ms with fractions; its histogram rounds to ms.
    (instance as EventEmitter).on(
      'response',
      (_client: unknown, status: number, _bytes: number, latency: number) => {
        if (status >= 200 && status < 300) ms.push(latency);
      },
    );
  });
  return summarize(ms, result.errors + result.non2xx, durationS);
}

/**
 * An open loop: events at a steady `rate` whatever the answers do, as independent callers send
 * them (autocannon's overallRate lets each connection send its share back to back at the start
 * of every second: bursts, not a steady rate).
 */
async function openLoop(url: string, rate: number, durationS: number, okStatus = 200) {
  const agent = new Agent({ keepAlive: true, maxSockets: 256 });
  const ms: number[] = [];
  let errors = 0;
  let lateMs = 0;
  const pending: Promise<void>[] = [];
  const total = Math.round(rate * durationS);
  const start = performance.now();
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait >= 1) await sleep(wait);
    lateMs = Math.max(lateMs, performance.now() - due);
    pending.push(
      post(url, agent).then(
        (a) => (a.status === okStatus ? void ms.push(a.ms) : void errors++),
        () => void errors++,
      ),
    );
  }
  await Promise.all(pending);
  agent.destroy();
  return { ...summarize(ms, errors, durationS), lateMs };
}

// ---------------------------------------------------------------------------------------------
// The bench.

const began = performance.now();
const say = (line: string) => console.log(`[${formatElapsed(performance.now() - began)}] ${line}`);
const fmt = (n: number, digits = 2) => n.toFixed(digits);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const signed = (n: number, digits = 3) => `${n >= 0 ? '+' : ''}${fmt(n, digits)}`;
const describe = (r: Latencies) =>
  `${Math.round(r.rps)} req/s, p50 ${fmt(r.p50, 3)} ms, p95 ${fmt(r.p95, 3)} ms, p99 ${fmt(r.p99, 3)} ms, ${r.errors} errors`;

interface Row {
  measure: string;
  value: string;
  baseline: string;
  target: string;
  met: boolean | undefined;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'eddy-bench-gateway-'));
  tempDirs.add(dir);
  let gateway: GatewayProcess | undefined;
  let kube: Kube | undefined;
  let failed = false;
  try {
    const runtimeMain = await snapshotRuntime(dir);
    gatewayMain = await bundleGateway(dir);
    console.log(machine());
    console.log(
      `binary-mode CloudEvents; closed loops ${seconds} s after ${warmUpSeconds} s of warm-up; ${coldRuns} cold starts each; logs in ${dir}`,
    );
    const rows: Row[] = [];
    if (process.argv.includes('--queue-only')) {
      rows.push(...(await queueSection(dir, runtimeMain)));
      printRows(rows);
      return;
    }
    if (process.argv.includes('--throughput-only')) {
      say('starting the gateway (autoscaler and local platform) in its own process');
      gateway = await startGateway(dir, runtimeMain, [noop]);
      await waitForReplicas(gateway.url, ['noop'], { desired: 1, ready: 1 }, 30_000);
      const direct = await startRuntime(
        runtimeMain,
        noop,
        await writeCodeDir(join(dir, 'direct-noop'), noopCode),
        join(dir, 'direct-noop.log'),
      );
      const warm = warmRunner(
        {
          direct: `${direct.url}/`,
          gateway: `${gateway.url}/functions/${namespace}/noop`,
        },
        { direct: direct.proc.child.pid!, gateway: gateway.proc.child.pid! },
      );
      for (const run of [1, 2]) {
        for (const connections of [1, 32])
          rows.push(...throughputRows(await warm(connections), run));
      }
      await stop(direct.proc);
      printRows(rows);
      return;
    }
    if (process.argv.includes('--burst-only')) {
      rows.push(...(await burstSection(dir, runtimeMain)));
      printRows(rows);
      return;
    }

    say('starting a kube-apiserver for the callers with a token (auth on)');
    kube = await startKube({ installCrds: false });
    const caller = await serviceAccountKubeConfig(kube, 'default', 'bench');
    await kube.kubeConfig
      .makeApiClient(k8s.CoreV1Api)
      .createNamespace({ body: { metadata: { name: namespace } } });
    await kube.kubeConfig.makeApiClient(k8s.RbacAuthorizationV1Api).createNamespacedRoleBinding({
      namespace,
      body: {
        metadata: { name: 'bench-invokes' },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'invoke' },
        subjects: [{ kind: 'ServiceAccount', name: 'bench', namespace: 'default' }],
      },
    });
    await kube.kubeConfig.makeApiClient(k8s.RbacAuthorizationV1Api).createNamespacedRole({
      namespace,
      body: {
        metadata: { name: 'invoke' },
        rules: [{ apiGroups: ['eddy.dev'], resources: ['functions'], verbs: ['invoke'] }],
      },
    });
    const bearer = { authorization: `Bearer ${caller.getCurrentUser()!.token!}` };

    say('starting the gateway (autoscaler and local platform) in its own process');
    gateway = await startGateway(dir, runtimeMain, [noop, slow, ...colds, burst], {
      BENCH_KUBECONFIG: kube.kubeconfigPath,
    });
    await waitForReplicas(gateway.url, ['noop', 'slow'], { desired: 1, ready: 1 }, 30_000);
    say(`gateway on ${gateway.url}, noop and slow at one replica each`);

    // 1. Warm, closed loop.
    const direct = await startRuntime(
      runtimeMain,
      noop,
      await writeCodeDir(join(dir, 'direct-noop'), noopCode),
      join(dir, 'direct-noop.log'),
    );
    const targets = {
      direct: `${direct.url}/`,
      gateway: `${gateway.url}/functions/${namespace}/noop`,
    };
    const warm = warmRunner(targets, {
      direct: direct.proc.child.pid!,
      gateway: gateway.proc.child.pid!,
    });
    for (const connections of [1, 32]) {
      rows.push(...throughputRows(await warm(connections)));
      if (connections === 1) {
        // Auth on (a bearer token, checked from the warm cache) and off alternate in short
        // rounds on the same gateway and replica, so that the machine's noise lands on both.
        await closedLoop(targets.gateway, 1, 1, bearer);
        const off: number[] = [];
        const on: number[] = [];
        let errors = 0;
        for (let round = 0; round < authRounds; round++) {
          off.push((await closedLoop(targets.gateway, 1, authRoundSeconds)).p50);
          const a = await closedLoop(targets.gateway, 1, authRoundSeconds, bearer);
          on.push(a.p50);
          errors += a.errors;
        }
        const added = median(on) - median(off);
        say(
          `no-op, concurrency 1, auth off / on, ${authRounds} rounds of ${authRoundSeconds} s each: p50 ${off.map((x) => fmt(x, 3)).join(' ')} / ${on.map((x) => fmt(x, 3)).join(' ')} ms`,
        );
        say(`auth on, warm cache, concurrency 1: median p50 ${signed(added)} ms over auth off`);
        rows.push({
          measure: 'p50 ms, no-op, concurrency 1, auth on (warm cache)',
          value: `${fmt(median(on), 3)} (${signed(added)} over auth off)`,
          baseline: `${fmt(median(off), 3)} (auth off, same gateway)`,
          target: 'added <= +0.1 ms',
          met: added <= 0.1 && errors === 0,
        });
      }
    }
    await stop(direct.proc);

    // 2. Steady, open loop.
    const directSlow = await startRuntime(
      runtimeMain,
      slow,
      await writeCodeDir(join(dir, 'direct-slow'), waitCode(100)),
      join(dir, 'direct-slow.log'),
    );
    const steadyRun = async (via: 'direct' | 'gateway', url: string) => {
      say(`100 ms handler at ${steadyRate} req/s, ${via}: ${warmUpSeconds + seconds} s ...`);
      await openLoop(url, steadyRate, warmUpSeconds);
      const r = await openLoop(url, steadyRate, seconds);
      say(
        `100 ms handler at ${steadyRate} req/s, ${via}: ${describe(r)}, sender at most ${fmt(r.lateMs, 1)} ms late`,
      );
      return r;
    };
    const steady = {
      direct: await steadyRun('direct', `${directSlow.url}/`),
      gateway: await steadyRun('gateway', `${gateway.url}/functions/${namespace}/slow`),
    };
    await stop(directSlow.proc);
    const addedP95 = steady.gateway.p95 - steady.direct.p95;
    rows.push({
      measure: `p95 ms, 100 ms handler at ${steadyRate} req/s`,
      value: `${fmt(steady.gateway.p95, 3)} (${signed(addedP95)})`,
      baseline: fmt(steady.direct.p95, 3),
      target: 'added < +2 ms (Knative: +10 ms)',
      met: addedP95 < 2 && steady.gateway.errors === 0,
    });

    // 3. Cold, one sample each way per round, so noise lands on both.
    const bare: { startMs: number; initMs: number }[] = [];
    const cold: { answerMs: number; initMs: number }[] = [];
    for (const [i, fn] of colds.entries()) {
      const codeDir = await writeCodeDir(join(dir, `bare-${i + 1}`), noopCode);
      await sleep(settleMs);
      const t0 = performance.now();
      const rt = await startRuntime(runtimeMain, fn, codeDir);
      // One kept-alive connection for the polls: a new one each millisecond would slow the start.
      const probes = new Agent({ keepAlive: true, maxSockets: 1 });
      while (!(await readyz(rt.url, probes))) {
        if (performance.now() - t0 > 15_000)
          throw new Error('a bare runtime was not ready in 15 s');
        await sleep(1);
      }
      probes.destroy();
      const first = await post(`${rt.url}/`, false);
      if (first.status !== 200) throw new Error(`a bare runtime answered ${first.status}`);
      bare.push({
        startMs: performance.now() - t0,
        initMs: Number(first.headers[eddyHeaders.initDurationMs] ?? Number.NaN),
      });

      // The bare runtime idles through the gateway's sample, as the last replica idles through
      // the next bare one: both start beside the same processes.
      await waitForReplicas(gateway.url, [fn.metadata.name], { desired: 0, ready: 0 }, 10_000);
      await sleep(settleMs);
      const a = await post(`${gateway.url}/functions/${namespace}/${fn.metadata.name}`, false);
      if (a.status !== 200) throw new Error(`${fn.metadata.name} answered ${a.status} from zero`);
      cold.push({
        answerMs: a.ms,
        initMs: Number(a.headers[eddyHeaders.initDurationMs] ?? Number.NaN),
      });
      await stop(rt.proc);
      say(
        `cold ${i + 1}/${coldRuns}: bare runtime ${fmt(bare[i]!.startMs, 1)} ms, through the gateway from zero ${fmt(a.ms, 1)} ms`,
      );
    }
    const processStart = median(bare.map((b) => b.startMs));
    const coldAnswer = median(cold.map((c) => c.answerMs));
    const activation = coldAnswer - processStart;
    const paired = median(cold.map((c, i) => c.answerMs - bare[i]!.startMs));
    rows.push(
      {
        measure: `event to answer at zero ms (median of ${coldRuns})`,
        value: fmt(coldAnswer, 1),
        baseline: `${fmt(processStart, 1)} (bare runtime: spawn to first answer)`,
        target: '',
        met: undefined,
      },
      {
        measure: 'activation overhead ms (difference of the medians)',
        value: signed(activation, 1),
        baseline: '',
        target: '< 20 ms',
        met: activation < 20,
      },
      {
        // Each round's two samples share the machine's state of the moment: steadier when busy.
        measure: "activation overhead ms (median of the rounds' differences)",
        value: signed(paired, 1),
        baseline: '',
        target: '< 20 ms',
        met: paired < 20,
      },
      {
        measure: `runtime init ms (${eddyHeaders.initDurationMs}, median)`,
        value: fmt(median(cold.map((c) => c.initMs)), 2),
        baseline: fmt(median(bare.map((b) => b.initMs)), 2),
        target: '',
        met: undefined,
      },
    );

    // 4. A burst at zero.
    await waitForReplicas(gateway.url, ['burst'], { desired: 0, ready: 0 }, 10_000);
    say(
      `${burstSize} events at once to burst (at zero; concurrency 10, maxReplicas 4, 20 ms each) ...`,
    );
    const agent = new Agent({ keepAlive: false, maxSockets: Infinity });
    const t0 = performance.now();
    const answers = await Promise.all(
      Array.from({ length: burstSize }, () =>
        post(`${gateway!.url}/functions/${namespace}/burst`, agent).then(
          (a) => ({ status: a.status, at: performance.now() - t0 }),
          () => ({ status: 0, at: performance.now() - t0 }),
        ),
      ),
    );
    agent.destroy();
    const notOk = answers.filter((a) => a.status !== 200);
    const lastMs = Math.max(...answers.map((a) => a.at));
    const replicas = (await functionStates(gateway.url)).get('burst')?.replicas;
    const floor = processStart + Math.ceil(burstSize / 10) * 20;
    const statuses = [...new Set(notOk.map((a) => a.status))].join(', ');
    say(
      `burst: ${answers.length - notOk.length} answered 200, ${notOk.length} not${statuses ? ` (${statuses})` : ''}; last after ${fmt(lastMs, 0)} ms, median ${fmt(median(answers.map((a) => a.at)), 0)} ms; replicas now ${JSON.stringify(replicas)}`,
    );
    rows.push(
      {
        measure: `${burstSize} events at zero: answers not 200`,
        value: String(notOk.length),
        baseline: '',
        target: '0',
        met: notOk.length === 0,
      },
      {
        measure: `${burstSize} events at zero: last answer ms`,
        value: fmt(lastMs, 0),
        baseline: `${fmt(floor, 0)} (one replica: process start + ${Math.ceil(burstSize / 10)} x 20 ms)`,
        target: '',
        met: undefined,
      },
    );

    // 5. The queue.
    await stop(gateway.proc);
    gateway = undefined;
    rows.push(...(await queueSection(dir, runtimeMain)));

    // 6. A burst at one warm replica.
    rows.push(...(await burstSection(dir, runtimeMain)));

    printRows(rows);
  } catch (err) {
    failed = true;
    if (gateway) console.error(`the gateway's log, last lines:\n${tail(gateway.logFile)}`);
    throw err;
  } finally {
    say('stopping the processes started here');
    await stopAll();
    await kube?.stop();
    if (failed) console.error(`logs kept in ${dir}`);
    else await rm(dir, { recursive: true, force: true });
  }
}

/**
 * The no-op in a closed loop at `connections`, direct then through the gateway, each after its
 * warm-up: both in the same minute, so that the machine's state lands on both.
 */
function warmRunner(
  targets: { direct: string; gateway: string },
  pids: { direct: number; gateway: number },
) {
  const run = async (via: 'direct' | 'gateway', connections: number) => {
    await closedLoop(targets[via], connections, warmUpSeconds);
    // CPU per request by process: steadier than requests a second on a busy machine.
    const gateway = via === 'gateway' ? pids.gateway : undefined;
    const runtimes = () => (gateway === undefined ? [pids.direct] : childrenOf(gateway));
    const before = { gateway: cpuMs(gateway), runtime: sum(runtimes().map(cpuMs)) };
    const r = await closedLoop(targets[via], connections, seconds);
    const perRequest = (ms: number) => (ms * 1000) / Math.max(1, r.count);
    const cpu = {
      gateway: perRequest(cpuMs(gateway) - before.gateway),
      runtime: perRequest(sum(runtimes().map(cpuMs)) - before.runtime),
    };
    say(
      `no-op, concurrency ${connections}, ${via}: ${describe(r)}; CPU per request: ${via === 'gateway' ? `gateway ${fmt(cpu.gateway, 0)} us, ` : ''}runtime ${fmt(cpu.runtime, 0)} us`,
    );
    return r;
  };
  return async (connections: number) => ({
    connections,
    direct: await run('direct', connections),
    gateway: await run('gateway', connections),
  });
}

const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** A process's CPU time so far (user and system, ms; 10 ms steps), 0 when it is gone. */
function cpuMs(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return 0;
  }
}

/** The processes whose parent is `pid` (the gateway's replicas). */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid)
        out.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

const throughputTarget: Record<number, number> = { 1: 50, 32: 40 };

function throughputRows(
  r: { connections: number; direct: Latencies; gateway: Latencies },
  run?: number,
): Row[] {
  const { connections, direct: d, gateway: g } = r;
  const of = run === undefined ? '' : `, run ${run}`;
  const percent = (g.rps / d.rps) * 100;
  const target = throughputTarget[connections];
  return [
    {
      measure: `req/s, no-op, concurrency ${connections}${of}`,
      value: `${Math.round(g.rps)} (${fmt(percent, 0)}% of direct)`,
      baseline: String(Math.round(d.rps)),
      target: target === undefined ? '' : `>= ${target}% of direct`,
      met: target === undefined ? undefined : percent >= target && g.errors === 0,
    },
    {
      measure: `p50 ms, no-op, concurrency ${connections}${of}`,
      value: `${fmt(g.p50, 3)} (${signed(g.p50 - d.p50)})`,
      baseline: fmt(d.p50, 3),
      target: '',
      met: undefined,
    },
    {
      measure: `p99 ms, no-op, concurrency ${connections}${of}`,
      value: `${fmt(g.p99, 3)} (${signed(g.p99 - d.p99)})`,
      baseline: fmt(d.p99, 3),
      target: '',
      met: undefined,
    },
  ];
}

/** Invocations at once in the burst section, and its handler's time. */
const warmBurstSize = 16;
const warmBurstHandlerMs = 200;

/**
 * 16 invocations at once of a 200 ms handler at concurrency 1 at one warm replica: how long
 * until all have answered, with the gateway's burst scale-up off (the autoscaler's tick alone
 * scales up) and on, each in a gateway of its own; against one cold start (a no-op at zero
 * through the same gateway, median of three) plus 2 x the handler's time.
 */
async function burstSection(dir: string, runtimeMain: string): Promise<Row[]> {
  const wide = inlineFunction('wide', waitCode(warmBurstHandlerMs), {
    concurrency: 1,
    scaling: { maxReplicas: warmBurstSize },
  });
  const zeros = [1, 2, 3].map((i) => inlineFunction(`zero${i}`, noopCode));
  const results: { mode: string; allMs: number; notOk: number; cold: number; replicas: string }[] =
    [];
  for (const mode of ['off', 'on'] as const) {
    const runDir = join(dir, `burst-${mode}`);
    await mkdir(runDir, { recursive: true });
    const gw = await startGateway(runDir, runtimeMain, [wide, ...zeros], {
      BENCH_BURST_SCALE_UP: mode,
    });
    try {
      const agent = new Agent({ keepAlive: false, maxSockets: Infinity });
      const colds: number[] = [];
      for (const z of zeros) {
        const a = await post(`${gw.url}/functions/${namespace}/${z.metadata.name}`, agent);
        if (a.status !== 200) throw new Error(`${z.metadata.name} at zero answered ${a.status}`);
        colds.push(a.ms);
        await sleep(settleMs);
      }
      const warm = await post(`${gw.url}/functions/${namespace}/wide`, agent);
      if (warm.status !== 200) throw new Error(`wide answered ${warm.status} warming up`);
      await waitForReplicas(gw.url, ['wide'], { desired: 1, ready: 1 }, 10_000);
      await sleep(settleMs);
      say(
        `burst (scale-up by the gateway ${mode}): ${warmBurstSize} at once to one warm replica ...`,
      );
      const t0 = performance.now();
      const answers = await Promise.all(
        Array.from({ length: warmBurstSize }, () =>
          post(`${gw.url}/functions/${namespace}/wide`, agent).then(
            (a) => ({ status: a.status, at: performance.now() - t0 }),
            () => ({ status: 0, at: performance.now() - t0 }),
          ),
        ),
      );
      agent.destroy();
      const allMs = Math.max(...answers.map((a) => a.at));
      const replicas = JSON.stringify((await functionStates(gw.url)).get('wide')?.replicas);
      const r = {
        mode,
        allMs,
        notOk: answers.filter((a) => a.status !== 200).length,
        cold: median(colds),
        replicas,
      };
      say(
        `burst (scale-up by the gateway ${mode}): all answered after ${fmt(allMs, 0)} ms, ${r.notOk} not 200; one cold start ${fmt(r.cold, 0)} ms; replicas now ${replicas}`,
      );
      results.push(r);
    } finally {
      await stop(gw.proc);
    }
  }
  const before = results.find((r) => r.mode === 'off')!;
  const after = results.find((r) => r.mode === 'on')!;
  const target = after.cold + 2 * warmBurstHandlerMs;
  return [
    {
      measure: `${warmBurstSize} x ${warmBurstHandlerMs} ms at one warm replica (concurrency 1): all answered ms`,
      value: `${fmt(after.allMs, 0)}${after.notOk ? ` (${after.notOk} not 200)` : ''}`,
      baseline: `${fmt(before.allMs, 0)} (autoscaler alone)${before.notOk ? ` (${before.notOk} not 200)` : ''}`,
      target: `< ${fmt(target, 0)} (cold start ${fmt(after.cold, 0)} + 2 x ${warmBurstHandlerMs})`,
      met: after.notOk === 0 && after.allMs < target,
    },
  ];
}

function printRows(rows: Row[]): void {
  console.log('\n| measure | value (through the gateway) | baseline (direct) | target | met |');
  console.log('| --- | --- | --- | --- | --- |');
  for (const r of rows) {
    const met = r.met === undefined ? '' : r.met ? 'met' : 'MISSED';
    console.log(`| ${r.measure} | ${r.value} | ${r.baseline} | ${r.target} | ${met} |`);
  }
  console.log(`load average now ${loadAverage()}`);
}

const queueEvents = Number(process.env.BENCH_QUEUE_EVENTS ?? 5_000);
/** The steady rate the publish acknowledgement is measured at. */
const queueSteadyRate = 200;

/** One histogram's cumulative buckets as scraped. */
function histogramBuckets(text: string, name: string): Array<{ le: number; count: number }> {
  return [...text.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\S+)$`, 'gm'))]
    .map((m) => ({ le: m[1] === '+Inf' ? Infinity : Number(m[1]), count: Number(m[2]) }))
    .sort((a, b) => a.le - b.le);
}

/**
 * Prometheus's histogram_quantile over one histogram's cumulative buckets, in seconds; with
 * `since`, over what was observed between the two scrapes.
 */
function histogramQuantile(text: string, name: string, q: number, since?: string): number {
  const before = since ? histogramBuckets(since, name) : [];
  const buckets = histogramBuckets(text, name).map((b, i) => ({
    le: b.le,
    count: b.count - (before[i]?.count ?? 0),
  }));
  const total = buckets.at(-1)?.count ?? 0;
  if (total === 0) return NaN;
  const rank = q * total;
  let lower = { le: 0, count: 0 };
  for (const b of buckets) {
    if (b.count >= rank) {
      if (b.le === Infinity) return lower.le;
      return lower.le + ((b.le - lower.le) * (rank - lower.count)) / (b.count - lower.count || 1);
    }
    lower = b;
  }
  return NaN;
}

/**
 * 5. The queue: asynchronous events to a no-op function, accepted (202) and delivered, through
 * NATS JetStream beside the in-memory path, each in a gateway process of its own: events per
 * second from the first send to the last delivery, and the publish acknowledgement's p50/p99
 * (the gateway's eddy_queue_publish_seconds) saturated and at a steady 200 events/s. Targets:
 * JetStream at least 50% of memory, p99 acknowledgement at most 5 ms at the steady rate.
 */
async function queueSection(dir: string, runtimeMain: string): Promise<Row[]> {
  const { goBinaries, goBinaryPath } = await import('../test/harness/components.js');
  const natsBinary = goBinaryPath(goBinaries.natsServer);
  if (!existsSync(natsBinary)) {
    say(`queue: skipped, no ${natsBinary} (npm run test:setup nats builds it)`);
    return [];
  }
  const { startNats } = await import('../test/harness/nats.js');
  const nats = await startNats();
  const fn = inlineFunction('qnoop', noopCode, {
    timeoutSeconds: 10,
    concurrency: 16,
    scaling: { minReplicas: 2, maxReplicas: 2, idleSeconds: 600 },
  });
  const measure = async (via: 'memory' | 'jetstream') => {
    const sub = join(dir, `queue-${via}`);
    await mkdir(sub, { recursive: true });
    const gw = await startGateway(
      sub,
      runtimeMain,
      [fn],
      via === 'jetstream' ? { BENCH_NATS_URL: nats.url } : {},
    );
    try {
      await waitForReplicas(gw.url, ['qnoop'], { desired: 2, ready: 2 }, 30_000);
      const url = `${gw.url}/functions/${namespace}/qnoop/async`;
      const send = (amount: number, onAccepted?: () => void) =>
        new Promise<autocannon.Result>((resolve, reject) => {
          const instance = autocannon(
            { url, method: 'POST', headers, body: event, connections: 32, amount },
            (err, r) =>
              err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve(r),
          );
          (instance as EventEmitter).on('response', (_client: unknown, status: number) => {
            if (status === 202) onAccepted?.();
          });
        });
      const handled = async () => (await functionStates(gw.url)).get('qnoop')?.requests ?? 0;
      const waitHandled = async (n: number) => {
        const deadline = performance.now() + 120_000;
        while ((await handled()) < n) {
          if (performance.now() > deadline)
            throw new Error(`${via}: ${n} events not handled in 120 s`);
          await sleep(20);
        }
      };
      // Warm-up: connections, the consumer, JIT.
      const warm = await send(500);
      await waitHandled(warm.non2xx === 0 ? 500 : 500 - warm.non2xx);
      const before = await handled();
      // autocannon says it is done only on its next one-second tick: when the last event was
      // accepted and delivered is watched here instead, every 20 ms.
      let accepted = 0;
      let lastAcceptedAt = 0;
      let lastHandledAt = 0;
      let count = before;
      let sending = true;
      const watching = (async () => {
        while (sending || count < before + accepted) {
          const now = await handled();
          if (now !== count) {
            count = now;
            lastHandledAt = performance.now();
          }
          await sleep(20);
        }
      })();
      const t0 = performance.now();
      const r = await send(queueEvents, () => {
        accepted++;
        lastAcceptedAt = performance.now();
      });
      sending = false;
      await Promise.race([
        watching,
        sleep(120_000).then(() => {
          throw new Error(`${via}: ${accepted} events not handled in 120 s`);
        }),
      ]);
      const sentS = (lastAcceptedAt - t0) / 1000;
      const elapsedS = (lastHandledAt - t0) / 1000;
      const perSecond = accepted / elapsedS;
      const scrape = async () => (await fetch(`${gw.metricsUrl}/metrics`)).text();
      const text = await scrape();
      const quantiles = (now: string, since?: string) => ({
        p50: histogramQuantile(now, 'eddy_queue_publish_seconds', 0.5, since) * 1000,
        p99: histogramQuantile(now, 'eddy_queue_publish_seconds', 0.99, since) * 1000,
      });
      const ack = via === 'jetstream' ? quantiles(text) : undefined;
      // The acknowledgement at a steady rate the machine keeps up with, rather than saturated
      // (where it is mostly waiting in the gateway's own event loop).
      let steadyAck: { p50: number; p99: number } | undefined;
      if (via === 'jetstream') {
        const before = await scrape();
        const steady = await openLoop(url, queueSteadyRate, 5, 202);
        steadyAck = quantiles(await scrape(), before);
        say(
          `queue, jetstream at ${queueSteadyRate} events/s for 5 s (${steady.errors} not 202): publish acknowledgement p50 ${fmt(steadyAck.p50, 2)} ms, p99 ${fmt(steadyAck.p99, 2)} ms`,
        );
      }
      say(
        `queue, ${via}: ${accepted} of ${queueEvents} accepted (${r.non2xx} refused, ${r.errors} errors), accepted in ${fmt(sentS, 2)} s, all delivered in ${fmt(elapsedS, 2)} s: ${fmt(perSecond, 0)} events/s${ack ? `; publish acknowledgement p50 ${fmt(ack.p50, 2)} ms, p99 ${fmt(ack.p99, 2)} ms` : ''}`,
      );
      return { perSecond, refused: r.non2xx + r.errors, ack, steadyAck };
    } finally {
      await stop(gw.proc);
    }
  };
  try {
    const memory = await measure('memory');
    const jet = await measure('jetstream');
    const ratio = jet.perSecond / memory.perSecond;
    return [
      {
        measure: `async events/s to a no-op (${queueEvents}, 32 callers): JetStream vs in memory`,
        value: `${fmt(jet.perSecond, 0)} (${fmt(ratio * 100, 0)}%)`,
        baseline: `${fmt(memory.perSecond, 0)} (in memory)`,
        target: '>= 50%',
        met: ratio >= 0.5 && jet.refused === 0,
      },
      {
        measure: `publish acknowledgement p50 / p99 ms at ${queueSteadyRate} events/s`,
        value: `${fmt(jet.steadyAck!.p50, 2)} / ${fmt(jet.steadyAck!.p99, 2)}`,
        baseline: '',
        target: 'p99 <= 5',
        met: jet.steadyAck!.p99 <= 5,
      },
      {
        measure: 'publish acknowledgement p50 / p99 ms, saturated (32 callers)',
        value: `${fmt(jet.ack!.p50, 2)} / ${fmt(jet.ack!.p99, 2)}`,
        baseline: '',
        target: '',
        met: undefined,
      },
    ];
  } finally {
    await nats.stop();
  }
}

const abandon = (why: string, code: number) => {
  console.error(`${why}: stopping the processes started here`);
  void stopAll()
    .then(() => Promise.all([...tempDirs].map((d) => rm(d, { recursive: true, force: true }))))
    .finally(() => process.exit(code));
};
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => abandon(signal, 130));
}
const limit = setTimeout(
  () => abandon(`the bench ran past ${overallLimitMs / 60_000} minutes`, 1),
  overallLimitMs,
);
limit.unref();
await main();
