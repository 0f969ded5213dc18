/**
 * The operator binary as the chart runs it (`node dist/operator/main.js`), under the chart's
 * service account: it serves the gateway and its probes, reconciles while it leads, invokes a
 * Function, and on SIGTERM drains, releases the lease and exits 0.
 */
import * as k8s from '@kubernetes/client-node';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { functionsIn } from '../harness/functions.js';
import { startKube } from '../harness/kube.js';
import {
  installChart,
  operatorKubeConfig,
  releaseNamespace,
  startOperatorBinary,
} from '../harness/operator.js';
import { freePorts } from '../harness/ports.js';
import { waitUntilReady, type ManagedProcess } from '../harness/proc.js';
import { canRun, useComponent } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';

describe.skipIf(!canRun('kube'))('the operator binary', () => {
  const kube = useComponent(() => startKube());
  let proc: ManagedProcess | undefined;
  let dir: string | undefined;

  afterAll(async () => {
    await proc?.stop(15_000);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('serves the gateway, reconciles while leading, and hands over cleanly on SIGTERM', async () => {
    await installChart(kube());
    dir = await mkdtemp(join(tmpdir(), 'eddy-main-'));
    const [port, metricsPort] = (await freePorts(2)) as [number, number];
    proc = await startOperatorBinary(kube(), dir, {
      POD_NAME: 'operator-main',
      EDDY_GATEWAY_PORT: String(port),
      EDDY_METRICS_PORT: String(metricsPort),
    });
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitUntilReady(proc, async () => (await fetch(`${url}/readyz`)).status === 200, 30_000);
      expect((await fetch(`${url}/healthz`)).status).toBe(200);

      const fns = functionsIn(kube().kubeConfig, 'default');
      await fns.create('from-main', { code: { inline: 'export const handler = async () => 1;' } });
      const apps = kube().kubeConfig.makeApiClient(k8s.AppsV1Api);
      await waitFor('the Deployment', () =>
        apps.readNamespacedDeployment({ name: 'from-main', namespace: 'default' }),
      );
      // Authentication is on by default: a listing needs a token (the operator's sees all).
      const unauthenticated = await fetch(`${url}/functions`);
      expect(unauthenticated.status).toBe(401);
      expect(unauthenticated.headers.get('www-authenticate')).toBe('Bearer');
      const token = (await operatorKubeConfig(kube())).getCurrentUser()!.token!;
      const listed = await waitFor('the gateway to list the Function', async () => {
        const res = await fetch(`${url}/functions`, {
          headers: { authorization: `Bearer ${token}` },
        });
        const { functions } = (await res.json()) as {
          functions: Array<{ name: string; replicas: { desired: number } }>;
        };
        return functions.find((f) => f.name === 'from-main' && f.replicas.desired === 1);
      });
      expect(listed.replicas.desired).toBe(1);
      // Metrics on their own port; the gateway's says where they are.
      const onGateway = await fetch(`${url}/metrics`);
      expect(onGateway.status).toBe(404);
      expect(await onGateway.text()).toContain('EDDY_METRICS_PORT');
      const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      expect(metrics).toMatch(
        /eddy_function_replicas\{namespace="default",function="from-main",state="desired"\} 1/,
      );

      proc.child.kill('SIGTERM');
      expect(await proc.exited).toBe('exited with code 0');
      const lease = await kube()
        .kubeConfig.makeApiClient(k8s.CoordinationV1Api)
        .readNamespacedLease({ name: 'eddy-operator', namespace: releaseNamespace });
      expect(lease.spec?.holderIdentity).toBe('');
    } catch (err) {
      process.stderr.write(`--- operator log\n${proc.log()}\n`);
      throw err;
    }
  });
});
