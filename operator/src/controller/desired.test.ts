import { describe, expect, it } from 'vitest';
import type { EddyFunction, FunctionSpec } from '../api/types.js';
import {
  cpuCeiling,
  cpuFor,
  desiredCodeConfigMap,
  desiredDeployment,
  desiredNetworkPolicy,
  desiredService,
  functionUrl,
  type DesiredSettings,
} from './desired.js';

const settings: DesiredSettings = {
  runtimeImages: {
    nodejs20: 'rt:20',
    nodejs22: 'rt:22',
    nodejs24: 'rt:24',
    'python3.11': 'rt:python3.11',
    java17: 'rt:java17',
    provided: 'rt:provided',
  },
  gatewayUrl: 'http://gw.eddy-system.svc:8080/',
  gatewayNamespace: 'eddy-system',
  gatewayPodLabels: {
    'app.kubernetes.io/instance': 'eddy',
    'app.kubernetes.io/component': 'operator',
  },
};

const fn = (spec: FunctionSpec): EddyFunction => ({
  apiVersion: 'eddy.dev/v1alpha1',
  kind: 'Function',
  metadata: { name: 'thumb', namespace: 'photos', uid: 'u-1', generation: 1 },
  spec,
});

const container = (spec: FunctionSpec) =>
  desiredDeployment(fn(spec), settings).spec!.template.spec!.containers[0]!;
const env = (spec: FunctionSpec) =>
  Object.fromEntries(container(spec).env!.map((e) => [e.name, e.value]));

describe('cpuFor', () => {
  it('gives one vCPU per 1769Mi, rounded up to a millicore', () => {
    expect(cpuFor('1769Mi')).toBe('1000m');
    expect(cpuFor('128Mi')).toBe('73m');
    expect(cpuFor('10Gi')).toBe('5789m');
  });
});

describe('desiredDeployment', () => {
  it('runs the runtime image of the chosen Node.js version with the env contract', () => {
    expect(container({ code: { inline: 'x' } }).image).toBe('rt:22');
    expect(container({ code: { inline: 'x' }, runtime: 'nodejs24' }).image).toBe('rt:24');
    expect(container({ image: 'me/fn:1' }).image).toBe('me/fn:1');
    expect(
      env({
        code: { inline: 'x' },
        memory: '1Gi',
        timeoutSeconds: 60,
        concurrency: 4,
        handler: 'src/app.main',
      }),
    ).toEqual({
      EDDY_HANDLER: 'src/app.main',
      EDDY_CODE_DIR: '/var/task',
      EDDY_FUNCTION_NAME: 'thumb',
      EDDY_FUNCTION_NAMESPACE: 'photos',
      EDDY_MEMORY_MB: '1024',
      EDDY_TIMEOUT_MS: '60000',
      EDDY_CONCURRENCY: '4',
      PORT: '8080',
      EDDY_RUNTIME: 'nodejs22',
      NODE_OPTIONS: '--max-old-space-size=822 --max-semi-space-size=16',
    });
  });

  it("joins the Function's NODE_OPTIONS to the heap flags, in one variable", () => {
    const variables = container({
      code: { inline: 'x' },
      memory: '1Gi',
      env: [
        { name: 'A', value: '1' },
        { name: 'NODE_OPTIONS', value: '--enable-source-maps' },
      ],
    }).env!;
    expect(variables.filter((e) => e.name === 'NODE_OPTIONS')).toEqual([
      {
        name: 'NODE_OPTIONS',
        value: '--max-old-space-size=822 --max-semi-space-size=16 --enable-source-maps',
      },
    ]);
    expect(variables.at(-1)).toEqual({ name: 'A', value: '1' });
    // A runtime behind the Runtime API sets no heap flags: the Function's alone.
    expect(
      env({
        code: { inline: 'x' },
        runtime: 'python3.11',
        env: [{ name: 'NODE_OPTIONS', value: '--trace-warnings' }],
      }).NODE_OPTIONS,
    ).toBe('--trace-warnings');
  });

  it('sets memory request and limit alike; CPU requested in proportion unless overridden, up to one vCPU or more', () => {
    expect(container({ code: { inline: 'x' }, memory: '512Mi' }).resources).toEqual({
      requests: { memory: '512Mi', cpu: '290m' },
      limits: { memory: '512Mi', cpu: '1' },
    });
    expect(container({ code: { inline: 'x' }, memory: '4096Mi' }).resources).toEqual({
      requests: { memory: '4096Mi', cpu: '2316m' },
      limits: { memory: '4096Mi', cpu: '2316m' },
    });
    expect(container({ code: { inline: 'x' }, memory: '512Mi', cpu: '2' }).resources).toEqual({
      requests: { memory: '512Mi', cpu: '2' },
      limits: { memory: '512Mi', cpu: '2' },
    });
    expect(container({ code: { inline: 'x' }, memory: '128Mi', cpu: '250m' }).resources).toEqual({
      requests: { memory: '128Mi', cpu: '250m' },
      limits: { memory: '128Mi', cpu: '1' },
    });
  });

  it('caps CPU at one vCPU, or at the request when that is more', () => {
    expect(cpuCeiling('73m')).toBe('1');
    expect(cpuCeiling('1')).toBe('1');
    expect(cpuCeiling('1000m')).toBe('1000m');
    expect(cpuCeiling('1.5')).toBe('1.5');
    expect(cpuCeiling('16')).toBe('16');
  });

  it('caps CPU at the operator’s setting: a quantity, or the request itself', () => {
    expect(cpuCeiling('73m', '500m')).toBe('500m');
    expect(cpuCeiling('2', '500m')).toBe('2');
    expect(cpuCeiling('73m', 'request')).toBe('73m');
    const limited = desiredDeployment(fn({ code: { inline: 'x' } }), {
      ...settings,
      functionCpuLimit: 'request',
    }).spec!.template.spec!.containers[0]!.resources;
    expect(limited).toEqual({
      requests: { memory: '128Mi', cpu: '73m' },
      limits: { memory: '128Mi', cpu: '73m' },
    });
  });

  it('adds the user env after the contract, and envFrom', () => {
    const c = container({
      code: { inline: 'x' },
      env: [{ name: 'A', value: '1' }],
      envFrom: [{ secretRef: { name: 's' } }],
    });
    expect(c.env!.at(-1)).toEqual({ name: 'A', value: '1' });
    expect(c.envFrom).toEqual([{ secretRef: { name: 's' } }]);
  });

  it('mounts inline code from its ConfigMap and rolls pods when it changes', () => {
    const a = desiredDeployment(fn({ code: { inline: 'one' } }), settings).spec!.template;
    const b = desiredDeployment(fn({ code: { inline: 'two' } }), settings).spec!.template;
    expect(a.spec!.volumes).toContainEqual({ name: 'code', configMap: { name: 'thumb-code' } });
    expect(a.metadata!.annotations!['eddy.dev/code-hash']).not.toBe(
      b.metadata!.annotations!['eddy.dev/code-hash'],
    );
    const fromMap = desiredDeployment(fn({ code: { configMap: { name: 'mine' } } }), settings).spec!
      .template.spec!;
    expect(fromMap.volumes).toContainEqual({ name: 'code', configMap: { name: 'mine' } });
    const image = desiredDeployment(fn({ image: 'me/fn:1' }), settings).spec!.template.spec!;
    expect(image.volumes!.map((v) => v.name)).toEqual(['tmp']);
    // A provided Function's bootstrap is started as a program.
    for (const code of [{ inline: 'x' }, { configMap: { name: 'mine' } }]) {
      const pod = desiredDeployment(fn({ runtime: 'provided', code }), settings).spec!.template;
      expect(pod.spec!.volumes!.find((v) => v.name === 'code')!.configMap!.defaultMode).toBe(0o755);
    }
  });

  it('locks the pod down and gives it a service-account token only with an execution role', () => {
    const pod = desiredDeployment(
      fn({ code: { inline: 'x' }, ephemeralStorage: '2Gi', timeoutSeconds: 900 }),
      settings,
    ).spec!.template.spec!;
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.serviceAccountName).toBeUndefined();
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 1000 });
    expect(pod.containers[0]!.securityContext).toMatchObject({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ['ALL'] },
    });
    expect(pod.volumes![0]).toEqual({ name: 'tmp', emptyDir: { sizeLimit: '2Gi' } });
    expect(pod.terminationGracePeriodSeconds).toBe(915);
    const withRole = desiredDeployment(
      fn({ code: { inline: 'x' }, serviceAccountName: 'thumb' }),
      settings,
    ).spec!.template.spec!;
    expect(withRole).toMatchObject({
      automountServiceAccountToken: true,
      serviceAccountName: 'thumb',
    });
  });

  it('never sets replicas (the scaler owns them) and is owned by the Function', () => {
    const d = desiredDeployment(fn({ code: { inline: 'x' } }), settings);
    expect(d.spec!.replicas).toBeUndefined();
    expect(d.metadata!.ownerReferences).toEqual([
      {
        apiVersion: 'eddy.dev/v1alpha1',
        kind: 'Function',
        name: 'thumb',
        uid: 'u-1',
        controller: true,
        blockOwnerDeletion: true,
      },
    ]);
    expect(d.metadata!.labels).toMatchObject({
      'app.kubernetes.io/instance': 'thumb',
      'eddy.dev/function': 'thumb',
    });
  });

  it('is a pure function of its input', () => {
    const spec: FunctionSpec = { code: { inline: 'x' }, env: [{ name: 'A', value: '1' }] };
    expect(desiredDeployment(fn(spec), settings)).toEqual(
      desiredDeployment(fn(structuredClone(spec)), settings),
    );
  });
});

describe('the other children', () => {
  it('gives every Function a ClusterIP Service on its pods', () => {
    expect(desiredService(fn({ image: 'x' })).spec).toEqual({
      type: 'ClusterIP',
      selector: { 'eddy.dev/function': 'thumb' },
      ports: [{ name: 'http', port: 8080, targetPort: 'http', protocol: 'TCP' }],
    });
  });

  it('makes a code ConfigMap only for inline code, as the file its runtime loads', () => {
    const data = (spec: FunctionSpec) => desiredCodeConfigMap(fn(spec))!.data;
    expect(data({ code: { inline: 'src' } })).toEqual({ 'index.mjs': 'src' });
    expect(data({ runtime: 'nodejs24', code: { inline: 'src' } })).toEqual({ 'index.mjs': 'src' });
    expect(data({ runtime: 'python3.11', code: { inline: 'src' } })).toEqual({ 'index.py': 'src' });
    expect(data({ runtime: 'provided', code: { inline: 'src' } })).toEqual({ bootstrap: 'src' });
    // Named by the handler's module, as Lambda's console names the file.
    expect(data({ handler: 'app.handler', code: { inline: 'src' } })).toEqual({ 'app.mjs': 'src' });
    expect(
      data({
        runtime: 'python3.11',
        handler: 'lambda_function.lambda_handler',
        code: { inline: 'src' },
      }),
    ).toEqual({ 'lambda_function.py': 'src' });
    // A module in a folder cannot be one inline file: index, as before.
    expect(data({ handler: 'src/app.handler', code: { inline: 'src' } })).toEqual({
      'index.mjs': 'src',
    });
    expect(desiredCodeConfigMap(fn({ image: 'x' }))).toBeUndefined();
  });

  it('builds the URL from the gateway', () => {
    expect(functionUrl(fn({ image: 'x' }), settings)).toBe(
      'http://gw.eddy-system.svc:8080/functions/photos/thumb',
    );
  });

  it('admits traffic to the pods only from the gateway pods in its namespace, on the runtime port', () => {
    const policy = desiredNetworkPolicy(fn({ image: 'x' }), settings);
    expect(policy.apiVersion).toBe('networking.k8s.io/v1');
    expect(policy.spec).toEqual({
      podSelector: { matchLabels: { 'eddy.dev/function': 'thumb' } },
      policyTypes: ['Ingress'],
      ingress: [
        {
          // One peer with both selectors: those pods in that namespace (two peers would admit
          // any pod of the namespace, and pods so labelled anywhere).
          _from: [
            {
              namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'eddy-system' } },
              podSelector: {
                matchLabels: {
                  'app.kubernetes.io/instance': 'eddy',
                  'app.kubernetes.io/component': 'operator',
                },
              },
            },
          ],
          ports: [{ protocol: 'TCP', port: 8080 }],
        },
      ],
    });
    // Its pod selector is the Deployment's: the policy covers exactly the function's pods.
    expect(policy.spec!.podSelector).toEqual(
      desiredDeployment(fn({ image: 'x' }), settings).spec!.selector,
    );
  });

  it('gives every child the owner reference and the label the admission policy requires', () => {
    const f = fn({ code: { inline: 'x' } });
    for (const child of [
      desiredDeployment(f, settings),
      desiredService(f),
      desiredNetworkPolicy(f, settings),
      desiredCodeConfigMap(f)!,
    ]) {
      expect(child.metadata!.namespace).toBe('photos');
      expect(child.metadata!.labels!['app.kubernetes.io/managed-by']).toBe('eddy-operator');
      expect(child.metadata!.ownerReferences).toEqual([
        {
          apiVersion: 'eddy.dev/v1alpha1',
          kind: 'Function',
          name: 'thumb',
          uid: 'u-1',
          controller: true,
          blockOwnerDeletion: true,
        },
      ]);
    }
  });
});
