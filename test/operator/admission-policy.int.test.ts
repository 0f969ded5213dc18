/**
 * The chart's ValidatingAdmissionPolicy on a real API server: installed with `helm install`, it
 * lets the operator's service account create, change or delete Deployments, Services, ConfigMaps
 * and NetworkPolicies only when they carry the operator's label (before and after a change), and
 * the operator still does all its work under it.
 */
import * as k8s from '@kubernetes/client-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkpointName, configMapCheckpoints } from '../../operator/src/sources/checkpoints.js';
import { functionsIn } from '../harness/functions.js';
import { startKube } from '../harness/kube.js';
import {
  installChart,
  operatorKubeConfig,
  startOperator,
  type RunningOperator,
} from '../harness/operator.js';
import { canRun, useComponent } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';

const ns = 'shop';
const label = { 'app.kubernetes.io/managed-by': 'eddy-operator' };

/** What the API server answered: the status code and its message, or 'allowed'. */
async function attempt(write: () => Promise<unknown>): Promise<string> {
  try {
    await write();
    return 'allowed';
  } catch (err) {
    if (!(err instanceof k8s.ApiException)) throw err;
    const body = (typeof err.body === 'string' ? JSON.parse(err.body) : err.body) as {
      message?: string;
    };
    return `${err.code} ${body.message ?? ''}`;
  }
}

/** One object of each kind the policy guards, named `name` in `ns`, with the given labels. */
function objectsOfEachKind(name: string, labels: Record<string, string>): k8s.KubernetesObject[] {
  const metadata = { name, namespace: ns, labels };
  return [
    { apiVersion: 'v1', kind: 'ConfigMap', metadata, data: { a: '1' } } as k8s.V1ConfigMap,
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata,
      spec: { selector: { app: name }, ports: [{ port: 80 }] },
    } as k8s.V1Service,
    {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata,
      spec: {
        selector: { matchLabels: { app: name } },
        template: {
          metadata: { labels: { app: name } },
          spec: { containers: [{ name: 'c', image: 'example/c:1' }] },
        },
      },
    } as k8s.V1Deployment,
    {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata,
      spec: { podSelector: { matchLabels: { app: name } }, policyTypes: ['Ingress'] },
    } as k8s.V1NetworkPolicy,
  ];
}

describe.skipIf(!canRun('kube'))('the operator’s admission policy, on a real API server', () => {
  const kube = useComponent(() => startKube());
  let admin: k8s.KubeConfig;
  let asAdmin: k8s.KubernetesObjectApi;
  let asOperator: k8s.KubernetesObjectApi;
  let operatorKc: k8s.KubeConfig;
  let operator: RunningOperator | undefined;
  const mergePatch = (api: k8s.KubernetesObjectApi, obj: k8s.KubernetesObject) =>
    api.patch(obj, undefined, undefined, 'test', undefined, k8s.PatchStrategy.MergePatch);

  beforeAll(async () => {
    admin = kube().kubeConfig;
    asAdmin = k8s.KubernetesObjectApi.makeApiClient(admin);
    await installChart(kube());
    await admin.makeApiClient(k8s.CoreV1Api).createNamespace({ body: { metadata: { name: ns } } });
    operatorKc = await operatorKubeConfig(kube());
    asOperator = k8s.KubernetesObjectApi.makeApiClient(operatorKc);
    // The API server loads a new policy a moment after it is written: wait until it refuses.
    await waitFor(
      'the policy to be in force',
      async () => {
        const answer = await attempt(() =>
          asOperator.create({
            apiVersion: 'v1',
            kind: 'ConfigMap',
            metadata: { name: 'probe', namespace: ns },
          }),
        );
        if (answer === 'allowed') {
          await asAdmin.delete({
            apiVersion: 'v1',
            kind: 'ConfigMap',
            metadata: { name: 'probe', namespace: ns },
          });
          return undefined;
        }
        return answer;
      },
      30_000,
    );
  }, 120_000);

  afterAll(async () => {
    await operator?.stop();
  });

  it('refuses the operator a patch or a delete of a ConfigMap in kube-system, and says why', async () => {
    const foreign = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: 'extension-apiserver-authentication', namespace: 'kube-system' },
    };
    const patched = await attempt(() =>
      mergePatch(asOperator, { ...foreign, data: { x: '1' } } as k8s.KubernetesObject),
    );
    expect(patched).toMatch(/^403 /);
    expect(patched).toContain(
      "the Eddy operator may update only configmaps labelled app.kubernetes.io/managed-by=eddy-operator; configmaps kube-system/extension-apiserver-authentication is not Eddy's",
    );
    expect(await attempt(() => asOperator.delete(foreign))).toMatch(/^403 .*may delete only/);
    // Taking it over by adding the label is a change of an object that is not Eddy's.
    expect(
      await attempt(() =>
        mergePatch(asOperator, { ...foreign, metadata: { ...foreign.metadata, labels: label } }),
      ),
    ).toMatch(/^403 .*is not Eddy's/);
    // RBAC alone would have let it: the policy refused, not the grant.
    const review = await operatorKc
      .makeApiClient(k8s.AuthorizationV1Api)
      .createSelfSubjectAccessReview({
        body: {
          spec: {
            resourceAttributes: { verb: 'patch', resource: 'configmaps', namespace: 'kube-system' },
          },
        },
      });
    expect(review.status!.allowed).toBe(true);
    const after = await asAdmin.read<k8s.V1ConfigMap>(foreign);
    expect(after.metadata!.labels?.['app.kubernetes.io/managed-by']).toBeUndefined();
    expect(after.data?.x).toBeUndefined();
  });

  it('lets the operator create, change and delete objects of each kind only with its label', async () => {
    for (const obj of objectsOfEachKind('foreign', {})) {
      const what = `${obj.kind} foreign`;
      expect(await attempt(() => asOperator.create(obj)), what).toMatch(
        /^403 .*may create only .* would not carry it/,
      );
      // Someone else's object of that name: the operator may neither change nor delete it.
      await asAdmin.create(obj);
      expect(
        await attempt(() =>
          mergePatch(asOperator, { ...obj, metadata: { ...obj.metadata, labels: label } }),
        ),
        what,
      ).toMatch(/^403 /);
      expect(await attempt(() => asOperator.delete(obj)), what).toMatch(/^403 /);
      expect(await attempt(() => asAdmin.delete(obj)), what).toBe('allowed');
    }
    for (const obj of objectsOfEachKind('owned', label)) {
      const what = `${obj.kind} owned`;
      expect(await attempt(() => asOperator.create(obj)), what).toBe('allowed');
      expect(
        await attempt(() =>
          mergePatch(asOperator, {
            ...obj,
            metadata: { ...obj.metadata, annotations: { a: 'b' } },
          }),
        ),
        what,
      ).toBe('allowed');
      // Dropping the label would hand the object to nobody: refused.
      expect(
        await attempt(() =>
          mergePatch(asOperator, {
            ...obj,
            metadata: { ...obj.metadata, labels: { 'app.kubernetes.io/managed-by': null } },
          } as unknown as k8s.KubernetesObject),
        ),
        what,
      ).toMatch(/^403 .*would lose that label/);
      if (obj.kind === 'ConfigMap') {
        expect(await attempt(() => asOperator.delete(obj)), what).toBe('allowed');
      } else {
        // Garbage collection deletes the rest with their Function: RBAC grants no delete.
        expect(await attempt(() => asOperator.delete(obj)), what).toMatch(/^403 .*cannot delete/);
        await asAdmin.delete(obj);
      }
    }
  });

  it('lets the operator scale only Functions’ Deployments', async () => {
    const dns = objectsOfEachKind('dns', {}).find((o) => o.kind === 'Deployment')!;
    dns.metadata!.namespace = 'kube-system';
    await asAdmin.create(dns);
    const scale = (kc: k8s.KubeConfig) =>
      attempt(() =>
        kc
          .makeApiClient(k8s.AppsV1Api)
          .patchNamespacedDeploymentScale(
            { name: 'dns', namespace: 'kube-system', body: { spec: { replicas: 0 } } },
            k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
          ),
      );
    // Loaded alongside the other policy, though not necessarily in the same instant.
    const refused = await waitFor('the scale policy to be in force', async () => {
      const answer = await scale(operatorKc);
      return answer === 'allowed' ? undefined : answer;
    });
    expect(refused).toMatch(
      /^403 .*the Eddy operator may scale only the Deployments of Functions .*deployments kube-system\/dns is not one/,
    );
    expect(await scale(admin)).toBe('allowed');
  });

  it('binds only the operator: an admin may still change kube-system', async () => {
    expect(
      await attempt(() =>
        mergePatch(asAdmin, {
          apiVersion: 'v1',
          kind: 'ConfigMap',
          metadata: {
            name: 'extension-apiserver-authentication',
            namespace: 'kube-system',
            annotations: { 'eddy.dev/test': 'admin' },
          },
        }),
      ),
    ).toBe('allowed');
  });

  it('leaves the operator all its work: a Function reconciled in full, its checkpoints written and removed', async () => {
    operator = startOperator(operatorKc, 'operator-policy');
    const fns = functionsIn(admin, ns);
    await fns.create('cart', { code: { inline: 'export const handler = async () => "ok";' } });
    const fn = await waitFor(
      'cart to be deployed',
      async () => {
        const f = await fns.get('cart');
        const deployed = f.status?.conditions?.find((c) => c.type === 'Deployed');
        return f.status?.observedGeneration === f.metadata.generation && deployed ? f : undefined;
      },
      60_000,
    ).catch((err: unknown) => {
      process.stderr.write(`--- operator log\n${operator!.logs.join('\n')}\n`);
      throw err;
    });
    expect(fn.status!.conditions!.find((c) => c.type === 'Deployed')).toMatchObject({
      status: 'True',
      reason: 'Applied',
    });
    for (const kind of ['Deployment', 'Service', 'NetworkPolicy']) {
      const child = await asAdmin.read({
        apiVersion:
          kind === 'Deployment' ? 'apps/v1' : kind === 'Service' ? 'v1' : 'networking.k8s.io/v1',
        kind,
        metadata: { name: 'cart', namespace: ns },
      });
      expect(child.metadata!.labels, kind).toMatchObject(label);
    }
    // A code ConfigMap no longer needed is deleted by the operator.
    await fns.patch('cart', { spec: { code: null, image: 'example/cart:1' } });
    await waitFor('the code ConfigMap to be deleted', async () =>
      (
        await attempt(() =>
          asAdmin.read({
            apiVersion: 'v1',
            kind: 'ConfigMap',
            metadata: { name: 'cart-code', namespace: ns },
          }),
        )
      ).startsWith('404')
        ? true
        : undefined,
    );
    // The autoscaler scales a Function's Deployment through its scale subresource.
    expect(
      await attempt(() =>
        operatorKc
          .makeApiClient(k8s.AppsV1Api)
          .patchNamespacedDeploymentScale(
            { name: 'cart', namespace: ns, body: { spec: { replicas: 0 } } },
            k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
          ),
      ),
    ).toBe('allowed');
    // The sources' checkpoints, as the operator writes them.
    const checkpoints = configMapCheckpoints(operatorKc);
    const current = await fns.get('cart');
    // One written before checkpoints carried the operator's label is still the operator's.
    const legacy = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name: checkpointName(current, 'legacy'),
        namespace: ns,
        labels: {
          'app.kubernetes.io/part-of': 'eddy',
          'app.kubernetes.io/component': 'source-checkpoint',
        },
      },
      data: { shard: '0' },
    };
    await asAdmin.create(legacy);
    await checkpoints.save(current, 'legacy', { shard: '1' });
    const saved = await asAdmin.read<k8s.V1ConfigMap>(legacy);
    expect(saved.data).toEqual({ shard: '1' });
    expect(saved.metadata!.labels).toMatchObject(label);
    await checkpoints.remove(current, 'legacy');
    // Someone else's ConfigMap of that name, though, is not.
    await asAdmin.create({ ...legacy, metadata: { ...legacy.metadata, labels: {} } });
    await expect(checkpoints.save(current, 'legacy', { shard: '2' })).rejects.toThrow(/not Eddy's/);
    await checkpoints.save(current, 'clicks', { shard: '1' });
    await checkpoints.save(current, 'clicks', { shard: '2' });
    expect(await checkpoints.load(current, 'clicks')).toEqual({ shard: '2' });
    await checkpoints.remove(current, 'clicks');
    expect(await checkpoints.load(current, 'clicks')).toEqual({});
  }, 120_000);
});
