import { describe, expect, it } from 'vitest';
import * as k8s from '@kubernetes/client-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { serviceAccountKubeConfig, startKube } from '../harness/kube.js';
import { canRun, useComponent } from '../harness/suite.js';

describe.skipIf(!canRun('kube'))('kube-apiserver + etcd', () => {
  const kube = useComponent(() => startKube());

  it('creates and reads a namespace with the admin kubeconfig', async () => {
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(kube().kubeconfigPath);
    const core = kc.makeApiClient(k8s.CoreV1Api);
    const name = `smoke-${Date.now()}`;
    await core.createNamespace({ body: { metadata: { name, labels: { purpose: 'smoke' } } } });
    const read = await core.readNamespace({ name });
    expect(read.metadata?.name).toBe(name);
    expect(read.metadata?.labels?.purpose).toBe('smoke');
    expect(read.metadata?.uid).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('serves the project CRDs, installed at start', async () => {
    const api = kube().kubeConfig.makeApiClient(k8s.ApiextensionsV1Api);
    const crd = await api.readCustomResourceDefinition({ name: 'functions.eddy.dev' });
    expect(crd.spec.names.shortNames).toContain('fn');
  });

  it('authenticates service-account tokens and enforces RBAC on them', async () => {
    const k = kube();
    const kc = await serviceAccountKubeConfig(k, 'default', 'smoke');
    const core = kc.makeApiClient(k8s.CoreV1Api);
    // No role is bound yet: the API server knows the account and refuses it.
    const denied = await core.listNamespace().catch((err: unknown) => err);
    expect(denied).toBeInstanceOf(k8s.ApiException);
    expect((denied as k8s.ApiException<string>).code).toBe(403);
    expect(String((denied as k8s.ApiException<string>).body)).toContain(
      'system:serviceaccount:default:smoke',
    );

    const rbac = k.kubeConfig.makeApiClient(k8s.RbacAuthorizationV1Api);
    await rbac.createClusterRole({
      body: {
        metadata: { name: 'smoke-namespace-reader' },
        rules: [{ apiGroups: [''], resources: ['namespaces'], verbs: ['list'] }],
      },
    });
    await rbac.createClusterRoleBinding({
      body: {
        metadata: { name: 'smoke-namespace-reader' },
        roleRef: {
          apiGroup: 'rbac.authorization.k8s.io',
          kind: 'ClusterRole',
          name: 'smoke-namespace-reader',
        },
        subjects: [{ kind: 'ServiceAccount', name: 'smoke', namespace: 'default' }],
      },
    });
    // RBAC changes reach the authorizer through its informer; allow it a moment.
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        const list = await core.listNamespace();
        expect(list.items.map((n) => n.metadata?.name)).toContain('default');
        break;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(100);
      }
    }
  });
});
