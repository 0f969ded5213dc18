import * as k8s from '@kubernetes/client-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { startKube, type AuditEvent } from '../harness/kube.js';
import {
  installChart,
  operatorKubeConfig,
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
    const settled = (name: string) =>
      waitFor(`${name} to have an up-to-date status`, async () => {
        const fn = await getFn(name);
        return fn.status?.observedGeneration === fn.metadata.generation && condition(fn, 'Deployed')
          ? fn
          : undefined;
      });

    beforeAll(async () => {
      admin = kube().kubeConfig;
      fns = functionsIn(admin, ns);
      apps = admin.makeApiClient(k8s.AppsV1Api);
      core = admin.makeApiClient(k8s.CoreV1Api);
      await installChart(kube());
      await core.createNamespace({ body: { metadata: { name: ns } } });
      operatorKc = await operatorKubeConfig(kube());
      operator = startOperator(operatorKc, 'operator-a');
      await waitFor('operator-a to lead', async () => (operator!.leading() ? true : undefined));
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
        limits: { memory: '512Mi', cpu: '290m' },
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

      const fn = await settled('thumbnail');
      expect(fn.metadata.finalizers).toContain('eddy.dev/cleanup');
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
        'created ConfigMap thumbnail-code, Deployment thumbnail, Service thumbnail',
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
      await waitFor('the CPU override', async () => {
        const dep = await apps.readNamespacedDeployment({ name: 'resize', namespace: ns });
        return dep.spec!.template.spec!.containers[0]!.resources!.limits!.cpu === '250m'
          ? dep
          : undefined;
      });
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
      const auditFrom = readFileSync(kube().auditLog!, 'utf8').length;
      operator = startOperator(operatorKc, 'operator-a2');
      await waitFor('the new operator to lead', async () =>
        operator!.leading() ? true : undefined,
      );
      // It reconciles every Function once it has listed them.
      await sleep(500);
      await operator.controller()!.idle();
      // Not a single write by the operator, apart from its lease (the API server's audit log). A
      // request the API server refused (the Function whose env it rejects) changed nothing.
      const writes = readFileSync(kube().auditLog!, 'utf8')
        .slice(auditFrom)
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as AuditEvent)
        .filter((e) => e.user.username === 'system:serviceaccount:eddy-system:eddy-operator')
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

    it('runs the finalizer on delete and lets the Function go', async () => {
      await createFn('goodbye', { code: { inline: 'export const handler = () => 1;' } });
      await settled('goodbye');
      await fns.delete('goodbye');
      await fns.gone('goodbye');
    });
  },
);
