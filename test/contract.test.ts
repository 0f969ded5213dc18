/**
 * The seam between operator and runtime: the environment the operator writes into a pod is fed
 * to the runtime's own parser, which must read back exactly the Function's settings.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { EddyFunction, FunctionSpec } from '../operator/src/api/types.js';
import { desiredDeployment } from '../operator/src/controller/desired.js';
import { loadConfig } from '../runtime/src/config.js';
import { heapIsSized, startedHeapFlags } from '../runtime/src/heap.js';
import { errorCodes, heapFlags, runtimeEnv } from '../runtime/src/contract/index.js';

const fn = (spec: FunctionSpec): EddyFunction => ({
  apiVersion: 'eddy.dev/v1alpha1',
  kind: 'Function',
  metadata: { name: 'thumb', namespace: 'photos', uid: 'u-1', generation: 1 },
  spec,
});

const settings = {
  runtimeImages: {
    nodejs20: 'rt:20',
    nodejs22: 'rt:22',
    nodejs24: 'rt:24',
    'python3.11': 'rt:python3.11',
    java17: 'rt:java17',
    provided: 'rt:provided',
  },
  gatewayUrl: 'http://gw:8080',
  gatewayNamespace: 'eddy-system',
  gatewayPodLabels: { 'app.kubernetes.io/component': 'operator' },
};

function podEnv(spec: FunctionSpec): Record<string, string> {
  const c = desiredDeployment(fn(spec), settings).spec!.template.spec!.containers[0]!;
  return Object.fromEntries(c.env!.map((e) => [e.name, e.value!]));
}

describe('the runtime environment contract', () => {
  it('reads back what the operator writes into the pod', () => {
    const env = podEnv({
      image: 'x',
      handler: 'src/app.run',
      memory: '1Gi',
      timeoutSeconds: 30,
      concurrency: 8,
      runtime: 'python3.11',
    });
    expect(loadConfig(env)).toEqual({
      handler: 'src/app.run',
      codeDir: '/var/task',
      functionName: 'thumb',
      functionNamespace: 'photos',
      memoryMb: 1024,
      timeoutMs: 30_000,
      concurrency: 8,
      logFormat: 'text',
      runtime: 'python3.11',
      port: 8080,
      host: '0.0.0.0',
    });
    // The memory is the Python process's: the runtime process that relays its events gets no
    // heap flags, and starts without setting any aside.
    expect(env.NODE_OPTIONS).toBe('');
    expect(startedHeapFlags([], env.NODE_OPTIONS)).toEqual([]);
  });

  it("sizes a Node function's heap from its memory", () => {
    for (const runtime of ['nodejs20', 'nodejs22', 'nodejs24', undefined] as const) {
      const env = podEnv({ image: 'x', memory: '1Gi', ...(runtime ? { runtime } : {}) });
      // Sized by the platform, the runtime does not start itself again.
      expect(heapIsSized([], env.NODE_OPTIONS)).toBe(true);
      expect(env.NODE_OPTIONS).toBe(heapFlags(1024).join(' '));
      // The runtime sets exactly these aside while it starts, and back once started.
      expect(startedHeapFlags([], env.NODE_OPTIONS)).toEqual(heapFlags(1024));
    }
    for (const runtime of ['python3.11', 'java17', 'provided'] as const)
      expect(podEnv({ image: 'x', memory: '1Gi', runtime }).NODE_OPTIONS).toBe('');
  });

  it('reads back every bound of the contract that the API allows', () => {
    for (const [memoryMb, timeoutSeconds] of [
      [128, 1],
      [10240, 900],
    ] as const) {
      const env = podEnv({ image: 'x', memory: `${memoryMb}Mi`, timeoutSeconds });
      const c = loadConfig(env);
      expect([c.memoryMb, c.timeoutMs]).toEqual([memoryMb, timeoutSeconds * 1000]);
    }
  });

  it('is what a local replica gets too', () => {
    const env = runtimeEnv({
      handler: 'index.handler',
      codeDir: '/tmp/code',
      functionName: 'hello',
      functionNamespace: 'dev',
      memoryMb: 256,
      timeoutMs: 5000,
      concurrency: 2,
      port: 0,
      host: '127.0.0.1',
      logFormat: 'json',
    });
    expect(loadConfig(env)).toMatchObject({
      codeDir: '/tmp/code',
      memoryMb: 256,
      port: 0,
      host: '127.0.0.1',
      logFormat: 'json',
    });
  });
});

describe('the error catalogue', () => {
  it('holds only errors that the runtime or the gateway answers with', async () => {
    let source = '';
    for (const dir of ['runtime/src', 'operator/src']) {
      for (const file of await readdir(dir, { recursive: true })) {
        if (!file.endsWith('.ts') || file.endsWith('.test.ts') || file.startsWith('contract'))
          continue;
        source += await readFile(join(dir, file), 'utf8');
      }
    }
    const unused = Object.keys(errorCodes).filter(
      (code) => !new RegExp(`'${code}'|errorCodes\\.${code}\\b`).test(source),
    );
    expect(unused).toEqual([]);
  });
});
