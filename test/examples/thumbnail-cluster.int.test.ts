/**
 * The thumbnail example as a cluster user applies it (README's "In a cluster": the store's
 * endpoint in place of http://eddy-local-s3, the store's keys in the Secret), against a real
 * API server with the operator under the chart's RBAC: the Function's pods take their keys from
 * the Secret through valueFrom.secretKeyRef, which the kubelet resolves.
 */
import * as k8s from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startKube } from '../harness/kube.js';
import {
  installChart,
  operatorKubeConfig,
  startOperator,
  type RunningOperator,
} from '../harness/operator.js';
import { canRun, useComponent } from '../harness/suite.js';
import { thumbnailManifest } from '../harness/thumbnail.js';
import { waitFor } from '../harness/wait.js';

describe.skipIf(!canRun('kube'))('the thumbnail example applied to a cluster', () => {
  const kube = useComponent(() => startKube());
  let operator: RunningOperator | undefined;

  beforeAll(async () => {
    await installChart(kube());
    operator = startOperator(await operatorKubeConfig(kube()), 'operator-thumbnail');
    await waitFor(
      'the operator to lead',
      async () => (operator!.leading() ? true : undefined),
      60_000,
    );
  }, 120_000);

  afterAll(async () => {
    await operator?.stop();
  });

  it('is accepted as written and runs with the keys of its Secret, by reference', async () => {
    const manifest = await thumbnailManifest({
      // Nothing listens there: the trigger's store is not what this test is about.
      endpoint: 'http://192.0.2.10:9000',
      accessKeyId: 'cluster-key',
      secretAccessKey: 'cluster-secret',
    });
    expect(manifest).not.toContain('eddy-local-s3');
    const objects = parseAllDocuments(manifest).map((d) => d.toJS() as k8s.KubernetesObject);
    expect(objects.map((o) => o.kind)).toEqual(['Function', 'Secret']);
    const client = k8s.KubernetesObjectApi.makeApiClient(kube().kubeConfig);
    // The Secret first, as `kubectl apply -f` of a file would make both within a moment.
    for (const o of [...objects].reverse()) await client.create(o);

    const apps = kube().kubeConfig.makeApiClient(k8s.AppsV1Api);
    const deployment = await waitFor('the Deployment', () =>
      apps
        .readNamespacedDeployment({ namespace: 'default', name: 'thumbnail' })
        .catch(() => undefined),
    );
    const env = deployment.spec!.template.spec!.containers[0]!.env!;
    const byName = (name: string) => env.find((e) => e.name === name);
    expect(byName('S3_ENDPOINT')).toEqual({ name: 'S3_ENDPOINT', value: 'http://192.0.2.10:9000' });
    expect(byName('AWS_ACCESS_KEY_ID')).toEqual({
      name: 'AWS_ACCESS_KEY_ID',
      valueFrom: { secretKeyRef: { name: 's3-creds', key: 'accessKeyId' } },
    });
    expect(byName('AWS_SECRET_ACCESS_KEY')).toEqual({
      name: 'AWS_SECRET_ACCESS_KEY',
      valueFrom: { secretKeyRef: { name: 's3-creds', key: 'secretAccessKey' } },
    });
    // No key is written into the Deployment itself.
    expect(JSON.stringify(deployment)).not.toContain('cluster-secret');
    // The keys the kubelet will put there.
    const core = kube().kubeConfig.makeApiClient(k8s.CoreV1Api);
    const secret = await core.readNamespacedSecret({ namespace: 'default', name: 's3-creds' });
    expect(
      Object.fromEntries(
        Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString()]),
      ),
    ).toEqual({ accessKeyId: 'cluster-key', secretAccessKey: 'cluster-secret' });
  });
});
