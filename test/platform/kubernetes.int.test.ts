/**
 * The kubernetes platform against a real API server, under the chart's RBAC, with the reconciler
 * running. Nothing here runs pods: the test plays the node, starting real runtimes on 127.0.0.1
 * and publishing their readiness in EndpointSlices the way the EndpointSlice controller does,
 * with fake pod IPs that the endpointUrl seam maps to the runtimes' ports.
 */
import * as k8s from '@kubernetes/client-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EddyFunction } from '../../operator/src/api/types.js';
import { keyOf, type Platform } from '../../operator/src/platform/platform.js';
import { paginated, startInformer } from '../../operator/src/controller/informers.js';
import {
  createKubernetesPlatform,
  defaultEndpointUrl,
  type DeploymentCache,
} from '../../operator/src/platform/kubernetes.js';
import { functionsIn } from '../harness/functions.js';
import { startKube } from '../harness/kube.js';
import {
  installChart,
  gatewayAccount,
  operatorKubeConfig,
  startOperator,
  type RunningOperator,
} from '../harness/operator.js';
import { startRuntime } from '../harness/runtime.js';
import { canRun, useComponent, usePerTest } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';

const ns = 'platform';
const resyncMs = 1_000;

/**
 * Holds the next write to a scale subresource until released, so a test can put another
 * write between an activation's read and its write. The request itself goes out unchanged.
 */
class GatedKubeConfig extends k8s.KubeConfig {
  private gate: { reached: () => void; release: Promise<void> } | undefined;

  /** Resolves when the next scale write is held; `release` lets it go. */
  holdNextScaleWrite(): { reached: Promise<void>; release: () => void } {
    let release!: () => void;
    let reached!: () => void;
    const held = new Promise<void>((r) => (reached = r));
    this.gate = { reached, release: new Promise<void>((r) => (release = r)) };
    return { reached: held, release };
  }

  override async applySecurityAuthentication(context: k8s.RequestContext): Promise<void> {
    const gate = this.gate;
    if (
      gate &&
      context.getHttpMethod() === k8s.HttpMethod.PATCH &&
      context.getUrl().includes('/scale')
    ) {
      this.gate = undefined;
      gate.reached();
      await gate.release;
    }
    return super.applySecurityAuthentication(context);
  }
}

describe.skipIf(!canRun('kube'))(
  'kubernetes platform against a real API server, under the chart’s RBAC',
  () => {
    const kube = useComponent(() => startKube());
    const track = usePerTest();
    let apps: k8s.AppsV1Api;
    let core: k8s.CoreV1Api;
    let discovery: k8s.DiscoveryV1Api;
    let fns: ReturnType<typeof functionsIn>;
    let operator: RunningOperator | undefined;
    /** Fake pod IP -> the URL of the runtime playing that pod. */
    const pods = new Map<string, string>();
    const endpointUrl = (address: string, port: number) =>
      pods.get(address) ?? defaultEndpointUrl(address, port);

    interface Gateway {
      platform: Platform;
      kc: GatedKubeConfig;
      logs: string[];
      changes: string[];
      stop: AbortController;
    }
    let gateways: Gateway[] = [];

    /** A platform as a gateway runs it: its own client under the operator's service account. */
    const startGateway = async (
      deployments?: DeploymentCache,
      watchPods = false,
    ): Promise<Gateway> => {
      const sa = await operatorKubeConfig(kube(), gatewayAccount);
      const kc = new GatedKubeConfig();
      kc.loadFromOptions({
        clusters: sa.clusters,
        users: sa.users,
        contexts: sa.contexts,
        currentContext: sa.currentContext,
      });
      const logs: string[] = [];
      const changes: string[] = [];
      const platform = createKubernetesPlatform({
        kc,
        log: (m) => logs.push(m),
        endpointUrl,
        deployments,
        watchPods,
      });
      platform.onChange((key) => changes.push(key));
      const stop = new AbortController();
      const g = { platform, kc, logs, changes, stop };
      gateways.push(g);
      await platform.start(stop.signal);
      return g;
    };

    const deployment = (name: string) => apps.readNamespacedDeployment({ name, namespace: ns });
    /** Who owns spec.replicas, from the Deployment's managedFields. */
    const replicaOwners = (d: k8s.V1Deployment) =>
      d
        .metadata!.managedFields!.filter((m) => JSON.stringify(m.fieldsV1).includes('"f:replicas"'))
        .map(({ manager, operation, subresource }) => ({ manager, operation, subresource }));
    const replicasOf = async (name: string) => (await deployment(name)).spec!.replicas;
    const replicasBecome = (name: string, n: number) =>
      waitFor(`${name} to have ${n} replica(s)`, async () =>
        (await replicasOf(name)) === n ? true : undefined,
      );

    /** A Function with its Deployment and Service made by the reconciler. */
    const deployed = async (name: string): Promise<EddyFunction> => {
      await fns.create(name, { code: { inline: 'export const handler = async (e) => e;' } });
      await waitFor(`the Deployment and Service of ${name}`, async () => {
        await deployment(name);
        return core.readNamespacedService({ name, namespace: ns });
      });
      return fns.get(name);
    };

    /**
     * Publishes endpoints as the EndpointSlice controller would: a slice labelled with the
     * Service's labels and its name, owned by the Service, with the Service's port.
     */
    const publish = async (fn: string, slice: string, endpoints: k8s.V1Endpoint[]) => {
      const svc = await core.readNamespacedService({ name: fn, namespace: ns });
      const body: k8s.V1EndpointSlice = {
        metadata: {
          name: slice,
          namespace: ns,
          labels: {
            ...svc.metadata!.labels,
            'kubernetes.io/service-name': fn,
            'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io',
          },
          ownerReferences: [
            {
              apiVersion: 'v1',
              kind: 'Service',
              name: fn,
              uid: svc.metadata!.uid!,
              controller: true,
            },
          ],
        },
        addressType: 'IPv4',
        ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
        endpoints,
      };
      try {
        const live = await discovery.readNamespacedEndpointSlice({ name: slice, namespace: ns });
        body.metadata!.resourceVersion = live.metadata!.resourceVersion;
        await discovery.replaceNamespacedEndpointSlice({ name: slice, namespace: ns, body });
      } catch (err) {
        if (!(err instanceof k8s.ApiException && err.code === 404)) throw err;
        await discovery.createNamespacedEndpointSlice({ namespace: ns, body });
      }
    };
    const pod = (
      name: string,
      ip: string,
      conditions: k8s.V1EndpointConditions = { ready: true, serving: true, terminating: false },
    ): k8s.V1Endpoint => ({
      addresses: [ip],
      conditions,
      nodeName: 'node-a',
      targetRef: { kind: 'Pod', name, namespace: ns },
    });
    const readyIds = (p: Platform, fn: string) =>
      p
        .ready(`${ns}/${fn}`)
        .map((r) => r.id)
        .sort();

    beforeAll(async () => {
      const admin = kube().kubeConfig;
      apps = admin.makeApiClient(k8s.AppsV1Api);
      core = admin.makeApiClient(k8s.CoreV1Api);
      discovery = admin.makeApiClient(k8s.DiscoveryV1Api);
      fns = functionsIn(admin, ns);
      await installChart(kube());
      await core.createNamespace({ body: { metadata: { name: ns } } });
      operator = startOperator(await operatorKubeConfig(kube()), 'operator-a', {
        settings: { resyncMs },
      });
      await waitFor('the operator to lead', async () => (operator!.leading() ? true : undefined));
    }, 120_000);

    afterEach((ctx) => {
      if (ctx.task.result?.state === 'fail') {
        for (const [i, g] of gateways.entries())
          process.stderr.write(`--- gateway ${i}\n${g.logs.join('\n')}\n`);
        process.stderr.write(`--- operator\n${operator?.logs.join('\n')}\n`);
      }
      for (const g of gateways) g.stop.abort();
      gateways = [];
    });

    afterAll(async () => {
      await operator?.stop();
    });

    it('activates from zero through the scale subresource, owned by eddy-autoscaler', async () => {
      const fn = await deployed('wake');
      const g = await startGateway();
      expect(g.platform.counts(keyOf(fn))).toEqual({ desired: 1, ready: 0 });

      await g.platform.scale(fn, 0);
      await replicasBecome('wake', 0);
      await waitFor('the platform to see 0 desired', async () =>
        g.platform.counts(keyOf(fn)).desired === 0 ? true : undefined,
      );
      g.changes.length = 0;

      // Zero is owned too: the next update of the field is the autoscaler's, not anyone's.
      expect(replicaOwners(await deployment('wake'))).toEqual([
        { manager: 'eddy-autoscaler', operation: 'Apply', subresource: 'scale' },
      ]);

      await g.platform.activate(fn);
      const d = await deployment('wake');
      expect(d.spec!.replicas).toBe(1);
      expect(replicaOwners(d)).toEqual([
        { manager: 'eddy-autoscaler', operation: 'Apply', subresource: 'scale' },
      ]);
      const entry = d.metadata!.managedFields!.find((m) => m.manager === 'eddy-autoscaler')!;
      expect(entry.fieldsV1).toEqual({ 'f:spec': { 'f:replicas': {} } });
      await waitFor('the platform to see 1 desired, and say so', async () =>
        g.platform.counts(keyOf(fn)).desired === 1 && g.changes.includes(keyOf(fn))
          ? true
          : undefined,
      );

      // Activation never adds: at one replica or more it leaves the number alone.
      await g.platform.scale(fn, 2);
      await g.platform.activate(fn);
      expect(await replicasOf('wake')).toBe(2);
    });

    it("raises a burst's replicas to what it asks for through the scale subresource, never lowers them", async () => {
      const fn = await deployed('burst');
      const g = await startGateway();
      await g.platform.scale(fn, 1);
      await replicasBecome('burst', 1);

      await g.platform.activate(fn, 3);
      const d = await deployment('burst');
      expect(d.spec!.replicas).toBe(3);
      expect(replicaOwners(d)).toEqual([
        { manager: 'eddy-autoscaler', operation: 'Apply', subresource: 'scale' },
      ]);
      await waitFor('the platform to see 3 desired', async () =>
        g.platform.counts(keyOf(fn)).desired === 3 ? true : undefined,
      );

      // What the autoscaler set above the burst's ask stays.
      await g.platform.scale(fn, 5);
      await g.platform.activate(fn, 4);
      expect(await replicasOf('burst')).toBe(5);
    });

    it('follows the desired count in a shared Deployments cache', async () => {
      const fn = await deployed('shared');
      const kc = await operatorKubeConfig(kube(), gatewayAccount);
      const stop = new AbortController();
      const managed = 'app.kubernetes.io/managed-by=eddy-operator';
      const sa = kc.makeApiClient(k8s.AppsV1Api);
      try {
        const cache = await startInformer<k8s.V1Deployment>(kc, {
          name: 'deployments',
          path: '/apis/apps/v1/deployments',
          labelSelector: managed,
          list: paginated((page) =>
            sa.listDeploymentForAllNamespaces({ labelSelector: managed, ...page }),
          ),
          onChange: () => {},
          log: () => {},
          signal: stop.signal,
        });
        const g = await startGateway(cache);
        expect(g.platform.counts(keyOf(fn)).desired).toBe(1);
        await g.platform.scale(fn, 4);
        await waitFor('the platform to see 4 desired, and say so', async () =>
          g.platform.counts(keyOf(fn)).desired === 4 && g.changes.includes(keyOf(fn))
            ? true
            : undefined,
        );
      } finally {
        stop.abort();
      }
    });

    it('two gateways activating together ask for one replica, and never undo the autoscaler', async () => {
      const fn = await deployed('race');
      const [a, b, autoscaler] = await Promise.all([
        startGateway(),
        startGateway(),
        startGateway(),
      ]);

      // Both read zero before either writes: one write wins, the other is refused and re-reads.
      await autoscaler.platform.scale(fn, 0);
      await replicasBecome('race', 0);
      const heldA = a.kc.holdNextScaleWrite();
      const heldB = b.kc.holdNextScaleWrite();
      const both = Promise.all([a.platform.activate(fn), b.platform.activate(fn)]);
      await Promise.all([heldA.reached, heldB.reached]);
      heldA.release();
      heldB.release();
      await both;
      expect(await replicasOf('race')).toBe(1);
      const logs = [...a.logs, ...b.logs];
      expect(logs.filter((l) => l.startsWith('activated platform/race'))).toHaveLength(1);
      expect(logs.filter((l) => l.includes('changed meanwhile'))).toHaveLength(1);

      // The autoscaler decides 3 between an activation's read and its write: 3 stands.
      await autoscaler.platform.scale(fn, 0);
      await replicasBecome('race', 0);
      const held = a.kc.holdNextScaleWrite();
      const activation = a.platform.activate(fn);
      await held.reached;
      await autoscaler.platform.scale(fn, 3);
      held.release();
      await activation;
      expect(await replicasOf('race')).toBe(3);

      // And with nothing held, in whatever order the API server sees them.
      for (let round = 0; round < 5; round++) {
        await autoscaler.platform.scale(fn, 0);
        await replicasBecome('race', 0);
        await Promise.all([
          a.platform.activate(fn),
          b.platform.activate(fn),
          autoscaler.platform.scale(fn, 3),
        ]);
        expect(await replicasOf('race')).toBe(3);
      }
      await autoscaler.platform.scale(fn, 0);
      await replicasBecome('race', 0);
      await Promise.all([a.platform.activate(fn), b.platform.activate(fn)]);
      expect(await replicasOf('race')).toBe(1);
    });

    it('finds ready replicas in the EndpointSlices, and their runtimes answer', async () => {
      const fn = await deployed('hello');
      const key = keyOf(fn);
      const runtime = track(
        await startRuntime(
          { 'index.mjs': 'export const handler = async (event) => ({ echo: event.n * 2 });' },
          { EDDY_FUNCTION_NAME: 'hello', EDDY_FUNCTION_NAMESPACE: ns },
        ),
      );
      pods.set('10.244.0.11', runtime.url);
      const g = await startGateway();
      expect(g.platform.ready(key)).toEqual([]);

      await publish('hello', 'hello-abcde', [pod('hello-7d9f-x1', '10.244.0.11')]);
      const [replica] = await waitFor('a ready replica', async () => {
        const r = g.platform.ready(key);
        return r.length > 0 ? r : undefined;
      });
      expect(replica).toEqual({ id: 'hello-7d9f-x1', url: runtime.url });
      expect(g.changes).toContain(key);
      expect(g.platform.counts(key)).toEqual({ desired: 1, ready: 1 });

      const res = await fetch(replica!.url, { method: 'POST', body: JSON.stringify({ n: 21 }) });
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ echo: 42 });
    });

    it("takes a starting pod as ready once its runtime answers the gateway's probe, before the slice says so", async () => {
      const fn = await deployed('early');
      const key = keyOf(fn);
      const runtime = track(
        await startRuntime(
          { 'index.mjs': 'export const handler = async (event) => ({ echo: event.n * 2 });' },
          { EDDY_FUNCTION_NAME: 'early', EDDY_FUNCTION_NAMESPACE: ns },
        ),
      );
      pods.set('10.244.0.41', runtime.url);
      const g = await startGateway();
      // Listed not ready, as the EndpointSlice controller lists a pod that has an address and
      // that its kubelet has yet to probe ready.
      await publish('early', 'early-abcde', [
        pod('early-7d9f-x1', '10.244.0.41', { ready: false, serving: false, terminating: false }),
      ]);
      const [replica] = await waitFor('the probed replica', async () => {
        const r = g.platform.ready(key);
        return r.length > 0 ? r : undefined;
      });
      expect(replica).toEqual({ id: 'early-7d9f-x1', url: runtime.url });
      expect(
        (await discovery.readNamespacedEndpointSlice({ name: 'early-abcde', namespace: ns }))
          .endpoints[0]!.conditions!.ready,
      ).toBe(false);

      // Terminating: gone at once, whatever the probe saw.
      await publish('early', 'early-abcde', [
        pod('early-7d9f-x1', '10.244.0.41', { ready: false, serving: false, terminating: true }),
      ]);
      await waitFor('the terminating pod to leave', async () =>
        g.platform.ready(key).length === 0 ? true : undefined,
      );
    });

    it("watching the function's pods, takes a starting pod once its runtime answers, before any slice lists it", async () => {
      const fn = await deployed('watched');
      const key = keyOf(fn);
      const runtime = track(
        await startRuntime(
          { 'index.mjs': 'export const handler = async (event) => ({ echo: event.n * 2 });' },
          { EDDY_FUNCTION_NAME: 'watched', EDDY_FUNCTION_NAMESPACE: ns },
        ),
      );
      pods.set('10.244.0.51', runtime.url);
      // Under the gateway's account, as the chart grants it.
      const g = await startGateway(undefined, true);
      const podOf = (name: string, owner: string): k8s.V1Pod => ({
        metadata: {
          name,
          namespace: ns,
          labels: {
            'eddy.dev/function': 'watched',
            'app.kubernetes.io/managed-by': 'eddy-operator',
            'pod-template-hash': '7d9f',
          },
          ownerReferences: [
            { apiVersion: 'apps/v1', kind: 'ReplicaSet', name: owner, uid: 'rs', controller: true },
          ],
        },
        spec: {
          automountServiceAccountToken: false,
          containers: [{ name: 'function', image: 'eddy/runtime:nodejs22' }],
        },
      });
      // The kubelet's first report: the sandbox has an address, the container is not running.
      const kubeletReports = async (name: string, ip: string) =>
        core.patchNamespacedPodStatus(
          {
            name,
            namespace: ns,
            body: { status: { phase: 'Pending', podIP: ip, podIPs: [{ ip }] } },
          },
          k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
        );
      // No controller makes the namespace's default service account here; pods need one.
      await core.createNamespacedServiceAccount({
        namespace: ns,
        body: { metadata: { name: 'default' } },
      });
      // A pod the Deployment's ReplicaSet does not own is never probed, though it answers too.
      await core.createNamespacedPod({
        namespace: ns,
        body: podOf('watched-7d9f-aaaaa', 'other-7d9f'),
      });
      await kubeletReports('watched-7d9f-aaaaa', '10.244.0.51');
      await core.createNamespacedPod({
        namespace: ns,
        body: podOf('watched-7d9f-bbbbb', 'watched-7d9f'),
      });
      expect(g.platform.ready(key)).toEqual([]);
      await kubeletReports('watched-7d9f-bbbbb', '10.244.0.51');
      const [replica] = await waitFor('the probed pod', async () => {
        const r = g.platform.ready(key);
        return r.length > 0 ? r : undefined;
      });
      expect(g.platform.ready(key)).toEqual([{ id: 'watched-7d9f-bbbbb', url: runtime.url }]);
      expect(replica!.id).toBe('watched-7d9f-bbbbb');

      // Deleted: gone at once, whatever the probe saw.
      await core.deleteNamespacedPod({
        name: 'watched-7d9f-bbbbb',
        namespace: ns,
        gracePeriodSeconds: 0,
      });
      await waitFor('the deleted pod to leave', async () =>
        g.platform.ready(key).length === 0 ? true : undefined,
      );
    });

    it('leaves out endpoints that are not ready or terminating, and unreachable ones', async () => {
      await deployed('sieve');
      const key = `${ns}/sieve`;
      const g = await startGateway();
      const publishSieve = (a: k8s.V1EndpointConditions) =>
        publish('sieve', 'sieve-1', [
          pod('sieve-a', '10.244.0.21', a),
          pod('sieve-b', '10.244.0.22', { ready: false, serving: false, terminating: false }),
          pod('sieve-c', '10.244.0.23', { ready: false, serving: true, terminating: true }),
        ]);
      await publishSieve({ ready: true, serving: true, terminating: false });
      // A second slice of the same Service (the controller splits at 100 endpoints).
      await publish('sieve', 'sieve-2', [pod('sieve-d', '10.244.0.24')]);
      await waitFor('a and d', async () =>
        readyIds(g.platform, 'sieve').join() === 'sieve-a,sieve-d' ? true : undefined,
      );
      expect(g.platform.ready(key).find((r) => r.id === 'sieve-a')!.url).toBe(
        'http://10.244.0.21:8080',
      );
      // A slice of a Service that is not a Function's is not watched at all.
      await core.createNamespacedService({
        namespace: ns,
        body: { metadata: { name: 'other' }, spec: { ports: [{ port: 80 }] } },
      });
      await discovery.createNamespacedEndpointSlice({
        namespace: ns,
        body: {
          metadata: { name: 'other-1', labels: { 'kubernetes.io/service-name': 'other' } },
          addressType: 'IPv4',
          endpoints: [pod('other-a', '10.244.0.30')],
        },
      });

      // The gateway cannot reach a: it is out at once, d stays.
      g.changes.length = 0;
      g.platform.unreachable(key, 'sieve-a');
      expect(readyIds(g.platform, 'sieve')).toEqual(['sieve-d']);
      expect(g.changes).toEqual([key]);
      expect(g.platform.counts(key).ready).toBe(1);

      // Its kubelet finds it not ready, then ready again: it is back.
      await publishSieve({ ready: false, serving: false, terminating: false });
      await publishSieve({ ready: true, serving: true, terminating: false });
      await waitFor('a back', async () =>
        readyIds(g.platform, 'sieve').join() === 'sieve-a,sieve-d' ? true : undefined,
      );

      // Terminating, even while still serving, is out; so is a deleted slice's endpoint.
      await publishSieve({ ready: true, serving: true, terminating: true });
      await discovery.deleteNamespacedEndpointSlice({ name: 'sieve-2', namespace: ns });
      await waitFor('none', async () =>
        readyIds(g.platform, 'sieve').length === 0 ? true : undefined,
      );
      expect(g.platform.ready(`${ns}/other`)).toEqual([]);
    });

    it('scales to zero, and the reconciler leaves it there', async () => {
      const fn = await deployed('nap');
      const g = await startGateway();
      await g.platform.scale(fn, 0);
      await replicasBecome('nap', 0);

      // A change to the Function makes the reconciler apply the Deployment again (forcing).
      await fns.patch('nap', { spec: { memory: '256Mi' } });
      await waitFor('the new memory applied', async () => {
        const d = await deployment('nap');
        return d.spec!.template.spec!.containers[0]!.resources!.limits!.memory === '256Mi'
          ? d
          : undefined;
      });
      // And resyncs come and go.
      await sleep(3 * resyncMs);
      const d = await deployment('nap');
      expect(d.spec!.replicas).toBe(0);
      expect(replicaOwners(d)).toEqual([
        { manager: 'eddy-autoscaler', operation: 'Apply', subresource: 'scale' },
      ]);
      expect(g.platform.counts(keyOf(fn)).desired).toBe(0);
      // The Function says so too: scaled to zero by design, not broken.
      const status = await waitFor('the status to follow', async () => {
        const s = (await fns.get('nap')).status;
        return s?.replicas === 0 ? s : undefined;
      });
      expect(status.conditions?.find((c) => c.type === 'Ready')).toMatchObject({
        status: 'True',
        reason: 'ScaledToZero',
      });
    });
  },
);
