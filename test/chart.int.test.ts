/**
 * The Helm chart as users install it: `helm lint` clean, and `helm template` with the default
 * values and with every option set, each object accepted by a real API server (server-side dry
 * run, so admission and the schemas of its kinds apply). Values the chart's schema refuses are
 * refused by helm with the path.
 */
import * as k8s from '@kubernetes/client-node';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { parseMemoryBudget } from '../operator/src/gateway/budget.js';
import { goBinaries, goBinaryPath, projectRoot } from './harness/components.js';
import { startKube } from './harness/kube.js';
import { releaseNamespace } from './harness/operator.js';
import { run } from './harness/proc.js';
import { canRun, useComponent } from './harness/suite.js';
import { waitFor } from './harness/wait.js';

const chart = join(projectRoot, 'charts', 'eddy');
const helm = (...args: string[]) => run(goBinaryPath(goBinaries.helm), args, { timeoutMs: 60_000 });

/** Every option the chart has, set. */
const allOptions = `
operator:
  image: { repository: registry.example.com/eddy/operator, tag: '9.9.9', pullPolicy: Always }
  replicas: 3
  resources: { requests: { cpu: 200m, memory: 192Mi }, limits: { memory: 512Mi } }
  resyncSeconds: 300
  workers: 8
runtimeImage: registry.example.com/eddy/runtime:{runtime}
gateway:
  url: 'http://functions.example.com'
  auth: none
  tokenAudiences: [eddy-gateway, other]
  invokerRole: { create: false }
s3:
  webhook:
    arn: 'arn:minio:sqs:us-east-1:EDDY:webhook'
    token: 's3cret-token'
    tokenSecret: ''
    endpoint: 'http://minio.minio.svc:9000'
  stores:
    - { endpoint: 'http://store-b.storage.svc:9000', token: 'store-b-token' }
    - { endpoint: 'https://store-c.example.com', tokenSecret: { name: store-c, key: bearer } }
metrics:
  port: 9191
  serviceMonitor: { enabled: true, interval: 30s, labels: { release: prometheus } }
admissionPolicy: { enabled: true }
dashboard: { enabled: true, namespace: eddy-system, annotations: { grafana_folder: Eddy } }
`;

/** The Prometheus Operator's ServiceMonitor kind, as far as the API server needs to know it. */
const serviceMonitorCrd: k8s.V1CustomResourceDefinition = {
  apiVersion: 'apiextensions.k8s.io/v1',
  kind: 'CustomResourceDefinition',
  metadata: { name: 'servicemonitors.monitoring.coreos.com' },
  spec: {
    group: 'monitoring.coreos.com',
    scope: 'Namespaced',
    names: { plural: 'servicemonitors', singular: 'servicemonitor', kind: 'ServiceMonitor' },
    versions: [
      {
        name: 'v1',
        served: true,
        storage: true,
        schema: {
          openAPIV3Schema: { type: 'object', x_kubernetes_preserve_unknown_fields: true },
        },
      },
    ],
  },
};

describe.skipIf(!canRun('kube'))('the Helm chart', () => {
  const kube = useComponent(() => startKube());
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'eddy-chart-'));
    const kc = kube().kubeConfig;
    await kc
      .makeApiClient(k8s.CoreV1Api)
      .createNamespace({ body: { metadata: { name: releaseNamespace } } });
    await kc
      .makeApiClient(k8s.ApiextensionsV1Api)
      .createCustomResourceDefinition({ body: serviceMonitorCrd });
    // Served once established.
    const custom = kc.makeApiClient(k8s.CustomObjectsApi);
    await waitFor('the ServiceMonitor kind to be served', async () => {
      await custom.listClusterCustomObject({
        group: 'monitoring.coreos.com',
        version: 'v1',
        plural: 'servicemonitors',
      });
      return true;
    });
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('passes helm lint', async () => {
    const out = await helm('lint', chart);
    expect(out).toContain('0 chart(s) failed');
  });

  async function render(values?: string): Promise<k8s.KubernetesObject[]> {
    const args = ['template', 'eddy', chart, '--namespace', releaseNamespace];
    if (values) {
      const file = join(dir, `values-${Date.now()}.yaml`);
      await writeFile(file, values);
      args.push('--values', file);
    }
    return parseAllDocuments(await helm(...args))
      .map((d) => d.toJS() as k8s.KubernetesObject | null)
      .filter((o): o is k8s.KubernetesObject => o !== null);
  }

  async function dryRun(objects: k8s.KubernetesObject[]): Promise<string[]> {
    const api = k8s.KubernetesObjectApi.makeApiClient(kube().kubeConfig);
    const refused: string[] = [];
    for (const o of objects) {
      try {
        await api.create(o, undefined, 'All');
      } catch (err) {
        refused.push(
          `${o.kind} ${o.metadata?.name}: ${err instanceof Error ? err.message : String(err)}`,
        );
      }
    }
    return refused;
  }

  it('renders the default values into objects the API server accepts', async () => {
    const objects = await render();
    const kinds = objects.map((o) => `${o.kind}/${o.metadata?.name}`);
    expect(kinds).toEqual(
      expect.arrayContaining([
        'Deployment/eddy-operator',
        'Service/eddy-gateway',
        'Service/eddy-metrics',
        'ServiceAccount/eddy-operator',
        'ClusterRole/eddy-operator',
        'ClusterRole/eddy-invoker',
        'ConfigMap/eddy-dashboard',
      ]),
    );
    expect(kinds.some((k) => k.startsWith('ServiceMonitor/'))).toBe(false);
    // /metrics on a port of its own: the metrics Service exposes it, the gateway Service does not.
    const service = (name: string) =>
      objects.find((o) => o.kind === 'Service' && o.metadata?.name === name) as k8s.V1Service;
    expect(service('eddy-gateway').spec!.ports!.map((p) => p.targetPort)).toEqual(['http']);
    expect(service('eddy-metrics').spec!.ports).toEqual([
      { name: 'metrics', port: 9090, targetPort: 'metrics', protocol: 'TCP' },
    ]);
    const operatorPod = (objects.find((o) => o.kind === 'Deployment') as k8s.V1Deployment).spec!
      .template.spec!.containers[0]!;
    expect(operatorPod.ports).toContainEqual({
      name: 'metrics',
      containerPort: 9090,
      protocol: 'TCP',
    });
    expect(operatorPod.env!.find((e) => e.name === 'EDDY_METRICS_PORT')!.value).toBe('9090');
    // The operator's writes are confined to Eddy's objects.
    expect(kinds).toEqual(
      expect.arrayContaining([
        'ValidatingAdmissionPolicy/eddy-operator-writes',
        'ValidatingAdmissionPolicyBinding/eddy-operator-writes',
      ]),
    );
    const deployment = objects.find((o) => o.kind === 'Deployment') as k8s.V1Deployment;
    // Invocations are authenticated unless the values say otherwise.
    expect(
      deployment.spec!.template.spec!.containers[0]!.env!.find(
        (e) => e.name === 'EDDY_GATEWAY_AUTH',
      )!.value,
    ).toBe('kubernetes');
    // The gateway's memory budget, as the operator reads it: 64 MiB, well under the pod's limit.
    const budget = deployment.spec!.template.spec!.containers[0]!.env!.find(
      (e) => e.name === 'EDDY_GATEWAY_MEMORY_BUDGET',
    )!.value;
    expect(parseMemoryBudget(budget, 'EDDY_GATEWAY_MEMORY_BUDGET')).toBe(64 * 2 ** 20);
    // The image defaults to the chart's appVersion, not a placeholder.
    expect(deployment.spec!.template.spec!.containers[0]!.image).toBe('eddy/operator:0.1.0');
    expect(await dryRun(objects)).toEqual([]);
  });

  it('renders every option into objects the API server accepts', async () => {
    const objects = await render(allOptions);
    const kinds = objects.map((o) => `${o.kind}/${o.metadata?.name}`);
    expect(kinds).toEqual(
      expect.arrayContaining([
        'ServiceMonitor/eddy',
        'Secret/eddy-s3-webhook',
        'Secret/eddy-s3-stores',
        'ConfigMap/eddy-dashboard',
      ]),
    );
    const deployment = objects.find((o) => o.kind === 'Deployment') as k8s.V1Deployment;
    const container = deployment.spec!.template.spec!.containers[0]!;
    expect(container.image).toBe('registry.example.com/eddy/operator:9.9.9');
    expect(container.ports).toContainEqual({
      name: 'metrics',
      containerPort: 9191,
      protocol: 'TCP',
    });
    const monitor = objects.find((o) => o.kind === 'ServiceMonitor') as k8s.KubernetesObject & {
      spec: { endpoints: Array<{ port: string }> };
    };
    expect(monitor.spec.endpoints.map((e) => e.port)).toEqual(['metrics']);
    expect(container.env!.find((e) => e.name === 'EDDY_GATEWAY_AUTH')!.value).toBe('none');
    expect(container.env!.find((e) => e.name === 'EDDY_GATEWAY_TOKEN_AUDIENCES')!.value).toBe(
      'eddy-gateway,other',
    );
    expect(kinds).not.toContain('ClusterRole/eddy-invoker');
    expect(
      container.env!.find((e) => e.name === 'EDDY_S3_WEBHOOK_TOKEN')!.valueFrom!.secretKeyRef!.name,
    ).toBe('eddy-s3-webhook');
    const env = (name: string) => container.env!.find((e) => e.name === name);
    expect(env('EDDY_S3_WEBHOOK_ENDPOINT')!.value).toBe('http://minio.minio.svc:9000');
    expect(JSON.parse(env('EDDY_S3_STORES')!.value!)).toEqual([
      { endpoint: 'http://store-b.storage.svc:9000', tokenEnv: 'EDDY_S3_STORE_TOKEN_0' },
      { endpoint: 'https://store-c.example.com', tokenEnv: 'EDDY_S3_STORE_TOKEN_1' },
    ]);
    expect(env('EDDY_S3_STORE_TOKEN_0')!.valueFrom!.secretKeyRef).toMatchObject({
      name: 'eddy-s3-stores',
      key: 'token-0',
    });
    expect(env('EDDY_S3_STORE_TOKEN_1')!.valueFrom!.secretKeyRef).toMatchObject({
      name: 'store-c',
      key: 'bearer',
    });
    expect(await dryRun(objects)).toEqual([]);
  });

  it('refuses values its schema does not allow, naming the path', async () => {
    await expect(render('operator: { workers: 100 }\n')).rejects.toThrow(/operator\/workers/);
    await expect(render('operatr: {}\n')).rejects.toThrow(/operatr/);
    // Metrics on the gateway's port would be exposed by the gateway's Service.
    await expect(render('metrics: { port: 8080 }\n')).rejects.toThrow(/metrics\/port/);
    await expect(render('gateway: { auth: open }\n')).rejects.toThrow(/gateway\/auth/);
    await expect(render('gateway: { memoryBudget: lots }\n')).rejects.toThrow(
      /gateway\/memoryBudget/,
    );
    // A store's token without its endpoint: its records could not be told from another store's.
    await expect(render("s3: { webhook: { token: 't' } }\n")).rejects.toThrow(
      /s3.webhook.endpoint is not: set it/,
    );
  });
});
