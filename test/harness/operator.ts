/** Installs the Helm chart into a test API server and runs the operator under its service account. */
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { goBinaries, goBinaryPath, projectRoot } from './components.js';
import { serviceAccountKubeConfig, type Kube } from './kube.js';
import { writeFile } from 'node:fs/promises';
import { run, startProcess, type ManagedProcess } from './proc.js';
import type { Controller } from '../../operator/src/controller/controller.js';
import type { Cleaner } from '../../operator/src/controller/reconciler.js';
import { runOperator } from '../../operator/src/operator.js';
import type { OperatorSettings } from '../../operator/src/settings.js';

export const releaseNamespace = 'eddy-system';
/** The chart's accounts: the controller Deployment's and the gateway Deployment's. */
export const controllerAccount = 'eddy-controller';
export const gatewayAccount = 'eddy-gateway';
/** The account the reconciler, the autoscaler and the sources run under. */
export const operatorAccount = controllerAccount;
/**
 * Both roles in one process (EDDY_ROLE unset, as the local stack runs them), which the chart
 * never deploys: a test account bound to both of the chart's ClusterRoles and the controller's
 * leader Role, so such a process still runs under nothing but the chart's grants.
 */
export const allRolesAccount = 'eddy-all-roles';
/** The labels of the chart's controller and gateway pods, which Functions' NetworkPolicies admit. */
export const chartOperatorPodLabels = {
  'app.kubernetes.io/instance': 'eddy',
  'eddy.dev/operator': 'true',
};

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

/** A KubeConfig for one of the chart's service accounts: exactly the chart's RBAC for it. */
export function operatorKubeConfig(
  kube: Kube,
  account: string = controllerAccount,
): Promise<k8s.KubeConfig> {
  return serviceAccountKubeConfig(kube, releaseNamespace, account);
}

/** A KubeConfig for a process that runs both roles: the union of the chart's two grants. */
export async function allRolesKubeConfig(kube: Kube): Promise<k8s.KubeConfig> {
  const kc = await serviceAccountKubeConfig(kube, releaseNamespace, allRolesAccount);
  const rbac = kube.kubeConfig.makeApiClient(k8s.RbacAuthorizationV1Api);
  const subjects = [{ kind: 'ServiceAccount', name: allRolesAccount, namespace: releaseNamespace }];
  const roleRef = (kind: string, name: string) => ({
    apiGroup: 'rbac.authorization.k8s.io',
    kind,
    name,
  });
  const exists = (err: unknown) => {
    if (!(err instanceof k8s.ApiException && err.code === 409)) throw err;
  };
  for (const role of [controllerAccount, gatewayAccount]) {
    await rbac
      .createClusterRoleBinding({
        body: {
          metadata: { name: `${allRolesAccount}-${role}` },
          roleRef: roleRef('ClusterRole', role),
          subjects,
        },
      })
      .catch(exists);
  }
  await rbac
    .createNamespacedRoleBinding({
      namespace: releaseNamespace,
      body: {
        metadata: { name: `${allRolesAccount}-leader` },
        roleRef: roleRef('Role', `${controllerAccount}-leader`),
        subjects,
      },
    })
    .catch(exists);
  await rbac
    .createNamespacedRoleBinding({
      namespace: releaseNamespace,
      body: {
        metadata: { name: `${allRolesAccount}-invoke-credentials` },
        roleRef: roleRef('Role', `${gatewayAccount}-invoke-credentials`),
        subjects,
      },
    })
    .catch(exists);
  return kc;
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
  gatewayPodLabels: { ...chartOperatorPodLabels },
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
 * The operator binary (`node dist/operator/main.js`) with both roles in one process, under the
 * chart's two grants together, its files in `dir`. `env` adds to what the chart sets.
 */
export async function startOperatorBinary(
  kube: Kube,
  dir: string,
  env: { POD_NAME: string; EDDY_GATEWAY_PORT: string } & Record<string, string>,
): Promise<ManagedProcess> {
  const kubeconfig = join(dir, 'kubeconfig');
  await writeFile(kubeconfig, (await allRolesKubeConfig(kube)).exportConfig());
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
