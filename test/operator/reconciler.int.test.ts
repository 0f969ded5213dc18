import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { startKube, type AuditEvent } from '../harness/kube.js';
import {
  installChart,
  operatorAccount,
  operatorKubeConfig,
  releaseNamespace,
  startOperator,
  type RunningOperator,
} from '../harness/operator.js';
import { canRun, useComponent } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';
import { functionsIn } from '../harness/functions.js';
import type { EddyFunction } from '../../operator/src/api/types.js';

const ns = 'photos';

describe.skipIf(!canRun('kube'))(
  'reconciler against a real API server, under the chart’s RBAC',
  () => {
    const kube = useComponent(() => startKube({ audit: true }));
    let admin: k8s.KubeConfig;
    let apps: k8s.AppsV1Api;
    let core: k8s.CoreV1Api;
    let operatorKc: k8s.KubeConfig;
    let operator: RunningOperator | undefined;

    let fns: ReturnType<typeof functionsIn>;
    const getFn = (name: string) => fns.get(name);
    const createFn = (name: string, spec: Record<string, unknown>) => fns.create(name, spec);
    const patchFn = (name: string, patch: object) => fns.patch(name, patch);
    const condition = (fn: EddyFunction, type: string) =>
      fn.status?.conditions?.find((c) => c.type === type);
    const auditOffset = () => readFileSync(kube().auditLog!, 'utf8').length;
    /** The operator's requests since `offset`, from the API server's audit log. */
    const operatorRequests = (offset: number) =>
      readFileSync(kube().auditLog!, 'utf8')
        .slice(offset)
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as AuditEvent)
        .filter(
          (e) => e.user.username === `system:serviceaccount:${releaseNamespace}:${operatorAccount}`,
        );
    const settled = (name: string) =>
      waitFor(`${name} to have an up-to-date status`, async () => {
        const fn = await getFn(name);
        return fn.status?.observedGeneration === fn.metadata.generation && condition(fn, 'Deployed')
          ? fn
          : undefined;
      });
    const networking = () => admin.makeApiClient(k8s.NetworkingV1Api);
    /** The resourceVersions of a Function and its children: on the API server, in the operator's caches. */
    const serverVersions = async (name: string) => {
      const rv = (read: Promise<{ metadata?: { resourceVersion?: string } }>) =>
        read.then(
          (o) => o.metadata?.resourceVersion,
          () => undefined,
        );
      return {
        fn: await rv(getFn(name)),
        code: await rv(core.readNamespacedConfigMap({ name: `${name}-code`, namespace: ns })),
        deployment: await rv(apps.readNamespacedDeployment({ name, namespace: ns })),
        service: await rv(core.readNamespacedService({ name, namespace: ns })),
        policy: await rv(networking().readNamespacedNetworkPolicy({ name, namespace: ns })),
      };
    };
    const cachedVersions = (name: string) => {
      const { caches } = operator!.controller()!;
      return {
        fn: caches.functions.get(name, ns)?.metadata.resourceVersion,
        code: caches.configMaps.get(`${name}-code`, ns)?.metadata?.resourceVersion,
        deployment: caches.deployments.get(name, ns)?.metadata?.resourceVersion,
        service: caches.services.get(name, ns)?.metadata?.resourceVersion,
        policy: caches.networkPolicies.get(name, ns)?.metadata?.resourceVersion,
      };
    };
    /**
     * Resolves once the operator's caches hold the API server's current version of the Function
     * and of each of its children, and the reconciles their watch events queued have finished
     * with nothing written meanwhile: whatever the operator does about its own writes, it has
     * done. (A cache calls the controller's handler as it takes each event, so an event the cache
     * shows has been queued.)
     */
    const caughtUp = (name: string) =>
      waitFor(
        `the operator to have seen and handled the latest ${name} and its children`,
        async () => {
          const live = await serverVersions(name);
          if (JSON.stringify(cachedVersions(name)) !== JSON.stringify(live)) return undefined;
          await operator!.controller()!.idle();
          return JSON.stringify(await serverVersions(name)) === JSON.stringify(live)
            ? live
            : undefined;
        },
      );

    beforeAll(async () => {
      admin = kube().kubeConfig;
      fns = functionsIn(admin, ns);
      apps = admin.makeApiClient(k8s.AppsV1Api);
      core = admin.makeApiClient(k8s.CoreV1Api);
      await installChart(kube());
      await core.createNamespace({ body: { metadata: { name: ns } } });
      operatorKc = await operatorKubeConfig(kube());
      operator = startOperator(operatorKc, 'operator-a');
      try {
        // First lead on a fresh cluster whose RBAC helm has just applied: a list refused while
        // the binding propagates restarts after the informers' backoff (0.5 s doubling).
        await waitFor(
          'operator-a to lead',
          async () => (operator!.leading() ? true : undefined),
          60_000,
        );
      } catch (err) {
        process.stderr.write(`--- operator-a log\n${operator.logs.join('\n')}\n`);
        throw err;
      }
    }, 120_000);

    afterAll(async () => {
      await operator?.stop();
    });

    it('creates the Deployment, Service and code ConfigMap a Function asks for, and reports status', async () => {
      await createFn('thumbnail', {
        code: { inline: 'export const handler = async () => "ok";' },
        memory: '512Mi',
        timeoutSeconds: 30,
        concurrency: 2,
        env: [{ name: 'DEST_BUCKET', value: 'photos-thumbnails' }],
        triggers: [
          {
            name: 'nightly',
            schedule: { expression: 'cron(0 3 * * ? *)', timezone: 'Europe/Berlin' },
          },
        ],
      });
      const d = await waitFor('the Deployment', async () =>
        apps.readNamespacedDeployment({ name: 'thumbnail', namespace: ns }),
      );
      const pod = d.spec!.template.spec!;
      const c = pod.containers[0]!;
      expect(c.image).toBe('eddy/runtime:nodejs22');
      expect(c.resources).toEqual({
        requests: { memory: '512Mi', cpu: '290m' },
        limits: { memory: '512Mi', cpu: '1' },
      });
      const env = Object.fromEntries(c.env!.map((e) => [e.name, e.value]));
      expect(env).toMatchObject({
        EDDY_HANDLER: 'index.handler',
        EDDY_CODE_DIR: '/var/task',
        EDDY_FUNCTION_NAME: 'thumbnail',
        EDDY_FUNCTION_NAMESPACE: ns,
        EDDY_MEMORY_MB: '512',
        EDDY_TIMEOUT_MS: '30000',
        EDDY_CONCURRENCY: '2',
        PORT: '8080',
        NODE_OPTIONS: '--max-old-space-size=411 --max-semi-space-size=8',
        DEST_BUCKET: 'photos-thumbnails',
      });
      expect(c.readinessProbe?.httpGet?.path).toBe('/readyz');
      expect(c.livenessProbe?.httpGet?.path).toBe('/healthz');
      expect(c.securityContext).toMatchObject({
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
        runAsNonRoot: true,
      });
      expect(pod.securityContext?.runAsNonRoot).toBe(true);
      expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(30);
      expect(pod.automountServiceAccountToken).toBe(false);
      expect(pod.volumes).toEqual([
        { name: 'tmp', emptyDir: { sizeLimit: '512Mi' } },
        { name: 'code', configMap: { name: 'thumbnail-code', defaultMode: 420 } },
      ]);
      expect(c.volumeMounts).toEqual(
        expect.arrayContaining([
          { name: 'code', mountPath: '/var/task', readOnly: true },
          { name: 'tmp', mountPath: '/tmp' },
        ]),
      );
      expect(d.metadata!.labels).toMatchObject({
        'eddy.dev/function': 'thumbnail',
        'app.kubernetes.io/managed-by': 'eddy-operator',
      });
      expect(d.metadata!.ownerReferences).toEqual([
        expect.objectContaining({ kind: 'Function', name: 'thumbnail', controller: true }),
      ]);
      // New Functions start with one replica; the operator never owns spec.replicas.
      expect(d.spec!.replicas).toBe(1);
      const operatorFields = JSON.stringify(
        d.metadata!.managedFields!.find((m) => m.manager === 'eddy-operator')!.fieldsV1,
      );
      expect(operatorFields).not.toContain('f:replicas');

      const svc = await core.readNamespacedService({ name: 'thumbnail', namespace: ns });
      expect(svc.spec).toMatchObject({
        type: 'ClusterIP',
        selector: { 'eddy.dev/function': 'thumbnail' },
      });
      const cm = await core.readNamespacedConfigMap({ name: 'thumbnail-code', namespace: ns });
      expect(cm.data).toEqual({ 'index.mjs': 'export const handler = async () => "ok";' });

      // Its pods take traffic from the gateway's pods only (enforced where the CNI implements
      // NetworkPolicy; here the object is what there is to check).
      const policy = await admin
        .makeApiClient(k8s.NetworkingV1Api)
        .readNamespacedNetworkPolicy({ name: 'thumbnail', namespace: ns });
      expect(policy.metadata!.labels).toMatchObject({
        'eddy.dev/function': 'thumbnail',
        'app.kubernetes.io/managed-by': 'eddy-operator',
      });
      expect(policy.metadata!.ownerReferences).toEqual([
        expect.objectContaining({
          apiVersion: 'eddy.dev/v1alpha1',
          kind: 'Function',
          name: 'thumbnail',
          uid: d.metadata!.ownerReferences![0]!.uid,
          controller: true,
        }),
      ]);
      expect(policy.spec!.podSelector).toEqual(d.spec!.selector);
      expect(policy.spec!.policyTypes).toEqual(['Ingress']);
      expect(policy.spec!.ingress).toEqual([
        {
          _from: [
            {
              namespaceSelector: {
                matchLabels: { 'kubernetes.io/metadata.name': 'eddy-system' },
              },
              podSelector: {
                matchLabels: {
                  'app.kubernetes.io/instance': 'eddy',
                  'eddy.dev/operator': 'true',
                },
              },
            },
          ],
          ports: [{ protocol: 'TCP', port: 8080 }],
        },
      ]);
      // Those labels select the chart's gateway pods, which deliver, and its controller pods,
      // which invoke Kinesis batches.
      for (const name of ['eddy-gateway', 'eddy-controller']) {
        const chartPods = (await apps.readNamespacedDeployment({ name, namespace: 'eddy-system' }))
          .spec!.template.metadata!.labels!;
        expect(chartPods).toMatchObject(
          policy.spec!.ingress![0]!._from![0]!.podSelector!.matchLabels!,
        );
      }

      const fn = await settled('thumbnail');
      // Nothing outside the cluster to clean up: no finalizer to hold its deletion.
      expect(fn.metadata.finalizers ?? []).not.toContain('eddy.dev/cleanup');
      expect(fn.status).toMatchObject({
        observedGeneration: fn.metadata.generation,
        replicas: 1,
        readyReplicas: 0,
        url: 'http://eddy-gateway.eddy-system.svc:8080/functions/photos/thumbnail',
        triggers: [{ name: 'nightly', ready: true }],
        triggerSummary: 'nightly(schedule)',
      });
      expect(condition(fn, 'Deployed')).toMatchObject({ status: 'True', reason: 'Applied' });
      expect(condition(fn, 'TriggersReady')).toMatchObject({ status: 'True', reason: 'Accepted' });
      // No kubelet runs here, so no pod ever becomes ready.
      expect(condition(fn, 'Ready')).toMatchObject({
        status: 'False',
        reason: 'ReplicasNotReady',
        message: '0 of 1 replica(s) ready',
      });

      const events = await waitFor('events', async () => {
        const list = await core.listNamespacedEvent({
          namespace: ns,
          fieldSelector: 'involvedObject.name=thumbnail',
        });
        return list.items.some((e) => e.reason === 'Created') ? list.items : undefined;
      });
      expect(events.filter((e) => e.reason === 'Created').map((e) => e.message)).toEqual([
        'created ConfigMap thumbnail-code, Deployment thumbnail, Service thumbnail, NetworkPolicy thumbnail',
      ]);
    });

    it('follows a change of memory, and of CPU', async () => {
      await createFn('resize', { code: { inline: 'export const handler = () => 1;' } });
      await settled('resize');
      await patchFn('resize', { spec: { memory: '1769Mi' } });
      const d = await waitFor('the new memory', async () => {
        const dep = await apps.readNamespacedDeployment({ name: 'resize', namespace: ns });
        return dep.spec!.template.spec!.containers[0]!.resources!.limits!.memory === '1769Mi'
          ? dep
          : undefined;
      });
      const c = d.spec!.template.spec!.containers[0]!;
      expect(c.resources!.limits!.cpu).toBe('1');
      expect(c.env!.find((e) => e.name === 'EDDY_MEMORY_MB')!.value).toBe('1769');
      await patchFn('resize', { spec: { cpu: '250m' } });
      const overridden = await waitFor('the CPU override', async () => {
        const dep = await apps.readNamespacedDeployment({ name: 'resize', namespace: ns });
        return dep.spec!.template.spec!.containers[0]!.resources!.requests!.cpu === '250m'
          ? dep
          : undefined;
      });
      // Requested as set; the ceiling stays one vCPU.
      expect(overridden.spec!.template.spec!.containers[0]!.resources!.limits!.cpu).toBe('1');
      const fn = await settled('resize');
      expect(fn.status!.observedGeneration).toBe(3);
    });

    it('puts back a Deployment someone edited', async () => {
      await createFn('drift', {
        code: { inline: 'export const handler = () => 1;' },
        memory: '256Mi',
      });
      await settled('drift');
      const dep = await apps.readNamespacedDeployment({ name: 'drift', namespace: ns });
      dep.spec!.template.spec!.containers[0]!.resources = {
        limits: { memory: '1Gi' },
        requests: { memory: '1Gi' },
      };
      await apps.replaceNamespacedDeployment({
        name: 'drift',
        namespace: ns,
        body: dep,
        fieldManager: 'kubectl-edit',
      });
      await waitFor('the memory to be corrected', async () => {
        const d = await apps.readNamespacedDeployment({ name: 'drift', namespace: ns });
        const r = d.spec!.template.spec!.containers[0]!.resources!;
        return r.limits!.memory === '256Mi' && r.requests!.memory === '256Mi' ? d : undefined;
      });
    });

    it('reports a name taken by someone else’s Deployment as a condition, and leaves that Deployment alone', async () => {
      await apps.createNamespacedDeployment({
        namespace: ns,
        body: {
          metadata: { name: 'taken' },
          spec: {
            selector: { matchLabels: { app: 'taken' } },
            template: {
              metadata: { labels: { app: 'taken' } },
              spec: { containers: [{ name: 'web', image: 'nginx' }] },
            },
          },
        },
      });
      await createFn('taken', { code: { inline: 'export const handler = () => 1;' } });
      const fn = await settled('taken');
      expect(condition(fn, 'Deployed')).toMatchObject({ status: 'False', reason: 'NameConflict' });
      expect(condition(fn, 'Deployed')!.message).toMatch(
        /a Deployment named taken already exists in photos and is not this Function's/,
      );
      expect(condition(fn, 'Ready')).toMatchObject({ status: 'False', reason: 'NotDeployed' });
      const d = await apps.readNamespacedDeployment({ name: 'taken', namespace: ns });
      expect(d.spec!.template.spec!.containers[0]!.image).toBe('nginx');
    });

    it('reports a name taken by someone else’s ConfigMap and writes nothing to it, though nothing in it contradicts what the operator would write', async () => {
      // Other keys than index.mjs, no labels: an apply that only avoided conflicting fields would
      // have taken this ConfigMap over (and garbage collection would delete it with the Function).
      const foreign = await core.createNamespacedConfigMap({
        namespace: ns,
        body: { metadata: { name: 'shared-code' }, data: { 'settings.json': '{}' } },
      });
      await createFn('shared', { code: { inline: 'export const handler = () => 1;' } });
      const fn = await settled('shared');
      expect(condition(fn, 'Deployed')).toMatchObject({ status: 'False', reason: 'NameConflict' });
      expect(condition(fn, 'Deployed')!.message).toMatch(
        /a ConfigMap named shared-code already exists in photos and is not this Function's/,
      );
      const cm = await core.readNamespacedConfigMap({ name: 'shared-code', namespace: ns });
      expect(cm.metadata!.resourceVersion).toBe(foreign.metadata!.resourceVersion);
      expect(cm.data).toEqual({ 'settings.json': '{}' });
    });

    it('makes a new Function’s children with one request each, reading nothing, and writes its status once', async () => {
      const from = auditOffset();
      await createFn('lean', { code: { inline: 'export const handler = () => 1;' } });
      await settled('lean');
      // The watch events of those writes come back and are reconciled too: wait until the
      // operator has seen the last version of each and handled it.
      await caughtUp('lean');
      const requests = operatorRequests(from)
        .filter((e) => e.objectRef?.namespace === ns)
        .filter((e) => ['lean', 'lean-code'].includes(e.objectRef?.name ?? ''))
        .filter((e) => e.objectRef?.subresource !== 'scale') // the scaler's business
        .map(
          (e) =>
            `${e.verb} ${e.objectRef!.resource}${e.objectRef!.subresource ? `/${e.objectRef!.subresource}` : ''} ${e.objectRef!.name} ${e.responseStatus?.code}`,
        );
      expect(requests.sort()).toEqual([
        'patch configmaps lean-code 201',
        'patch deployments lean 201',
        'patch functions/status lean 200',
        'patch networkpolicies lean 201',
        'patch services lean 201',
      ]);
    });

    it('removes from the Deployment an env var removed from the Function: the operator owns what it created through apply', async () => {
      await createFn('trim', {
        code: { inline: 'export const handler = () => 1;' },
        env: [
          { name: 'KEEP', value: '1' },
          { name: 'DROP', value: '2' },
        ],
      });
      const envOf = async () =>
        (
          await apps.readNamespacedDeployment({ name: 'trim', namespace: ns })
        ).spec!.template.spec!.containers[0]!.env!.map((e) => e.name);
      await waitFor('the Deployment with DROP', async () =>
        (await envOf().catch((): string[] => [])).includes('DROP') ? true : undefined,
      );
      await patchFn('trim', { spec: { env: [{ name: 'KEEP', value: '1' }] } });
      await settled('trim');
      await waitFor('DROP to be gone', async () =>
        (await envOf()).includes('DROP') ? undefined : true,
      );
      expect(await envOf()).toContain('KEEP');
      const d = await apps.readNamespacedDeployment({ name: 'trim', namespace: ns });
      expect(
        d
          .metadata!.managedFields!.filter((m) => m.manager === 'eddy-operator')
          .map((m) => m.operation),
      ).toEqual(['Apply']);
    });

    it('puts back a NetworkPolicy someone opened, and makes again one someone deleted', async () => {
      const networking = admin.makeApiClient(k8s.NetworkingV1Api);
      const read = () => networking.readNamespacedNetworkPolicy({ name: 'fenced', namespace: ns });
      await createFn('fenced', { code: { inline: 'export const handler = () => 1;' } });
      await settled('fenced');
      const made = await waitFor('the NetworkPolicy', read);
      // Someone lets every pod in: the operator's watch on NetworkPolicies sees it at once.
      await networking.patchNamespacedNetworkPolicy(
        {
          name: 'fenced',
          namespace: ns,
          body: { spec: { ingress: [{}] } },
        },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      );
      const restored = await waitFor('the ingress rule to be put back', async () => {
        const p = await read();
        return p.spec!.ingress?.[0]?._from !== undefined ? p : undefined;
      });
      expect(restored.spec!.ingress).toEqual(made.spec!.ingress);
      await networking.deleteNamespacedNetworkPolicy({ name: 'fenced', namespace: ns });
      const again = await waitFor('the NetworkPolicy to be made again', async () => {
        const p = await read().catch(() => undefined);
        return p && p.metadata!.uid !== made.metadata!.uid ? p : undefined;
      });
      expect(again.spec).toEqual(made.spec);
    });

    it('makes again a child someone deleted', async () => {
      await createFn('phoenix', { code: { inline: 'export const handler = () => 1;' } });
      await settled('phoenix');
      const before = await core.readNamespacedService({ name: 'phoenix', namespace: ns });
      await core.deleteNamespacedService({ name: 'phoenix', namespace: ns });
      const after = await waitFor('the Service to be made again', async () => {
        const svc = await core
          .readNamespacedService({ name: 'phoenix', namespace: ns })
          .catch(() => undefined);
        return svc && svc.metadata!.uid !== before.metadata!.uid ? svc : undefined;
      });
      expect(after.metadata!.ownerReferences).toEqual([
        expect.objectContaining({ kind: 'Function', name: 'phoenix', controller: true }),
      ]);
    });

    it('reports a spec the API server refuses for the Deployment as a condition, with its message', async () => {
      await createFn('refused', {
        code: { inline: 'export const handler = () => 1;' },
        env: [{ name: 'WHERE', valueFrom: { fieldRef: { fieldPath: 'spec.nowhere' } } }],
      });
      const fn = await settled('refused');
      expect(condition(fn, 'Deployed')).toMatchObject({ status: 'False', reason: 'ApplyRefused' });
      expect(condition(fn, 'Deployed')!.message).toMatch(
        /Deployment.apps "refused" is invalid: .*fieldPath.*\(HTTP 422\)/,
      );
    });

    it('reports a trigger CEL cannot check (an unknown time zone) as a condition', async () => {
      await createFn('tz', {
        code: { inline: 'export const handler = () => 1;' },
        triggers: [
          { name: 'daily', schedule: { expression: '0 3 * * *', timezone: 'Mars/Olympus' } },
        ],
      });
      const fn = await settled('tz');
      expect(condition(fn, 'TriggersReady')).toMatchObject({
        status: 'False',
        reason: 'InvalidTrigger',
      });
      expect(condition(fn, 'TriggersReady')!.message).toMatch(
        /trigger daily: time zone "Mars\/Olympus" is unknown/,
      );
      expect(fn.status!.triggers).toHaveLength(1);
      expect(fn.status!.triggers![0]).toMatchObject({ name: 'daily', ready: false });
      expect(fn.status!.triggers![0]!.message).toMatch(/Mars/);
    });

    it('writes nothing when restarted over unchanged Functions', async () => {
      await createFn('steady', { code: { inline: 'export const handler = () => 1;' } });
      await settled('steady');
      await operator!.controller()!.idle();
      const versions = async () => ({
        fn: (await getFn('steady')).metadata.resourceVersion,
        deployment: (await apps.readNamespacedDeployment({ name: 'steady', namespace: ns }))
          .metadata!.resourceVersion,
        service: (await core.readNamespacedService({ name: 'steady', namespace: ns })).metadata!
          .resourceVersion,
        code: (await core.readNamespacedConfigMap({ name: 'steady-code', namespace: ns })).metadata!
          .resourceVersion,
      });
      const before = await versions();
      await operator!.stop();
      const auditFrom = auditOffset();
      operator = startOperator(operatorKc, 'operator-a2');
      await waitFor('the new operator to lead', async () =>
        operator!.leading() ? true : undefined,
      );
      // It listed every Function before it led and queued each when it began to lead: once the
      // queue is idle, each has been reconciled.
      await caughtUp('steady');
      // Not a single write by the operator, apart from its lease (the API server's audit log). A
      // request the API server refused changed nothing: the Function whose env it rejects, and the
      // creations it answers with 409 because someone else's object holds the name.
      const writes = operatorRequests(auditFrom)
        .filter(
          (e) =>
            ['create', 'update', 'patch', 'delete'].includes(e.verb) &&
            (e.responseStatus?.code ?? 0) < 400 &&
            e.objectRef?.resource !== 'leases',
        )
        .map((e) => `${e.verb} ${e.objectRef?.resource}/${e.objectRef?.name}`);
      expect(writes).toEqual([]);
      expect(await versions()).toEqual(before);
    });

    it('lets a Function with nothing outside the cluster go at once, without a finalizer, and leaves its children to garbage collection', async () => {
      await createFn('goodbye', { code: { inline: 'export const handler = () => 1;' } });
      const fn = await settled('goodbye');
      // This operator has no cleaner (no bucket notifications to remove): nothing for a finalizer
      // to wait for, so the Function has none.
      expect(fn.metadata.finalizers ?? []).toEqual([]);
      const children = [
        () => core.readNamespacedConfigMap({ name: 'goodbye-code', namespace: ns }),
        () => apps.readNamespacedDeployment({ name: 'goodbye', namespace: ns }),
        () => core.readNamespacedService({ name: 'goodbye', namespace: ns }),
        () => networking().readNamespacedNetworkPolicy({ name: 'goodbye', namespace: ns }),
      ];
      // Each child names the Function as its controlling owner, by uid: the garbage collector
      // deletes them with it (and would block the owner's foreground deletion until they go).
      for (const read of children) {
        expect((await read()).metadata!.ownerReferences).toEqual([
          {
            apiVersion: 'eddy.dev/v1alpha1',
            kind: 'Function',
            name: 'goodbye',
            uid: fn.metadata.uid,
            controller: true,
            blockOwnerDeletion: true,
          },
        ]);
      }
      await caughtUp('goodbye');
      const from = auditOffset();
      await fns.delete('goodbye');
      // No finalizer held it: the delete itself removed it.
      await expect(getFn('goodbye')).rejects.toMatchObject({ code: 404 });

      // This API server runs no garbage collector: do its work, as it would on the owner's delete.
      await core.deleteNamespacedConfigMap({ name: 'goodbye-code', namespace: ns });
      await apps.deleteNamespacedDeployment({ name: 'goodbye', namespace: ns });
      await core.deleteNamespacedService({ name: 'goodbye', namespace: ns });
      await networking().deleteNamespacedNetworkPolicy({ name: 'goodbye', namespace: ns });
      // The operator sees all of that, handles each event, and makes nothing again.
      await caughtUp('goodbye');
      expect(cachedVersions('goodbye')).toEqual({
        fn: undefined,
        code: undefined,
        deployment: undefined,
        service: undefined,
        policy: undefined,
      });
      for (const read of children) await expect(read()).rejects.toMatchObject({ code: 404 });
      const writes = operatorRequests(from)
        .filter((e) => e.objectRef?.namespace === ns)
        .filter((e) => ['goodbye', 'goodbye-code'].includes(e.objectRef?.name ?? ''))
        .filter((e) => ['create', 'update', 'patch', 'delete'].includes(e.verb))
        .map((e) => `${e.verb} ${e.objectRef!.resource}/${e.objectRef!.name}`);
      expect(writes).toEqual([]);
    });
  },
);
