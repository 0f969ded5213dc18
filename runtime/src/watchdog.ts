/**
 * A timeout the event loop cannot answer: a handler that blocks the thread (a busy loop) never
 * lets its timer fire. A small thread watches the loop's heartbeat and the earliest deadline in
 * flight; when the loop is stuck past a deadline it logs the timeout and ends the process, the
 * way Lambda discards a timed-out sandbox. Everything else about timeouts happens on the loop.
 */
import type { Worker } from 'node:worker_threads';
import type { LogFormat } from './config.js';

/** Slots of the shared array: ms since `base`. */
export const HEARTBEAT = 0;
export const DEADLINE = 1;
export const heartbeatMs = 100;

export interface WatchdogData {
  shared: SharedArrayBuffer;
  base: number;
  logFormat: LogFormat;
  timeoutMs: number;
}

export class Watchdog {
  private readonly view: Int32Array;
  private readonly base = Date.now();
  private worker: Worker | undefined;
  private stopped = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly options: {
      /** Path of the built watchdog-thread.js. */
      threadFile: string;
      logFormat: LogFormat;
      timeoutMs: number;
      earliestDeadline: () => number;
    },
  ) {
    this.view = new Int32Array(new SharedArrayBuffer(8));
    this.beat();
    this.timer = setInterval(() => this.beat(), heartbeatMs);
    this.timer.unref();
    setImmediate(() => this.start()).unref();
  }

  /**
   * Starts the watching thread, at once (its thread boots beside this one). It is started while
   * the handler loads, after this turn of the event loop, so that it overlaps the import; and at
   * the latest by the first invocation, before its handler is called: a first invocation that
   * blocks the loop must find it running.
   */
  private start(): void {
    if (this.worker || this.stopped) return;
    const data: WatchdogData = {
      shared: this.view.buffer as SharedArrayBuffer,
      base: this.base,
      logFormat: this.options.logFormat,
      timeoutMs: this.options.timeoutMs,
    };
    // Loaded here, not with the runtime's modules, and synchronously: a first invocation calls
    // this before its handler runs.
    const { Worker } = process.getBuiltinModule('node:worker_threads');
    this.worker = new Worker(this.options.threadFile, { workerData: data });
    this.worker.unref();
  }

  /** Call when an invocation starts or ends, so the watching thread knows the next deadline. */
  deadlinesChanged(): void {
    this.start();
    const earliest = this.options.earliestDeadline();
    Atomics.store(this.view, DEADLINE, earliest === 0 ? 0 : earliest - this.base);
  }

  private beat(): void {
    Atomics.store(this.view, HEARTBEAT, Date.now() - this.base);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.worker?.terminate();
  }
}
