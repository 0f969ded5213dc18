/**
 * The autoscaler with the kubernetes platform and the gateways' load read over HTTP from the pods
 * behind the gateway Service, against a real API server: a gateway that does not answer holds
 * every function's replicas until it reports again.
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as k8s from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import type { EddyFunction } from '../../operator/src/api/types.js';
import { createAutoscaler } from '../../operator/src/autoscaler/autoscaler.js';
import type { Decision } from '../../operator/src/autoscaler/decide.js';
import { gatewayPeersLoad } from '../../operator/src/autoscaler/peers.js';
import { MemoryFunctionStore } from '../../operator/src/functions.js';
import { createKubernetesPlatform } from '../../operator/src/platform/kubernetes.js';
import { startKube } from '../harness/kube.js';
import { canRun, useComponent } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';

const ns = 'default';
const name = 'hello';
const gatewayNs = 'eddy-system';

/** A gateway replica's GET /functions: it answers with no load, or holds every request. */
async function startGateway(): Promise<{
  url: string;
  answering: boolean;
  stop(): Promise<void>;
}> {
  const held: ServerResponse[] = [];
  const state = { answering: true };
  const server: Server = createServer((req, res) => {
    if (!state.answering) {
      held.push(res);
      return;
    }
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ functions: [] }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get answering() {
      return state.answering;
    },
    set answering(v: boolean) {
      state.answering = v;
    },
    async stop() {
      for (const res of held) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe.skipIf(!canRun('kube'))('the autoscaler when a gateway does not report its load', () => {
  const kube = useComponent(() => startKube({ installCrds: false }));
  const stop = new AbortController();
  const stopping: (() => Promise<void>)[] = [];
  const logs: string[] = [];

  afterEach(async (ctx) => {
    stop.abort();
    for (const s of stopping) await s();
    if (ctx.task.result?.state === 'fail') process.stderr.write(`${logs.join('\n')}\n`);
  });

  it('scales nothing down while a gateway is missing, and scales to zero once it reports again', async () => {
    const kc = kube().kubeConfig;
    const apps = kc.makeApiClient(k8s.AppsV1Api);
    const core = kc.makeApiClient(k8s.CoreV1Api);
    await core.createNamespace({ body: { metadata: { name: gatewayNs } } });
    await apps.createNamespacedDeployment({
      namespace: ns,
      body: {
        metadata: {
          name,
          namespace: ns,
          labels: { 'app.kubernetes.io/managed-by': 'eddy-operator' },
        },
        spec: {
          replicas: 2,
          selector: { matchLabels: { app: name } },
          template: {
            metadata: { labels: { app: name } },
            spec: { containers: [{ name: 'runtime', image: 'eddy/runtime:nodejs22' }] },
          },
        },
      },
    });
    const answering = await startGateway();
    const missing = await startGateway();
    stopping.push(
      () => answering.stop(),
      () => missing.stop(),
    );
    missing.answering = false;
    const pods = new Map([
      ['10.244.9.1', answering.url],
      ['10.244.9.2', missing.url],
    ]);
    // As the EndpointSlice controller would: two gateway replicas, both ready.
    await kc.makeApiClient(k8s.DiscoveryV1Api).createNamespacedEndpointSlice({
      namespace: gatewayNs,
      body: {
        metadata: {
          name: 'eddy-gateway-pods',
          labels: { 'kubernetes.io/service-name': 'eddy-gateway' },
        },
        addressType: 'IPv4',
        ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
        endpoints: [...pods.keys()].map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
      },
    });

    const log = (m: string) => logs.push(`${new Date().toISOString()} ${m}`);
    const platform = createKubernetesPlatform({ kc, log });
    await platform.start(stop.signal);
    const store = new MemoryFunctionStore();
    const fn: EddyFunction = {
      apiVersion: 'eddy.dev/v1alpha1',
      kind: 'Function',
      metadata: { namespace: ns, name, uid: 'hello-1' },
      spec: { scaling: { idleSeconds: 1 } },
    };
    store.set(fn);
    const decisions: Decision[] = [];
    const running = createAutoscaler({
      store,
      platform,
      load: gatewayPeersLoad({
        kc,
        namespace: gatewayNs,
        service: 'eddy-gateway',
        log,
        timeoutMs: 300,
        endpointUrl: (address) => pods.get(address) ?? `http://${address}:8080`,
      }),
      intervalMs: 1_000,
      log,
      onDecision: (_, d) => decisions.push(d),
    }).run(stop.signal);
    stopping.push(() => running);

    // Idle past idleSeconds, as far as the answering gateway can tell: the decision wants fewer
    // replicas and is held.
    await waitFor('a decision held for the missing gateway', async () =>
      decisions.some((d) => /holding 2 while/.test(d.reason)) ? true : undefined,
    );
    expect(logs.join('\n')).toContain(
      `no load report from gateway ${missing.url}: no function is scaled down until every gateway reports`,
    );
    expect((await apps.readNamespacedDeploymentScale({ name, namespace: ns })).spec?.replicas).toBe(
      2,
    );

    missing.answering = true;
    await waitFor('the idle function to go to zero', async () =>
      // A Scale leaves replicas out at 0.
      ((await apps.readNamespacedDeploymentScale({ name, namespace: ns })).spec?.replicas ?? 0) ===
      0
        ? true
        : undefined,
    );
    expect(logs.join('\n')).toContain('every gateway reports its load again');
  });
});
