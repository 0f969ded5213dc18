/**
 * Glue between vitest and the harness: decide whether a suite can run here, start a component
 * for a suite, print its logs when a test fails, and stop it at the end.
 */
import { afterAll, afterEach, beforeAll } from 'vitest';
import { missingReason, type ComponentName } from './components.js';
import { tail, type ManagedProcess } from './proc.js';

const ci = process.env.CI === 'true' || process.env.CI === '1';

/**
 * True when the suite should run. Outside CI a missing component skips the suite with one line
 * naming what is missing and how to provision it; with CI=true the suite runs and its start
 * fails loudly instead.
 */
export function canRun(...components: ComponentName[]): boolean {
  const missing = components
    .map((c) => [c, missingReason(c)] as const)
    .filter(([, reason]) => reason !== undefined);
  if (missing.length === 0 || ci) return true;
  for (const [c, reason] of missing) {
    console.warn(
      `skipping ${c} suite: missing ${reason}; provision it with \`npm run test:setup\``,
    );
  }
  return false;
}

const logLines = 200;

/** The last lines of each process's log. */
function printLogs(processes: ManagedProcess[]): void {
  for (const p of processes) {
    process.stderr.write(
      `\n----- ${p.name} log, last ${logLines} lines (${p.logFile}) -----\n${tail(p.log(), logLines)}\n----- end of ${p.name} log -----\n`,
    );
  }
}

export interface Running {
  processes: ManagedProcess[];
  stop(): Promise<void>;
}

/**
 * Starts a component before the suite's tests and stops it after them. Returns a getter,
 * valid inside tests. When a test fails, each process's log is printed under its name.
 */
export function useComponent<T extends Running>(start: () => Promise<T>): () => T {
  let running: T | undefined;
  beforeAll(async () => {
    running = await start();
  });
  afterEach((ctx) => {
    if (ctx.task.result?.state !== 'fail' || !running) return;
    printLogs(running.processes);
  });
  afterAll(async () => {
    await running?.stop();
  });
  return () => {
    if (!running) throw new Error('component not started (beforeAll failed?)');
    return running;
  };
}

/**
 * For components a test starts itself: `track(await startX())` stops them after the test and,
 * when it failed, prints their logs first.
 */
export function usePerTest(): <T extends Running>(running: T) => T {
  let started: Running[] = [];
  afterEach(async (ctx) => {
    const failed = ctx.task.result?.state === 'fail';
    for (const r of started) {
      if (failed) printLogs(r.processes);
      await r.stop();
    }
    started = [];
  });
  return (running) => {
    started.push(running);
    return running;
  };
}
