/**
 * Sizes Node's heap from the function's memory. The heap limit is fixed when a process starts,
 * so the platform starts the runtime with the flags of `heapFlags()` in NODE_OPTIONS;
 * started without it, the runtime starts itself again with that flag and passes signals and
 * its exit code through.
 */
import { heapFlags } from './contract/env.js';

export { heapFlags };

/** True when this process was started with a heap size (by the platform, or by the user). */
export function heapIsSized(
  execArgv = process.execArgv,
  nodeOptions = process.env.NODE_OPTIONS ?? '',
): boolean {
  return [...execArgv, nodeOptions].some((a) => a.includes('--max-old-space-size'));
}

/** Runs this same program again with the heap flag, as a child that takes over stdio and signals. */
export async function relaunchWithHeap(memoryMb: number): Promise<void> {
  // Loaded only here: a sized start, the usual one, does not pay for it.
  const { spawn } = await import('node:child_process');
  const child = spawn(
    process.execPath,
    [...heapFlags(memoryMb), ...process.execArgv, ...process.argv.slice(1)],
    {
      stdio: 'inherit',
    },
  );
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => child.kill(signal));
  }
  child.on('exit', (code, signal) => {
    process.exitCode = code ?? (signal ? 128 + (signal === 'SIGKILL' ? 9 : 15) : 1);
  });
}
