/**
 * The gateway, autoscaler and local platform composed as the local stack composes them, with
 * Functions held in memory: what the data-path tests run against. Replicas are real runtime
 * processes (`dist/runtime/main.js`).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EddyFunction, FunctionSpec } from '../../operator/src/api/types.js';
import { noAuth } from '../../operator/src/auth/authorizer.js';
import { composeEddy, type Eddy, type EddyOptions } from '../../operator/src/compose.js';
import { MemoryFunctionStore } from '../../operator/src/functions.js';
import { soleLeader } from '../../operator/src/manager.js';
import { createLocalPlatform, type LocalPlatform } from '../../operator/src/platform/local.js';
import { runtimeMain } from '../harness/runtime.js';
import { waitFor } from '../harness/wait.js';

export const namespace = 'data-path';

export function inlineFunction(name: string, code: string, spec: FunctionSpec = {}): EddyFunction {
  return {
    apiVersion: 'eddy.dev/v1alpha1',
    kind: 'Function',
    metadata: { name, namespace, generation: 1, uid: `uid-${name}` },
    spec: { ...spec, code: { inline: code } },
  };
}

export interface Stack {
  url: string;
  /** Where GET /metrics is served: a listener of its own. */
  metricsUrl: string;
  store: MemoryFunctionStore;
  platform: LocalPlatform;
  eddy: Eddy;
  logs: string[];
  invoke(name: string, body?: unknown, init?: RequestInit): Promise<Response>;
  stop(): Promise<void>;
}

export async function startStack(
  fns: EddyFunction[],
  options: Partial<
    Pick<
      EddyOptions,
      | 'queueLimit'
      | 'retryBaseDelayMs'
      | 'autoscalerIntervalMs'
      | 'sources'
      | 'secrets'
      | 'checkpoints'
      | 'states'
      | 'gateway'
      | 'memoryBudget'
      | 'auth'
      | 'jetstream'
      | 'role'
      | 'drainMs'
    >
  > = {},
): Promise<Stack> {
  const store = new MemoryFunctionStore();
  for (const fn of fns) store.set(fn);
  const logs: string[] = [];
  const log = (line: string) => logs.push(`${new Date().toISOString()} ${line}`);
  const workDir = await mkdtemp(join(tmpdir(), 'eddy-stack-'));
  const platform = createLocalPlatform({
    store,
    runtimeMain,
    workDir,
    log,
    restartBackoffMs: { initial: 100, max: 1_000 },
  });
  let url: string | undefined;
  let metricsUrl: string | undefined;
  const stop = new AbortController();
  const eddy = composeEddy({
    platform,
    store,
    elector: soleLeader,
    log,
    // As the local stack runs: no authentication (test/gateway/auth.int.test.ts covers it).
    auth: noAuth,
    gateway: { port: 0, host: '127.0.0.1' },
    // As the local stack runs: its dead-letter sinks are on 127.0.0.1.
    deadLetterUrls: { allowLoopback: true },
    onListening: (u) => (url = u),
    metrics: { port: 0, host: '127.0.0.1' },
    onMetricsListening: (u) => (metricsUrl = u),
    ...options,
    secrets:
      options.secrets ??
      (async (ns, name) => {
        throw new Error(`no Secret ${ns}/${name} in this test`);
      }),
  });
  let failed: Error | undefined;
  const done = eddy.manager.start(stop.signal).catch((err: unknown) => {
    failed = err instanceof Error ? err : new Error(`the stack failed: ${JSON.stringify(err)}`);
  });
  const listening = await waitFor('the gateway to listen', async () => {
    if (failed) throw failed;
    return metricsUrl ? url : undefined;
  });
  return {
    url: listening,
    metricsUrl: metricsUrl!,
    store,
    platform,
    eddy,
    logs,
    invoke: (name, body = {}, init = {}) =>
      fetch(`${listening}/functions/${namespace}/${name}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        ...init,
      }),
    async stop() {
      stop.abort();
      await done;
      await eddy.close();
      await rm(workDir, { recursive: true, force: true });
      if (failed) throw failed;
    },
  };
}

export const quiet = (spec: FunctionSpec = {}): FunctionSpec => ({
  timeoutSeconds: 5,
  ...spec,
});
