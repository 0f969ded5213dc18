import * as k8s from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import { withConnectionReuse } from '../../operator/src/connection-reuse.js';
import { paginated, startInformer } from '../../operator/src/controller/informers.js';
import { ApiRequestAbandoned, ApiRequestTimeout } from '../../operator/src/errors.js';
import { boundTo, withRequestDeadlines } from '../../operator/src/request-deadlines.js';
import { startKube } from '../harness/kube.js';
import { kubeConfigVia, startStallProxy, type StallProxy } from '../harness/stall-proxy.js';
import { canRun, useComponent } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';

const ns = 'default';

describe.skipIf(!canRun('kube'))(
  'Kubernetes API deadlines: nothing hangs on a stalled API server',
  () => {
    const kube = useComponent(() => startKube({ installCrds: false }));
    let proxy: StallProxy | undefined;
    const stopping: AbortController[] = [];

    afterEach(async () => {
      for (const s of stopping.splice(0)) s.abort();
      await proxy?.stop();
      proxy = undefined;
    });

    it('fails a call the API server stops answering within its deadline, and the next one works', async () => {
      proxy = await startStallProxy(kube().server);
      const kc = withRequestDeadlines(
        withConnectionReuse(kubeConfigVia(kube().kubeConfig, proxy.url)),
        1_000,
      );
      const core = kc.makeApiClient(k8s.CoreV1Api);
      const objects = k8s.KubernetesObjectApi.makeApiClient(kc);
      // The keep-alive connection is open and idle when the API server stops answering.
      await core.readNamespace({ name: ns });

      proxy.stall();
      await expect(core.readNamespace({ name: ns })).rejects.toThrow(ApiRequestTimeout);
      await expect(
        objects.read({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } }),
      ).rejects.toThrow(/did not answer GET \/api\/v1\S* within 1000 ms/);

      proxy.resume();
      expect((await core.readNamespace({ name: ns })).metadata?.name).toBe(ns);
    });

    it('abandons the calls of work that stopped, long before their deadline', async () => {
      proxy = await startStallProxy(kube().server);
      const kc = withRequestDeadlines(
        withConnectionReuse(kubeConfigVia(kube().kubeConfig, proxy.url)),
        120_000,
      );
      const leading = new AbortController();
      const core = boundTo(kc, leading.signal).makeApiClient(k8s.CoreV1Api);
      await core.readNamespace({ name: ns });

      proxy.stall();
      const call = core.readNamespace({ name: ns });
      const outcome = call.then(
        () => 'answered',
        (err: unknown) => err,
      );
      leading.abort();
      const err = await outcome;
      expect(err).toBeInstanceOf(ApiRequestAbandoned);
      expect((err as Error).message).toMatch(/GET \/api\/v1\/namespaces\/default was abandoned/);
    });

    it('restarts an informer whose watch stalled, and sees what changed meanwhile', async () => {
      proxy = await startStallProxy(kube().server);
      const kc = withRequestDeadlines(
        withConnectionReuse(kubeConfigVia(kube().kubeConfig, proxy.url)),
        1_000,
      );
      const admin = kube().kubeConfig.makeApiClient(k8s.CoreV1Api);
      const core = kc.makeApiClient(k8s.CoreV1Api);
      const stop = new AbortController();
      stopping.push(stop);
      const seen = new Set<string>();
      const logs: string[] = [];
      const labelSelector = 'eddy.dev/test=watch-stall';
      const create = (name: string) =>
        admin.createNamespacedConfigMap({
          namespace: ns,
          body: { metadata: { name, labels: { 'eddy.dev/test': 'watch-stall' } } },
        });
      await startInformer<k8s.V1ConfigMap>(kc, {
        name: 'configmaps',
        path: `/api/v1/namespaces/${ns}/configmaps`,
        labelSelector,
        list: paginated((page) =>
          core.listNamespacedConfigMap({ namespace: ns, labelSelector, ...page }),
        ),
        onChange: (cm) => seen.add(cm.metadata!.name!),
        log: (m) => logs.push(m),
        signal: stop.signal,
        // The API server ends each watch after 1 to 2 s; one it has not ended 500 ms later is cut.
        watch: { watchSeconds: 1, graceMs: 500 },
      });
      await create('before');
      await waitFor('the watch to deliver a new ConfigMap', async () =>
        seen.has('before') ? true : undefined,
      );

      proxy.stall();
      await create('during');
      proxy.resume();
      // The stalled watch delivers nothing, ever: only a restarted one sees the ConfigMap.
      await waitFor('the restarted informer to see the ConfigMap', async () =>
        seen.has('during') ? true : undefined,
      );
      expect(logs.some((m) => /configmaps watch failed/.test(m))).toBe(true);
    });
  },
);
