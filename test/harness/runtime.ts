/** Starts the real function runtime (`node dist/runtime/main.js`) on 127.0.0.1 for a test. */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { projectRoot } from './components.js';
import { startProcess, waitUntilReady, type ManagedProcess } from './proc.js';
import { envDefaults, nodeOptions } from '../../runtime/src/contract/index.js';

export interface Runtime {
  url: string;
  codeDir: string;
  process: ManagedProcess;
  processes: ManagedProcess[];
  /** The runtime's stdout and stderr so far. */
  log(): string;
  /** Waits until the log matches (output reaches the log file a moment after it is written). */
  waitForLog(pattern: RegExp, timeoutMs?: number): Promise<string>;
  stop(): Promise<void>;
}

export const runtimeMain = join(projectRoot, 'dist', 'runtime', 'main.js');

/** Writes `files` (path -> content) into a fresh code directory. */
export async function writeCode(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'eddy-code-'));
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    // A provided function's bootstrap is started as it is.
    await writeFile(join(dir, path), content, { mode: path === 'bootstrap' ? 0o755 : 0o644 });
  }
  return dir;
}

/**
 * Starts the runtime with `files` as its code and `env` on top of the defaults, the way the
 * platform does (a Node function's heap sized in NODE_OPTIONS, unless `env.NODE_OPTIONS` says otherwise);
 * resolves once it listens (not once the handler is ready: tests of broken handlers need it
 * before).
 */
export async function startRuntime(
  files: Record<string, string>,
  env: Record<string, string> = {},
): Promise<Runtime> {
  const codeDir = await writeCode(files);
  const proc = startProcess('runtime', process.execPath, [runtimeMain], `${codeDir}.log`, {
    env: {
      PATH: process.env.PATH,
      EDDY_CODE_DIR: codeDir,
      EDDY_FUNCTION_NAME: 'hello',
      EDDY_FUNCTION_NAMESPACE: 'tests',
      HOST: '127.0.0.1',
      PORT: '0',
      NODE_OPTIONS: nodeOptions(
        env.EDDY_RUNTIME ?? envDefaults.runtime,
        Number(env.EDDY_MEMORY_MB ?? 128),
      ),
      ...env,
    },
  });
  let port = 0;
  await waitUntilReady(
    proc,
    async () => {
      const match = /listening on 127\.0\.0\.1:(\d+)/.exec(proc.log());
      if (match) port = Number(match[1]);
      return port > 0;
    },
    15_000,
    20,
  );
  return {
    url: `http://127.0.0.1:${port}`,
    codeDir,
    process: proc,
    processes: [proc],
    log: () => proc.log(),
    async waitForLog(pattern, timeoutMs = 5_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const log = proc.log();
        if (pattern.test(log)) return log;
        if (Date.now() > deadline)
          throw new Error(`runtime log did not match ${pattern} within ${timeoutMs} ms:\n${log}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    async stop() {
      await proc.stop(5_000);
      await rm(codeDir, { recursive: true, force: true });
      await rm(proc.logFile, { force: true });
    },
  };
}

/** Polls GET /readyz until it answers `status` (and a body matching `text`, if given). */
export async function waitForReadyz(
  url: string,
  status: number,
  text?: RegExp,
  timeoutMs = 10_000,
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${url}/readyz`);
      const body = await res.text();
      last = `${res.status} ${body}`;
      if (res.status === status && (!text || text.test(body))) return body;
    } catch (err) {
      last = String(err);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(
    `GET ${url}/readyz did not answer ${status}${text ? ` matching ${text}` : ''} within ${timeoutMs} ms (last: ${last})`,
  );
}

/**
 * The billed durations (ms) the runtime may report with a duration it shows rounded to two
 * decimals: the true duration rounded up to a whole ms, at least 1. A rounded figure just past a
 * whole ms (1.00 for 1.004) allows two, so tests check membership, not one recomputed value.
 */
export function billedFor(roundedDurationMs: number): number[] {
  const bill = (ms: number) => Math.max(1, Math.ceil(ms));
  return [...new Set([bill(roundedDurationMs - 0.005), bill(roundedDurationMs + 0.005)])];
}
