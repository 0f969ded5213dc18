/**
 * The data path in a cluster, as `main.ts` composes it: gateway, autoscaler and reconciler on
 * the kubernetes platform, under the chart's RBAC, against a real API server. The test plays
 * the node (test/harness/node.ts): it runs a runtime process for each replica a Deployment asks
 * for and publishes it in an EndpointSlice.
 */
import * as k8s from '@kubernetes/client-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { kubernetesAuthorizer } from '../../operator/src/auth/kubernetes.js';
import { LazyClusterCaches } from '../../operator/src/caches.js';
import { composeEddy, type Eddy } from '../../operator/src/compose.js';
import { clusterElector, controllerRunnable } from '../../operator/src/operator.js';
import { createKubernetesPlatform } from '../../operator/src/platform/kubernetes.js';
import { clusterSecrets } from '../../operator/src/secrets.js';
import { gatewayPeersLoad } from '../../operator/src/autoscaler/peers.js';
import { functionsIn } from '../harness/functions.js';
import { serviceAccountKubeConfig, startKube } from '../harness/kube.js';
import { startTestNode, type TestNode } from '../harness/node.js';
import {
  installChart,
  allRolesKubeConfig,
  releaseNamespace,
  testSettings,
} from '../harness/operator.js';
import { canRun, useComponent } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';

const ns = 'serving';

interface Replica {
  name: string;
  eddy: Eddy;
  url: string;
  logs: string[];
  stop: AbortController;
  done: Promise<void>;
}

describe.skipIf(!canRun('kube'))('the data path on the kubernetes platform', () => {
  const kube = useComponent(() => startKube());
  let node: TestNode;
  let apps: k8s.AppsV1Api;
  let fns: ReturnType<typeof functionsIn>;
  const replicas: Replica[] = [];
  /** Fake pod IPs of the gateway replicas, published behind the chart's gateway Service. */
  const gatewayPods = new Map<string, string>();
  /** A caller's token: a service account of the namespace, bound to the ClusterRole eddy-invoker. */
  let token: string;

  /** As the EndpointSlice controller would: the operator pods behind the eddy-gateway Service. */
  const publishGateways = async () => {
    for (const [i, r] of replicas.entries()) gatewayPods.set(`10.244.1.${i + 1}`, r.url);
    await kube()
      .kubeConfig.makeApiClient(k8s.DiscoveryV1Api)
      .createNamespacedEndpointSlice({
        namespace: releaseNamespace,
        body: {
          metadata: {
            name: 'eddy-gateway-pods',
            labels: { 'kubernetes.io/service-name': 'eddy-gateway' },
          },
          addressType: 'IPv4',
          ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
          endpoints: [...gatewayPods.keys()].map((ip) => ({
            addresses: [ip],
            conditions: { ready: true },
          })),
        },
      });
  };

  /** One operator replica: gateway everywhere, autoscaler and reconciler while it leads. */
  const startReplica = async (name: string): Promise<Replica> => {
    const kc = await allRolesKubeConfig(kube());
    const logs: string[] = [];
    const log = (m: string) => logs.push(`${new Date().toISOString()} ${m}`);
    const settings = testSettings(name, { resyncMs: 2_000 });
    const caches = new LazyClusterCaches(kc, log);
    let url: string | undefined;
    const eddy = composeEddy({
      platform: createKubernetesPlatform({
        kc,
        log,
        endpointUrl: (address, port) => node.endpointUrl(address, port),
        deployments: caches.deployments,
      }),
      store: caches.store,
      secrets: clusterSecrets(kc),
      elector: clusterElector(kc, settings, log, {
        durationSeconds: 6,
        renewIntervalMs: 1_000,
        retryIntervalMs: 300,
      }),
      log,
      // As main.ts runs it: callers need a token and RBAC; the autoscaler reads every gateway's
      // load with the operator's own token.
      auth: kubernetesAuthorizer({ kc, log }),
      gateway: { port: 0, host: '127.0.0.1' },
      startCaches: (signal) => caches.start(signal),
      // Every gateway replica's load, read over HTTP from the pods behind the gateway Service.
      load: () =>
        gatewayPeersLoad({
          kc,
          namespace: releaseNamespace,
          service: 'eddy-gateway',
          log,
          endpointUrl: (address) => gatewayPods.get(address) ?? `http://${address}:8080`,
        }),
      runnables: [controllerRunnable({ kc, caches, settings, log })],
      onListening: (u) => (url = u),
    });
    const stop = new AbortController();
    const done = eddy.manager.start(stop.signal).catch((err: unknown) => {
      log(`manager failed: ${err instanceof Error ? err.stack : String(err)}`);
    });
    const listening = await waitFor(`${name}'s gateway`, async () => url);
    const r = { name, eddy, url: listening, logs, stop, done };
    replicas.push(r);
    return r;
  };

  const replicasOf = async (name: string) =>
    (await apps.readNamespacedDeployment({ name, namespace: ns })).spec!.replicas;
  const atZero = (name: string) =>
    waitFor(
      `${name} to scale to zero`,
      async () => ((await replicasOf(name)) === 0 && node.running(name) === 0 ? true : undefined),
      30_000,
    );
  const invoke = (r: Replica, name: string, body: unknown) =>
    fetch(`${r.url}/functions/${ns}/${name}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
    });

  beforeAll(async () => {
    const admin = kube().kubeConfig;
    apps = admin.makeApiClient(k8s.AppsV1Api);
    fns = functionsIn(admin, ns);
    await installChart(kube());
    await admin.makeApiClient(k8s.CoreV1Api).createNamespace({ body: { metadata: { name: ns } } });
    token = (await serviceAccountKubeConfig(kube(), ns, 'caller')).getCurrentUser()!.token!;
    await admin.makeApiClient(k8s.RbacAuthorizationV1Api).createNamespacedRoleBinding({
      namespace: ns,
      body: {
        metadata: { name: 'caller-invokes' },
        roleRef: {
          apiGroup: 'rbac.authorization.k8s.io',
          kind: 'ClusterRole',
          name: 'eddy-invoker',
        },
        subjects: [{ kind: 'ServiceAccount', name: 'caller', namespace: ns }],
      },
    });
    node = startTestNode(admin, ns);
    await startReplica('operator-a');
    await startReplica('operator-b');
    await publishGateways();
  }, 120_000);

  afterEach((ctx) => {
    if (ctx.task.result?.state !== 'fail') return;
    for (const r of replicas) process.stderr.write(`--- ${r.name}\n${r.logs.join('\n')}\n`);
    process.stderr.write(`--- node\n${node.logs.join('\n')}\n`);
  });

  afterAll(async () => {
    for (const r of replicas) r.stop.abort();
    await Promise.all(replicas.map((r) => r.done));
    await node?.stop();
  });

  it('activates a function at zero through the scale subresource, answers the held event, and scales back to zero', async () => {
    await fns.create('hello', {
      code: {
        inline: 'export const handler = async (e) => ({ hello: e.name, pid: process.pid });',
      },
      scaling: { idleSeconds: 1 },
    });
    // A new Function starts with one replica, then goes to zero when idle.
    await waitFor(
      'hello to start with a replica',
      async () => (node.running('hello') === 1 ? true : undefined),
      30_000,
    );
    await atZero('hello');

    const [a] = replicas;
    const res = await invoke(a!, 'hello', { name: 'eddy' });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { hello: string }).hello).toBe('eddy');
    const d = await apps.readNamespacedDeployment({ name: 'hello', namespace: ns });
    const owners = d.metadata!.managedFields!.filter((m) =>
      JSON.stringify(m.fieldsV1).includes('"f:replicas"'),
    );
    expect(owners.map((m) => [m.manager, m.subresource])).toEqual([['eddy-autoscaler', 'scale']]);
    const metrics = await a!.eddy.gateway.metrics.registry.metrics();
    expect(metrics).toMatch(
      /eddy_function_activation_seconds_count\{namespace="serving",function="hello"\} 1/,
    );

    await atZero('hello');
  });

  it('two gateways activating one function at once ask for one replica, not two', async () => {
    await fns.create('shared', {
      code: { inline: 'export const handler = async (e) => e.n;' },
      concurrency: 4,
      scaling: { idleSeconds: 1 },
    });
    await waitFor(
      'shared to start',
      async () => (node.running('shared') === 1 ? true : undefined),
      30_000,
    );
    await atZero('shared');
    node.maxReplicas.set('shared', 0);
    const [a, b] = replicas;
    const answers = await Promise.all(
      [a!, b!, a!, b!].map((r, n) =>
        invoke(r, 'shared', { n }).then(async (res) => [res.status, await res.json()]),
      ),
    );
    expect(answers).toEqual([
      [200, 0],
      [200, 1],
      [200, 2],
      [200, 3],
    ]);
    expect(node.maxReplicas.get('shared')).toBe(1);
  });

  it('scales up on the load the leader reads from another gateway replica', async () => {
    await fns.create('busy', {
      code: {
        inline:
          'export const handler = async () => { await new Promise((r) => setTimeout(r, 1500)); return 1; };',
      },
      timeoutSeconds: 10,
      scaling: { idleSeconds: 1, maxReplicas: 4 },
    });
    await waitFor(
      'busy to start',
      async () => (node.running('busy') === 1 ? true : undefined),
      30_000,
    );
    const leader = replicas.find((r) => /leads/.test(r.logs.join('\n')))!;
    const other = replicas.find((r) => r !== leader)!;
    // Four at a time, only through the replica that does not lead, for about ten seconds (the
    // autoscaler reads the load every 2 s, and a burst panics it on the second read).
    const deadline = Date.now() + 10_000;
    const loops = Array.from({ length: 4 }, async () => {
      while (Date.now() < deadline) expect((await invoke(other, 'busy', {})).status).toBe(200);
    });
    await Promise.all(loops);
    expect(node.maxReplicas.get('busy')).toBeGreaterThanOrEqual(2);
  });
});
