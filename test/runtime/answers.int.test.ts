import { execFileSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { billedFor, startRuntime, waitForReadyz } from '../harness/runtime.js';
import { postHeadersOnly } from '../harness/headers-only.js';
import { startHolds } from '../harness/holds.js';
import { usePerTest } from '../harness/suite.js';

/** Where 'hold' invocations say they started and wait to be let go. */
async function holds() {
  const h = await startHolds();
  return { ...h, event: (name: string) => ({ action: 'hold', url: h.url(name) }) };
}

async function invoke(url: string, body: unknown = {}) {
  const res = await fetch(url, { method: 'POST', body: JSON.stringify(body) });
  const text = await res.text();
  return {
    status: res.status,
    headers: res.headers,
    text,
    json: parsed(text),
  };
}

/** The answer as JSON, or undefined when it is none (a streamed answer's bytes). */
function parsed(text: string): Record<string, unknown> | undefined {
  try {
    return text ? (JSON.parse(text) as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** A handler whose behaviour the event picks. */
const actions = `
export const handler = async (event, context) => {
  switch (event.action) {
    case 'return': return event.value;
    case 'nothing': return undefined;
    case 'throw': { const e = new RangeError('the answer is out of range'); throw e; }
    case 'reject-string': return Promise.reject('plain string');
    case 'sleep': await new Promise((r) => setTimeout(r, event.ms)); return { slept: event.ms };
    case 'spin': { const t = Date.now(); while (Date.now() - t < event.ms) {} return 'spun'; }
    case 'circular': { const o = {}; o.self = o; return o; }
    case 'hog': { const keep = []; for (;;) keep.push(new Array(1e5).fill(Math.random())); }
    case 'hold': return (await fetch(event.url)).text();
    case 'escape': setTimeout(() => { throw new Error('thrown from a timer'); }, 1); await new Promise((r) => setTimeout(r, 200)); return 'unreachable';
    case 'escape-rejection': Promise.reject(new Error('nobody caught me')); await new Promise((r) => setTimeout(r, 200)); return 'unreachable';
  }
};`;

const callbackStyle = `
exports.handler = (event, context, callback) => {
  if (event.fail) return callback(new Error('callback says no'));
  callback(null, { via: 'callback' });
};`;

/** Response streaming as Lambda's Node.js runtime offers it, through the awslambda global. */
const streaming = `
export const handler = awslambda.streamifyResponse(async (event, responseStream, context) => {
  if (event.fail) throw new Error('no stream today');
  if (event.http) {
    responseStream = awslambda.HttpResponseStream.from(responseStream, {
      statusCode: 201,
      headers: { 'x-made-by': 'eddy' },
    });
  }
  responseStream.setContentType('text/plain');
  responseStream.write('hello ');
  await new Promise((r) => setTimeout(r, 10));
  responseStream.write(Buffer.from(event.name ?? context.functionName));
  // Left open: the handler's promise ends it.
  if (!event.open) responseStream.end();
});`;

/** The other ways Lambda's Node.js runtime lets a handler answer. */
const otherAnswers = `
exports.handler = async (event, context, callback) => {
  switch (event.how) {
    // An async handler that calls back before its promise settles: the callback answers.
    case 'callback-then-resolve':
      callback(null, 'from the callback');
      await new Promise((r) => setTimeout(r, 50));
      return 'from the promise';
    case 'succeed': context.succeed({ via: 'succeed' }); return new Promise(() => {});
    case 'fail': context.fail(new TypeError('fail says no')); return new Promise(() => {});
    case 'fail-nothing': context.fail(); return new Promise(() => {});
    case 'done': context.done(null, 'done'); return new Promise(() => {});
    case 'reject-nothing': throw undefined;
  }
};`;

describe('runtime: answers', () => {
  const track = usePerTest();

  /** A runtime started without a sized heap, answering, and the one it started with one. */
  async function relaunched(): Promise<{ started: ChildProcess; sized: number }> {
    const rt = track(
      await startRuntime(
        { 'index.mjs': 'export const handler = async () => 1;' },
        { EDDY_MEMORY_MB: '256', NODE_OPTIONS: '' },
      ),
    );
    expect((await invoke(rt.url, {})).json).toBe(1);
    const started = rt.process.child;
    const [sized] = execFileSync('pgrep', ['-P', String(started.pid)], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .map(Number);
    expect(sized).toBeGreaterThan(0);
    return { started, sized: sized! };
  }

  it('answers 200 with the JSON of the result, 204 for nothing, with duration headers', async () => {
    const rt = track(await startRuntime({ 'index.mjs': actions }));
    const ok = await invoke(rt.url, { action: 'return', value: { a: [1, 'b'] } });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('content-type')).toBe('application/json');
    expect(ok.json).toEqual({ a: [1, 'b'] });
    expect(ok.headers.get('x-eddy-init-duration-ms')).toMatch(/^\d+\.\d{2}$/);
    const duration = Number(ok.headers.get('x-eddy-duration-ms'));
    const billed = Number(ok.headers.get('x-eddy-billed-duration-ms'));
    expect(billedFor(duration)).toContain(billed);

    const slept = await invoke(rt.url, { action: 'sleep', ms: 120 });
    expect(Number(slept.headers.get('x-eddy-duration-ms'))).toBeGreaterThanOrEqual(119);
    expect(billedFor(Number(slept.headers.get('x-eddy-duration-ms')))).toContain(
      Number(slept.headers.get('x-eddy-billed-duration-ms')),
    );
    expect(slept.headers.get('x-eddy-init-duration-ms')).toBeNull();

    const none = await invoke(rt.url, { action: 'nothing' });
    expect(none.status).toBe(204);
    expect(none.text).toBe('');
    expect(none.headers.get('x-eddy-request-id')).toBeTruthy();
  });

  it("answers 500 with Lambda's error shape when the handler throws or rejects", async () => {
    const rt = track(await startRuntime({ 'index.mjs': actions }));
    const thrown = await invoke(rt.url, { action: 'throw' });
    expect(thrown.status).toBe(500);
    expect(thrown.headers.get('x-eddy-function-error')).toBe('Unhandled');
    expect(thrown.json).toMatchObject({
      errorType: 'RangeError',
      errorMessage: 'the answer is out of range',
    });
    expect((thrown.json!.stackTrace as string[])[0]).toBe('RangeError: the answer is out of range');
    expect((thrown.json!.stackTrace as string[]).some((l) => l.includes('index.mjs'))).toBe(true);

    const rejected = await invoke(rt.url, { action: 'reject-string' });
    expect(rejected.status).toBe(500);
    expect(rejected.json).toMatchObject({ errorType: 'string', errorMessage: 'plain string' });

    const circular = await invoke(rt.url, { action: 'circular' });
    expect(circular.status).toBe(502);
    expect(circular.json).toMatchObject({ errorType: 'Runtime.MalformedHandlerResponse' });

    // An error is the function's, not the runtime's: the next invocation runs normally.
    expect((await invoke(rt.url, { action: 'return', value: 1 })).status).toBe(200);
    expect((await fetch(`${rt.url}/readyz`)).status).toBe(200);
  });

  it('supports callback-style success and failure', async () => {
    const rt = track(await startRuntime({ 'index.cjs': callbackStyle }));
    expect((await invoke(rt.url, {})).json).toEqual({ via: 'callback' });
    const failed = await invoke(rt.url, { fail: true });
    expect(failed.status).toBe(500);
    expect(failed.json).toMatchObject({ errorType: 'Error', errorMessage: 'callback says no' });
  });

  it('runs a handler wrapped by awslambda.streamifyResponse, answering what it streamed once the stream ends', async () => {
    const rt = track(await startRuntime({ 'index.mjs': streaming }));
    const streamed = await invoke(rt.url, { name: 'eddy' });
    expect(streamed.status).toBe(200);
    expect(streamed.text).toBe('hello eddy');
    expect((await invoke(rt.url, { open: true })).text).toBe('hello hello');
    // A function URL's status and headers: not applied here, the body still whole.
    expect((await invoke(rt.url, { http: true, name: 'url' })).text).toBe('hello url');
    const failed = await invoke(rt.url, { fail: true });
    expect(failed.status).toBe(500);
    expect(failed.json).toMatchObject({ errorType: 'Error', errorMessage: 'no stream today' });
  });

  it("answers by the first of the callback, context.succeed/fail/done and the promise, as Lambda's Node.js runtime does", async () => {
    const rt = track(await startRuntime({ 'index.cjs': otherAnswers }));
    expect((await invoke(rt.url, { how: 'callback-then-resolve' })).json).toBe('from the callback');
    expect((await invoke(rt.url, { how: 'succeed' })).json).toEqual({ via: 'succeed' });
    const failed = await invoke(rt.url, { how: 'fail' });
    expect(failed.status).toBe(500);
    expect(failed.json).toMatchObject({ errorType: 'TypeError', errorMessage: 'fail says no' });
    // fail() or a rejection without an error: Lambda's 'handled'.
    for (const how of ['fail-nothing', 'reject-nothing']) {
      const nothing = await invoke(rt.url, { how });
      expect(nothing.status).toBe(500);
      expect(nothing.json).toEqual({ errorType: 'string', errorMessage: 'handled' });
    }
    expect((await invoke(rt.url, { how: 'done' })).json).toBe('done');
  });

  it('times out every invocation in flight at its own deadline', async () => {
    const timeoutMs = 2000;
    const rt = track(
      await startRuntime(
        { 'index.mjs': actions },
        { EDDY_TIMEOUT_MS: String(timeoutMs), EDDY_CONCURRENCY: '4' },
      ),
    );
    const h = track(await holds());
    await waitForReadyz(rt.url, 200);
    const exited = once(rt.process.child, 'exit');
    const first = invoke(rt.url, h.event('first'));
    await h.started('first');
    // The others start half a timeout later, so that their deadlines come well after the first's.
    await sleep(timeoutMs / 2);
    const othersSent = Date.now();
    const survivor = invoke(rt.url, h.event('survivor'));
    const second = invoke(rt.url, h.event('second'));
    await Promise.all([h.started('survivor'), h.started('second')]);
    const quick = invoke(rt.url, { action: 'sleep', ms: 50 });
    expect((await quick).status).toBe(200);

    const timedOut = await first;
    expect(timedOut.status).toBe(504);
    expect(timedOut.json).toMatchObject({ errorMessage: 'Task timed out after 2.00 seconds' });
    // Let go only now, the survivor answers with what its handler returned: the first deadline
    // ended no other invocation.
    h.release('survivor', 'still running');
    const survived = await survivor;
    expect(survived.status).toBe(200);
    expect(survived.json).toBe('still running');
    const late = await second;
    expect(late.status).toBe(504);
    expect(late.json).toMatchObject({ errorMessage: 'Task timed out after 2.00 seconds' });
    expect(Date.now() - othersSent).toBeGreaterThanOrEqual(timeoutMs);
    expect(((await exited) as [number | null])[0]).toBe(1);
  });

  it('times out with 504, lets other in-flight work finish, then recycles and exits non-zero', async () => {
    const rt = track(
      await startRuntime(
        { 'index.mjs': actions },
        { EDDY_TIMEOUT_MS: '2000', EDDY_CONCURRENCY: '2' },
      ),
    );
    const h = track(await holds());
    await waitForReadyz(rt.url, 200);
    const exited = once(rt.process.child, 'exit');
    const late = invoke(rt.url, h.event('late'));
    await h.started('late');
    // Started a second later, its own deadline is a second later: it is still running, and stays
    // so until released, while the checks below run.
    await sleep(1000);
    const other = invoke(rt.url, h.event('other'));
    await h.started('other');
    const timedOut = await late;
    expect(timedOut.status).toBe(504);
    expect(timedOut.json).toEqual({
      errorType: 'Sandbox.Timedout',
      errorMessage: 'Task timed out after 2.00 seconds',
    });
    expect(timedOut.headers.get('x-eddy-function-error')).toBe('Unhandled');
    // Readiness is off at once, and new work is turned away while the other invocation runs.
    expect((await fetch(`${rt.url}/readyz`)).status).toBe(503);
    const refused = await invoke(rt.url, { action: 'return', value: 1 });
    expect(refused.status).toBe(503);
    expect(refused.headers.get('retry-after')).toBe('1');
    h.release('other', 'finished');
    expect((await other).json).toEqual('finished');
    const [code] = (await exited) as [number | null];
    expect(code).toBe(1);
    const log = rt.log();
    expect(log).toMatch(/\tERROR\tTask timed out after 2\.00 seconds/);
    expect(log).toMatch(
      /REPORT RequestId: \S+\tDuration: 2000\.00 ms\tBilled Duration: 2000 ms\t.*\tStatus: timeout/,
    );
  });

  it('ends the process when a handler blocks the event loop past its deadline, its first invocation too', async () => {
    const rt = track(await startRuntime({ 'index.mjs': actions }, { EDDY_TIMEOUT_MS: '500' }));
    await waitForReadyz(rt.url, 200);
    // The first invocation the process runs blocks: the watching thread runs already.
    const exited = once(rt.process.child, 'exit');
    const started = Date.now();
    // Nothing on the event loop can answer; the watchdog logs the timeout and ends the process,
    // so the caller sees the connection close (the gateway reports the timeout).
    await expect(invoke(rt.url, { action: 'spin', ms: 60_000 })).rejects.toThrow();
    const [code, signal] = (await exited) as [number | null, string | null];
    expect(Date.now() - started).toBeLessThan(5000);
    expect(signal).toBe('SIGKILL');
    expect(code).toBeNull();
    await rt.waitForLog(
      /\tERROR\tTask timed out after 0\.50 seconds: the handler blocked the event loop/,
    );
  });

  it('answers 429 with Retry-After beyond EDDY_CONCURRENCY', async () => {
    const rt = track(
      await startRuntime(
        { 'index.mjs': actions },
        { EDDY_CONCURRENCY: '2', EDDY_TIMEOUT_MS: '5000' },
      ),
    );
    const h = track(await holds());
    await waitForReadyz(rt.url, 200);
    const slow = [invoke(rt.url, h.event('one')), invoke(rt.url, h.event('two'))];
    await Promise.all([h.started('one'), h.started('two')]);
    const third = await invoke(rt.url, { action: 'return', value: 3 });
    expect(third.status).toBe(429);
    expect(third.headers.get('retry-after')).toBe('1');
    expect(third.json).toMatchObject({ errorType: 'TooManyRequestsException' });
    expect(String(third.json!.errorMessage)).toMatch(
      /already running 2 invocation\(s\).*EDDY_CONCURRENCY/,
    );
    h.release('one', '1');
    h.release('two', '2');
    for (const r of await Promise.all(slow)) expect(r.status).toBe(200);
    expect((await invoke(rt.url, { action: 'return', value: 4 })).json).toBe(4);
  });

  it("gives back the slot of a body that has not arrived by the function's timeout", async () => {
    const rt = track(
      await startRuntime(
        { 'index.mjs': actions },
        { EDDY_CONCURRENCY: '1', EDDY_TIMEOUT_MS: '1000' },
      ),
    );
    await waitForReadyz(rt.url, 200);
    // Declares a body and sends none of it.
    const started = Date.now();
    const stalled = await postHeadersOnly(rt.url, '/', {
      'content-type': 'application/json',
      'content-length': 100,
    });
    expect(stalled.status).toBe(400);
    expect(JSON.parse(stalled.body)).toMatchObject({
      errorMessage: "the request's body did not arrive within the function's timeout (1000 ms)",
    });
    expect(Date.now() - started).toBeLessThan(10_000);
    // The one slot is free again.
    expect((await invoke(rt.url, { action: 'return', value: 5 })).json).toBe(5);
  });

  it('sizes the heap from EDDY_MEMORY_MB, so exhausting it is a clear error, not a kill by the kernel', async () => {
    const heap = `
      import v8 from 'node:v8';
      export const handler = async (event) => {
        if (!event.hog) return Math.round(v8.getHeapStatistics().heap_size_limit / 1048576);
        const keep = []; for (;;) keep.push(new Array(1e5).fill(Math.random()));
      };`;
    const rt = track(
      await startRuntime(
        { 'index.mjs': heap },
        { EDDY_MEMORY_MB: '256', EDDY_TIMEOUT_MS: '30000' },
      ),
    );
    // 256 MB leaves 196 MB of old space and 12 MB of young generation.
    const limit = (await invoke(rt.url, {})).json as unknown as number;
    expect(limit).toBe(208);
    const exited = once(rt.process.child, 'exit');
    await expect(invoke(rt.url, { hog: true })).rejects.toThrow();
    const [code, signal] = (await exited) as [number | null, string | null];
    expect(code !== 0 || signal !== null).toBe(true);
    await rt.waitForLog(/JavaScript heap out of memory/);
  });

  it("loads Node's built-ins from their code cache while it starts, with the heap still sized", async () => {
    // V8 takes the code cache only while its flags are those the cache was made with; the tag
    // of a process started without flags says which those are.
    const plain = execFileSync(process.execPath, ['-p', "require('v8').cachedDataVersionTag()"], {
      env: { PATH: process.env.PATH },
    })
      .toString()
      .trim();
    const probe = `
      import v8 from 'node:v8';
      const atStart = String(v8.cachedDataVersionTag());
      export const handler = async () => ({
        atStart,
        now: String(v8.cachedDataVersionTag()),
        heapMb: Math.round(v8.getHeapStatistics().heap_size_limit / 1048576),
      });`;
    const rt = track(await startRuntime({ 'index.mjs': probe }, { EDDY_MEMORY_MB: '256' }));
    const seen = (await invoke(rt.url, {})).json as {
      atStart: string;
      now: string;
      heapMb: number;
    };
    expect(seen.atStart).toBe(plain);
    expect(seen.heapMb).toBe(208);
    // Once started the flags are back, so a worker thread a handler starts is sized as before.
    expect(seen.now).not.toBe(plain);
  });

  it('started without a sized heap, starts itself again with one and passes signals through', async () => {
    const heap = `import v8 from 'node:v8'; export const handler = async () => Math.round(v8.getHeapStatistics().heap_size_limit / 1048576);`;
    const rt = track(
      await startRuntime({ 'index.mjs': heap }, { EDDY_MEMORY_MB: '512', NODE_OPTIONS: '' }),
    );
    const limit = (await invoke(rt.url, {})).json as unknown as number;
    expect(limit).toBe(411 + 3 * 8);
    const exited = once(rt.process.child, 'exit');
    rt.process.child.kill('SIGTERM');
    expect(((await exited) as [number | null])[0]).toBe(0);
  });

  it('started again with a sized heap, does not outlive the process that started it', async () => {
    const { started, sized } = await relaunched();
    // No signal reaches the started one through a SIGKILL: its lifeline closing does.
    const exited = once(started, 'exit');
    started.kill('SIGKILL');
    await exited;
    const deadline = Date.now() + 10_000;
    while (alive(sized) && Date.now() < deadline) await sleep(50);
    expect(alive(sized), `the runtime ${sized} outlived the one that started it`).toBe(false);
  });

  it('started again with a sized heap, exits as a signal ended the one it started', async () => {
    const { started, sized } = await relaunched();
    const exited = once(started, 'exit');
    // The runtime does not handle SIGHUP: it ends the process, as SIGSEGV or SIGABRT would.
    process.kill(sized, 'SIGHUP');
    // 128 + 1, as a shell and a container runtime report a process that SIGHUP ended.
    expect(((await exited) as [number | null])[0]).toBe(129);
  });

  it('fails the invocation an escaped exception came from, and recycles', async () => {
    const rt = track(await startRuntime({ 'index.mjs': actions }));
    const exited = once(rt.process.child, 'exit');
    const res = await invoke(rt.url, { action: 'escape' });
    expect(res.status).toBe(500);
    expect(res.json).toMatchObject({ errorType: 'Error', errorMessage: 'thrown from a timer' });
    expect(((await exited) as [number | null])[0]).toBe(1);
  });

  it("fails the invocation a rejection nobody handled came from with Lambda's Runtime.UnhandledPromiseRejection, and recycles", async () => {
    const rt = track(await startRuntime({ 'index.mjs': actions }));
    const exited = once(rt.process.child, 'exit');
    const res = await invoke(rt.url, { action: 'escape-rejection' });
    expect(res.status).toBe(500);
    expect(res.json).toMatchObject({
      errorType: 'Runtime.UnhandledPromiseRejection',
      errorMessage: 'Error: nobody caught me',
    });
    expect((res.json!.stackTrace as string[]).some((l) => l.includes('index.mjs'))).toBe(true);
    expect(((await exited) as [number | null])[0]).toBe(1);
  });

  it('drains on SIGTERM: readiness off at once, in-flight work finishes, then exit 0', async () => {
    const rt = track(
      await startRuntime(
        { 'index.mjs': actions },
        { EDDY_CONCURRENCY: '4', EDDY_TIMEOUT_MS: '5000' },
      ),
    );
    const h = track(await holds());
    await waitForReadyz(rt.url, 200);
    const exited = once(rt.process.child, 'exit');
    const inFlight = invoke(rt.url, h.event('in-flight'));
    await h.started('in-flight');
    rt.process.child.kill('SIGTERM');
    await waitForReadyz(rt.url, 503, /SIGTERM/, 500);
    const refused = await invoke(rt.url, { action: 'return', value: 1 });
    expect(refused.status).toBe(503);
    h.release('in-flight', 'done');
    expect((await inFlight).json).toEqual('done');
    expect(((await exited) as [number | null])[0]).toBe(0);
  });

  it('refuses bad configuration at start, naming the variable and the allowed range', async () => {
    const { spawnSync } = await import('node:child_process');
    const { runtimeMain } = await import('../harness/runtime.js');
    const result = spawnSync(process.execPath, [runtimeMain], {
      env: {
        PATH: process.env.PATH,
        EDDY_MEMORY_MB: '64',
        EDDY_TIMEOUT_MS: 'soon',
        EDDY_LOG_FORMAT: 'xml',
        PORT: '0',
      },
      encoding: 'utf8',
      timeout: 10_000,
    });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain(
      'EDDY_MEMORY_MB="64" is not allowed: use a whole number from 128 to 10240',
    );
    expect(result.stderr).toContain(
      'EDDY_TIMEOUT_MS="soon" is not allowed: use a whole number from 1 to 900000',
    );
    expect(result.stderr).toContain('EDDY_LOG_FORMAT="xml" is not allowed: use text or json');
  });
});

/** Whether a process of this pid is still there (and not a zombie). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
