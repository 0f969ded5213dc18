/**
 * The autoscaler with the kubernetes platform against a real API server, where the API server
 * never answers one function's scale call: every other function is still scaled, again and again.
 */
import * as k8s from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import type { EddyFunction } from '../../operator/src/api/types.js';
import { createAutoscaler } from '../../operator/src/autoscaler/autoscaler.js';
import type { LoadReport } from '../../operator/src/autoscaler/load.js';
import { MemoryFunctionStore } from '../../operator/src/functions.js';
import { createKubernetesPlatform } from '../../operator/src/platform/kubernetes.js';
import { withRequestDeadlines } from '../../operator/src/request-deadlines.js';
import { startKube } from '../harness/kube.js';
import { startRequestStallProxy } from '../harness/stall-proxy.js';
import { canRun, useComponent } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';

const ns = 'default';

describe.skipIf(!canRun('kube'))('the autoscaler when one scale call hangs', () => {
  const kube = useComponent(() => startKube({ installCrds: false }));
  const stop = new AbortController();
  const stopping: (() => Promise<void>)[] = [];
  const logs: string[] = [];

  afterEach(async (ctx) => {
    stop.abort();
    for (const s of stopping) await s();
    if (ctx.task.result?.state === 'fail') process.stderr.write(`${logs.join('\n')}\n`);
  });

  it("scales the other functions while the API server holds one function's scale call", async () => {
    const admin = kube().kubeConfig;
    const apps = admin.makeApiClient(k8s.AppsV1Api);
    const names = ['stuck', 'one', 'two'];
    for (const name of names) {
      await apps.createNamespacedDeployment({
        namespace: ns,
        body: {
          metadata: {
            name,
            namespace: ns,
            labels: { 'app.kubernetes.io/managed-by': 'eddy-operator' },
          },
          spec: {
            replicas: 1,
            selector: { matchLabels: { app: name } },
            template: {
              metadata: { labels: { app: name } },
              spec: { containers: [{ name: 'runtime', image: 'eddy/runtime:nodejs22' }] },
            },
          },
        },
      });
    }
    const proxy = await startRequestStallProxy(
      admin,
      (method, path) =>
        method === 'PATCH' && path === `/apis/apps/v1/namespaces/${ns}/deployments/stuck/scale`,
    );
    stopping.push(() => proxy.stop());
    // A request deadline longer than the test: only the autoscaler's handling is under test.
    const kc = withRequestDeadlines(new k8s.KubeConfig(), 120_000);
    kc.loadFromOptions({
      clusters: [{ name: 'proxy', server: proxy.url, skipTLSVerify: true }],
      users: [{ name: 'proxy' }],
      contexts: [{ name: 'proxy', cluster: 'proxy', user: 'proxy' }],
      currentContext: 'proxy',
    });

    const log = (m: string) => logs.push(`${new Date().toISOString()} ${m}`);
    const platform = createKubernetesPlatform({ kc, log });
    await platform.start(stop.signal);
    const store = new MemoryFunctionStore();
    for (const name of names) {
      const fn: EddyFunction = {
        apiVersion: 'eddy.dev/v1alpha1',
        kind: 'Function',
        metadata: { namespace: ns, name, uid: `${name}-1` },
        spec: {},
      };
      store.set(fn);
    }
    // One gateway's counters: `inFlight` invocations of each function, integrated over time.
    const inFlight = new Map(names.map((name) => [`${ns}/${name}`, 3]));
    const integral = new Map(names.map((name) => [`${ns}/${name}`, 0]));
    let at = Date.now();
    const load = async (): Promise<LoadReport[]> => {
      const now = Date.now();
      for (const [key, n] of inFlight)
        integral.set(key, integral.get(key)! + (n * (now - at)) / 1000);
      at = now;
      return [
        Object.fromEntries(
          [...inFlight].map(([key, n]) => [
            key,
            { inFlight: n, queued: 0, concurrencySeconds: integral.get(key)!, requests: n },
          ]),
        ),
      ];
    };
    const running = createAutoscaler({
      store,
      platform,
      load,
      intervalMs: 500,
      // Longer than the test: the stuck call stays under way throughout.
      scaleTimeoutMs: 120_000,
      log,
    }).run(stop.signal);
    stopping.push(() => running);

    const replicasOf = async (name: string) =>
      (await apps.readNamespacedDeploymentScale({ name, namespace: ns })).spec?.replicas ?? 0;
    await waitFor('one and two to be scaled up', async () =>
      (await replicasOf('one')) >= 3 && (await replicasOf('two')) >= 3 ? true : undefined,
    );
    // More load: a second change for each, while stuck's first call is still held.
    inFlight.set(`${ns}/one`, 6);
    inFlight.set(`${ns}/two`, 6);
    await waitFor('one and two to be scaled up again', async () =>
      (await replicasOf('one')) >= 6 && (await replicasOf('two')) >= 6 ? true : undefined,
    );
    expect(proxy.held).toEqual([
      `PATCH /apis/apps/v1/namespaces/${ns}/deployments/stuck/scale?fieldManager=eddy-autoscaler&force=true`,
    ]);
    expect(await replicasOf('stuck')).toBe(1);
  });
});
