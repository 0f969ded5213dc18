/**
 * The caller's client context reaches a handler behind the Runtime API: the gateway sends it
 * base64-encoded (`x-eddy-client-context`), the runtime hands the language process its JSON in
 * `Lambda-Runtime-Client-Context` as AWS's emulator does, and awslambdaric makes
 * `context.client_context` of it.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { headers } from '../../runtime/src/contract/http.js';
import { pythonRic } from '../harness/components.js';
import { startRuntime, type Runtime } from '../harness/runtime.js';
import { canRun } from '../harness/suite.js';

const handler = `
def handler(event, context):
    cc = context.client_context
    if cc is None:
        return {"clientContext": None}
    return {
        "clientContext": {
            "installationId": cc.client.installation_id if cc.client else None,
            "appTitle": cc.client.app_title if cc.client else None,
            "custom": cc.custom,
            "env": cc.env,
        }
    }
`;

async function invoke(url: string, clientContext?: string) {
  const res = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(clientContext === undefined ? {} : { [headers.clientContext]: clientContext }),
    },
    body: '{}',
    signal: AbortSignal.timeout(30_000),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

const base64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64');

describe.skipIf(!canRun('runtimes'))('python3.11: the client context', () => {
  let rt: Runtime;
  beforeAll(async () => {
    rt = await startRuntime(
      { 'index.py': handler },
      {
        EDDY_RUNTIME: 'python3.11',
        EDDY_HANDLER: 'index.handler',
        EDDY_TIMEOUT_MS: '20000',
        EDDY_PYTHON: pythonRic,
      },
    );
  }, 60_000);
  afterAll(() => rt?.stop());
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') process.stderr.write(`--- runtime log\n${rt.log()}\n`);
  });

  it('gives the handler context.client_context from the caller’s client context', async () => {
    const { status, body } = await invoke(
      rt.url,
      base64({
        client: { installation_id: 'inst-1', app_title: 'Orders ü' },
        custom: { tenant: 'acme', line: 'a\nb' },
        env: { platform: 'linux' },
      }),
    );
    expect(status).toBe(200);
    expect(body).toEqual({
      clientContext: {
        installationId: 'inst-1',
        appTitle: 'Orders ü',
        custom: { tenant: 'acme', line: 'a\nb' },
        env: { platform: 'linux' },
      },
    });
  });

  it('gives None without one', async () => {
    expect(await invoke(rt.url)).toEqual({ status: 200, body: { clientContext: null } });
  });

  it('refuses a client context that is not base64 of a JSON object', async () => {
    for (const bad of ['not base64!', base64([1, 2]), Buffer.from('{oops').toString('base64')]) {
      const { status, body } = await invoke(rt.url, bad);
      expect(status).toBe(400);
      expect(body.errorType).toBe('InvalidEvent');
      expect(body.errorMessage).toContain(headers.clientContext);
    }
    // The process is untouched: the next invocation runs.
    expect((await invoke(rt.url)).status).toBe(200);
  });
});
