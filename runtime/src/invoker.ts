/** The HTTP thread's side of the handler thread: start it, send invocations, enforce deadlines. */
import { Worker } from 'node:worker_threads';
import { heapLimitMb } from './config.js';
import type { ErrorBody, ErrorCode } from './errors.js';
import type { InvokeMessage, WorkerMessage, WorkerSettings } from './protocol.js';

export type Outcome =
  | {
      kind: 'result';
      durationMs: number;
      body?: string;
      error?: { code: ErrorCode; body: ErrorBody };
    }
  | { kind: 'invalid'; message: string }
  | { kind: 'timeout' }
  /** The handler thread failed under this invocation (out of memory, an escaped exception). */
  | { kind: 'crash'; code: ErrorCode; body: ErrorBody };

export type InitResult =
  | { ok: true; initDurationMs: number }
  | { ok: false; code: ErrorCode; error: ErrorBody; initDurationMs: number };

interface Pending {
  requestId: string;
  resolve(outcome: Outcome): void;
  timer: NodeJS.Timeout;
}

export interface InvokerOptions {
  settings: WorkerSettings;
  /** Called when the handler thread can no longer be trusted; the runtime should recycle. */
  onBroken(reason: string): void;
}

export class Invoker {
  readonly ready: Promise<InitResult>;
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  constructor(private readonly options: InvokerOptions) {
    const { settings } = options;
    this.worker = new Worker(new URL('./worker.js', import.meta.url), {
      workerData: settings,
      resourceLimits: { maxOldGenerationSizeMb: heapLimitMb(settings.memoryMb) },
    });
    let settleInit: (r: InitResult) => void;
    this.ready = new Promise((resolve) => (settleInit = resolve));
    this.worker.on('message', (m: WorkerMessage) => {
      switch (m.type) {
        case 'ready':
          settleInit({ ok: true, initDurationMs: m.initDurationMs });
          break;
        case 'init-error':
          settleInit({ ok: false, code: m.code, error: m.error, initDurationMs: m.initDurationMs });
          break;
        case 'invalid':
          this.settle(m.id, { kind: 'invalid', message: m.message });
          break;
        case 'result':
          this.settle(m.id, {
            kind: 'result',
            durationMs: m.durationMs,
            body: m.body,
            error: m.error,
          });
          break;
        case 'fatal': {
          const body = m.error;
          for (const [id, p] of this.pending) {
            if (m.requestIds.includes(p.requestId))
              this.settle(id, { kind: 'crash', code: 'Unhandled', body });
          }
          this.options.onBroken(
            `an exception escaped the handler: ${body.errorType}: ${body.errorMessage}`,
          );
          break;
        }
      }
    });
    let initFailed = false;
    void this.ready.then((r) => (initFailed = !r.ok));
    const onDeath = (code: ErrorCode, body: ErrorBody) => {
      // After a failed import the thread has nothing to do and ends; the runtime stays up to
      // report the error on every invocation.
      if (initFailed) return;
      settleInit({ ok: false, code, error: body, initDurationMs: 0 });
      for (const id of [...this.pending.keys()]) this.settle(id, { kind: 'crash', code, body });
      this.options.onBroken(body.errorMessage);
    };
    this.worker.on('error', (err: Error & { code?: string }) => {
      if (err.code === 'ERR_WORKER_OUT_OF_MEMORY') {
        onDeath('OutOfMemory', {
          errorType: 'Runtime.OutOfMemory',
          errorMessage: `the handler ran out of memory (heap limit ${heapLimitMb(settings.memoryMb)} MB of ${settings.memoryMb} MB): raise the function's memory or use less`,
        });
      } else {
        onDeath('ExitError', {
          errorType: 'Runtime.ExitError',
          errorMessage: `the handler thread failed: ${err.message}`,
        });
      }
    });
    this.worker.on('exit', (exitCode) => {
      onDeath('ExitError', {
        errorType: 'Runtime.ExitError',
        errorMessage: `the handler thread exited (code ${exitCode}), as with process.exit() in the handler`,
      });
    });
  }

  get inFlight(): number {
    return this.pending.size;
  }

  /** Runs one invocation; resolves at the latest at its deadline. */
  invoke(message: Omit<InvokeMessage, 'type' | 'id'>): Promise<Outcome> {
    const id = this.nextId++;
    return new Promise<Outcome>((resolve) => {
      const timer = setTimeout(
        () => this.settle(id, { kind: 'timeout' }),
        Math.max(0, message.deadline - Date.now()),
      );
      this.pending.set(id, { requestId: message.requestId, resolve, timer });
      this.worker.postMessage({ type: 'invoke', id, ...message } satisfies InvokeMessage);
    });
  }

  async stop(): Promise<void> {
    await this.worker.terminate();
  }

  private settle(id: number, outcome: Outcome): void {
    const p = this.pending.get(id);
    if (!p) return; // already timed out: a late result is dropped
    this.pending.delete(id);
    clearTimeout(p.timer);
    p.resolve(outcome);
  }
}
