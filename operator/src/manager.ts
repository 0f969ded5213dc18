/**
 * The manager, as controller-runtime has one: it starts the shared caches once, then every
 * runnable. Some run on every replica (the gateway); the others only while this process holds
 * the lease (reconciler, autoscaler, stream consumers, schedules), started and stopped with it.
 * A runnable that fails stops the manager: no replica keeps a lease while doing nothing.
 */
import { describeError } from './errors.js';

export interface Runnable {
  name: string;
  /** true: only while leading. */
  leaderOnly: boolean;
  /**
   * Runs until `signal` aborts, then resolves once stopped (in-flight work drained). Rejecting
   * means the runnable failed: the manager stops everything and rejects.
   */
  run(signal: AbortSignal): Promise<void>;
}

/** Holds the lease while `lead` runs; `lead` gets a signal that aborts when it is lost. */
export interface Elector {
  run(lead: (lost: AbortSignal) => Promise<void>, signal: AbortSignal): Promise<void>;
}

/** The local stack's elector: one process, always the leader. */
export const soleLeader: Elector = {
  async run(lead, signal) {
    await lead(signal);
  },
};

/** For a process with nothing to lead (the gateway Deployment): never campaigns. */
export const neverLeader: Elector = {
  async run(_lead, signal) {
    if (signal.aborted) return;
    await new Promise<void>((resolve) =>
      signal.addEventListener('abort', () => resolve(), { once: true }),
    );
  },
};

export interface ManagerOptions {
  elector: Elector;
  log: (message: string) => void;
  /** Started before any runnable, once per process; resolves when the caches have listed. */
  startCaches?: (signal: AbortSignal) => Promise<void>;
}

export class Manager {
  private readonly runnables: Runnable[] = [];

  constructor(private readonly o: ManagerOptions) {}

  add(...runnables: Runnable[]): this {
    this.runnables.push(...runnables);
    return this;
  }

  /** Runs until `signal` aborts (resolves) or a runnable fails (rejects, after stopping the rest). */
  async start(signal: AbortSignal): Promise<void> {
    const stop = new AbortController();
    const onStop = () => stop.abort();
    signal.addEventListener('abort', onStop, { once: true });
    let failure: Error | undefined;
    const fail = (name: string, err: unknown) => {
      if (failure === undefined) {
        failure = err instanceof Error ? err : new Error(`${name} failed: ${describeError(err)}`);
        this.o.log(`${name} failed, stopping: ${describeError(err)}`);
      }
      stop.abort();
    };
    try {
      try {
        await this.o.startCaches?.(stop.signal);
      } catch (err) {
        // Nothing runs without them (the API server cannot be reached, say): say why, and stop.
        fail('starting the shared caches', err);
        throw failure!;
      }
      const everywhere = this.runnables
        .filter((r) => !r.leaderOnly)
        .map((r) => guard(r, stop.signal, fail));
      const leading = this.o.elector
        .run(async (lost) => {
          const leaderSignal = AbortSignal.any([lost, stop.signal]);
          const mine = new AbortController();
          const own = AbortSignal.any([leaderSignal, mine.signal]);
          let leaderFailure: Error | undefined;
          await Promise.all(
            this.runnables
              .filter((r) => r.leaderOnly)
              .map((r) =>
                guard(r, own, (name, err) => {
                  leaderFailure ??= err instanceof Error ? err : new Error(describeError(err));
                  mine.abort();
                  fail(name, err);
                }),
              ),
          );
          if (leaderFailure !== undefined) throw leaderFailure;
        }, stop.signal)
        .catch((err: unknown) => fail('leader election', err));
      await Promise.all([...everywhere, leading]);
    } finally {
      signal.removeEventListener('abort', onStop);
    }
    if (failure !== undefined) throw failure;
  }
}

async function guard(
  r: Runnable,
  signal: AbortSignal,
  fail: (name: string, err: unknown) => void,
): Promise<void> {
  try {
    await r.run(signal);
    if (!signal.aborted) fail(r.name, new Error(`${r.name} stopped on its own`));
  } catch (err) {
    fail(r.name, err);
  }
}
