/**
 * The Helm chart as users install it: `helm lint` clean, and `helm template` with the default
 * values and with every option set, each object accepted by a real API server (server-side dry
 * run, so admission and the schemas of its kinds apply). Values the chart's schema refuses are
 * refused by helm with the path. Each role's ServiceAccount is asked, on the API server, what
 * the chart's RBAC lets it do.
 */
import * as k8s from '@kubernetes/client-node';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { parseMemoryBudget } from '../operator/src/gateway/budget.js';
import { goBinaries, goBinaryPath, projectRoot } from './harness/components.js';
import { serviceAccountKubeConfig, startKube } from './harness/kube.js';
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
imagePullSecrets: [{ name: regcred }]
nodeSelector: { pool: system }
tolerations: [{ key: dedicated, operator: Exists, effect: NoSchedule }]
affinity:
  nodeAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 1
        preference: { matchExpressions: [{ key: zone, operator: In, values: [a] }] }
priorityClassName: eddy-critical
spreadOverNodes: true
gateway:
  url: 'http://functions.example.com'
  replicas: 4
  resources: { requests: { cpu: 300m, memory: 200Mi }, limits: { memory: 400Mi } }
  hpa: { enabled: true, minReplicas: 3, maxReplicas: 12, targetCPUUtilizationPercentage: 60 }
  pdb: { enabled: true, maxUnavailable: 2 }
  auth: none
  tokenAudiences: [eddy-gateway, other]
  invokerRole: { create: false }
queue:
  nats:
    url: ''
    credentialsSecret: ''
    install: true
    image: { repository: registry.example.com/nats, tag: '2.15.3-alpine', pullPolicy: Always }
    replicas: 3
    resources: { requests: { cpu: 200m, memory: 256Mi }, limits: { memory: 1Gi } }
    storage: { persistent: true, size: 20Gi, storageClassName: fast }
  stream: PHOTOS_EVENTS
  replicas: 0
  maxBytes: 8Gi
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

type Obj = k8s.KubernetesObject;
const find = <T extends Obj>(objects: Obj[], kind: string, name: string): T => {
  const found = objects.find((o) => o.kind === kind && o.metadata?.name === name);
  if (!found)
    throw new Error(
      `no ${kind} ${name} among ${objects.map((o) => `${o.kind}/${o.metadata?.name}`).join(', ')}`,
    );
  return found as T;
};
const deploymentOf = (objects: Obj[], name: string) =>
  find<k8s.V1Deployment>(objects, 'Deployment', name);
const containerOf = (objects: Obj[], name: string) =>
  deploymentOf(objects, name).spec!.template.spec!.containers[0]!;
const envOf = (objects: Obj[], name: string) => {
  const env = containerOf(objects, name).env ?? [];
  return (variable: string) => env.find((e) => e.name === variable);
};
/** Whether every `key=value` of a selector is among `labels`. */
const selects = (selector: Record<string, string>, labels: Record<string, string> | undefined) =>
  Object.entries(selector).every(([k, v]) => labels?.[k] === v);
const podLabels = (objects: Obj[], kind: string, name: string) =>
  find<k8s.V1Deployment>(objects, kind, name).spec!.template.metadata!.labels;
/** EDDY_GATEWAY_POD_LABELS as the operator reads it: key=value pairs separated by commas. */
const labelSet = (raw: string) =>
  Object.fromEntries(raw.split(',').map((pair) => pair.split('=') as [string, string]));
/** The variable Kubernetes gives a namespace's pods for a Service's cluster IP. */
const serviceHostVariable = (service: string) =>
  `${service.toUpperCase().replace(/-/g, '_')}_SERVICE_HOST`;

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

  async function render(values?: string, release = 'eddy'): Promise<Obj[]> {
    const args = ['template', release, chart, '--namespace', releaseNamespace];
    if (values) {
      const file = join(dir, `values-${Date.now()}.yaml`);
      await writeFile(file, values);
      args.push('--values', file);
    }
    return parseAllDocuments(await helm(...args))
      .map((d) => d.toJS() as Obj | null)
      .filter((o): o is Obj => o !== null);
  }

  /** What `helm install` prints after installing (NOTES.txt), without installing. */
  async function notes(values: string): Promise<string> {
    const file = join(dir, `notes-${Date.now()}.yaml`);
    await writeFile(file, values);
    const out = await helm(
      'install',
      'eddy',
      chart,
      '--namespace',
      releaseNamespace,
      '--dry-run',
      '--values',
      file,
      '--kubeconfig',
      kube().kubeconfigPath,
    );
    return out.slice(out.indexOf('NOTES:'));
  }

  async function dryRun(objects: Obj[]): Promise<string[]> {
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

  it('renders the default values into two Deployments of the one image, which the API server accepts', async () => {
    const objects = await render();
    const kinds = objects.map((o) => `${o.kind}/${o.metadata?.name}`);
    expect(kinds).toEqual(
      expect.arrayContaining([
        'Deployment/eddy-controller',
        'Deployment/eddy-gateway',
        'PodDisruptionBudget/eddy-gateway',
        'Service/eddy-gateway',
        'Service/eddy-metrics',
        'ServiceAccount/eddy-controller',
        'ServiceAccount/eddy-gateway',
        'ClusterRole/eddy-controller',
        'ClusterRole/eddy-gateway',
        'Role/eddy-controller-leader',
        'ClusterRole/eddy-invoker',
        'ConfigMap/eddy-dashboard',
      ]),
    );
    expect(kinds.filter((k) => k.startsWith('Deployment/'))).toHaveLength(2);
    // No NATS of its own, no HorizontalPodAutoscaler, no ServiceMonitor unless asked for.
    expect(
      kinds.some((k) => /^(StatefulSet|HorizontalPodAutoscaler|ServiceMonitor)\//.test(k)),
    ).toBe(false);
    const controller = deploymentOf(objects, 'eddy-controller');
    const gateway = deploymentOf(objects, 'eddy-gateway');
    expect(controller.spec!.replicas).toBe(2);
    expect(gateway.spec!.replicas).toBe(2);
    expect(controller.spec!.template.spec!.serviceAccountName).toBe('eddy-controller');
    expect(gateway.spec!.template.spec!.serviceAccountName).toBe('eddy-gateway');
    for (const name of ['eddy-controller', 'eddy-gateway']) {
      const container = containerOf(objects, name);
      // One image, defaulting to the chart's appVersion; the role chosen by EDDY_ROLE.
      expect(container.image).toBe('eddy/operator:0.1.0');
      expect(envOf(objects, name)('EDDY_ROLE')!.value).toBe(name.slice('eddy-'.length));
      expect(container.readinessProbe!.httpGet).toMatchObject({ path: '/readyz', port: 'http' });
      expect(container.livenessProbe!.httpGet).toMatchObject({ path: '/healthz', port: 'http' });
      expect(container.ports).toContainEqual({
        name: 'metrics',
        containerPort: 9090,
        protocol: 'TCP',
      });
      expect(envOf(objects, name)('EDDY_METRICS_PORT')!.value).toBe('9090');
      expect(container.resources!.limits).toEqual({ memory: '256Mi' });
      // No queue configured: events in memory, no NATS settings.
      expect(envOf(objects, name)('EDDY_NATS_URL')).toBeUndefined();
    }
    // Leader election is the controller's alone.
    const leaderBinding = find<k8s.V1RoleBinding>(objects, 'RoleBinding', 'eddy-controller-leader');
    expect(leaderBinding.subjects).toEqual([
      { kind: 'ServiceAccount', name: 'eddy-controller', namespace: releaseNamespace },
    ]);

    // Invocations reach the gateway's pods only; /metrics on a port of its own, from both.
    const service = (name: string) => find<k8s.V1Service>(objects, 'Service', name);
    expect(service('eddy-gateway').spec!.ports!.map((p) => p.targetPort)).toEqual(['http']);
    const gatewaySelector = service('eddy-gateway').spec!.selector!;
    expect(selects(gatewaySelector, podLabels(objects, 'Deployment', 'eddy-gateway'))).toBe(true);
    expect(selects(gatewaySelector, podLabels(objects, 'Deployment', 'eddy-controller'))).toBe(
      false,
    );
    expect(service('eddy-metrics').spec!.ports).toEqual([
      { name: 'metrics', port: 9090, targetPort: 'metrics', protocol: 'TCP' },
    ]);
    for (const name of ['eddy-gateway', 'eddy-controller']) {
      expect(
        selects(service('eddy-metrics').spec!.selector!, podLabels(objects, 'Deployment', name)),
      ).toBe(true);
    }
    // The PodDisruptionBudget covers the gateway's pods.
    const pdb = find<k8s.V1PodDisruptionBudget>(objects, 'PodDisruptionBudget', 'eddy-gateway');
    expect(pdb.spec!.maxUnavailable).toBe(1);
    expect(
      selects(pdb.spec!.selector!.matchLabels!, podLabels(objects, 'Deployment', 'eddy-gateway')),
    ).toBe(true);
    expect(
      selects(
        pdb.spec!.selector!.matchLabels!,
        podLabels(objects, 'Deployment', 'eddy-controller'),
      ),
    ).toBe(false);

    // Each Function's NetworkPolicy admits both Deployments' pods: the gateway delivers, the
    // controller invokes Kinesis batches.
    const admitted = labelSet(envOf(objects, 'eddy-controller')('EDDY_GATEWAY_POD_LABELS')!.value!);
    expect(selects(admitted, podLabels(objects, 'Deployment', 'eddy-gateway'))).toBe(true);
    expect(selects(admitted, podLabels(objects, 'Deployment', 'eddy-controller'))).toBe(true);
    expect(admitted['app.kubernetes.io/instance']).toBe('eddy');
    // The autoscaler reads the load of the pods behind the gateway's Service.
    expect(envOf(objects, 'eddy-controller')('EDDY_GATEWAY_SERVICE')!.value).toBe('eddy-gateway');
    // Function containers may use one vCPU above their share unless the values say otherwise.
    expect(envOf(objects, 'eddy-controller')('EDDY_FUNCTION_CPU_LIMIT')!.value).toBe('1');

    // The operator's writes are confined to Eddy's objects.
    expect(kinds).toEqual(
      expect.arrayContaining([
        'ValidatingAdmissionPolicy/eddy-operator-writes',
        'ValidatingAdmissionPolicyBinding/eddy-operator-writes',
        'ValidatingAdmissionPolicy/eddy-operator-scale',
      ]),
    );
    // Invocations are authenticated unless the values say otherwise; the gateway does that.
    expect(envOf(objects, 'eddy-gateway')('EDDY_GATEWAY_AUTH')!.value).toBe('kubernetes');
    // The S3 intake's tokens go to the gateway only.
    expect(envOf(objects, 'eddy-gateway')('EDDY_S3_WEBHOOK_TOKEN')).toBeDefined();
    expect(envOf(objects, 'eddy-controller')('EDDY_S3_WEBHOOK_TOKEN')).toBeUndefined();
    // The gateway's memory budget, as the operator reads it: 64 MiB, well under the pod's limit.
    const budget = envOf(objects, 'eddy-gateway')('EDDY_GATEWAY_MEMORY_BUDGET')!.value;
    expect(parseMemoryBudget(budget, 'EDDY_GATEWAY_MEMORY_BUDGET')).toBe(64 * 2 ** 20);
    expect(await dryRun(objects)).toEqual([]);
  });

  it("gives each role's ServiceAccount only the verbs its role needs, as the API server decides", async () => {
    // Installed for real under another release name, so that the API server's RBAC applies.
    const objects = (await render(undefined, 'rbac')).filter((o) =>
      [
        'ServiceAccount',
        'ClusterRole',
        'ClusterRoleBinding',
        'Role',
        'RoleBinding',
        'ValidatingAdmissionPolicy',
        'ValidatingAdmissionPolicyBinding',
      ].includes(o.kind!),
    );
    const api = k8s.KubernetesObjectApi.makeApiClient(kube().kubeConfig);
    for (const o of objects) {
      // eddy-invoker is cluster-wide and fixed: one release's is enough.
      if (o.metadata?.name === 'eddy-invoker') continue;
      await api.create(o);
    }
    const authorization = kube().kubeConfig.makeApiClient(k8s.AuthorizationV1Api);
    const may = async (
      account: string,
      verb: string,
      resource: string,
      options: { group?: string; subresource?: string; namespace?: string } = {},
    ) =>
      (
        await authorization.createSubjectAccessReview({
          body: {
            spec: {
              user: `system:serviceaccount:${releaseNamespace}:${account}`,
              groups: ['system:serviceaccounts', `system:serviceaccounts:${releaseNamespace}`],
              resourceAttributes: {
                verb,
                resource,
                group: options.group ?? '',
                subresource: options.subresource,
                namespace: options.namespace ?? 'photos',
              },
            },
          },
        })
      ).status!.allowed;
    const asked = async (account: string) => ({
      invocations: {
        tokenreviews: await may(account, 'create', 'tokenreviews', {
          group: 'authentication.k8s.io',
          namespace: '',
        }),
        subjectaccessreviews: await may(account, 'create', 'subjectaccessreviews', {
          group: 'authorization.k8s.io',
          namespace: '',
        }),
      },
      functions: {
        watch: await may(account, 'watch', 'functions', { group: 'eddy.dev' }),
        patch: await may(account, 'patch', 'functions', { group: 'eddy.dev' }),
        status: await may(account, 'patch', 'functions', {
          group: 'eddy.dev',
          subresource: 'status',
        }),
      },
      deployments: {
        watch: await may(account, 'watch', 'deployments', { group: 'apps' }),
        create: await may(account, 'create', 'deployments', { group: 'apps' }),
        patch: await may(account, 'patch', 'deployments', { group: 'apps' }),
        scale: await may(account, 'patch', 'deployments', { group: 'apps', subresource: 'scale' }),
      },
      endpointslices: await may(account, 'watch', 'endpointslices', {
        group: 'discovery.k8s.io',
      }),
      pods: {
        watch: await may(account, 'watch', 'pods'),
        create: await may(account, 'create', 'pods'),
        exec: await may(account, 'create', 'pods', { subresource: 'exec' }),
      },
      secrets: {
        get: await may(account, 'get', 'secrets'),
        list: await may(account, 'list', 'secrets'),
        // The Invoke API's access keys: in the release's namespace only.
        watchInRelease: await may(account, 'watch', 'secrets', { namespace: releaseNamespace }),
      },
      // The reconciler's caches of Eddy's Services, ConfigMaps and NetworkPolicies.
      caches: {
        services: await may(account, 'watch', 'services'),
        configmaps: await may(account, 'watch', 'configmaps'),
        networkpolicies: await may(account, 'watch', 'networkpolicies', {
          group: 'networking.k8s.io',
        }),
      },
      services: await may(account, 'create', 'services'),
      configmaps: await may(account, 'patch', 'configmaps'),
      networkpolicies: await may(account, 'create', 'networkpolicies', {
        group: 'networking.k8s.io',
      }),
      events: await may(account, 'create', 'events'),
      lease: {
        inRelease: await may(account, 'update', 'leases', {
          group: 'coordination.k8s.io',
          namespace: releaseNamespace,
        }),
        elsewhere: await may(account, 'update', 'leases', { group: 'coordination.k8s.io' }),
      },
    });
    expect(await asked('rbac-gateway')).toEqual({
      invocations: { tokenreviews: true, subjectaccessreviews: true },
      functions: { watch: true, patch: false, status: false },
      // Activation from zero: the scale of a Function's Deployment, nothing else of it.
      deployments: { watch: true, create: false, patch: false, scale: true },
      endpointslices: true,
      // Starting function pods, probed before the kubelet says ready; read only.
      pods: { watch: true, create: false, exec: false },
      secrets: { get: true, list: false, watchInRelease: true },
      // A gateway starts only the Functions and Deployments caches.
      caches: { services: false, configmaps: false, networkpolicies: false },
      services: false,
      configmaps: false,
      networkpolicies: false,
      events: false,
      lease: { inRelease: false, elsewhere: false },
    });
    expect(await asked('rbac-controller')).toEqual({
      invocations: { tokenreviews: false, subjectaccessreviews: false },
      functions: { watch: true, patch: true, status: true },
      deployments: { watch: true, create: true, patch: true, scale: true },
      endpointslices: true,
      pods: { watch: false, create: false, exec: false },
      secrets: { get: true, list: false, watchInRelease: false },
      caches: { services: true, configmaps: true, networkpolicies: true },
      services: true,
      configmaps: true,
      networkpolicies: true,
      events: true,
      lease: { inRelease: true, elsewhere: false },
    });
  });

  it("holds both roles' writes to Eddy's objects: neither may scale a Deployment that is not a Function's", async () => {
    // The previous test installed the release rbac's RBAC and admission policies.
    const admin = kube().kubeConfig;
    const plain: k8s.V1Deployment = {
      apiVersion: 'apps/v1',
      kind: 'Deployment',
      metadata: { name: 'plain', namespace: 'kube-system' },
      spec: {
        replicas: 1,
        selector: { matchLabels: { app: 'plain' } },
        template: {
          metadata: { labels: { app: 'plain' } },
          spec: { containers: [{ name: 'c', image: 'example.com/plain:1' }] },
        },
      },
    };
    const fn: k8s.V1Deployment = {
      ...plain,
      metadata: { name: 'thumbnail', namespace: releaseNamespace },
      spec: {
        ...plain.spec!,
        selector: { matchLabels: { 'eddy.dev/function': 'thumbnail' } },
        template: {
          ...plain.spec!.template,
          metadata: { labels: { 'eddy.dev/function': 'thumbnail' } },
        },
      },
    };
    const apps = admin.makeApiClient(k8s.AppsV1Api);
    await apps.createNamespacedDeployment({ namespace: 'kube-system', body: plain });
    await apps.createNamespacedDeployment({ namespace: releaseNamespace, body: fn });
    const scale = async (account: string, d: k8s.V1Deployment, replicas: number) => {
      const kc = await serviceAccountKubeConfig(kube(), releaseNamespace, account);
      try {
        await kc.makeApiClient(k8s.AppsV1Api).patchNamespacedDeploymentScale(
          {
            name: d.metadata!.name!,
            namespace: d.metadata!.namespace!,
            body: { spec: { replicas } },
          },
          k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
        );
        return 'allowed';
      } catch (err) {
        return err instanceof k8s.ApiException ? `${err.code} ${String(err.body)}` : String(err);
      }
    };
    for (const account of ['rbac-gateway', 'rbac-controller']) {
      // The API server loads a new policy a moment after it is written: wait until it refuses.
      const refused = await waitFor(`the scale policy to hold ${account}`, async () => {
        const answer = await scale(account, plain, 0);
        return answer === 'allowed' ? undefined : answer;
      });
      expect(refused).toMatch(
        /^403 .*the Eddy operator may scale only the Deployments of Functions .*deployments kube-system\/plain is not one/,
      );
      expect(await scale(account, fn, 2)).toBe('allowed');
    }
    // The controller's writes too: a ConfigMap that is not Eddy's.
    const kc = await serviceAccountKubeConfig(kube(), releaseNamespace, 'rbac-controller');
    const created = await kc
      .makeApiClient(k8s.CoreV1Api)
      .createNamespacedConfigMap({
        namespace: 'kube-system',
        body: { metadata: { name: 'not-eddys' } },
      })
      .then(
        () => 'allowed',
        (err: unknown) =>
          err instanceof k8s.ApiException ? `${err.code} ${String(err.body)}` : String(err),
      );
    expect(created).toMatch(
      /^403 .*may create only configmaps labelled app.kubernetes.io\/managed-by=eddy-operator/,
    );
  });

  it('renders queue.nats.install into a JetStream StatefulSet the operator pods are pointed at', async () => {
    const objects = await render(
      'queue: { nats: { install: true, replicas: 3, storage: { size: 5Gi, storageClassName: fast } } }\n',
    );
    const set = find<k8s.V1StatefulSet>(objects, 'StatefulSet', 'eddy-nats');
    expect(set.spec!.replicas).toBe(3);
    expect(set.spec!.serviceName).toBe('eddy-nats-headless');
    const container = set.spec!.template.spec!.containers[0]!;
    expect(container.image).toBe('nats:2.15.3-alpine');
    // Persistent by default: a claim per server, of the size and class asked for.
    expect(set.spec!.volumeClaimTemplates).toHaveLength(1);
    expect(set.spec!.volumeClaimTemplates![0]!.spec).toMatchObject({
      storageClassName: 'fast',
      resources: { requests: { storage: '5Gi' } },
    });
    expect(set.spec!.template.spec!.volumes!.some((v) => v.name === 'data')).toBe(false);
    // Three servers form a cluster: each routes to all, by their stable names.
    const conf = find<k8s.V1ConfigMap>(objects, 'ConfigMap', 'eddy-nats').data!['nats.conf']!;
    expect(conf).toMatch(/jetstream \{\s+store_dir: \/data\s+\}/);
    for (const i of [0, 1, 2]) {
      expect(conf).toContain(
        `nats://eddy-nats-${i}.eddy-nats-headless.${releaseNamespace}.svc:6222`,
      );
    }
    expect(find<k8s.V1Service>(objects, 'Service', 'eddy-nats-headless').spec!.clusterIP).toBe(
      'None',
    );
    const client = find<k8s.V1Service>(objects, 'Service', 'eddy-nats');
    expect(selects(client.spec!.selector!, set.spec!.template.metadata!.labels)).toBe(true);
    expect(client.spec!.ports!.map((p) => p.port)).toEqual([4222]);
    expect(
      find<k8s.V1PodDisruptionBudget>(objects, 'PodDisruptionBudget', 'eddy-nats').spec!
        .maxUnavailable,
    ).toBe(1);
    // NATS pods are not among those a Function's NetworkPolicy admits, nor scraped as Eddy's.
    const admitted = labelSet(envOf(objects, 'eddy-controller')('EDDY_GATEWAY_POD_LABELS')!.value!);
    expect(selects(admitted, set.spec!.template.metadata!.labels)).toBe(false);
    // Only Eddy's pods reach the client port, only the servers the routes.
    const policy = find<k8s.V1NetworkPolicy>(objects, 'NetworkPolicy', 'eddy-nats');
    expect(
      selects(policy.spec!.podSelector!.matchLabels!, set.spec!.template.metadata!.labels),
    ).toBe(true);
    const [clients, routes] = policy.spec!.ingress!;
    // Rendered YAML says `from` (the client's type names it `_from`).
    const from = (r: k8s.V1NetworkPolicyIngressRule | undefined) =>
      (r as unknown as { from: k8s.V1NetworkPolicyPeer[] }).from[0]!.podSelector!.matchLabels!;
    for (const name of ['eddy-controller', 'eddy-gateway']) {
      const pod = find<k8s.V1Deployment>(objects, 'Deployment', name).spec!.template.metadata!;
      expect(selects(from(clients), pod.labels)).toBe(true);
      expect(selects(from(routes), pod.labels)).toBe(false);
    }
    expect(clients!.ports).toEqual([{ port: 4222, protocol: 'TCP' }]);
    expect(routes!.ports).toEqual([{ port: 6222, protocol: 'TCP' }]);
    // Both Deployments reach it at its Service's cluster IP (the variables Kubernetes gives
    // every pod of the namespace), and keep the stream on all three servers.
    for (const name of ['eddy-controller', 'eddy-gateway']) {
      const env = envOf(objects, name);
      expect(env('EDDY_NATS_URL')!.value).toBe(
        `nats://$(${serviceHostVariable('eddy-nats')}):$(${serviceHostVariable('eddy-nats').replace(/HOST$/, 'PORT')})`,
      );
      expect(env('EDDY_QUEUE_STREAM')!.value).toBe('EDDY_EVENTS');
      expect(env('EDDY_QUEUE_REPLICAS')!.value).toBe('3');
      expect(env('EDDY_NATS_CREDS_FILE')).toBeUndefined();
    }
    expect(await dryRun(objects)).toEqual([]);

    // Not persistent: an emptyDir, no claims; one server, no cluster.
    const ephemeral = await render(
      'queue: { nats: { install: true, storage: { persistent: false } } }\n',
    );
    const one = find<k8s.V1StatefulSet>(ephemeral, 'StatefulSet', 'eddy-nats');
    expect(one.spec!.volumeClaimTemplates).toBeUndefined();
    expect(one.spec!.template.spec!.volumes).toContainEqual({
      name: 'data',
      emptyDir: { sizeLimit: '10Gi' },
    });
    expect(
      find<k8s.V1ConfigMap>(ephemeral, 'ConfigMap', 'eddy-nats').data!['nats.conf'],
    ).not.toContain('cluster');
    expect(envOf(ephemeral, 'eddy-gateway')('EDDY_QUEUE_REPLICAS')!.value).toBe('1');
    expect(
      ephemeral.some((o) => o.kind === 'PodDisruptionBudget' && o.metadata?.name === 'eddy-nats'),
    ).toBe(false);
    expect(await dryRun(ephemeral)).toEqual([]);
  });

  it('points both Deployments at an existing JetStream, its credentials mounted read-only', async () => {
    const objects = await render(
      "queue: { nats: { url: 'nats://nats-a.queue.svc:4222,nats://nats-b.queue.svc:4222', credentialsSecret: eddy-nats-creds }, stream: EVENTS, replicas: 3 }\n",
    );
    expect(objects.some((o) => o.kind === 'StatefulSet')).toBe(false);
    for (const name of ['eddy-controller', 'eddy-gateway']) {
      const env = envOf(objects, name);
      expect(env('EDDY_NATS_URL')!.value).toBe(
        'nats://nats-a.queue.svc:4222,nats://nats-b.queue.svc:4222',
      );
      expect(env('EDDY_QUEUE_STREAM')!.value).toBe('EVENTS');
      expect(env('EDDY_QUEUE_REPLICAS')!.value).toBe('3');
      const file = env('EDDY_NATS_CREDS_FILE')!.value!;
      const pod = deploymentOf(objects, name).spec!.template.spec!;
      const mount = pod.containers[0]!.volumeMounts!.find((m) =>
        file.startsWith(`${m.mountPath}/`),
      )!;
      expect(mount.readOnly).toBe(true);
      expect(pod.volumes!.find((v) => v.name === mount.name)!.secret).toEqual({
        secretName: 'eddy-nats-creds',
        items: [{ key: 'nats.creds', path: file.slice(mount.mountPath.length + 1) }],
      });
    }
    expect(await dryRun(objects)).toEqual([]);
  });

  it('says after installing where accepted events wait, and warns when only in memory', async () => {
    const memory = await notes('{}\n');
    expect(memory).toMatch(/WARNING: no queue\.nats\.url and no queue\.nats\.install/);
    expect(memory).toMatch(/live only in the memory of the gateway pod that took them/);
    const installed = await notes('queue: { nats: { install: true } }\n');
    expect(installed).not.toContain('WARNING: no queue.nats.url');
    expect(installed).toContain('NATS JetStream, installed as the StatefulSet eddy-nats');
    const external = await notes("queue: { nats: { url: 'nats://nats.queue.svc:4222' } }\n");
    expect(external).not.toContain('WARNING: no queue.nats.url');
    expect(external).toContain('NATS JetStream at nats://nats.queue.svc:4222');
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
        'HorizontalPodAutoscaler/eddy-gateway',
        'PodDisruptionBudget/eddy-gateway',
        'StatefulSet/eddy-nats',
      ]),
    );
    for (const name of ['eddy-controller', 'eddy-gateway']) {
      const container = containerOf(objects, name);
      expect(container.image).toBe('registry.example.com/eddy/operator:9.9.9');
      expect(container.imagePullPolicy).toBe('Always');
      expect(container.ports).toContainEqual({
        name: 'metrics',
        containerPort: 9191,
        protocol: 'TCP',
      });
      expect(envOf(objects, name)('EDDY_QUEUE_STREAM')!.value).toBe('PHOTOS_EVENTS');
      expect(envOf(objects, name)('EDDY_QUEUE_REPLICAS')!.value).toBe('3');
      expect(envOf(objects, name)('EDDY_QUEUE_MAX_BYTES')!.value).toBe('8Gi');
    }
    // Where the chart's pods run: the same for each, and each spread over nodes on its own.
    const nats = find<k8s.V1StatefulSet>(objects, 'StatefulSet', 'eddy-nats');
    for (const [name, pod] of [
      ['controller', deploymentOf(objects, 'eddy-controller').spec!.template.spec!],
      ['gateway', deploymentOf(objects, 'eddy-gateway').spec!.template.spec!],
      ['nats', nats.spec!.template.spec!],
    ] as const) {
      expect(pod.imagePullSecrets).toEqual([{ name: 'regcred' }]);
      expect(pod.nodeSelector).toEqual({ pool: 'system' });
      expect(pod.tolerations).toEqual([
        { key: 'dedicated', operator: 'Exists', effect: 'NoSchedule' },
      ]);
      expect(pod.affinity?.nodeAffinity).toBeDefined();
      expect(pod.priorityClassName).toBe('eddy-critical');
      expect(pod.topologySpreadConstraints).toEqual([
        {
          maxSkew: 1,
          topologyKey: 'kubernetes.io/hostname',
          whenUnsatisfiable: 'ScheduleAnyway',
          labelSelector: {
            matchLabels: {
              'app.kubernetes.io/instance': 'eddy',
              'app.kubernetes.io/component': name,
            },
          },
        },
      ]);
    }
    // operator.* is the controller's; gateway.* the gateway's.
    expect(deploymentOf(objects, 'eddy-controller').spec!.replicas).toBe(3);
    expect(containerOf(objects, 'eddy-controller').resources!.limits).toEqual({ memory: '512Mi' });
    expect(envOf(objects, 'eddy-controller')('EDDY_WORKERS')!.value).toBe('8');
    expect(containerOf(objects, 'eddy-gateway').resources!.limits).toEqual({ memory: '400Mi' });
    // With the HorizontalPodAutoscaler, it alone sets the gateway's replicas.
    expect(deploymentOf(objects, 'eddy-gateway').spec!.replicas).toBeUndefined();
    const hpa = find<k8s.V2HorizontalPodAutoscaler>(
      objects,
      'HorizontalPodAutoscaler',
      'eddy-gateway',
    );
    expect(hpa.spec).toMatchObject({
      scaleTargetRef: { apiVersion: 'apps/v1', kind: 'Deployment', name: 'eddy-gateway' },
      minReplicas: 3,
      maxReplicas: 12,
      metrics: [
        {
          type: 'Resource',
          resource: { name: 'cpu', target: { type: 'Utilization', averageUtilization: 60 } },
        },
      ],
    });
    expect(
      find<k8s.V1PodDisruptionBudget>(objects, 'PodDisruptionBudget', 'eddy-gateway').spec!
        .maxUnavailable,
    ).toBe(2);
    expect(nats.spec!.template.spec!.containers[0]!.image).toBe(
      'registry.example.com/nats:2.15.3-alpine',
    );
    const monitor = objects.find((o) => o.kind === 'ServiceMonitor') as Obj & {
      spec: { endpoints: Array<{ port: string }> };
    };
    expect(monitor.spec.endpoints.map((e) => e.port)).toEqual(['metrics']);
    const env = envOf(objects, 'eddy-gateway');
    expect(env('EDDY_GATEWAY_AUTH')!.value).toBe('none');
    expect(env('EDDY_GATEWAY_TOKEN_AUDIENCES')!.value).toBe('eddy-gateway,other');
    expect(kinds).not.toContain('ClusterRole/eddy-invoker');
    expect(env('EDDY_S3_WEBHOOK_TOKEN')!.valueFrom!.secretKeyRef!.name).toBe('eddy-s3-webhook');
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
    // A token changed in the values rolls the gateway's pods, which read it at start.
    const tokensOf = (o: Obj[]) =>
      deploymentOf(o, 'eddy-gateway').spec!.template.metadata!.annotations!['checksum/s3-tokens'];
    const rotated = await render(allOptions.replace('s3cret-token', 'n3w-token'));
    expect(tokensOf(rotated)).toMatch(/^[0-9a-f]{16}$/);
    expect(tokensOf(rotated)).not.toBe(tokensOf(objects));
    expect(await dryRun(objects)).toEqual([]);
  });

  it('refuses values its schema does not allow, naming the path', async () => {
    await expect(render('operator: { workers: 100 }\n')).rejects.toThrow(/operator\/workers/);
    await expect(render('operatr: {}\n')).rejects.toThrow(/operatr/);
    // Metrics on the gateway's port would be exposed by the gateway's Service.
    await expect(render('metrics: { port: 8080 }\n')).rejects.toThrow(/metrics\/port/);
    await expect(render('gateway: { auth: open }\n')).rejects.toThrow(/gateway\/auth/);
    await expect(render('functionCpuLimit: lots\n')).rejects.toThrow(/functionCpuLimit/);
    // Out of the operator's range (10m to 64): refused at install, not by a controller that
    // then cannot start.
    await expect(render("functionCpuLimit: '5m'\n")).rejects.toThrow(/functionCpuLimit/);
    await expect(render("functionCpuLimit: '100'\n")).rejects.toThrow(/functionCpuLimit/);
    await expect(render('gateway: { memoryBudget: lots }\n')).rejects.toThrow(
      /gateway\/memoryBudget/,
    );
    await expect(render('gateway: { replicas: 0 }\n')).rejects.toThrow(/gateway\/replicas/);
    await expect(render("queue: { nats: { url: 'http://nats:4222' } }\n")).rejects.toThrow(
      /queue\/nats\/url/,
    );
    await expect(render('queue: { maxBytes: plenty }\n')).rejects.toThrow(/queue\/maxBytes/);
    // Two NATS servers stop when one is down: a quorum needs a majority.
    await expect(render('queue: { nats: { install: true, replicas: 2 } }\n')).rejects.toThrow(
      /queue\/nats\/replicas/,
    );
    // A store's token without its endpoint: its records could not be told from another store's.
    await expect(render("s3: { webhook: { token: 't' } }\n")).rejects.toThrow(
      /s3.webhook.endpoint is not: set it/,
    );
    // Two queues at once: which one holds the events?
    await expect(
      render("queue: { nats: { install: true, url: 'nats://nats.queue.svc:4222' } }\n"),
    ).rejects.toThrow(/queue.nats.install is true and queue.nats.url is set/);
    // A CPU target without a CPU request means nothing.
    await expect(
      render('gateway: { hpa: { enabled: true }, resources: { requests: null } }\n'),
    ).rejects.toThrow(/gateway.hpa.enabled needs gateway.resources.requests.cpu/);
    await expect(
      render('gateway: { hpa: { enabled: true, minReplicas: 5, maxReplicas: 2 } }\n'),
    ).rejects.toThrow(/gateway.hpa.minReplicas \(5\) is more than gateway.hpa.maxReplicas \(2\)/);
  });
});
