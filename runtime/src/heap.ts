/**
 * Sizes Node's heap from the function's memory. The heap limit is fixed when a process starts,
 * so the platform starts the runtime with the flags of `heapFlags()` in NODE_OPTIONS;
 * started without it, the runtime starts itself again with that flag and passes signals and
 * its exit code through.
 */
import type { Socket } from 'node:net';
import { setFlagsFromString } from 'node:v8';
import { heapFlags } from './contract/env.js';

export { heapFlags };

/** The V8 flags that size the heap, and their defaults (V8 then sizes the heap itself). */
const heapFlagDefaults: Record<string, string> = {
  '--max-old-space-size': '0',
  '--max-semi-space-size': '0',
};

/** True when this process was started with a heap size (by the platform, or by the user). */
export function heapIsSized(
  execArgv = process.execArgv,
  nodeOptions = process.env.NODE_OPTIONS ?? '',
): boolean {
  return [...execArgv, nodeOptions].some((a) => a.includes('--max-old-space-size'));
}

/** The heap-sizing flags this process was started with, as `--name=value`, last one winning. */
export function startedHeapFlags(
  execArgv = process.execArgv,
  nodeOptions = process.env.NODE_OPTIONS ?? '',
): string[] {
  const given = new Map<string, string>();
  // Node reads NODE_OPTIONS before the command line, so the command line wins.
  for (const arg of [...nodeOptions.split(/\s+/), ...execArgv]) {
    const eq = arg.indexOf('=');
    const name = eq > 0 ? arg.slice(0, eq).replaceAll('_', '-') : '';
    if (name in heapFlagDefaults) given.set(name, arg.slice(eq + 1));
  }
  return [...given].map(([name, value]) => `${name}=${value}`);
}

/**
 * Sets the heap flags back to V8's defaults for as long as the runtime starts, and returns the
 * function that sets them again.
 *
 * Node ships a code cache for its built-in modules, and V8 accepts it only while every V8 flag
 * has the value it had when the cache was made: with the heap flags, each built-in module the
 * runtime loads (node:http and the modules under it, the ES module loader) is compiled from its
 * source, which makes a cold start 20-50 ms slower. V8 reads the heap flags once, when it makes
 * the heap at process start, so setting them back changes nothing about the heap's size (the
 * limit still shows in `v8.getHeapStatistics()` and running out is still a JavaScript error),
 * and the built-ins load from the cache again. Setting them again once started keeps what
 * depends on them later as it was: a worker thread a handler starts gets the same heap limits.
 */
export function setHeapFlagsAside(flags = startedHeapFlags()): () => void {
  if (flags.length === 0) return () => undefined;
  for (const flag of flags) {
    const name = flag.slice(0, flag.indexOf('='));
    setFlagsFromString(`${name}=${heapFlagDefaults[name]}`);
  }
  let restored = false;
  return () => {
    if (restored) return;
    restored = true;
    for (const flag of flags) setFlagsFromString(flag);
  };
}

/** Names the fd of a relaunched runtime's lifeline (see `relaunchWithHeap`). */
const lifelineEnv = 'EDDY_LIFELINE_FD';

/**
 * In a runtime that `relaunchWithHeap` started: calls `gone` once the process that started it
 * has ended (its end of the lifeline closed). Not for user code to see: the variable is removed.
 */
export function watchLifeline(gone: () => void): void {
  const fd = Number(process.env[lifelineEnv]);
  delete process.env[lifelineEnv];
  if (!Number.isInteger(fd) || fd < 3) return;
  // Loaded only here, as in relaunchWithHeap.
  void import('node:net').then(({ Socket }) => {
    let line: Socket;
    try {
      line = new Socket({ fd, readable: true, writable: false });
    } catch {
      return;
    }
    // It must not hold the process up; nothing is ever written to it.
    line.unref();
    line.once('close', gone);
    line.on('error', () => undefined);
    line.resume();
  });
}

/** Runs this same program again with the heap flag, as a child that takes over stdio and signals. */
export async function relaunchWithHeap(memoryMb: number): Promise<void> {
  // Loaded only here: a sized start, the usual one, does not pay for them.
  const [{ spawn }, { constants }] = await Promise.all([
    import('node:child_process'),
    import('node:os'),
  ]);
  // fd 3 is the child's lifeline: a pipe this process holds open until it ends, however it ends
  // (SIGKILL included), so that the child does not outlive it.
  const child = spawn(
    process.execPath,
    [...heapFlags(memoryMb), ...process.execArgv, ...process.argv.slice(1)],
    {
      stdio: ['inherit', 'inherit', 'inherit', 'pipe'],
      env: { ...process.env, [lifelineEnv]: '3' },
    },
  );
  // Held, not read: it must not keep this process once the child has ended.
  const lifeline = child.stdio[3] as Socket | null | undefined;
  lifeline?.unref();
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => child.kill(signal));
  }
  child.on('exit', (code, signal) => {
    lifeline?.destroy();
    // Ended by a signal: 128 + its number, as a shell and a container runtime report it.
    process.exitCode = code ?? (signal ? 128 + (constants.signals[signal] ?? 0) : 1);
  });
}
