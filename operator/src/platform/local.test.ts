import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { EddyFunction, FunctionSpec } from '../api/types.js';
import { functionEnv, revisionOf } from './local.js';
import { codeSource, removeCodeExcept, writeCode } from './local-code.js';

function fn(spec: FunctionSpec, annotations?: Record<string, string>): EddyFunction {
  return {
    apiVersion: 'eddy.dev/v1alpha1',
    kind: 'Function',
    metadata: { name: 'thumbnail', namespace: 'photos', annotations },
    spec,
  };
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eddy-local-test-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('codeSource', () => {
  it('writes inline code as index.mjs', () => {
    const source = codeSource(fn({ code: { inline: 'export const handler = () => 1;' } }));
    expect(source).toMatchObject({
      kind: 'files',
      files: { 'index.mjs': 'export const handler = () => 1;' },
    });
  });

  it("takes a ConfigMap's keys as files, and names a ConfigMap it cannot find", () => {
    const configMaps = (ns: string, name: string) =>
      ns === 'photos' && name === 'code' ? { 'app.js': 'a', 'package.json': '{}' } : undefined;
    expect(codeSource(fn({ code: { configMap: { name: 'code' } } }), configMaps)).toMatchObject({
      kind: 'files',
      files: { 'app.js': 'a', 'package.json': '{}' },
    });
    expect(() => codeSource(fn({ code: { configMap: { name: 'other' } } }), configMaps)).toThrow(
      'Function photos/thumbnail cannot run locally: its code is in ConfigMap photos/other, which the local stack does not have',
    );
  });

  it('refuses a ConfigMap key that would leave the code directory', () => {
    expect(() =>
      codeSource(fn({ code: { configMap: { name: 'code' } } }), () => ({ '..': 'x' })),
    ).toThrow(/has a key "\.\." that is not a file name/);
  });

  it('runs an annotated Function from its directory, even with an image', () => {
    const source = codeSource(fn({ image: 'thumbnail:1' }, { 'eddy.dev/local-code-dir': dir }));
    expect(source).toEqual({ kind: 'dir', dir });
    expect(() =>
      codeSource(fn({ image: 'thumbnail:1' }, { 'eddy.dev/local-code-dir': join(dir, 'nope') })),
    ).toThrow(/annotation eddy\.dev\/local-code-dir names .*nope, which is not a directory/);
  });

  it('says how to run a Function that names only an image', () => {
    expect(() => codeSource(fn({ image: 'registry.example.com/thumbnail:1.0' }))).toThrow(
      'Function photos/thumbnail cannot run locally: it names only an image (registry.example.com/thumbnail:1.0); set the annotation eddy.dev/local-code-dir to the directory holding its code, or use spec.code.inline or spec.code.configMap',
    );
  });
});

describe('writeCode', () => {
  it('writes each content once, in its own directory, and removes what is not kept', async () => {
    const v1 = codeSource(fn({ code: { inline: 'v1' } }));
    const v2 = codeSource(fn({ code: { inline: 'v2' } }));
    if (v1.kind !== 'files' || v2.kind !== 'files') throw new Error('expected files');
    const d1 = await writeCode(dir, v1);
    expect(await readFile(join(d1, 'index.mjs'), 'utf8')).toBe('v1');
    // The same content again: the same directory, untouched.
    await writeFile(join(d1, 'marker'), '');
    expect(await writeCode(dir, v1)).toBe(d1);
    expect(await readdir(d1)).toContain('marker');
    const d2 = await writeCode(dir, v2);
    expect(d2).not.toBe(d1);
    expect(await readFile(join(d2, 'index.mjs'), 'utf8')).toBe('v2');
    await removeCodeExcept(dir, new Set([d2]));
    expect(await readdir(dir)).toEqual([d2.slice(dir.length + 1)]);
  });
});

describe('functionEnv', () => {
  it('passes values, resolves ConfigMap references and leaves out Secrets with a note', () => {
    const { env, notes } = functionEnv(
      fn({
        env: [
          { name: 'DEST_BUCKET', value: 'photos-thumbnails' },
          { name: 'EMPTY' },
          {
            name: 'GREETING',
            valueFrom: { configMapKeyRef: { name: 'settings', key: 'greeting' } },
          },
          { name: 'MISSING', valueFrom: { configMapKeyRef: { name: 'settings', key: 'nope' } } },
          { name: 'TOKEN', valueFrom: { secretKeyRef: { name: 'creds', key: 'token' } } },
          { name: 'POD', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
        ],
      }),
      (ns, name) => (ns === 'photos' && name === 'settings' ? { greeting: 'hello' } : undefined),
    );
    expect(env).toEqual({ DEST_BUCKET: 'photos-thumbnails', EMPTY: '', GREETING: 'hello' });
    expect(notes).toEqual([
      'MISSING is not set: ConfigMap photos/settings has no key nope locally',
      'TOKEN is not set: the local platform does not read Secrets (secretKeyRef photos/creds)',
      'POD is not set: the local platform resolves only ConfigMap references',
    ]);
  });
});

describe('functionEnv with the local stack’s Secrets', () => {
  const secrets = (ns: string, name: string) =>
    ns === 'photos' && name === 'creds' ? { token: 's3cr3t', user: 'eddy' } : undefined;

  it('resolves secretKeyRef and envFrom secretRef; an optional reference that misses is left out', () => {
    const { env, notes } = functionEnv(
      fn({
        envFrom: [{ prefix: 'CREDS_', secretRef: { name: 'creds' } }],
        env: [
          { name: 'TOKEN', valueFrom: { secretKeyRef: { name: 'creds', key: 'token' } } },
          {
            name: 'MAYBE',
            valueFrom: { secretKeyRef: { name: 'creds', key: 'nope', optional: true } },
          },
        ],
      }),
      undefined,
      secrets,
    );
    expect(env).toEqual({ CREDS_token: 's3cr3t', CREDS_user: 'eddy', TOKEN: 's3cr3t' });
    expect(notes).toEqual([]);
  });

  it('refuses to run a Function whose Secret or key is missing, naming them', () => {
    const run = (ref: { name: string; key: string }) => () =>
      functionEnv(
        fn({ env: [{ name: 'TOKEN', valueFrom: { secretKeyRef: ref } }] }),
        undefined,
        secrets,
      );
    expect(run({ name: 'creds', key: 'password' })).toThrow(
      /env TOKEN names key password of Secret photos\/creds, which has no such key: add it/,
    );
    expect(run({ name: 'gone', key: 'token' })).toThrow(
      /env TOKEN names key token of Secret photos\/gone, which is not in the loaded manifests/,
    );
    expect(() =>
      functionEnv(fn({ envFrom: [{ secretRef: { name: 'gone' } }] }), undefined, secrets),
    ).toThrow(/envFrom names Secret photos\/gone, which is not in the loaded manifests/);
  });
});

describe('revisionOf', () => {
  const base = fn({ code: { inline: 'v1' }, memory: '256Mi', scaling: { maxReplicas: 2 } });

  it('changes with what a replica runs', () => {
    expect(revisionOf({ ...base, spec: { ...base.spec, code: { inline: 'v2' } } })).not.toBe(
      revisionOf(base),
    );
    expect(revisionOf({ ...base, spec: { ...base.spec, memory: '512Mi' } })).not.toBe(
      revisionOf(base),
    );
    expect(
      revisionOf({
        ...base,
        metadata: { ...base.metadata, annotations: { 'eddy.dev/local-code-dir': '/code' } },
      }),
    ).not.toBe(revisionOf(base));
  });

  it('stays with scaling, triggers and key order, which restart nothing', () => {
    expect(
      revisionOf({
        ...base,
        spec: { scaling: { maxReplicas: 9 }, memory: '256Mi', code: { inline: 'v1' } },
        metadata: { ...base.metadata, generation: 7 },
      }),
    ).toBe(revisionOf(base));
  });
});
