/** Child processes for the harness: logs kept in a file, readiness waits, bounded stops. */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createWriteStream, readFileSync, type WriteStream } from 'node:fs';
import { once } from 'node:events';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ManagedProcess {
  name: string;
  logFile: string;
  child: ChildProcess;
  /** Text of the log so far. */
  log(): string;
  /** SIGTERM, then SIGKILL after graceMs. Resolves when the process has exited. */
  stop(graceMs?: number): Promise<void>;
  /** Resolves with a description once the process has exited. */
  exited: Promise<string>;
}

export function startProcess(
  name: string,
  command: string,
  args: string[],
  logFile: string,
  options: SpawnOptions = {},
): ManagedProcess {
  const out: WriteStream = createWriteStream(logFile, { flags: 'a' });
  out.write(`$ ${command} ${args.join(' ')}\n`);
  const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout?.pipe(out, { end: false });
  child.stderr?.pipe(out, { end: false });
  let exitedFlag = false;
  const exited = new Promise<string>((resolve) => {
    child.on('error', (err) => {
      exitedFlag = true;
      out.write(`\n[harness] ${name} could not start: ${err.message}\n`);
      resolve(`could not start: ${err.message}`);
    });
    child.on('exit', (code, signal) => {
      exitedFlag = true;
      const how = signal ? `killed by ${signal}` : `exited with code ${code}`;
      out.write(`\n[harness] ${name} ${how}\n`);
      resolve(how);
    });
  });
  return {
    name,
    logFile,
    child,
    exited,
    log: () => {
      try {
        return readFileSync(logFile, 'utf8');
      } catch {
        return '';
      }
    },
    async stop(graceMs = 10_000) {
      if (!exitedFlag) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      // A second stop finds the log closed already.
      if (out.closed) return;
      out.end();
      await once(out, 'close').catch(() => undefined);
    },
  };
}

/**
 * Polls `probe` until it returns true, the process exits, or `timeoutMs` passes; the error
 * names the component and ends with the tail of its log, so a failed start explains itself.
 */
export async function waitUntilReady(
  proc: ManagedProcess,
  probe: () => Promise<boolean>,
  timeoutMs: number,
  intervalMs = 100,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exitedHow: string | undefined;
  void proc.exited.then((how) => (exitedHow = how));
  let lastError = '';
  while (Date.now() < deadline) {
    if (exitedHow) {
      throw new Error(`${proc.name} ${exitedHow} before it was ready.\n${tail(proc.log())}`);
    }
    try {
      if (await probe()) return;
    } catch (err) {
      lastError = err instanceof Error ? err.message : String(err);
    }
    await sleep(intervalMs);
  }
  throw new Error(
    `${proc.name} was not ready after ${timeoutMs} ms${lastError ? ` (last probe: ${lastError})` : ''}.\n${tail(proc.log())}`,
  );
}

/**
 * Starts a server whose files live in `dir` and waits until `ready`; its `stop()` ends it and
 * removes `dir`. If it does not become ready it is stopped and the error says why.
 */
export async function launchInDir(
  dir: string,
  name: string,
  command: string,
  args: string[],
  options: SpawnOptions,
  ready: (proc: ManagedProcess) => Promise<boolean>,
  timeoutMs: number,
  intervalMs = 200,
): Promise<{ proc: ManagedProcess; stop: () => Promise<void> }> {
  const proc = startProcess(name, command, args, join(dir, `${name}.log`), options);
  const stop = async () => {
    await proc.stop();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await waitUntilReady(proc, () => ready(proc), timeoutMs, intervalMs);
  } catch (err) {
    await stop();
    throw err;
  }
  return { proc, stop };
}

export function tail(text: string, lines = 40): string {
  return text.split('\n').slice(-lines).join('\n');
}

/** Runs a command to completion; rejects with its output when it fails. */
export async function run(
  command: string,
  args: string[],
  options: SpawnOptions & { onLine?: (line: string) => void; timeoutMs?: number } = {},
): Promise<string> {
  const { onLine, timeoutMs, ...spawnOptions } = options;
  const child = spawn(command, args, { ...spawnOptions, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let partial = '';
  const onData = (chunk: Buffer) => {
    const text = chunk.toString();
    output += text;
    if (onLine) {
      const parts = (partial + text).split('\n');
      partial = parts.pop() ?? '';
      for (const l of parts) onLine(l);
    }
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const timer = timeoutMs ? setTimeout(() => child.kill('SIGKILL'), timeoutMs) : undefined;
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  if (timer) clearTimeout(timer);
  if (code !== 0) {
    const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
    throw new Error(`${command} ${args.join(' ')} ${how}:\n${tail(output)}`);
  }
  return output;
}
