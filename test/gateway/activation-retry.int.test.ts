/**
 * Activation from zero when the API server stops answering: the attempt fails within its
 * deadline and is retried with backoff while the invocation waits, and the function is scaled up
 * once the API server answers again, instead of staying "activating" until every caller times out.
 */
import * as k8s from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import type { EddyFunction } from '../../operator/src/api/types.js';
import { withConnectionReuse } from '../../operator/src/connection-reuse.js';
import { Dispatcher } from '../../operator/src/gateway/dispatcher.js';
import { GatewayMetrics } from '../../operator/src/gateway/metrics.js';
import { createKubernetesPlatform } from '../../operator/src/platform/kubernetes.js';
import { withRequestDeadlines } from '../../operator/src/request-deadlines.js';
import { startKube } from '../harness/kube.js';
import { kubeConfigVia, startStallProxy, type StallProxy } from '../harness/stall-proxy.js';
import { canRun, useComponent } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';

const ns = 'default';
const name = 'hello';

describe.skipIf(!canRun('kube'))('activation through a stalled API server', () => {
  const kube = useComponent(() => startKube({ installCrds: false }));
  let proxy: StallProxy | undefined;
  const stop = new AbortController();
  const logs: string[] = [];

  afterEach(async (ctx) => {
    stop.abort();
    await proxy?.stop();
    if (ctx.task.result?.state === 'fail') process.stderr.write(`${logs.join('\n')}\n`);
  });

  it('retries a failed activation while the invocation waits, and scales up once the API server answers', async () => {
    const apps = kube().kubeConfig.makeApiClient(k8s.AppsV1Api);
    // A Deployment at zero, as the autoscaler leaves an idle function.
    await apps.createNamespacedDeployment({
      namespace: ns,
      body: {
        metadata: { name, namespace: ns },
        spec: {
          replicas: 0,
          selector: { matchLabels: { app: name } },
          template: {
            metadata: { labels: { app: name } },
            spec: { containers: [{ name: 'runtime', image: 'eddy/runtime:nodejs22' }] },
          },
        },
      },
    });
    proxy = await startStallProxy(kube().server);
    const kc = withRequestDeadlines(
      withConnectionReuse(kubeConfigVia(kube().kubeConfig, proxy.url)),
      1_000,
    );
    const log = (m: string) => logs.push(`${new Date().toISOString()} ${m}`);
    const platform = createKubernetesPlatform({ kc, log });
    await platform.start(stop.signal);
    const dispatcher = new Dispatcher({
      platform,
      metrics: new GatewayMetrics({ snapshot: () => [] }),
      log,
    });
    dispatcher.start(stop.signal);
    const fn: EddyFunction = {
      apiVersion: 'eddy.dev/v1alpha1',
      kind: 'Function',
      metadata: { namespace: ns, name, uid: 'hello-1' },
      spec: {},
    };

    proxy.stall();
    const caller = new AbortController();
    const invocation = dispatcher
      .invoke(fn, {
        requestId: 'r-1',
        body: Buffer.from('{}'),
        headers: { 'content-type': 'application/json' },
        trigger: 'invoke',
        signal: caller.signal,
      })
      .catch((err: unknown) => err);
    await waitFor('two failed activations', async () =>
      logs.filter((m) => /default\/hello cannot be started: .* trying again in \d+ ms/.test(m))
        .length >= 2
        ? true
        : undefined,
    );
    expect(logs.join('\n')).toMatch(
      /the Kubernetes API did not (complete the activation of default\/hello|answer GET \S+) within 1000 ms/,
    );

    proxy.resume();
    await waitFor('the Deployment to be asked for one replica', async () =>
      (await apps.readNamespacedDeploymentScale({ name, namespace: ns })).spec?.replicas === 1
        ? true
        : undefined,
    );
    caller.abort();
    await invocation;
  });
});
