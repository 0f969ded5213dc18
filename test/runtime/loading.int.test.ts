import { describe, expect, it } from 'vitest';
import { startRuntime, waitForReadyz } from '../harness/runtime.js';
import { usePerTest } from '../harness/suite.js';

const echo = `{ event, fn: context.functionName }`;

async function invoke(url: string, body: unknown = { n: 1 }) {
  const res = await fetch(url, { method: 'POST', body: JSON.stringify(body) });
  const text = await res.text();
  return {
    res,
    status: res.status,
    body: text ? (JSON.parse(text) as Record<string, unknown>) : undefined,
  };
}

describe('runtime: loading handlers', () => {
  const track = usePerTest();

  const variants: Array<[string, Record<string, string>, string?]> = [
    [
      'an ESM .mjs file',
      { 'index.mjs': `export const handler = async (event, context) => (${echo});` },
    ],
    [
      'a CommonJS .cjs file',
      { 'index.cjs': `exports.handler = async (event, context) => (${echo});` },
    ],
    [
      'a .js file that is ESM per package.json',
      {
        'package.json': '{"type":"module"}',
        'index.js': `export async function handler(event, context) { return ${echo}; }`,
      },
    ],
    [
      'a .js file that is CommonJS (no package.json)',
      { 'index.js': `module.exports.handler = async (event, context) => (${echo});` },
    ],
    [
      'a .js file in a subfolder, CommonJS per its nearest package.json',
      {
        'package.json': '{"type":"module"}',
        'src/package.json': '{"type":"commonjs"}',
        'src/app.js': `module.exports = { handler: async (event, context) => (${echo}) };`,
      },
      'src/app.handler',
    ],
    [
      'a handler nested in an export (index.api.get: the file ends at its first dot, as on Lambda)',
      { 'index.mjs': `export const api = { get: async (event, context) => (${echo}) };` },
      'index.api.get',
    ],
    [
      'a callback-style handler',
      {
        'index.mjs': `export function handler(event, context, callback) { setTimeout(() => callback(null, ${echo}), 5); }`,
      },
    ],
    [
      'a synchronous handler without callback',
      { 'index.cjs': `exports.handler = (event, context) => (${echo});` },
    ],
  ];

  it.each(variants)('runs %s', async (_name, files, handler) => {
    const rt = track(await startRuntime(files, handler ? { EDDY_HANDLER: handler } : {}));
    const { status, body } = await invoke(rt.url, { hello: 'world' });
    expect(status).toBe(200);
    expect(body).toEqual({ event: { hello: 'world' }, fn: 'hello' });
  });

  it('imports the handler at start, not on the first request, and reports the import as init duration', async () => {
    const rt = track(
      await startRuntime({
        'index.mjs': `
          const t = Date.now(); while (Date.now() - t < 150) {} // a slow import
          console.log('module loaded');
          export const handler = async () => 'ok';`,
      }),
    );
    await waitForReadyz(rt.url, 200);
    // Loaded before any invocation: its log line comes without one.
    await rt.waitForLog(/\tundefined\tINFO\tmodule loaded/);
    const first = await invoke(rt.url);
    expect(Number(first.res.headers.get('x-eddy-init-duration-ms'))).toBeGreaterThanOrEqual(150);
    await rt.waitForLog(/REPORT RequestId: \S+\tDuration: [\d.]+ ms\t.*\tInit Duration: [\d.]+ ms/);
    const second = await invoke(rt.url);
    expect(second.res.headers.get('x-eddy-init-duration-ms')).toBeNull();
  });

  it('holds a caller while a slow import outlasts its timeout, and times it from the end of the import', async () => {
    const rt = track(
      await startRuntime(
        {
          'index.mjs':
            'await new Promise((r) => setTimeout(r, 1500)); export const handler = async () => "loaded";',
        },
        { EDDY_TIMEOUT_MS: '300' },
      ),
    );
    // Lambda's init has 10 s of its own: the caller waits for it, then has its 300 ms.
    const early = await fetch(rt.url, { method: 'POST', body: '{}' });
    expect(early.status).toBe(200);
    expect(await early.json()).toBe('loaded');
    expect(Number(early.headers.get('x-eddy-duration-ms'))).toBeLessThan(300);
    expect(Number(early.headers.get('x-eddy-init-duration-ms'))).toBeGreaterThanOrEqual(1_000);
    await waitForReadyz(rt.url, 200);
    expect((await invoke(rt.url)).body).toBe('loaded');
  });

  const broken: Array<[string, Record<string, string>, string, RegExp]> = [
    [
      'a missing file',
      { 'other.mjs': 'export const handler = () => 1;' },
      'Runtime.ImportModuleError',
      /Cannot find module 'index'.*index\.js, index\.mjs, index\.cjs/,
    ],
    [
      'a missing export',
      { 'index.mjs': 'export const other = () => 1;' },
      'Runtime.HandlerNotFound',
      /index\.handler is undefined or not exported/,
    ],
    [
      'an export that is not a function',
      { 'index.mjs': 'export const handler = 42;' },
      'Runtime.HandlerNotFound',
      /index\.handler is undefined or not exported/,
    ],
    [
      'a syntax error',
      { 'index.mjs': 'export const handler = async () => {' },
      'Runtime.UserCodeSyntaxError',
      /SyntaxError: /,
    ],
    [
      'a throw at import',
      { 'index.mjs': 'throw new TypeError("config missing"); export const handler = () => 1;' },
      'Runtime.ImportModuleError',
      /TypeError: config missing/,
    ],
    [
      'a missing dependency',
      { 'index.mjs': 'import "not-installed-anywhere"; export const handler = () => 1;' },
      'Runtime.ImportModuleError',
      /not-installed-anywhere/,
    ],
  ];

  it.each(broken)(
    'keeps /readyz at 503 and answers 502 for %s',
    async (_name, files, errorType, message) => {
      const rt = track(await startRuntime(files));
      // 503 while loading, then 503 naming the error for good.
      await waitForReadyz(rt.url, 503, new RegExp(errorType.replace('.', '\\.')));
      // The error, for the platform to answer invocations with while no replica is ready.
      const readyz = await fetch(`${rt.url}/readyz`);
      expect(readyz.headers.get('content-type')).toBe('application/json');
      const said = (await readyz.json()) as { errorType: string; errorMessage: string };
      expect(said.errorType).toBe(errorType);
      expect(said.errorMessage).toMatch(message);
      expect((await fetch(`${rt.url}/healthz`)).status).toBe(200);
      for (let i = 0; i < 2; i++) {
        const { res, status, body } = await invoke(rt.url);
        expect(status).toBe(502);
        expect(res.headers.get('x-eddy-function-error')).toBe('Unhandled');
        expect(body?.errorType).toBe(errorType);
        expect(String(body?.errorMessage)).toMatch(message);
      }
      // The cause is logged once, not once per invocation.
      const mentions = rt
        .log()
        .split('\n')
        .filter((l) => l.includes(errorType));
      expect(mentions).toHaveLength(1);
    },
  );
});
