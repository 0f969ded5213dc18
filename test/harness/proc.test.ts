import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { run, startProcess, waitUntilReady } from './proc.js';

describe('harness processes', () => {
  let dir = '';
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'eddy-proc-test-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('names the component and shows its log when it exits before it is ready', async () => {
    const p = startProcess(
      'broken-server',
      process.execPath,
      ['-e', 'console.error("port 1234 already in use"); process.exit(3)'],
      join(dir, 'log'),
    );
    await expect(waitUntilReady(p, async () => false, 10_000)).rejects.toThrow(
      /broken-server exited with code 3 before it was ready[\s\S]*port 1234 already in use/,
    );
    await p.stop();
  });

  it('gives up after the timeout and stops a process that ignores SIGTERM', async () => {
    const p = startProcess(
      'stubborn',
      process.execPath,
      ['-e', 'process.on("SIGTERM", () => {}); console.log("up"); setInterval(() => {}, 1000)'],
      join(dir, 'log'),
    );
    await expect(waitUntilReady(p, async () => false, 300)).rejects.toThrow(
      /stubborn was not ready after 300 ms/,
    );
    await p.stop(200);
    expect(await p.exited).toBe('killed by SIGKILL');
  });

  it('run() rejects with the command and its output when it fails', async () => {
    await expect(
      run(process.execPath, ['-e', 'console.log("useful detail"); process.exit(2)']),
    ).rejects.toThrow(/exited with code 2:[\s\S]*useful detail/);
  });
});
