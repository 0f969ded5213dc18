/**
 * A server the local stack runs (MinIO, nats-server): tied to the stack, so that the kernel ends
 * it when the stack ends even by SIGKILL, its last lines kept for an error message.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';

const setpriv = '/usr/bin/setpriv';

export interface TiedProcess {
  /** Its last 20 lines of output. */
  lines: string[];
  /** How it ended (a code, a signal, or why it could not start); undefined while it runs. */
  exited: () => string | undefined;
  /** SIGTERM, then SIGKILL after 5 s; resolves once it has ended. */
  stop: () => Promise<void>;
}

export function startTiedProcess(o: {
  binary: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  /** Each line it writes, on stdout or stderr. */
  onLine: (line: string) => void;
}): TiedProcess {
  // Where util-linux's setpriv is (Linux), the kernel kills it when this process ends, even by
  // SIGKILL, which no exit handler sees.
  const options: SpawnOptions = {
    ...(o.env ? { env: o.env } : {}),
    stdio: ['ignore', 'pipe', 'pipe'],
  };
  const child: ChildProcess = existsSync(setpriv)
    ? spawn(setpriv, ['--pdeathsig', 'KILL', '--', o.binary, ...o.args], options)
    : spawn(o.binary, o.args, options);
  const lines: string[] = [];
  for (const stream of [child.stdout!, child.stderr!]) {
    createInterface({ input: stream }).on('line', (line) => {
      lines.push(line);
      if (lines.length > 20) lines.shift();
      o.onLine(line);
    });
  }
  let exited: string | undefined;
  const gone = new Promise<void>((resolve) =>
    child.once('exit', (code, signal) => {
      exited = signal ?? String(code);
      resolve();
    }),
  );
  child.once('error', (err) => {
    exited = err.message;
  });
  // Not left behind when this process exits without stopping it (process.exit on an error).
  const orphaned = () => child.kill('SIGKILL');
  process.once('exit', orphaned);
  return {
    lines,
    exited: () => exited,
    stop: async () => {
      process.off('exit', orphaned);
      if (exited === undefined) {
        child.kill('SIGTERM');
        const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await gone;
        clearTimeout(killer);
      }
    },
  };
}
