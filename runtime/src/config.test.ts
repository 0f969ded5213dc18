import { describe, expect, it } from 'vitest';
import { ConfigError, heapSizing, loadConfig } from './config.js';

describe('loadConfig', () => {
  it('uses the documented defaults', () => {
    expect(loadConfig({})).toEqual({
      handler: 'index.handler',
      codeDir: '/var/task',
      functionName: 'function',
      functionNamespace: 'default',
      memoryMb: 128,
      timeoutMs: 3000,
      concurrency: 1,
      logFormat: 'text',
      runtime: 'nodejs22',
      port: 8080,
      host: '0.0.0.0',
    });
  });

  it('reads every variable', () => {
    const c = loadConfig({
      EDDY_HANDLER: 'src/app.main',
      EDDY_CODE_DIR: '/code',
      EDDY_FUNCTION_NAME: 'thumbnail',
      EDDY_FUNCTION_NAMESPACE: 'photos',
      EDDY_MEMORY_MB: '10240',
      EDDY_TIMEOUT_MS: '900000',
      EDDY_CONCURRENCY: '1000',
      EDDY_LOG_FORMAT: 'json',
      PORT: '9000',
    });
    expect(c).toMatchObject({
      handler: 'src/app.main',
      memoryMb: 10240,
      timeoutMs: 900000,
      concurrency: 1000,
      logFormat: 'json',
      port: 9000,
    });
  });

  it.each([
    ['EDDY_MEMORY_MB', '127', 'use a whole number from 128 to 10240'],
    ['EDDY_MEMORY_MB', '1.5', 'use a whole number from 128 to 10240'],
    ['EDDY_TIMEOUT_MS', '0', 'use a whole number from 1 to 900000'],
    ['EDDY_TIMEOUT_MS', '900001', 'use a whole number from 1 to 900000'],
    ['EDDY_CONCURRENCY', '-1', 'use a whole number from 1 to 1000'],
    ['PORT', '70000', 'use a whole number from 0 to 65535'],
    ['EDDY_HANDLER', 'index', 'use file.export'],
    ['EDDY_FUNCTION_NAME', 'Thumbnail', 'use a Kubernetes object name'],
    ['EDDY_LOG_FORMAT', 'yaml', 'use text or json'],
    [
      'EDDY_RUNTIME',
      'python3',
      'use one of nodejs20, nodejs22, nodejs24, python3.11, java17, provided',
    ],
  ])('refuses %s=%s, naming the variable and what is allowed', (name, value, allowed) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [name]: value })).toThrow(
      `${name}=${JSON.stringify(value)} is not allowed: ${allowed}`,
    );
  });

  it("takes the handler as a language process names it, where the runtime is not Node's", () => {
    expect(
      loadConfig({ EDDY_RUNTIME: 'java17', EDDY_HANDLER: 'example.Hello::handle' }),
    ).toMatchObject({ runtime: 'java17', handler: 'example.Hello::handle' });
    expect(() => loadConfig({ EDDY_RUNTIME: 'provided', EDDY_HANDLER: 'a b' })).toThrow(
      'EDDY_HANDLER="a b" is not allowed: use the handler as the runtime names it, without spaces',
    );
  });

  it('reports every problem at once', () => {
    try {
      loadConfig({ EDDY_MEMORY_MB: '1', EDDY_TIMEOUT_MS: 'x' });
      expect.unreachable();
    } catch (err) {
      expect((err as ConfigError).problems).toHaveLength(2);
    }
  });
});

describe('heapSizing', () => {
  it('keeps old space plus young generation well below the function memory', () => {
    expect(heapSizing(128)).toEqual({ oldSpaceMb: 74, semiSpaceMb: 2 });
    expect(heapSizing(512)).toEqual({ oldSpaceMb: 411, semiSpaceMb: 8 });
    expect(heapSizing(10240)).toEqual({ oldSpaceMb: 8656, semiSpaceMb: 16 });
    for (const m of [128, 256, 1024, 1769, 3008, 10240]) {
      const { oldSpaceMb, semiSpaceMb } = heapSizing(m);
      expect(oldSpaceMb + 3 * semiSpaceMb).toBeLessThanOrEqual(m - 48);
    }
  });
});
