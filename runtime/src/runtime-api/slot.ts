/**
 * One language process and the Runtime API it talks to: Lambda's `2018-06-01` interface on its
 * own 127.0.0.1 port, so that each process is told apart by where it connects. The process takes
 * one invocation at a time, as on Lambda; answers to the process are those of AWS's Runtime
 * Interface Emulator (202 `{"status":"OK"}`, 400 `InvalidRequestID`, 403 `InvalidStateTransition`,
 * 413 `RequestEntityTooLarge`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { maxPayloadBytes, type ErrorBody } from '../contract/errors.js';
import { logTailBytes } from '../contract/http.js';
import type { Outcome } from '../invocation.js';

/** Lambda's Runtime API header names. */
export const apiHeaders = {
  requestId: 'Lambda-Runtime-Aws-Request-Id',
  deadlineMs: 'Lambda-Runtime-Deadline-Ms',
  functionArn: 'Lambda-Runtime-Invoked-Function-Arn',
  traceId: 'Lambda-Runtime-Trace-Id',
  clientContext: 'Lambda-Runtime-Client-Context',
  cognitoIdentity: 'Lambda-Runtime-Cognito-Identity',
  errorType: 'lambda-runtime-function-error-type',
  errorBody: 'lambda-runtime-function-error-body',
  responseMode: 'lambda-runtime-function-response-mode',
} as const;

const apiPrefix = '/2018-06-01/runtime/';
/** The emulator accepts a response this much over 6 MB (headers of its own framing). */
const maxResponseBytes = maxPayloadBytes + 100;
const setpriv = '/usr/bin/setpriv';
const isContainerInit = process.pid === 1;

export interface LanguageCommand {
  command: string;
  args: string[];
  cwd: string;
  env: Record<string, string>;
  /** What to do when the command cannot be run. */
  hint: string;
}

/** What the slot hands a process with its invocation. */
export interface Delivery {
  requestId: string;
  /** Epoch ms. */
  deadline: number;
  payload: Buffer;
  functionArn: string;
  traceId: string;
  /** The client context's JSON, sent as Lambda-Runtime-Client-Context when there is one. */
  clientContext?: string;
}

interface Current extends Delivery {
  /**
   * Ends the invocation with `outcome` at the end of this turn of the event loop: what the
   * process wrote to its output before it answered (read in this same turn) still counts as the
   * invocation's, before its END line and in its tail.
   */
  settle(outcome: Outcome): void;
  /** Settled already, to end with this turn: nothing else may end it. */
  settling: boolean;
  /** Monotonic ms when the process took the event; undefined until it asks for it. */
  delivered?: number;
  /** The process that took it. */
  process?: ChildProcess;
  timer: NodeJS.Timeout;
}

function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  // Go's json.Encoder, which the emulator renders with, ends each body with a newline.
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

/**
 * Every answer the Runtime API gives a language process, in one place: those of AWS's Runtime
 * Interface Emulator, with its status codes, error types and messages.
 */
const answer = {
  accepted: (res: ServerResponse) => json(res, 202, { status: 'OK' }),
  invalidRequestId: (res: ServerResponse) =>
    json(res, 400, { errorMessage: 'Invalid request ID', errorType: 'InvalidRequestID' }),
  invalidResponseMode: (res: ServerResponse) =>
    json(res, 400, {
      errorMessage: 'Invalid function response mode',
      errorType: 'InvalidFunctionResponseMode',
    }),
  outOfTurn: (res: ServerResponse, from: ApiState, to: string) =>
    json(res, 403, {
      errorMessage: `State transition from ${from} to ${to} failed for runtime. Error: State transition is not allowed`,
      errorType: 'InvalidStateTransition',
    }),
  // Go's http.NotFound, as the emulator's router answers a path it does not serve.
  notFound: (res: ServerResponse) => {
    res.writeHead(404, {
      'content-type': 'text/plain; charset=utf-8',
      'x-content-type-options': 'nosniff',
      'content-length': 19,
    });
    res.end('404 page not found\n');
  },
  truncated: (res: ServerResponse) =>
    json(res, 400, {
      errorMessage: 'HTTP request detected as truncated',
      errorType: 'TruncatedHTTPRequest',
    }),
  tooLarge: (res: ServerResponse) =>
    json(res, 413, {
      errorMessage: `Exceeded maximum allowed payload size (${maxResponseBytes} bytes).`,
      errorType: 'RequestEntityTooLarge',
    }),
};

/**
 * Where a language process stands, named as the emulator names its runtime states in the 403s:
 * started (before its first `next`), waiting for an event, holding one, having answered it, or
 * having reported an init error.
 */
type ApiState = 'Started' | 'Ready' | 'Running' | 'RuntimeResponseSentState' | 'InitError';

/** Signals as Go names them, and so the emulator's `Runtime.ExitError` messages. */
const goSignalNames: Partial<Record<NodeJS.Signals, string>> = {
  SIGABRT: 'aborted',
  SIGALRM: 'alarm clock',
  SIGBUS: 'bus error',
  SIGFPE: 'floating point exception',
  SIGHUP: 'hangup',
  SIGILL: 'illegal instruction',
  SIGINT: 'interrupt',
  SIGKILL: 'killed',
  SIGPIPE: 'broken pipe',
  SIGQUIT: 'quit',
  SIGSEGV: 'segmentation fault',
  SIGSYS: 'bad system call',
  SIGTERM: 'terminated',
  SIGTRAP: 'trace/breakpoint trap',
  SIGUSR1: 'user defined signal 1',
  SIGUSR2: 'user defined signal 2',
  SIGXCPU: 'CPU time limit exceeded',
  SIGXFSZ: 'file size limit exceeded',
};

/** How long a process that reported an init error has to exit by itself before it is killed. */
const initErrorExitMs = 2_000;

/** Peak resident set size of a process in MB (VmHWM), or undefined when it cannot be read. */
function peakMemoryMb(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Math.ceil(Number(m[1]) / 1024) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Reads a body up to `limit` bytes; 'too-large' past it (read to the end and dropped);
 * 'truncated' when the request ends before its body does (the process died while it wrote it).
 */
function readBody(
  req: IncomingMessage,
  limit: number,
  done: (b: Buffer | 'too-large' | 'truncated') => void,
) {
  const chunks: Buffer[] = [];
  let size = 0;
  let told = false;
  const tell = (b: Buffer | 'too-large' | 'truncated') => {
    if (told) return;
    told = true;
    done(b);
  };
  req.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size <= limit) chunks.push(chunk);
  });
  req.on('end', () => tell(size > limit ? 'too-large' : Buffer.concat(chunks)));
  req.on('error', () => tell('truncated'));
  req.on('close', () => tell('truncated'));
}

/**
 * An error body a runtime client posted, in Lambda's shape whatever it sent: its other members
 * (awslambdaric's `requestId`, a custom runtime's own) kept, as the emulator passes them on.
 */
function errorBodyFrom(raw: Buffer, headerType: string | undefined): ErrorBody {
  let parsed: Partial<ErrorBody> & Record<string, unknown> = {};
  try {
    const value: unknown = JSON.parse(raw.toString('utf8'));
    if (value !== null && typeof value === 'object' && !Array.isArray(value))
      parsed = value as Record<string, unknown>;
  } catch {
    parsed = { errorMessage: raw.toString('utf8') };
  }
  const { stackTrace, ...rest } = parsed;
  const body: ErrorBody = {
    ...rest,
    errorType:
      (typeof parsed.errorType === 'string' && parsed.errorType) || headerType || 'Runtime.Unknown',
    errorMessage: typeof parsed.errorMessage === 'string' ? parsed.errorMessage : '',
  };
  if (Array.isArray(stackTrace)) body.stackTrace = stackTrace.map(String);
  return body;
}

/** Where `command` is on `path` (a PATH value) as an executable file, if it is. */
export function onPath(command: string, path: string | undefined): string | undefined {
  for (const dir of (path ?? '').split(':')) {
    if (dir === '') continue;
    const candidate = `${dir}/${command}`;
    try {
      accessSync(candidate, constants.X_OK);
      if (statSync(candidate).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Ends a language process and what it started (its process group). */
function killGroup(child: ChildProcess | undefined): void {
  if (!child?.pid) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

export class Slot {
  private readonly server: Server;
  private port = 0;
  private child: ChildProcess | undefined;
  private spawnedAt = 0;
  /** The process's start to its first `next`, until an invocation reports it. */
  private initMs: number | undefined;
  private initReported = false;
  private initError: ErrorBody | undefined;
  /** `next` polls waiting for an event, earliest first. */
  private parked: ServerResponse[] = [];
  private current: Current | undefined;
  /**
   * The request id the process may answer for, as the emulator keeps it: the last event
   * delivered to this process, also once it was answered.
   */
  private invokeId: string | undefined;
  private state: ApiState = 'Started';
  /** A process that reported an init error, given a moment to exit by itself. */
  private retiring: ChildProcess | undefined;
  private stopped = false;
  private peakMb: number | undefined;
  private peakPid: number | undefined;
  private peakReadAt: number | undefined;
  /**
   * What the process wrote before its first event, and the init error logged for it: the log
   * tail of the invocation that fails with that error holds it, as Lambda's does.
   */
  private initLog = '';
  private firstInitOver!: () => void;
  /**
   * Resolves when the first process's init is over, however it ended: it asked for its first
   * event, reported an init error, could not start, or exited.
   */
  readonly firstInit = new Promise<void>((resolve) => (this.firstInitOver = resolve));

  constructor(
    private readonly language: (apiAddress: string) => LanguageCommand,
    /** Told of each init error, to log it; returns the line it logged. */
    private readonly initFailedLog: (error: ErrorBody) => string,
    /**
     * The process's output, as it comes: with the request id of the invocation it writes during
     * (one at a time per process), so that the invocation's log tail holds it.
     */
    private readonly output: (text: string, requestId: string | undefined) => void,
    /** Adds text to an invocation's log tail only (it is in the log already). */
    private readonly tail: (text: string, requestId: string) => void,
  ) {
    this.server = createServer((req, res) => this.route(req, res));
    // A long poll waits as long as no invocation comes.
    this.server.requestTimeout = 0;
    this.server.headersTimeout = 60_000;
    this.server.keepAliveTimeout = 0;
  }

  get busy(): boolean {
    return this.current !== undefined;
  }

  get deadline(): number {
    return this.current?.deadline ?? 0;
  }

  /** Listens on a free 127.0.0.1 port and starts the process (init begins before any event). */
  async start(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        this.port = (this.server.address() as AddressInfo).port;
        resolve();
      });
    });
    this.spawn();
  }

  /** Runs one invocation in this slot's process; resolves at the latest at its deadline. */
  run(delivery: Delivery): Promise<Outcome> {
    return new Promise<Outcome>((resolve) => {
      const current: Current = {
        ...delivery,
        settling: false,
        settle: (outcome) => {
          if (this.current !== current || current.settling) return;
          current.settling = true;
          clearTimeout(current.timer);
          setImmediate(() => {
            if (this.current === current) this.current = undefined;
            resolve(outcome);
          });
        },
        timer: setTimeout(
          () => this.timedOut(current),
          Math.max(0, delivery.deadline - Date.now()),
        ),
      };
      this.current = current;
      if (this.initError) {
        // A process failed its init before this event came (at the runtime's start, or after
        // the last event): as on Lambda, the init runs again for this event, within its time,
        // so that a dependency that was down at the start does not fail it. If it fails again,
        // the event fails with that error, and the next one starts the process again.
        this.initError = undefined;
        this.spawn();
      } else if (!this.child) this.spawn();
      this.deliver();
    });
  }

  /** Ends the process and stops listening. */
  stop(): void {
    this.stopped = true;
    this.firstInitOver();
    this.kill();
    this.killRetiring();
    for (const res of this.parked) res.destroy();
    this.parked = [];
    this.server.close();
    this.server.closeAllConnections();
  }

  private figures(): { initDurationMs?: number; maxMemoryUsedMb?: number } {
    // Reading /proc costs tens of µs: at most every 10 ms, as the Node runtime reads its own.
    const now = nowMs();
    if (
      this.peakReadAt === undefined ||
      now - this.peakReadAt >= 10 ||
      this.peakPid !== this.child?.pid
    ) {
      this.peakPid = this.child?.pid;
      this.peakMb = peakMemoryMb(this.peakPid) ?? this.peakMb;
      this.peakReadAt = now;
    }
    const out: { initDurationMs?: number; maxMemoryUsedMb?: number } = {
      maxMemoryUsedMb: this.peakMb,
    };
    if (!this.initReported && this.initMs !== undefined) {
      this.initReported = true;
      out.initDurationMs = this.initMs;
    }
    return out;
  }

  private fail(
    current: Current,
    code: 'InitError' | 'ExitError' | 'Unhandled' | 'InvalidResponseMode' | 'ResponseSizeTooLarge',
    body: ErrorBody,
  ): void {
    current.settle({
      kind: 'result',
      durationMs: current.delivered === undefined ? 0 : nowMs() - current.delivered,
      error: { code, body },
      ...this.figures(),
    });
  }

  private spawn(): void {
    if (this.stopped) return;
    this.killRetiring();
    // Polls of the process before are not this one's.
    this.dropPolls();
    this.invokeId = undefined;
    this.state = 'Started';
    this.initLog = '';
    const lang = this.language(`127.0.0.1:${this.port}`);
    this.initMs = undefined;
    this.initReported = false;
    this.spawnedAt = nowMs();
    // A command named without a path is looked up here, so that one that is missing is said as
    // such (setpriv would only exit 127).
    const found = lang.command.includes('/') ? lang.command : onPath(lang.command, lang.env.PATH);
    let unusable: string | undefined;
    if (found === undefined) unusable = `${lang.command} is not on PATH (${lang.env.PATH ?? ''})`;
    else if (found.startsWith('/')) {
      try {
        accessSync(found, constants.X_OK);
      } catch (err) {
        unusable = `${found} is not an executable file (${(err as NodeJS.ErrnoException).code})`;
      }
    }
    if (unusable !== undefined || found === undefined) {
      this.child = undefined;
      this.initMs = 0;
      this.initError = {
        errorType: 'Runtime.InvalidEntrypoint',
        errorMessage: `${unusable}: ${lang.hint}`,
      };
      this.logInitError(this.initError);
      this.initFailed();
      return;
    }
    // Its own process group, so a timeout ends what it started too (a shell script's curl);
    // where util-linux's setpriv is, the kernel ends it should the runtime itself be killed. A
    // runtime that is its container's first process (PID 1) needs no setpriv: when it ends, the
    // kernel ends every process of the container, and the process starts one exec sooner.
    const [command, args] =
      !isContainerInit && existsSync(setpriv)
        ? [setpriv, ['--pdeathsig', 'KILL', '--', found, ...lang.args]]
        : [found, lang.args];
    const child = spawn(command, args, {
      cwd: lang.cwd,
      env: lang.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    this.child = child;
    for (const stream of [child.stdout, child.stderr]) {
      stream.setEncoding('utf8');
      stream.on('data', (text: string) => {
        const current = this.current;
        const requestId = current?.process === child ? current.requestId : undefined;
        if (
          requestId === undefined &&
          (child === this.child || child === this.retiring) &&
          (this.state === 'Started' || this.state === 'InitError')
        )
          this.initLog = (this.initLog + text).slice(-logTailBytes);
        this.output(text, requestId);
      });
      // A pipe that fails loses only the process's output; its exit is seen on its own.
      stream.on('error', () => undefined);
    }
    child.once('error', (err: NodeJS.ErrnoException) => {
      if (this.child !== child) return;
      this.child = undefined;
      const missing = err.code === 'ENOENT' || err.code === 'EACCES';
      this.initError = {
        errorType: missing ? 'Runtime.InvalidEntrypoint' : 'Runtime.Unknown',
        errorMessage: `cannot start ${lang.command}: ${err.message}`,
      };
      this.logInitError(this.initError);
      this.initFailed();
    });
    child.once('exit', (code, signal) => this.exited(child, code, signal));
  }

  private kill(): void {
    const child = this.child;
    this.child = undefined;
    killGroup(child);
  }

  private killRetiring(): void {
    const child = this.retiring;
    this.retiring = undefined;
    killGroup(child);
  }

  /**
   * An init error is known: an event waiting for this process fails with it now. One that has
   * just ended (the process started again after it, and failed at once) leaves it to the next.
   */
  private initFailed(): void {
    this.firstInitOver();
    if (!this.current || this.current.settling || !this.initError) return;
    const error = this.initError;
    this.initError = undefined;
    this.failInit(this.current, error);
  }

  private failInit(current: Current, error: ErrorBody): void {
    if (this.initLog !== '') this.tail(this.initLog, current.requestId);
    this.fail(current, 'InitError', error);
  }

  /** An init error, logged, and kept for the tail of the invocation it fails. */
  private logInitError(error: ErrorBody): void {
    const line = this.initFailedLog(error);
    const apart = this.initLog === '' || this.initLog.endsWith('\n') ? '' : '\n';
    this.initLog = (this.initLog + apart + line).slice(-logTailBytes);
  }

  private exited(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    this.firstInitOver();
    if (child === this.retiring) {
      // It reported an init error and ended, as a runtime should.
      this.retiring = undefined;
      return;
    }
    if (this.child === child) this.child = undefined;
    else if (this.child !== undefined) return; // a replacement runs already
    this.dropPolls();
    const current = this.current;
    if (!current) return;
    if (this.initError) {
      this.initFailed();
      return;
    }
    const why = signal
      ? `Runtime exited with error: signal: ${goSignalNames[signal] ?? signal}`
      : code === 0
        ? 'Runtime exited without providing a reason'
        : `Runtime exited with error: exit status ${code}`;
    this.fail(current, 'ExitError', {
      errorType: 'Runtime.ExitError',
      errorMessage: `RequestId: ${current.requestId} Error: ${why}`,
    });
    // Lambda starts the runtime again for the next event; so does this slot, now, so that the
    // next event finds it initialised.
    this.spawn();
  }

  private timedOut(current: Current): void {
    if (this.current !== current) return;
    const figures = this.figures();
    this.kill();
    this.dropPolls();
    current.settle({ kind: 'timeout', restarted: true, ...figures });
    this.spawn();
  }

  /** Ends the polls of a process that is gone. */
  private dropPolls(): void {
    for (const res of this.parked) res.destroy();
    this.parked = [];
  }

  /** Gives the event to the earliest `next` still waiting, if an event waits. */
  private deliver(): void {
    const current = this.current;
    if (!current || current.delivered !== undefined) return;
    const res = this.parked.shift();
    if (!res) return;
    current.delivered = nowMs();
    current.process = this.child;
    this.invokeId = current.requestId;
    this.state = 'Running';
    this.send(res, current);
  }

  private send(res: ServerResponse, current: Current): void {
    const head: Record<string, string | number> = {
      'content-type': 'application/json',
      'content-length': current.payload.length,
      [apiHeaders.requestId]: current.requestId,
      [apiHeaders.deadlineMs]: String(current.deadline),
      [apiHeaders.functionArn]: current.functionArn,
      [apiHeaders.traceId]: current.traceId,
    };
    if (current.clientContext !== undefined) head[apiHeaders.clientContext] = current.clientContext;
    res.writeHead(200, head);
    res.end(current.payload);
  }

  private route(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '').split('?')[0]!;
    if (!path.startsWith(apiPrefix)) return this.notFound(req, res);
    const rest = path.slice(apiPrefix.length);
    if (rest === 'invocation/next') {
      if (req.method !== 'GET') return this.notAllowed(res, 'GET');
      return this.next(res);
    }
    if (rest === 'init/error') {
      if (req.method !== 'POST') return this.notAllowed(res, 'POST');
      return this.postInitError(req, res);
    }
    const m = /^invocation\/([^/]+)\/(response|error)$/.exec(rest);
    if (!m) return this.notFound(req, res);
    if (req.method !== 'POST') return this.notAllowed(res, 'POST');
    let requestId: string;
    try {
      requestId = decodeURIComponent(m[1]!);
    } catch {
      // Not an id any event had (a bad %-escape).
      req.resume();
      return answer.invalidRequestId(res);
    }
    if (m[2] === 'response') this.postResponse(req, res, requestId);
    else this.postError(req, res, requestId);
  }

  private notFound(req: IncomingMessage, res: ServerResponse): void {
    req.resume();
    answer.notFound(res);
  }

  private notAllowed(res: ServerResponse, allow: string): void {
    res.writeHead(405, { allow, 'content-length': 0 });
    res.end();
  }

  private next(res: ServerResponse): void {
    if (this.state === 'InitError') return answer.outOfTurn(res, this.state, 'Ready');
    if (this.initMs === undefined) this.initMs = nowMs() - this.spawnedAt;
    this.firstInitOver();
    const current = this.current;
    if (this.state === 'Running' && current?.delivered !== undefined) {
      // Asked again while holding an event: the emulator gives the same event again.
      this.send(res, current);
      return;
    }
    this.state = 'Ready';
    // Several polls at once (a client's threads): the earliest gets the next event.
    this.parked.push(res);
    res.once('close', () => {
      const i = this.parked.indexOf(res);
      if (i >= 0) this.parked.splice(i, 1);
    });
    this.deliver();
  }

  /**
   * The invocation a response or error is for, or the emulator's answer saying why there is
   * none: 400 for another id than the last event's, 403 once that event was answered.
   */
  private expecting(res: ServerResponse, requestId: string, to: string): Current | undefined {
    if (this.invokeId === undefined || requestId !== this.invokeId) {
      answer.invalidRequestId(res);
      return undefined;
    }
    const current = this.current;
    if (this.state !== 'Running' || current?.delivered === undefined) {
      answer.outOfTurn(res, this.state, to);
      return undefined;
    }
    this.state = 'RuntimeResponseSentState';
    return current;
  }

  private postResponse(req: IncomingMessage, res: ServerResponse, requestId: string): void {
    const current = this.expecting(res, requestId, 'InvocationResponse');
    if (!current) return void req.resume();
    const mode = req.headers[apiHeaders.responseMode];
    if (typeof mode === 'string' && mode.toLowerCase() !== 'streaming') {
      req.resume();
      this.fail(current, 'InvalidResponseMode', {
        errorType: 'Runtime.InvalidResponseModeHeader',
        errorMessage: `the runtime answered with ${apiHeaders.responseMode}: ${String(mode)}; the only mode is streaming`,
      });
      answer.invalidResponseMode(res);
      return;
    }
    readBody(req, maxResponseBytes, (body) => {
      if (body === 'truncated') return this.truncated(current, res);
      if (body === 'too-large') {
        this.fail(current, 'ResponseSizeTooLarge', {
          errorType: 'Function.ResponseSizeTooLarge',
          errorMessage: `Response payload size exceeded maximum allowed payload size (${maxResponseBytes} bytes).`,
        });
        answer.tooLarge(res);
        return;
      }
      // A streamed response is buffered; an error met mid-stream arrives in its trailers.
      const trailerType = req.trailers[apiHeaders.errorType];
      if (trailerType) {
        const encoded = req.trailers[apiHeaders.errorBody];
        this.fail(
          current,
          'Unhandled',
          errorBodyFrom(encoded ? Buffer.from(encoded, 'base64') : Buffer.alloc(0), trailerType),
        );
      } else {
        current.settle({
          kind: 'result',
          durationMs: nowMs() - current.delivered!,
          // As the process sent it: raw bytes from a custom runtime need not be UTF-8.
          body: body.length === 0 ? undefined : body,
          ...this.figures(),
        });
      }
      answer.accepted(res);
    });
  }

  private postError(req: IncomingMessage, res: ServerResponse, requestId: string): void {
    const current = this.expecting(res, requestId, 'InvocationErrorResponse');
    if (!current) return void req.resume();
    const headerType = req.headers[apiHeaders.errorType] as string | undefined;
    readBody(req, maxResponseBytes, (body) => {
      if (body === 'truncated') return this.truncated(current, res);
      this.fail(
        current,
        'Unhandled',
        errorBodyFrom(body === 'too-large' ? Buffer.alloc(0) : body, headerType),
      );
      answer.accepted(res);
    });
  }

  /** A response or error cut short: the invocation fails, as the emulator fails it. */
  private truncated(current: Current, res: ServerResponse): void {
    this.fail(current, 'ExitError', {
      errorType: 'Runtime.TruncatedResponse',
      errorMessage: `RequestId: ${current.requestId} Error: the runtime's answer ended before its body did`,
    });
    if (!res.destroyed) answer.truncated(res);
  }

  private postInitError(req: IncomingMessage, res: ServerResponse): void {
    if (this.state !== 'Started') {
      req.resume();
      answer.outOfTurn(res, this.state, 'InitError');
      return;
    }
    this.state = 'InitError';
    const child = this.child;
    const headerType = req.headers[apiHeaders.errorType] as string | undefined;
    readBody(req, maxResponseBytes, (body) => {
      if (child === undefined || this.child !== child) {
        // It exited before its report was read: its exit was told already.
        answer.accepted(res);
        return;
      }
      this.initMs = nowMs() - this.spawnedAt;
      const error = errorBodyFrom(
        body === 'too-large' || body === 'truncated' ? Buffer.alloc(0) : body,
        headerType,
      );
      this.initError = error;
      this.logInitError(error);
      answer.accepted(res);
      // A runtime that reported an init error exits; one that does not within a moment is
      // ended. The next event starts a new one.
      this.child = undefined;
      this.retiring = child;
      setTimeout(() => {
        if (this.retiring === child) this.killRetiring();
      }, initErrorExitMs).unref();
      this.initFailed();
    });
  }
}
