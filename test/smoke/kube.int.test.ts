import { describe, expect, it } from 'vitest';
import * as k8s from '@kubernetes/client-node';
import { startKube } from '../harness/kube.js';
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

  it('issues service-account tokens that the API server accepts', async () => {
    const kc = kube().kubeConfig;
    const core = kc.makeApiClient(k8s.CoreV1Api);
    await core.createNamespacedServiceAccount({
      namespace: 'default',
      body: { metadata: { name: 'smoke' } },
    });
    const tr = await core.createNamespacedServiceAccountToken({
      name: 'smoke',
      namespace: 'default',
      body: { spec: { audiences: ['https://kubernetes.default.svc'], expirationSeconds: 600 } },
    });
    const token = tr.status?.token;
    expect(token).toBeTruthy();
    const review = await kc.makeApiClient(k8s.AuthenticationV1Api).createTokenReview({
      body: { spec: { token: token! } },
    });
    expect(review.status?.authenticated).toBe(true);
    expect(review.status?.user?.username).toBe('system:serviceaccount:default:smoke');
  });
});
