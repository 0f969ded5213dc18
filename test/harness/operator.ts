/** Installs the Helm chart into a test API server and runs the operator under its service account. */
import { join } from 'node:path';
import type * as k8s from '@kubernetes/client-node';
import { goBinaries, goBinaryPath, projectRoot } from './components.js';
import { serviceAccountKubeConfig, type Kube } from './kube.js';
import { writeFile } from 'node:fs/promises';
import { run, startProcess, type ManagedProcess } from './proc.js';
import type { Controller } from '../../operator/src/controller/controller.js';
import type { Cleaner } from '../../operator/src/controller/reconciler.js';
import { runOperator } from '../../operator/src/operator.js';
import { defaultGatewayPodLabels, type OperatorSettings } from '../../operator/src/settings.js';

export const releaseNamespace = 'eddy-system';
export const operatorAccount = 'eddy-operator';

/** `helm install eddy charts/eddy` into the test API server, as a user would. */
export async function installChart(kube: Kube): Promise<string> {
  return run(goBinaryPath(goBinaries.helm), [
    'install',
    'eddy',
    join(projectRoot, 'charts', 'eddy'),
    '--namespace',
    releaseNamespace,
    '--create-namespace',
    '--kubeconfig',
    kube.kubeconfigPath,
  ]);
}

/** A KubeConfig for the chart's operator service account: exactly the chart's RBAC. */
export function operatorKubeConfig(kube: Kube): Promise<k8s.KubeConfig> {
  return serviceAccountKubeConfig(kube, releaseNamespace, operatorAccount);
}

export const testSettings = (
  identity: string,
  overrides: Partial<OperatorSettings> = {},
): OperatorSettings => ({
  runtimeImages: {
    nodejs20: 'eddy/runtime:nodejs20',
    nodejs22: 'eddy/runtime:nodejs22',
    nodejs24: 'eddy/runtime:nodejs24',
    'python3.11': 'eddy/runtime:python3.11',
    java17: 'eddy/runtime:java17',
    provided: 'eddy/runtime:provided',
  },
  gatewayUrl: 'http://eddy-gateway.eddy-system.svc:8080',
  gatewayNamespace: releaseNamespace,
  gatewayPodLabels: { ...defaultGatewayPodLabels },
  namespace: releaseNamespace,
  identity,
  resyncMs: 600_000,
  workers: 4,
  gatewayPort: 8080,
  gatewayService: 'eddy-gateway',
  metricsPort: 9090,
  cleanupAttemptMs: 2_000,
  cleanupDeadlineMs: 60_000,
  ...overrides,
});

export interface RunningOperator {
  identity: string;
  /** The controller while this process leads; undefined otherwise. */
  controller(): Controller | undefined;
  leading(): boolean;
  logs: string[];
  /** Graceful stop: the lease is released. */
  stop(): Promise<void>;
}

export function startOperator(
  kc: k8s.KubeConfig,
  identity: string,
  options: {
    settings?: Partial<OperatorSettings>;
    cleaners?: Cleaner[];
    lease?: { durationSeconds?: number; renewIntervalMs?: number; retryIntervalMs?: number };
  } = {},
): RunningOperator {
  const stop = new AbortController();
  const logs: string[] = [];
  let current: Controller | undefined;
  const done = runOperator(
    {
      kc,
      settings: testSettings(identity, options.settings),
      cleaners: options.cleaners,
      log: (m) => logs.push(`${new Date().toISOString()} ${m}`),
      lease: { durationSeconds: 6, renewIntervalMs: 1_000, retryIntervalMs: 300, ...options.lease },
      onLeading: (c) => {
        current = c;
        void c.done.then(() => {
          if (current === c) current = undefined;
        });
      },
    },
    stop.signal,
  ).catch((err: unknown) => {
    logs.push(`operator ${identity} failed: ${err instanceof Error ? err.stack : String(err)}`);
  });
  return {
    identity,
    controller: () => current,
    leading: () => current !== undefined,
    logs,
    async stop() {
      stop.abort();
      await done;
    },
  };
}

/**
 * The operator binary as the chart runs it (`node dist/operator/main.js`), under the chart's
 * service account, its files in `dir`. `env` adds to what the chart sets.
 */
export async function startOperatorBinary(
  kube: Kube,
  dir: string,
  env: { POD_NAME: string; EDDY_GATEWAY_PORT: string } & Record<string, string>,
): Promise<ManagedProcess> {
  const kubeconfig = join(dir, 'kubeconfig');
  await writeFile(kubeconfig, (await operatorKubeConfig(kube)).exportConfig());
  return startProcess(
    'operator',
    process.execPath,
    [join(projectRoot, 'dist', 'operator', 'main.js')],
    join(dir, 'operator.log'),
    {
      env: {
        PATH: process.env.PATH,
        KUBECONFIG: kubeconfig,
        POD_NAMESPACE: releaseNamespace,
        ...env,
      },
    },
  );
}
