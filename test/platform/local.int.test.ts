/**
 * The local platform with real runtime processes (`node dist/runtime/main.js`): starting,
 * serving, scaling, crashes, rollouts, environment and shutdown, as the local stack sees them.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EddyFunction, FunctionSpec } from '../../operator/src/api/types.js';
import { MemoryFunctionStore } from '../../operator/src/functions.js';
import { createLocalPlatform, type LocalPlatform } from '../../operator/src/platform/local.js';
import type { Replica } from '../../operator/src/platform/platform.js';
import { runtimeMain } from '../harness/runtime.js';
import { waitFor } from '../harness/wait.js';

const namespace = 'local-tests';

function functionOf(
  name: string,
  spec: FunctionSpec,
  annotations?: Record<string, string>,
): EddyFunction {
  return {
    apiVersion: 'eddy.dev/v1alpha1',
    kind: 'Function',
    metadata: { name, namespace, generation: 1, annotations },
    spec,
  };
}

function inline(name: string, code: string, spec: FunctionSpec = {}): EddyFunction {
  return functionOf(name, { ...spec, code: { inline: code } });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function invoke(
  replica: Replica,
  event: unknown,
): Promise<{ status: number; body: unknown }> {
  const res = await fetch(replica.url, { method: 'POST', body: JSON.stringify(event) });
  const text = await res.text();
  return { status: res.status, body: text === '' ? undefined : JSON.parse(text) };
}

function gone(pid: number, timeoutMs?: number): Promise<true> {
  return waitFor(`process ${pid} to end`, async () => (alive(pid) ? undefined : true), timeoutMs);
}

describe('local platform', () => {
  const store = new MemoryFunctionStore();
  const configMaps: Record<string, Record<string, string>> = {};
  const lines: string[] = [];
  const stop = new AbortController();
  let workDir: string;
  let platform: LocalPlatform;

  /** `waitFor`, whose failure ends with what the function's processes logged. */
  const waitWithLog = <T>(key: string, what: string, probe: () => Promise<T | undefined>) =>
    waitFor(what, probe).catch((err: Error) => {
      const logged = lines.filter((l) => l.startsWith(`[${key}] `)).slice(-20);
      throw new Error(`${err.message}\n${logged.join('\n')}`);
    });

  const oneReady = (key: string): Promise<Replica> =>
    waitWithLog(key, `one ready replica of ${key}`, async () => {
      const ready = platform.ready(key);
      return ready.length === 1 ? ready[0] : undefined;
    });

  /** Records the number of ready replicas of `key` at every change, until `off()`. */
  function readyCounts(key: string): { counts: number[]; off: () => void } {
    const counts: number[] = [];
    const off = platform.onChange((k) => {
      if (k === key) counts.push(platform.ready(key).length);
    });
    return { counts, off };
  }

  beforeAll(async () => {
    workDir = await mkdtemp(join(tmpdir(), 'eddy-local-int-'));
    platform = createLocalPlatform({
      store,
      runtimeMain,
      workDir,
      configMaps: (ns, name) => configMaps[`${ns}/${name}`],
      log: (line) => lines.push(line),
      restartBackoffMs: { initial: 50, max: 1_000 },
    });
    await platform.start(stop.signal);
  });

  afterAll(async () => {
    stop.abort();
    await platform.stopped;
    await rm(workDir, { recursive: true, force: true });
  });

  it('activate starts a process whose replica answers POST / with the result, its output prefixed', async () => {
    const fn = inline(
      'hello',
      `export const handler = async (event) => { console.log('got', JSON.stringify(event)); return { x: event.x, pid: process.pid }; };`,
      { memory: '256Mi', timeoutSeconds: 5 },
    );
    const key = `${namespace}/hello`;
    store.set(fn);
    await platform.activate(fn);
    expect(platform.counts(key).desired).toBe(1);

    const replica = await oneReady(key);
    expect(replica.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(alive(Number(replica.id))).toBe(true);
    expect(await invoke(replica, { x: 1 })).toEqual({
      status: 200,
      body: { x: 1, pid: Number(replica.id) },
    });
    expect(platform.counts(key)).toEqual({ desired: 1, ready: 1 });

    // The function's settings reach the runtime; every line carries the function's name.
    expect(lines).toContain(
      `[${key}] eddy runtime listening on ${replica.url.slice('http://'.length)} (handler index.handler, 256 MB, timeout 5000 ms, concurrency 1)`,
    );
    await waitFor('the REPORT line', async () =>
      lines.find((l) => l.startsWith(`[${key}] REPORT RequestId: `)),
    );
    expect(lines).toContainEqual(
      expect.stringMatching(/^\[local-tests\/hello\] \S+\t\S+\tINFO\tgot \{"x":1\}$/),
    );

    // A second activation asks for one replica, not two.
    await platform.activate(fn);
    expect(platform.counts(key).desired).toBe(1);
  });

  it('scale(0) ends the process once its in-flight invocation is answered', async () => {
    const fn = inline(
      'stopper',
      `export const handler = async (event) => { await new Promise((r) => setTimeout(r, event.ms ?? 0)); return 'done'; };`,
    );
    const key = `${namespace}/stopper`;
    store.set(fn);
    await platform.scale(fn, 1);
    const replica = await oneReady(key);
    const pid = Number(replica.id);

    const inFlight = invoke(replica, { ms: 500 });
    // The invocation has started once the runtime logs its START line.
    await waitFor('the invocation to start', async () =>
      lines.find((l) => l.startsWith(`[${key}] START RequestId: `)),
    );
    await platform.scale(fn, 0);
    expect(platform.ready(key)).toEqual([]);
    expect(platform.counts(key)).toEqual({ desired: 0, ready: 0 });
    expect(await inFlight).toEqual({ status: 200, body: 'done' });
    await gone(pid);
    // A replica stopped on purpose is not a crash: nothing replaces it.
    expect(lines.filter((l) => l.startsWith(`[${key}] local platform:`))).toEqual([]);
    expect(platform.counts(key)).toEqual({ desired: 0, ready: 0 });
  });

  it('replaces a replica whose handler calls process.exit(1)', async () => {
    const fn = inline(
      'crasher',
      `export const handler = async (event) => { if (event.exit) process.exit(1); return { pid: process.pid }; };`,
    );
    const key = `${namespace}/crasher`;
    store.set(fn);
    await platform.activate(fn);
    const first = await oneReady(key);
    const seen = readyCounts(key);

    await expect(invoke(first, { exit: true })).rejects.toThrow();
    const second = await waitWithLog(key, 'a new replica', async () => {
      const [r] = platform.ready(key);
      return r && r.id !== first.id ? r : undefined;
    });
    seen.off();

    // The dead replica left the ready set when it exited, before its replacement came.
    expect(seen.counts[0]).toBe(0);
    expect(alive(Number(first.id))).toBe(false);
    expect(await invoke(second, {})).toEqual({ status: 200, body: { pid: Number(second.id) } });
    expect(lines).toContainEqual(
      expect.stringMatching(
        new RegExp(
          `^\\[${key}\\] local platform: replica ${first.id} exited with code 1; a new one starts in \\d+ ms$`,
        ),
      ),
    );
    expect(platform.counts(key)).toEqual({ desired: 1, ready: 1 });
  });

  it('passes a line of output longer than a pipe buffer on whole', async () => {
    const fn = inline(
      'talker',
      `export const handler = async () => { console.log('<' + 'x'.repeat(200000) + '>'); return 1; };`,
    );
    const key = `${namespace}/talker`;
    store.set(fn);
    await platform.activate(fn);
    await invoke(await oneReady(key), {});
    const line = await waitFor('the long line', async () =>
      lines.find((l) => l.endsWith(`<${'x'.repeat(200_000)}>`)),
    );
    expect(line).toMatch(/^\[local-tests\/talker\] \S+\t\S+\tINFO\t<x+>$/);
    expect(lines.filter((l) => l.includes('xxxxxxxxxx'))).toHaveLength(1);
  });

  it('serves new inline code after an update, never dropping to zero ready', async () => {
    const v1 = inline('versions', `export const handler = async () => 'v1';`);
    const key = `${namespace}/versions`;
    store.set(v1);
    await platform.activate(v1);
    const first = await oneReady(key);
    expect(await invoke(first, {})).toEqual({ status: 200, body: 'v1' });
    const seen = readyCounts(key);

    store.set({
      ...v1,
      metadata: { ...v1.metadata, generation: 2 },
      spec: { ...v1.spec, code: { inline: `export const handler = async () => 'v2';` } },
    });
    const second = await waitWithLog(key, 'the new replica alone', async () => {
      const ready = platform.ready(key);
      return ready.length === 1 && ready[0]!.id !== first.id ? ready[0] : undefined;
    });
    seen.off();

    expect(await invoke(second, {})).toEqual({ status: 200, body: 'v2' });
    expect(seen.counts.length).toBeGreaterThan(0);
    expect(Math.min(...seen.counts)).toBeGreaterThanOrEqual(1);
    await gone(Number(first.id));
    // The old code goes with the old replica.
    await waitFor('one code directory', async () =>
      (await readdir(join(workDir, namespace, 'versions'))).length === 1 ? true : undefined,
    );
  });

  it('does not restart replicas when only scaling settings change', async () => {
    const fn = inline('steady', `export const handler = async () => process.pid;`, {
      scaling: { maxReplicas: 2 },
    });
    const key = `${namespace}/steady`;
    store.set(fn);
    await platform.activate(fn);
    const replica = await oneReady(key);
    const seen = readyCounts(key);
    store.set({
      ...fn,
      metadata: { ...fn.metadata, generation: 2 },
      spec: { ...fn.spec, scaling: { maxReplicas: 5 } },
    });
    // Scaling to the count it has is quiet too.
    await platform.scale(fn, 1);
    seen.off();
    expect(seen.counts).toEqual([]);
    expect(platform.ready(key)).toEqual([replica]);
  });

  it('rejects a Function that names only an image, saying how to run it locally', async () => {
    const fn = functionOf('imaged', { image: 'registry.example.com/thumbnail:1.0' });
    const key = `${namespace}/imaged`;
    store.set(fn);
    const message =
      /^Function local-tests\/imaged cannot run locally: .*set the annotation eddy\.dev\/local-code-dir .* or use spec\.code\.inline or spec\.code\.configMap$/;
    // Told as soon as the Function is known, before any event, and once while it stays so.
    const told = () =>
      lines.filter(
        (l) =>
          l.startsWith(`[${key}] local platform: `) && message.test(l.slice(l.indexOf(': ') + 2)),
      );
    expect(told()).toHaveLength(1);
    store.set({ ...fn, metadata: { ...fn.metadata, labels: { tier: 'web' } } });
    expect(told()).toHaveLength(1);
    await expect(platform.activate(fn)).rejects.toThrow(message);
    await expect(platform.scale(fn, 2)).rejects.toThrow(message);
    expect(platform.counts(key)).toEqual({ desired: 0, ready: 0 });
  });

  it('runs an image-based Function from the directory its eddy.dev/local-code-dir annotation names', async () => {
    const codeDir = join(workDir, 'annotated-code');
    await mkdir(join(codeDir, 'src'), { recursive: true });
    await writeFile(
      join(codeDir, 'src', 'app.mjs'),
      `export const handler = async (event, context) => ({ from: 'dir', name: context.functionName });`,
    );
    const fn = functionOf(
      'annotated',
      { image: 'registry.example.com/annotated:1.0', handler: 'src/app.handler' },
      { 'eddy.dev/local-code-dir': codeDir },
    );
    store.set(fn);
    await platform.activate(fn);
    const replica = await oneReady(`${namespace}/annotated`);
    expect(await invoke(replica, {})).toEqual({
      status: 200,
      body: { from: 'dir', name: 'annotated' },
    });
  });

  it('runs code from a ConfigMap and sets the environment: values and ConfigMap keys, no Secrets, nothing of its parent', async () => {
    configMaps[`${namespace}/envs-code`] = {
      'index.mjs': `import { pick } from './pick.mjs'; export const handler = async (event, context) => ({ ...pick(), memory: context.memoryLimitInMB });`,
      'pick.mjs': `export const pick = () => ({ PLAIN: process.env.PLAIN, GREETING: process.env.GREETING, TOKEN: process.env.TOKEN ?? null, PARENT: process.env.EDDY_LOCAL_TEST_PARENT ?? null });`,
    };
    configMaps[`${namespace}/settings`] = { greeting: 'hello' };
    process.env.EDDY_LOCAL_TEST_PARENT = 'from the test process';
    try {
      const fn = functionOf('envs', {
        code: { configMap: { name: 'envs-code' } },
        memory: '512Mi',
        env: [
          { name: 'PLAIN', value: 'plain' },
          {
            name: 'GREETING',
            valueFrom: { configMapKeyRef: { name: 'settings', key: 'greeting' } },
          },
          { name: 'TOKEN', valueFrom: { secretKeyRef: { name: 'creds', key: 'token' } } },
        ],
      });
      store.set(fn);
      await platform.activate(fn);
      const replica = await oneReady(`${namespace}/envs`);
      expect(await invoke(replica, {})).toEqual({
        status: 200,
        body: { PLAIN: 'plain', GREETING: 'hello', TOKEN: null, PARENT: null, memory: '512' },
      });
      expect(lines).toContain(
        `[${namespace}/envs] local platform: TOKEN is not set: the local platform does not read Secrets (secretKeyRef ${namespace}/creds)`,
      );
    } finally {
      delete process.env.EDDY_LOCAL_TEST_PARENT;
    }
  });

  it('keeps an unreachable replica out of the ready set until its /readyz answers again', async () => {
    const fn = inline('flaky', `export const handler = async () => 1;`);
    const key = `${namespace}/flaky`;
    store.set(fn);
    await platform.activate(fn);
    const replica = await oneReady(key);
    const seen = readyCounts(key);
    platform.unreachable(key, replica.id);
    expect(platform.ready(key)).toEqual([]);
    expect(platform.counts(key)).toEqual({ desired: 1, ready: 0 });
    expect(await oneReady(key)).toEqual(replica);
    seen.off();
    expect(seen.counts).toEqual([0, 1]);
  });

  it('leaves a recycling replica out of the ready set and replaces it', async () => {
    const fn = inline(
      'slowpoke',
      `export const handler = async (event) => { await new Promise((r) => setTimeout(r, event.ms)); return process.pid; };`,
      { timeoutSeconds: 1 },
    );
    const key = `${namespace}/slowpoke`;
    store.set(fn);
    await platform.activate(fn);
    const first = await oneReady(key);
    // Past its timeout the runtime answers 504 and recycles: not ready, then exits with code 1.
    expect((await invoke(first, { ms: 2_000 })).status).toBe(504);
    const second = await waitWithLog(key, 'a fresh replica', async () => {
      const [r] = platform.ready(key);
      return r && r.id !== first.id ? r : undefined;
    });
    await gone(Number(first.id));
    expect(await invoke(second, { ms: 0 })).toEqual({ status: 200, body: Number(second.id) });
  });

  it('deleting a Function stops its processes and removes its code', async () => {
    const fn = inline('doomed', `export const handler = async () => 1;`);
    const key = `${namespace}/doomed`;
    store.set(fn);
    await platform.scale(fn, 2);
    const replicas = await waitWithLog(key, 'two ready replicas', async () => {
      const ready = platform.ready(key);
      return ready.length === 2 ? ready : undefined;
    });
    const codeDir = join(workDir, namespace, 'doomed');
    expect(existsSync(codeDir)).toBe(true);

    store.delete(namespace, 'doomed');
    expect(platform.ready(key)).toEqual([]);
    expect(platform.counts(key)).toEqual({ desired: 0, ready: 0 });
    for (const r of replicas) await gone(Number(r.id));
    await waitFor('its code to be removed', async () => (existsSync(codeDir) ? undefined : true));
  });
});

describe('local platform, alone', () => {
  /**
   * Starts `code` as Function `name` on a platform that gives a replica 1 s to become ready, and
   * runs `check` once a second process has started in place of the first.
   */
  async function replaced(
    name: string,
    code: string,
    check: (lines: string[], platform: LocalPlatform, key: string) => Promise<void>,
  ): Promise<void> {
    const store = new MemoryFunctionStore();
    const lines: string[] = [];
    const platform = createLocalPlatform({
      store,
      runtimeMain,
      log: (line) => lines.push(line),
      startTimeoutMs: 1_000,
      restartBackoffMs: { initial: 50, max: 1_000 },
    });
    const stop = new AbortController();
    await platform.start(stop.signal);
    try {
      const fn = inline(name, code);
      store.set(fn);
      await platform.activate(fn);
      const key = `${namespace}/${name}`;
      await waitFor('a second process', async () =>
        lines.filter((l) => l.startsWith(`[${key}] eddy runtime listening on`)).length >= 2
          ? true
          : undefined,
      );
      await check(lines, platform, key);
    } finally {
      stop.abort();
      await platform.stopped;
    }
  }

  it('stops and replaces a replica that never becomes ready', async () => {
    // No such export: the runtime starts, but /readyz stays 503.
    await replaced('broken', `export const nothandler = 1;`, async (lines, platform, key) => {
      // Its /readyz says why: the handler did not load.
      expect(lines).toContainEqual(
        expect.stringMatching(
          /^\[local-tests\/broken\] local platform: replica \d+ could not load its handler \(Runtime\.HandlerNotFound: .*\): invocations get that error; stopping it, a new one loads the handler again in \d+ ms$/,
        ),
      );
      expect(lines).toContainEqual(expect.stringMatching(/^\[local-tests\/broken\] INIT_ERROR /));
      expect(platform.counts(key)).toEqual({ desired: 1, ready: 0 });
      // The replica started again says so too, once its /readyz has been asked.
      const failure = await waitFor('the init error', async () => platform.initError?.(key));
      expect(failure.errorType).toBe('Runtime.HandlerNotFound');
    });
  });

  it('stops and replaces a replica whose handler never finishes loading', async () => {
    // Its import never ends: /readyz stays 503 with no error to tell.
    await replaced(
      'stuck',
      `await new Promise(() => {}); export const handler = () => 1;`,
      async (lines, platform, key) => {
        expect(lines).toContainEqual(
          expect.stringMatching(
            /^\[local-tests\/stuck\] local platform: replica \d+ was not ready within 1000 ms: stopping it; a new one starts in \d+ ms$/,
          ),
        );
        expect(platform.initError?.(key)).toBeUndefined();
      },
    );
  });

  it('ends every process and removes its work directory when the signal aborts', async () => {
    const store = new MemoryFunctionStore();
    const lines: string[] = [];
    const platform = createLocalPlatform({ store, runtimeMain, log: (line) => lines.push(line) });
    const stop = new AbortController();
    await platform.start(stop.signal);
    const a = inline('a', `export const handler = async () => process.env.EDDY_CODE_DIR;`);
    const b = inline('b', `export const handler = async () => 2;`);
    let pids: number[] = [];
    let codeDir = '';
    try {
      store.set(a);
      store.set(b);
      await platform.scale(a, 2);
      await platform.activate(b);
      const ready = await waitFor('three ready replicas', async () => {
        const all = [...platform.ready(`${namespace}/a`), ...platform.ready(`${namespace}/b`)];
        return all.length === 3 ? all : undefined;
      });
      pids = ready.map((r) => Number(r.id));
      codeDir = String((await invoke(ready[0]!, {})).body);
      expect(existsSync(join(codeDir, 'index.mjs'))).toBe(true);
    } finally {
      stop.abort();
      await platform.stopped;
    }
    // Stopped means gone: no waiting here.
    expect(pids.filter(alive)).toEqual([]);
    expect(platform.ready(`${namespace}/a`)).toEqual([]);
    // <work dir>/<namespace>/<name>/<content>: the whole temporary work directory is gone.
    expect(existsSync(join(codeDir, '..', '..', '..'))).toBe(false);
    expect(lines.filter((l) => l.includes('local platform:'))).toEqual([]);
    await expect(platform.activate(a)).rejects.toThrow('the local platform has stopped');
  });
});
