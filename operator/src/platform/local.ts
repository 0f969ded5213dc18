/**
 * The `local` platform: every replica of a Function is a child process of the runtime
 * (`node dist/runtime/main.js`) listening on 127.0.0.1, as the local stack and tests run
 * functions. It does what a Deployment and the kubelet do in a cluster: keeps the asked-for
 * number of processes running, replaces those that crash (with backoff), rolls replicas over
 * to a changed spec without dropping to zero, and tells the gateway which ones are ready.
 */
import { spawn, type ChildProcess, type ChildProcessByStdio } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Agent } from 'node:http';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { envNames, runtimeEnv } from '../../../runtime/src/contract/index.js';
import { mebibytes } from '../api/quantity.js';
import type { EddyFunction } from '../api/types.js';
import { describeError } from '../errors.js';
import type { FunctionStore } from '../functions.js';
import {
  codeSource,
  javaRicClasspath,
  localCodeDirAnnotation,
  nodeFor,
  nodeMajor,
  pythonWithRic,
  requirementsOf,
  removeCodeExcept,
  writeCode,
  type CodeSource,
  type ConfigMapReader,
} from './local-code.js';
import {
  CannotRun,
  keyOf,
  splitKey,
  type FunctionKey,
  type InitFailure,
  type Platform,
  type Replica,
  type ReplicaCounts,
} from './platform.js';
import { probeReadyz } from './readyz.js';

const setpriv = '/usr/bin/setpriv';

export { localCodeDirAnnotation, type ConfigMapReader } from './local-code.js';

export interface LocalPlatformOptions {
  store: FunctionStore;
  /** Path of the built runtime, dist/runtime/main.js. */
  runtimeMain: string;
  /** The local stack's ConfigMaps: code (spec.code.configMap) and env (configMapKeyRef). */
  configMaps?: ConfigMapReader;
  /** The local stack's Secrets, for env (secretKeyRef, envFrom secretRef); none when absent. */
  secrets?: SecretDataReader;
  /** Where inline and ConfigMap code is written; a new temporary directory by default. */
  workDir?: string;
  /** Receives every line, the replicas' output prefixed `[namespace/name] `. Default: stdout. */
  log?: (line: string) => void;
  /** Delay before replacing a replica that failed, doubling per failure. Default 500 ms to 30 s. */
  restartBackoffMs?: { initial: number; max: number };
  /** Added to every replica's base environment (PATH, HOME, TMPDIR of this process). */
  env?: Record<string, string>;
  /** A replica not ready this long after it was started is stopped and counts as failed. Default 60 s. */
  startTimeoutMs?: number;
  /**
   * Where what a language needs is made once and kept (python3.11's virtual environment with
   * awslambdaric). Default: .eddy under the working directory.
   */
  languagesDir?: string;
}

export interface LocalPlatform extends Platform {
  readonly name: 'local';
  /**
   * Resolves once start's signal has aborted, every process has exited and the code written
   * for them is removed.
   */
  readonly stopped: Promise<void>;
}

/** Polls of a starting replica's /readyz: short, since the activator holds events meanwhile. */
const startPollMs = 2;
/** Polls of a running replica's /readyz: notices recycling, and brings back unreachable ones. */
const readyPollMs = 1_000;
const probeTimeoutMs = 2_000;
/** A replica that was ready this long before failing resets the backoff. */
const backoffResetMs = 10_000;
/** After SIGTERM a replica drains for up to its timeout; SIGKILL this long after that. */
const killGraceMs = 5_000;
/** A line longer than this is passed on in pieces rather than held in memory without bound. */
const maxLineChars = 1 << 20;

const listening = /listening on 127\.0\.0\.1:(\d+)/;

/** Spec fields that do not change what a replica runs: changing them restarts nothing. */
const notReplicaShape = new Set(['scaling', 'triggers', 'retry', 'deadLetter']);

function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value)
        .filter(([, v]) => v !== undefined)
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([k, v]) => [k, canonical(v)]),
    );
  }
  return value;
}

/**
 * What a replica of `fn` runs, as a hash: the spec (less scaling, triggers, retry and dead
 * letters) and the local code directory annotation. Replicas of another revision are replaced.
 */
export function revisionOf(fn: EddyFunction): string {
  const shape = Object.fromEntries(
    Object.entries(fn.spec).filter(([field]) => !notReplicaShape.has(field)),
  );
  const annotation = fn.metadata.annotations?.[localCodeDirAnnotation] ?? null;
  return createHash('sha256')
    .update(JSON.stringify(canonical([shape, annotation])))
    .digest('hex')
    .slice(0, 16);
}

/** A Secret's data by namespace and name, decoded; undefined when there is no such Secret. */
export type SecretDataReader = (
  namespace: string,
  name: string,
) => Record<string, string> | undefined;

/**
 * The Function's own environment: `spec.env` entries with a value, and ConfigMap and Secret
 * references resolved through `configMaps` and `secrets`. A Secret reference that cannot be
 * resolved and is not `optional` throws CannotRun naming the Secret and key, as a pod would not
 * start (CreateContainerConfigError). What else cannot be resolved locally (field references,
 * missing ConfigMaps, Secrets without a reader) is left out, with one note per variable.
 */
export function functionEnv(
  fn: EddyFunction,
  configMaps?: ConfigMapReader,
  secrets?: SecretDataReader,
): { env: Record<string, string>; notes: string[] } {
  const ns = fn.metadata.namespace;
  const env: Record<string, string> = {};
  const notes: string[] = [];
  for (const from of fn.spec.envFrom ?? []) {
    const prefix = from.prefix ?? '';
    if (from.configMapRef) {
      const data = configMaps?.(ns, from.configMapRef.name ?? '');
      if (data) for (const [k, v] of Object.entries(data)) env[prefix + k] = v;
      else
        notes.push(
          `envFrom ConfigMap ${ns}/${from.configMapRef.name} is not set: no such ConfigMap locally`,
        );
    } else if (from.secretRef && secrets) {
      const data = secrets(ns, from.secretRef.name ?? '');
      if (data) for (const [k, v] of Object.entries(data)) env[prefix + k] = v;
      else if (!from.secretRef.optional) {
        throw new CannotRun(
          `Function ${keyOf(fn)}: envFrom names Secret ${ns}/${from.secretRef.name}, which is not in the loaded manifests: add it to the files given, or mark the reference optional`,
        );
      }
    } else if (from.secretRef) {
      notes.push(
        `envFrom Secret ${ns}/${from.secretRef.name} is not set: the local platform does not read Secrets`,
      );
    }
  }
  for (const v of fn.spec.env ?? []) {
    const ref = v.valueFrom;
    if (!ref) {
      env[v.name] = v.value ?? '';
    } else if (ref.configMapKeyRef) {
      const { name, key } = ref.configMapKeyRef;
      const value = configMaps?.(ns, name ?? '')?.[key];
      if (value !== undefined) env[v.name] = value;
      else notes.push(`${v.name} is not set: ConfigMap ${ns}/${name} has no key ${key} locally`);
    } else if (ref.secretKeyRef && secrets) {
      const { name, key, optional } = ref.secretKeyRef;
      const data = secrets(ns, name ?? '');
      const value = data?.[key];
      if (value !== undefined) env[v.name] = value;
      else if (!optional) {
        throw new CannotRun(
          `Function ${keyOf(fn)}: env ${v.name} names key ${key} of Secret ${ns}/${name}, ${data ? 'which has no such key' : 'which is not in the loaded manifests'}: add it (stringData: {${key}: ...}) to the files given, or mark the reference optional`,
        );
      }
    } else if (ref.secretKeyRef) {
      notes.push(
        `${v.name} is not set: the local platform does not read Secrets (secretKeyRef ${ns}/${ref.secretKeyRef.name})`,
      );
    } else {
      notes.push(`${v.name} is not set: the local platform resolves only ConfigMap references`);
    }
  }
  return { env, notes };
}

/** Splits a stream into lines, holding a partial line until its end arrives. */
function forwardLines(stream: Readable, onLine: (line: string) => void): void {
  stream.setEncoding('utf8');
  let partial = '';
  stream.on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop() ?? '';
    for (const p of parts) onLine(p.endsWith('\r') ? p.slice(0, -1) : p);
    if (partial.length > maxLineChars) {
      onLine(partial);
      partial = '';
    }
  });
  stream.on('end', () => {
    if (partial !== '') onLine(partial);
    partial = '';
  });
}

/** What a replica needs of its language: the node its runtime runs on, and variables to set. */
interface Language {
  node: string;
  env: Record<string, string>;
}

interface FunctionState {
  key: FunctionKey;
  fn: EddyFunction;
  revision: string;
  desired: number;
  /** Consecutive failures, for the backoff. */
  failures: number;
  /** Set while replacing a failed replica waits out the backoff. */
  restartTimer: NodeJS.Timeout | undefined;
  /** Notes already logged for this revision, so a crash loop does not repeat them. */
  said: Set<string>;
  /** Why the last replica could not be started (its language's environment), until one is. */
  cannotStart: string | undefined;
  reconciling: boolean;
  again: boolean;
}

interface LocalReplica {
  seq: number;
  key: FunctionKey;
  /** The process id once spawned. */
  id: string;
  fn: EddyFunction;
  revision: string;
  phase: 'preparing' | 'starting' | 'running' | 'stopping';
  ready: boolean;
  url: string | undefined;
  child: ChildProcess | undefined;
  codeDir: string | undefined;
  readyAt: number | undefined;
  /** Already counted as a failure (it never became ready). */
  failed: boolean;
  /** Its handler did not load: the error its /readyz reports. */
  initError: InitFailure | undefined;
  gone: boolean;
  /** Ends its readiness polls. */
  halt: AbortController;
  killTimer: NodeJS.Timeout | undefined;
  exited: Promise<void>;
  markExited: () => void;
}

/** Each replica a process of the runtime on 127.0.0.1 (see the module comment). */
export function createLocalPlatform(options: LocalPlatformOptions): LocalPlatform {
  const { store } = options;
  const write = options.log ?? ((line: string) => void process.stdout.write(`${line}\n`));
  // Called from stream and process events: a failing logger must not take the operator down.
  const log = (line: string) => {
    try {
      write(line);
    } catch {
      // nowhere left to say it
    }
  };
  const backoff = options.restartBackoffMs ?? { initial: 500, max: 30_000 };
  const startTimeoutMs = options.startTimeoutMs ?? 60_000;

  const states = new Map<FunctionKey, FunctionState>();
  /** Every replica with a process (or about to have one), including those of deleted Functions. */
  const all = new Set<LocalReplica>();
  const listeners = new Set<(key: FunctionKey) => void>();
  /** File operations per function, one at a time: writing code never races removing it. */
  const fileQueues = new Map<FunctionKey, Promise<void>>();
  const keysWithFiles = new Set<FunctionKey>();
  let workDir = '';
  let started = false;
  let closing = false;
  let seq = 0;
  let unsubscribe: () => void = () => undefined;
  let markStopped: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => (markStopped = resolve));

  const say = (key: FunctionKey, message: string) => log(`[${key}] local platform: ${message}`);

  function sayOnce(st: FunctionState, message: string): void {
    if (st.said.has(message)) return;
    st.said.add(message);
    say(st.key, message);
  }

  // ready() is read on every invocation; every change to it is emitted, which clears this.
  const readyCache = new Map<FunctionKey, Replica[]>();
  function emit(key: FunctionKey): void {
    readyCache.delete(key);
    for (const listener of [...listeners]) {
      try {
        listener(key);
      } catch (err) {
        say(key, `a change listener failed: ${describeError(err)}`);
      }
    }
  }

  function functionDir(key: FunctionKey): string {
    const { namespace, name } = splitKey(key);
    return join(workDir, namespace, name);
  }

  function serially<T>(key: FunctionKey, op: () => Promise<T>): Promise<T> {
    const next = (fileQueues.get(key) ?? Promise.resolve()).then(op);
    const tail = next.then(
      () => undefined,
      () => undefined,
    );
    fileQueues.set(key, tail);
    void tail.then(() => {
      if (fileQueues.get(key) === tail) fileQueues.delete(key);
    });
    return next;
  }

  /** Removes code no replica runs any more: all of a deleted Function's, old revisions' otherwise. */
  function tidyCode(key: FunctionKey): Promise<void> {
    if (!keysWithFiles.has(key)) return Promise.resolve();
    return serially(key, async () => {
      const dir = functionDir(key);
      const st = states.get(key);
      const keep = new Set<string>();
      for (const r of all) if (r.key === key && r.codeDir) keep.add(r.codeDir);
      if (st) {
        try {
          const source = codeSource(st.fn, options.configMaps);
          if (source.kind === 'files') keep.add(join(dir, source.hash));
        } catch {
          // Nothing of the current revision can be on disk.
        }
      }
      if (!st && keep.size === 0) {
        await rm(dir, { recursive: true, force: true });
      } else {
        await removeCodeExcept(dir, keep);
      }
    }).catch((err) => say(key, `could not remove old code: ${describeError(err)}`));
  }

  function newState(fn: EddyFunction): FunctionState {
    return {
      key: keyOf(fn),
      fn,
      revision: revisionOf(fn),
      desired: 0,
      failures: 0,
      restartTimer: undefined,
      said: new Set(),
      cannotStart: undefined,
      reconciling: false,
      again: false,
    };
  }

  function removeWorkDir(): void {
    rmSync(workDir, { recursive: true, force: true });
  }

  function replicasOf(key: FunctionKey): LocalReplica[] {
    return [...all].filter((r) => r.key === key);
  }

  /** Counts a failure and holds off replacements for the backoff; returns the delay. */
  function failure(st: FunctionState, readyAt?: number): number {
    if (readyAt !== undefined && Date.now() - readyAt >= backoffResetMs) st.failures = 0;
    st.failures += 1;
    const delay = Math.min(backoff.max, backoff.initial * 2 ** (st.failures - 1));
    clearTimeout(st.restartTimer);
    // A deleted Function, or a platform that is stopping, replaces nothing.
    if (closing || states.get(st.key) !== st) return delay;
    st.restartTimer = setTimeout(() => {
      st.restartTimer = undefined;
      void reconcile(st);
    }, delay);
    return delay;
  }

  function stopReplica(r: LocalReplica): void {
    if (r.phase === 'stopping') return;
    const wasReady = r.ready;
    r.phase = 'stopping';
    r.ready = false;
    r.halt.abort();
    if (wasReady) emit(r.key);
    const child = r.child;
    if (child && child.exitCode === null && child.signalCode === null) {
      // The runtime drains on SIGTERM: in-flight invocations finish, up to their timeout.
      child.kill('SIGTERM');
      const graceMs = (r.fn.spec.timeoutSeconds ?? 3) * 1000 + killGraceMs;
      r.killTimer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    }
  }

  /** The replica's process is gone (or never came): forget it, replace it if it should run. */
  function gone(r: LocalReplica, how?: string): void {
    if (r.gone) return;
    r.gone = true;
    clearTimeout(r.killTimer);
    r.halt.abort();
    const expected = r.phase === 'stopping';
    const wasReady = r.ready;
    r.ready = false;
    r.phase = 'stopping';
    all.delete(r);
    const st = states.get(r.key);
    if (how !== undefined && !expected && !closing) {
      if (st && st.revision === r.revision && !r.failed) {
        const delay = failure(st, r.readyAt);
        say(r.key, `replica ${r.id} ${how}; a new one starts in ${delay} ms`);
      } else {
        say(r.key, `replica ${r.id} ${how}`);
      }
    }
    if (wasReady) emit(r.key);
    r.markExited();
    void tidyCode(r.key);
    if (st) void reconcile(st);
  }

  function replicaEnv(
    st: FunctionState,
    r: LocalReplica,
    codeDir: string,
    fnEnv: Record<string, string>,
    languageEnv: Record<string, string>,
  ): Record<string, string> {
    const { namespace, name } = splitKey(r.key);
    const spec = r.fn.spec;
    const env: Record<string, string> = {};
    // A base environment, not this process's: a function sees what it would see in a pod.
    for (const variable of ['PATH', 'HOME', 'TMPDIR']) {
      const value = process.env[variable];
      if (value !== undefined) env[variable] = value;
    }
    Object.assign(env, options.env, fnEnv);
    const contract = runtimeEnv(
      {
        handler: spec.handler ?? 'index.handler',
        codeDir,
        functionName: name,
        functionNamespace: namespace,
        memoryMb: mebibytes(spec.memory ?? '128Mi'),
        timeoutMs: (spec.timeoutSeconds ?? 3) * 1000,
        concurrency: spec.concurrency ?? 1,
        runtime: spec.runtime,
        // The runtime binds any free port and says which: no port is picked here and lost in a race.
        port: 0,
        host: '127.0.0.1',
      },
      // The Function's NODE_OPTIONS joins the heap flags, as in a cluster.
      fnEnv[envNames.nodeOptions],
    );
    for (const variable of Object.keys(contract)) {
      if (variable in fnEnv && variable !== envNames.nodeOptions) {
        sayOnce(st, `${variable} is set by the platform; the Function's value is not used`);
      }
    }
    return Object.assign(env, contract, languageEnv);
  }

  const languagesDir =
    options.languagesDir ?? process.env.EDDY_LANGUAGES_DIR ?? resolve(process.cwd(), '.eddy');

  /**
   * What a replica of `fn` needs of its language, made once and kept under the languages
   * directory: the node it runs on (a nodejs22 Function on Node 22, fetched when this is not
   * it), python3.11's virtual environment (with the code's requirements.txt), java17's client.
   */
  async function languageOf(fn: EddyFunction, codeDir: string | undefined): Promise<Language> {
    const runtime = fn.spec.runtime;
    const node =
      runtime && nodeMajor(runtime)
        ? await nodeFor(runtime, languagesDir, log, { signal: preparing.signal })
        : process.execPath;
    if (runtime === 'python3.11') {
      const requirements = codeDir === undefined ? undefined : requirementsOf(codeDir);
      return {
        node,
        env: {
          [envNames.python]: await pythonWithRic(languagesDir, log, requirements, {
            signal: preparing.signal,
          }),
        },
      };
    }
    if (runtime === 'java17')
      return {
        node,
        env: {
          [envNames.javaClasspath]: await javaRicClasspath(languagesDir, log, preparing.signal),
        },
      };
    return { node, env: {} };
  }

  /** Stops what languageOf runs (npm, pip, mvn) when the platform stops. */
  const preparing = new AbortController();

  /** What prepare last told of a Function that cannot run here, so that it is told once. */
  const cannotRun = new Map<FunctionKey, string>();

  /**
   * Starts making what `fn`'s language needs as soon as the Function is known, so the stack's
   * first lines say it (a Node.js fetched, a virtual environment made) and the first event does
   * not wait for it. A failure here is met again, and told, when a replica starts.
   */
  function prepare(fn: EddyFunction): void {
    const runtime = fn.spec.runtime;
    const key = keyOf(fn);
    let codeDir: string | undefined;
    try {
      const source = codeSource(fn, options.configMaps);
      cannotRun.delete(key);
      if (source.kind === 'dir') codeDir = source.dir;
      else if (runtime === 'python3.11' && source.files['requirements.txt'] !== undefined) return;
    } catch (err) {
      // What is missing (python3, a bootstrap, the code), told now rather than at the first
      // event, and once until it changes.
      if (err instanceof CannotRun && cannotRun.get(key) !== err.message) {
        cannotRun.set(key, err.message);
        say(key, err.message);
      }
      return;
    }
    if (!runtime || runtime === 'provided') return;
    languageOf(fn, codeDir).catch((err) => {
      if (preparing.signal.aborted) return;
      say(
        keyOf(fn),
        `cannot make ${runtime}'s environment: ${describeError(err)}; a replica tries again when it starts`,
      );
    });
  }

  async function launch(
    st: FunctionState,
    r: LocalReplica,
    source: CodeSource,
    fnEnv: Record<string, string>,
  ): Promise<void> {
    let codeDir: string;
    if (source.kind === 'dir') {
      codeDir = source.dir;
    } else {
      try {
        keysWithFiles.add(r.key);
        codeDir = await serially(r.key, async () => {
          await mkdir(functionDir(r.key), { recursive: true });
          const dir = await writeCode(functionDir(r.key), source);
          r.codeDir = dir;
          return dir;
        });
      } catch (err) {
        if (r.phase !== 'stopping' && !closing) {
          const delay = failure(st);
          say(r.key, `cannot write the code: ${describeError(err)}; trying again in ${delay} ms`);
        }
        r.phase = 'stopping';
        gone(r);
        return;
      }
    }
    // Stopped, or its revision replaced, while the code was being written.
    const superseded = () =>
      r.phase === 'stopping' || closing || states.get(r.key) !== st || st.revision !== r.revision;
    if (superseded()) {
      r.phase = 'stopping';
      gone(r);
      return;
    }
    let language: Language;
    try {
      language = await languageOf(r.fn, codeDir);
    } catch (err) {
      if (!superseded()) {
        const delay = failure(st);
        const why = `cannot make ${r.fn.spec.runtime}'s environment: ${describeError(err)}`;
        say(r.key, `${why}; trying again in ${delay} ms`);
        // Invocations waiting for it are told now, not after the activation timeout.
        st.cannotStart = why;
        emit(r.key);
      }
      r.phase = 'stopping';
      gone(r);
      return;
    }
    if (superseded()) {
      r.phase = 'stopping';
      gone(r);
      return;
    }
    const languageEnv = language.env;
    let child: ChildProcessByStdio<null, Readable, Readable>;
    try {
      // Where util-linux's setpriv is (Linux), the kernel ends the replica when the stack ends,
      // even by SIGKILL, which no exit handler sees: no replica outlives its stack.
      const [command, args] = existsSync(setpriv)
        ? [setpriv, ['--pdeathsig', 'KILL', '--', language.node, options.runtimeMain]]
        : [language.node, [options.runtimeMain]];
      child = spawn(command, args, {
        env: replicaEnv(st, r, codeDir, fnEnv, languageEnv),
        cwd: codeDir,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (err) {
      const delay = failure(st);
      say(r.key, `cannot start a replica: ${describeError(err)}; trying again in ${delay} ms`);
      r.phase = 'stopping';
      gone(r);
      return;
    }
    r.child = child;
    r.id = child.pid === undefined ? `unstarted-${r.seq}` : String(child.pid);
    r.phase = 'starting';
    st.cannotStart = undefined;
    const prefix = `[${r.key}] `;
    forwardLines(child.stdout, (line) => {
      if (r.url === undefined) {
        const match = listening.exec(line);
        if (match) r.url = `http://127.0.0.1:${match[1]}`;
      }
      log(prefix + line);
    });
    forwardLines(child.stderr, (line) => log(prefix + line));
    child.once('exit', (code, signal) =>
      gone(r, signal ? `was killed by ${signal}` : `exited with code ${code}`),
    );
    child.on('error', (err) => {
      // Also emitted when a signal cannot be sent; only a process that never started is gone.
      if (child.pid === undefined) gone(r, `could not start: ${err.message}`);
    });
    void watchReadiness(st, r);
  }

  // Probes go over kept-alive connections: a new connection for each would slow the start.
  const probes = new Agent({ keepAlive: true, maxSockets: 64 });
  const readyz = (url: string, halt: AbortSignal) =>
    probeReadyz(url, { agent: probes, signal: halt, timeoutMs: probeTimeoutMs });

  const pause = (ms: number, signal: AbortSignal) =>
    sleep(ms, undefined, { signal }).catch(() => undefined);

  /** Ready once /readyz answers 200; then follows it, so recycling replicas leave the ready set. */
  async function watchReadiness(st: FunctionState, r: LocalReplica): Promise<void> {
    const halt = r.halt.signal;
    const deadline = Date.now() + startTimeoutMs;
    while (r.phase === 'starting') {
      if (Date.now() > deadline) {
        r.failed = true;
        const delay = failure(st);
        say(
          r.key,
          r.initError
            ? `replica ${r.id} could not load its handler (${r.initError.errorType}: ${r.initError.errorMessage}): invocations get that error; stopping it, a new one loads the handler again in ${delay} ms`
            : `replica ${r.id} was not ready within ${startTimeoutMs} ms: stopping it; a new one starts in ${delay} ms`,
        );
        stopReplica(r);
        return;
      }
      const readiness = r.url === undefined ? undefined : await readyz(r.url, halt);
      if (readiness?.initError && r.phase === 'starting') {
        // Its handler did not load, for good: invocations get that error now. The replica is
        // asked no more; the start deadline replaces it, which loads the handler again.
        r.initError = readiness.initError;
        emit(r.key);
        await pause(deadline - Date.now(), halt);
        continue;
      }
      if (readiness?.ready && r.phase === 'starting') {
        r.phase = 'running';
        r.ready = true;
        r.readyAt = Date.now();
        emit(r.key);
        void reconcile(st);
        break;
      }
      await pause(startPollMs, halt);
    }
    while (r.phase === 'running') {
      await pause(readyPollMs, halt);
      if (r.phase !== 'running') return;
      const ok = (await readyz(r.url!, halt)).ready;
      if (r.phase !== 'running' || ok === r.ready) continue;
      r.ready = ok;
      emit(r.key);
      if (ok) void reconcile(st);
    }
  }

  /** Starts one replica of the current revision; throws when the Function cannot run here. */
  function startReplica(st: FunctionState, launches: Promise<void>[]): void {
    const source = codeSource(st.fn, options.configMaps);
    const { env, notes } = functionEnv(st.fn, options.configMaps, options.secrets);
    for (const note of notes) sayOnce(st, note);
    let markExited: () => void = () => undefined;
    const exited = new Promise<void>((resolve) => (markExited = resolve));
    seq += 1;
    const r: LocalReplica = {
      seq,
      key: st.key,
      id: `unstarted-${seq}`,
      fn: st.fn,
      revision: st.revision,
      phase: 'preparing',
      ready: false,
      url: undefined,
      child: undefined,
      codeDir: undefined,
      readyAt: undefined,
      failed: false,
      initError: undefined,
      gone: false,
      halt: new AbortController(),
      killTimer: undefined,
      exited,
      markExited,
    };
    all.add(r);
    launches.push(launch(st, r, source, env));
  }

  /** Stop first: replicas not ready yet, then the newest. */
  const stopOrder = (a: LocalReplica, b: LocalReplica) =>
    Number(a.ready) - Number(b.ready) || b.seq - a.seq;

  function converge(st: FunctionState, launches: Promise<void>[]): void {
    const live = replicasOf(st.key).filter((r) => r.phase !== 'stopping');
    const current = live.filter((r) => r.revision === st.revision);
    if (current.length < st.desired && st.restartTimer === undefined) {
      try {
        for (let n = current.length; n < st.desired; n++) startReplica(st, launches);
      } catch (err) {
        failure(st);
        sayOnce(st, `${describeError(err)} (trying again with backoff)`);
      }
    } else if (current.length > st.desired) {
      for (const r of [...current].sort(stopOrder).slice(0, current.length - st.desired)) {
        stopReplica(r);
      }
    }
    // A changed spec: replicas of the old revision serve until the new ones are ready.
    const readyCurrent = current.filter((r) => r.ready && r.phase === 'running').length;
    const keepOld = Math.max(0, st.desired - readyCurrent);
    const old = live.filter((r) => r.revision !== st.revision && r.phase !== 'stopping');
    const keep = new Set(
      old
        .filter((r) => r.ready)
        .sort((a, b) => a.seq - b.seq)
        .slice(0, keepOld),
    );
    for (const r of old) if (!keep.has(r)) stopReplica(r);
  }

  function reconcile(st: FunctionState): Promise<void> {
    if (closing || states.get(st.key) !== st) return Promise.resolve();
    // A listener called from here may scale again: take that up in another pass, not nested.
    if (st.reconciling) {
      st.again = true;
      return Promise.resolve();
    }
    st.reconciling = true;
    const launches: Promise<void>[] = [];
    try {
      do {
        st.again = false;
        converge(st, launches);
      } while (st.again && !closing && states.get(st.key) === st);
    } finally {
      st.reconciling = false;
    }
    return Promise.all(launches).then(() => undefined);
  }

  function changed(st: FunctionState, fn: EddyFunction): void {
    const revision = revisionOf(fn);
    st.fn = fn;
    if (revision === st.revision) return;
    st.revision = revision;
    st.failures = 0;
    clearTimeout(st.restartTimer);
    st.restartTimer = undefined;
    st.said.clear();
    st.cannotStart = undefined;
    void reconcile(st);
  }

  function removed(key: FunctionKey): void {
    const st = states.get(key);
    if (!st) return;
    states.delete(key);
    clearTimeout(st.restartTimer);
    st.desired = 0;
    for (const r of replicasOf(key)) stopReplica(r);
    emit(key);
    void tidyCode(key);
  }

  function assertRunning(): void {
    if (!started) throw new Error('the local platform is not started: call start(signal) first');
    if (closing) throw new Error('the local platform has stopped');
  }

  /** The state of `fn`, made current from the store (the arguments of scale may be older). */
  function track(fn: EddyFunction): FunctionState {
    assertRunning();
    const key = keyOf(fn);
    const latest = store.get(fn.metadata.namespace, fn.metadata.name) ?? fn;
    let st = states.get(key);
    if (!st) {
      st = newState(latest);
      states.set(key, st);
    } else {
      changed(st, latest);
    }
    return st;
  }

  function readyOf(key: FunctionKey): Replica[] {
    let ready = readyCache.get(key);
    if (!ready) {
      ready = replicasOf(key)
        .filter((r) => r.ready && r.phase === 'running')
        .sort((a, b) => a.seq - b.seq)
        .map((r) => ({ id: r.id, url: r.url! }));
      readyCache.set(key, ready);
    }
    return ready;
  }

  async function shutdown(): Promise<void> {
    closing = true;
    // A Node.js being fetched or an environment being made is not waited for.
    preparing.abort();
    unsubscribe();
    for (const st of states.values()) clearTimeout(st.restartTimer);
    for (const r of all) stopReplica(r);
    await Promise.all([...all].map((r) => r.exited));
    probes.destroy();
    await Promise.all([...fileQueues.values()]);
    if (options.workDir === undefined) {
      process.removeListener('exit', removeWorkDir);
      await rm(workDir, { recursive: true, force: true });
    } else {
      for (const key of keysWithFiles) await rm(functionDir(key), { recursive: true, force: true });
    }
    states.clear();
    markStopped();
  }

  return {
    name: 'local',
    stopped,

    async start(signal) {
      if (started) throw new Error('the local platform is already started');
      started = true;
      if (options.workDir === undefined) {
        workDir = await mkdtemp(join(tmpdir(), 'eddy-local-'));
        // An exit without the stop (a second Ctrl-C) leaves no directory behind either.
        process.once('exit', removeWorkDir);
      } else {
        workDir = options.workDir;
        await mkdir(workDir, { recursive: true });
      }
      for (const fn of store.list()) prepare(fn);
      unsubscribe = store.onChange((fn, deleted) => {
        if (closing) return;
        if (deleted) {
          cannotRun.delete(keyOf(fn));
          removed(keyOf(fn));
        } else {
          prepare(fn);
          const st = states.get(keyOf(fn));
          if (st) changed(st, fn);
        }
      });
      const stop = () => {
        shutdown().catch((err) => {
          log(`local platform: shutting down failed: ${describeError(err)}`);
          markStopped();
        });
      };
      if (signal.aborted) stop();
      else signal.addEventListener('abort', stop, { once: true });
    },

    async scale(fn, replicas) {
      if (!Number.isInteger(replicas) || replicas < 0) {
        throw new Error(
          `cannot scale Function ${keyOf(fn)} to ${replicas} replicas: use a whole number from 0`,
        );
      }
      const st = track(fn);
      // Rejects a Function that cannot run here, naming it and what to do.
      if (replicas > 0) codeSource(st.fn, options.configMaps);
      if (st.desired !== replicas) {
        st.desired = replicas;
        emit(st.key);
      }
      await reconcile(st);
    },

    async activate(fn, atLeast = 1) {
      const st = track(fn);
      codeSource(st.fn, options.configMaps);
      // A Secret it names and the files lack: refused now, naming it, not after a timeout.
      functionEnv(st.fn, options.configMaps, options.secrets);
      if (st.desired < atLeast) {
        st.desired = atLeast;
        emit(st.key);
      }
      await reconcile(st);
    },

    ready: readyOf,

    initError(key) {
      if (readyOf(key).length > 0) return undefined;
      return replicasOf(key).find((r) => r.initError && !r.gone)?.initError;
    },

    cannotStart(key) {
      if (readyOf(key).length > 0) return undefined;
      return states.get(key)?.cannotStart;
    },

    counts(key): ReplicaCounts {
      return { desired: states.get(key)?.desired ?? 0, ready: readyOf(key).length };
    },

    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },

    unreachable(key, replicaId) {
      const r = replicasOf(key).find((x) => x.id === replicaId);
      if (!r?.ready) return;
      // Back in the ready set only after its next /readyz answers 200.
      r.ready = false;
      emit(key);
    },
  };
}
