/**
 * Runs the handler in language processes behind Lambda's Runtime API (python3.11, java17,
 * provided): one process per invocation in flight, `EDDY_CONCURRENCY` of them, each started with
 * the environment Lambda sets and `AWS_LAMBDA_RUNTIME_API` naming its own 127.0.0.1 port.
 */
import {
  accessSync,
  closeSync,
  constants,
  openSync,
  readSync,
  realpathSync,
  rmSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { envNames, invokedFunctionArn, type LogFormat, type RuntimeName } from '../contract/env.js';
import type { ErrorBody } from '../contract/errors.js';
import {
  initBudgetMs,
  type FunctionInvoker,
  type InitResult,
  type Invocation,
  type Outcome,
} from '../invocation.js';
import { decodeEvent, type InvokerSettings } from '../invoker.js';
import { keep, startLine, write, writeLine } from '../logs.js';
import { lambdaVariables } from '../lambda-env.js';
import { findClientJar, jniProperty, unpackJni } from './java-jni.js';
import { Slot, type LanguageCommand } from './slot.js';

/** What the Node runtime's invoker is told of the function, and what a language process needs. */
export interface ProcessInvokerSettings extends InvokerSettings {
  runtime: Exclude<RuntimeName, 'nodejs20' | 'nodejs22' | 'nodejs24'>;
  /** python3.11: the interpreter that has awslambdaric. */
  python: string;
  /** The runtime's own environment, which the language processes inherit (less Node's). */
  env: NodeJS.ProcessEnv;
}

/** The runtime's own variables, which mean nothing to a language process. */
const notInherited = new Set(['NODE_OPTIONS', 'PORT', 'HOST']);

/** The environment Lambda gives a runtime process, for the process listening at `api`. */
export function lambdaEnv(s: ProcessInvokerSettings, api: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(s.env))
    if (v !== undefined && !notInherited.has(k)) env[k] = v;
  Object.assign(env, { AWS_LAMBDA_RUNTIME_API: api }, lambdaVariables(s, s.env));
  return env;
}

/**
 * bash, when `bootstrap` is an executable `#!/bin/sh` script and this machine's /bin/sh is not
 * bash: on Lambda /bin/sh is bash, and AWS's custom runtime tutorial's bootstrap (`#!/bin/sh`,
 * `set -euo pipefail`, `source`) needs it; Debian's /bin/sh (dash) has neither.
 */
export function shUnderBash(
  bootstrap: string,
  sh = '/bin/sh',
  bash = '/bin/bash',
): { command: string; args: string[] } | undefined {
  try {
    accessSync(bootstrap, constants.X_OK);
    const head = Buffer.alloc(128);
    const fd = openSync(bootstrap, 'r');
    let n: number;
    try {
      n = readSync(fd, head, 0, head.length, 0);
    } finally {
      closeSync(fd);
    }
    // The kernel passes what follows the interpreter on the line as one argument (`-e`).
    const m = /^#![ \t]*\/bin\/sh(?:[ \t]+([^\n]*?))?[ \t]*\r?\n/.exec(
      head.subarray(0, n).toString('latin1'),
    );
    if (!m || realpathSync(sh).endsWith('/bash')) return undefined;
    accessSync(bash, constants.X_OK);
    // --posix: bash as it runs when started as sh, which Lambda's /bin/sh is.
    return { command: bash, args: ['--posix', ...(m[1] ? [m[1]] : []), bootstrap] };
  } catch {
    // Not readable or no bash: started as it is, and what fails is told then.
    return undefined;
  }
}

/** The command that starts the runtime's language process. */
export function languageCommand(s: ProcessInvokerSettings, api: string): LanguageCommand {
  const env = lambdaEnv(s, api);
  switch (s.runtime) {
    case 'provided': {
      const bootstrap = join(s.codeDir, 'bootstrap');
      const bash = shUnderBash(bootstrap);
      return {
        command: bash?.command ?? bootstrap,
        args: bash?.args ?? [],
        cwd: s.codeDir,
        env,
        hint: 'a provided function brings an executable named bootstrap in its code directory',
      };
    }
    case 'python3.11':
      // AWS's base images start `python -m awslambdaric <handler>` in the task root.
      env.PYTHONPATH = env.PYTHONPATH ? `${s.codeDir}:${env.PYTHONPATH}` : s.codeDir;
      env.PYTHONUNBUFFERED = '1';
      return {
        command: s.python,
        args: ['-m', 'awslambdaric', s.handler],
        cwd: s.codeDir,
        env,
        hint: 'set EDDY_PYTHON to a python3.11 that has awslambdaric installed',
      };
    case 'java17': {
      const classpath = [
        s.codeDir,
        join(s.codeDir, 'lib', '*'),
        ...(s.env[envNames.javaClasspath] ?? '').split(':').filter(Boolean),
      ];
      const jar = findClientJar(classpath);
      // Each process its own copy of the client's JNI library, unpacked before it starts.
      const jni = jar
        ? [
            `-D${jniProperty}=${unpackJni(jar, join(tmpdir(), `eddy-java-${process.pid}`, api.replace(/\W/g, '-')))}`,
          ]
        : [];
      return {
        command: 'java',
        args: [
          '-XX:+TieredCompilation',
          '-XX:TieredStopAtLevel=1',
          ...jni,
          '-cp',
          classpath.join(':'),
          'com.amazonaws.services.lambda.runtime.api.client.AWSLambda',
          s.handler,
        ],
        cwd: s.codeDir,
        env,
        hint: "java17 needs a JDK 17 on PATH and AWS's runtime interface client in EDDY_JAVA_CLASSPATH",
      };
    }
  }
}

/** `INIT_ERROR <type>: <message>`, or a `platform.initError` record, as the Node runtime logs them. */
function initErrorLine(format: LogFormat, error: ErrorBody): string {
  return format === 'json'
    ? `${JSON.stringify({ time: new Date().toISOString(), type: 'platform.initError', record: error })}\n`
    : `INIT_ERROR ${error.errorType}: ${error.errorMessage}\n`;
}

const hex = () =>
  Math.floor(Math.random() * 0x100000000)
    .toString(16)
    .padStart(8, '0');

/** An X-Ray trace header for an invocation, as Lambda gives one to every event. */
function traceId(): string {
  const epoch = Math.floor(Date.now() / 1000).toString(16);
  return `Root=1-${epoch}-${hex()}${hex()}${hex()};Parent=${hex()}${hex()};Sampled=0`;
}

/** The event's bytes for the language process, or a string saying why it cannot be decoded. */
function payload(m: Invocation): Buffer | string {
  if (m.mode === 'direct' && m.body !== undefined && m.body.length > 0) {
    // The body is the event as the caller sent it; JSON checked, not re-encoded.
    const decoded = decodeEvent(m);
    return typeof decoded === 'string' ? decoded : m.body;
  }
  const decoded = decodeEvent(m);
  if (typeof decoded === 'string') return decoded;
  const event = Buffer.isBuffer(decoded.event) ? decoded.event.toString('base64') : decoded.event;
  return Buffer.from(JSON.stringify(event ?? {}));
}

/**
 * The client context for `Lambda-Runtime-Client-Context`: the JSON the caller sent, as AWS's
 * emulator sends it (re-serialised, so no line break reaches a header, and as UTF-8 bytes);
 * the runtime server has already decoded and checked it.
 */
export function clientContextHeader(context: Invocation['clientContext']): string | undefined {
  if (context === undefined) return undefined;
  return Buffer.from(JSON.stringify(context), 'utf8').toString('latin1');
}

export class ProcessInvoker implements FunctionInvoker {
  readonly ready: Promise<InitResult>;
  readonly initPerProcess = true;
  onDeadlinesChanged: (() => void) | undefined;
  private readonly slots: Slot[] = [];
  private readonly functionArn: string;

  constructor(private readonly settings: ProcessInvokerSettings) {
    this.functionArn = invokedFunctionArn(
      settings.env,
      settings.functionNamespace,
      settings.functionName,
    );
    for (let i = 0; i < settings.concurrency; i++)
      this.slots.push(
        new Slot(
          (api) => languageCommand(settings, api),
          (error) => {
            const line = initErrorLine(settings.logFormat, error);
            writeLine(line);
            return line;
          },
          (text, requestId) => write(text, requestId),
          (text, requestId) => keep(requestId, text),
        ),
      );
    const started = performance.now();
    this.ready = Promise.all(this.slots.map((s) => s.start())).then(
      async () => {
        // Ready once the processes' init is over, as a Node function is once its handler has
        // loaded: an invocation's timeout starts after it, and Kubernetes sends nothing before.
        // Lambda gives a first init 10 s of its own; one that takes longer goes on within the
        // first invocations' time.
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          Promise.all(this.slots.map((s) => s.firstInit)),
          new Promise((resolve) => (timer = setTimeout(resolve, initBudgetMs))),
        ]);
        clearTimeout(timer);
        return { ok: true as const, initDurationMs: performance.now() - started };
      },
      (err: Error) => ({
        ok: false,
        code: 'InitError',
        error: {
          errorType: 'Runtime.Unknown',
          errorMessage: `cannot serve the Runtime API: ${err.message}`,
        },
        initDurationMs: 0,
      }),
    );
    process.once('exit', () => this.stop());
  }

  earliestDeadline(): number {
    let earliest = 0;
    for (const s of this.slots)
      if (s.busy && (earliest === 0 || s.deadline < earliest)) earliest = s.deadline;
    return earliest;
  }

  invoke(m: Invocation): Promise<Outcome> {
    const body = payload(m);
    if (typeof body === 'string') return Promise.resolve({ kind: 'invalid', message: body });
    // The runtime server admits at most `concurrency` invocations, so one slot is free.
    const slot = this.slots.find((s) => !s.busy);
    if (!slot) throw new Error('no free language process: more invocations than EDDY_CONCURRENCY');
    // Now, not queued: the process may write its first line before this turn ends.
    writeLine(startLine(this.settings.logFormat, m.requestId), m.requestId);
    const outcome = slot.run({
      requestId: m.requestId,
      deadline: m.deadline,
      payload: body,
      functionArn: this.functionArn,
      traceId: traceId(),
      clientContext: clientContextHeader(m.clientContext),
    });
    this.onDeadlinesChanged?.();
    return outcome.finally(() => this.onDeadlinesChanged?.());
  }

  /** Ends every language process, and removes the Java client's libraries unpacked for them. */
  stop(): void {
    for (const s of this.slots) s.stop();
    if (this.settings.runtime === 'java17')
      rmSync(join(tmpdir(), `eddy-java-${process.pid}`), { recursive: true, force: true });
  }
}
