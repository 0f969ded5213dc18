/**
 * The runtime on its own with a language process behind the Runtime API (EDDY_RUNTIME=provided):
 * what the platform and an operator see of it, beside what test/runtimes shows through the gateway.
 */
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startRuntime, waitForReadyz, type Runtime } from '../harness/runtime.js';

let rt: Runtime | undefined;
afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail' && rt)
    process.stderr.write(`--- runtime log\n${rt.log()}\n`);
  await rt?.stop();
  rt = undefined;
});

const failingInit = `#!/bin/sh
curl -sS -o /dev/null -H 'Lambda-Runtime-Function-Error-Type: Custom.NoConfig' -d '{"errorMessage":"CONFIG is not set","errorType":"Custom.NoConfig"}' "http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/init/error"
exit 1
`;

async function invoke(url: string, event: unknown) {
  const res = await fetch(url, {
    method: 'POST',
    body: JSON.stringify(event),
    signal: AbortSignal.timeout(30_000),
  });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

describe('the runtime with a provided bootstrap', () => {
  it('is ready, fails an invocation with the init error, and logs it as JSON when asked', async () => {
    rt = await startRuntime(
      { bootstrap: failingInit },
      { EDDY_RUNTIME: 'provided', EDDY_LOG_FORMAT: 'json', PATH: process.env.PATH ?? '' },
    );
    await waitForReadyz(rt.url, 200);
    const { status, headers, body } = await invoke(rt.url, {});
    expect(status).toBe(502);
    expect(headers.get('x-eddy-function-error')).toBe('Unhandled');
    expect(body).toEqual({ errorType: 'Custom.NoConfig', errorMessage: 'CONFIG is not set' });
    const log = await rt.waitForLog(/"type":"platform.initError"/);
    const record = log
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { type: string; record: unknown })
      .find((r) => r.type === 'platform.initError');
    expect(record?.record).toEqual({
      errorType: 'Custom.NoConfig',
      errorMessage: 'CONFIG is not set',
    });
    const metrics = await (await fetch(`${rt.url}/metrics`)).text();
    expect(metrics).toMatch(/eddy_runtime_invocations_total\{[^}]*outcome="error"[^}]*\} 1/);
  });

  it('answers Runtime.InvalidEntrypoint when there is no executable bootstrap', async () => {
    rt = await startRuntime({ 'README.md': 'no bootstrap here' }, { EDDY_RUNTIME: 'provided' });
    await waitForReadyz(rt.url, 200);
    const { status, body } = await invoke(rt.url, {});
    expect(status).toBe(502);
    expect(body).toMatchObject({
      errorType: 'Runtime.InvalidEntrypoint',
      errorMessage: `${join(rt.codeDir, 'bootstrap')} is not an executable file (ENOENT): a provided function brings an executable named bootstrap in its code directory`,
    });
  });
});
