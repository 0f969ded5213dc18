import { chmod, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { EddyFunction, FunctionSpec } from '../api/types.js';
import { codeSource, localCodeDirAnnotation, writeCode } from './local-code.js';

function fn(spec: FunctionSpec, annotations?: Record<string, string>): EddyFunction {
  return {
    apiVersion: 'eddy.dev/v1alpha1',
    kind: 'Function',
    metadata: { name: 'orders', namespace: 'shop', annotations },
    spec,
  };
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eddy-local-code-test-'));
});
afterEach(async () => {
  vi.unstubAllEnvs();
  await rm(dir, { recursive: true, force: true });
});

describe('codeSource for the runtimes behind the Runtime API', () => {
  it('writes inline code where each runtime looks for it: index.py, an executable bootstrap', async () => {
    expect(codeSource(fn({ runtime: 'python3.11', code: { inline: 'x = 1' } }))).toMatchObject({
      kind: 'files',
      files: { 'index.py': 'x = 1' },
    });
    const source = codeSource(fn({ runtime: 'provided', code: { inline: '#!/bin/sh\n' } }));
    expect(source).toMatchObject({ kind: 'files', files: { bootstrap: '#!/bin/sh\n' } });
    const written = await writeCode(dir, source as Extract<typeof source, { kind: 'files' }>);
    expect((await stat(join(written, 'bootstrap'))).mode & 0o777).toBe(0o755);
  });

  it('refuses a provided function without an executable bootstrap, saying which file and why', async () => {
    const annotated = fn(
      { runtime: 'provided', image: 'example.com/orders:1' },
      { [localCodeDirAnnotation]: dir },
    );
    expect(() => codeSource(annotated)).toThrow(
      `Function shop/orders cannot run locally: runtime provided starts ${join(dir, 'bootstrap')}, which does not exist; a provided function brings an executable named bootstrap`,
    );
    await writeFile(join(dir, 'bootstrap'), '#!/bin/sh\n');
    await chmod(join(dir, 'bootstrap'), 0o644);
    expect(() => codeSource(annotated)).toThrow('which is not executable (chmod +x it)');
    await chmod(join(dir, 'bootstrap'), 0o755);
    expect(codeSource(annotated)).toEqual({ kind: 'dir', dir });
    expect(() =>
      codeSource(fn({ runtime: 'provided', code: { configMap: { name: 'c' } } }), () => ({
        'main.go': 'package main',
      })),
    ).toThrow('runtime provided starts bootstrap, which its code does not hold');
  });

  it('says what python3.11 needs when there is no python3', () => {
    vi.stubEnv('PATH', dir);
    vi.stubEnv('EDDY_PYTHON', '');
    expect(() => codeSource(fn({ runtime: 'python3.11', code: { inline: 'x = 1' } }))).toThrow(
      'Function shop/orders cannot run locally: runtime python3.11 needs python3 on PATH (Debian: apt-get install -y python3 python3-venv), or EDDY_PYTHON naming a python that has awslambdaric 4.2.2',
    );
  });

  it('says what java17 needs when there is no java, or no mvn to fetch the client', async () => {
    const java17 = fn(
      { runtime: 'java17', image: 'example.com/orders:1' },
      { [localCodeDirAnnotation]: dir },
    );
    vi.stubEnv('PATH', dir);
    vi.stubEnv('EDDY_JAVA_CLASSPATH', '');
    expect(() => codeSource(java17)).toThrow(
      'Function shop/orders cannot run locally: runtime java17 needs java on PATH (Debian: apt-get install -y openjdk-17-jre-headless)',
    );
    await writeFile(join(dir, 'java'), '#!/bin/sh\n', { mode: 0o755 });
    expect(() => codeSource(java17)).toThrow(
      "runtime java17 needs mvn on PATH to fetch AWS's Java runtime interface client 2.10.1 (Debian: apt-get install -y maven), or EDDY_JAVA_CLASSPATH naming its jars",
    );
    vi.stubEnv('EDDY_JAVA_CLASSPATH', '/opt/ric/*');
    expect(codeSource(java17)).toEqual({ kind: 'dir', dir });
  });
});
