/**
 * The objects a Function owns, built from plain data: a Deployment of the runtime (or the
 * user's image), a ClusterIP Service, a NetworkPolicy that admits only the gateway, and a
 * ConfigMap for inline code. No I/O here.
 */
import { createHash } from 'node:crypto';
import type {
  V1ConfigMap,
  V1Container,
  V1Deployment,
  V1EnvVar,
  V1NetworkPolicy,
  V1OwnerReference,
  V1Service,
  V1Volume,
  V1VolumeMount,
} from '@kubernetes/client-node';
import {
  envDefaults,
  envNames,
  inlineCodeFile,
  runtimeEnv,
} from '../../../runtime/src/contract/index.js';
import { apiVersion, kind, type EddyFunction, type Runtime } from '../api/types.js';
import { mebibytes, parseQuantity } from '../api/quantity.js';

export interface DesiredSettings {
  /** The runtime image for each Node.js version. */
  runtimeImages: Record<Runtime, string>;
  /** Base URL of the gateway, such as http://eddy-gateway.eddy-system.svc:8080. */
  gatewayUrl: string;
  /** The namespace the gateway's pods (the operator's) run in. */
  gatewayNamespace: string;
  /** Labels that select the gateway's pods in that namespace: the only peers a function takes traffic from. */
  gatewayPodLabels: Record<string, string>;
  /**
   * The most CPU a function's container may use, when more than its request
   * (EDDY_FUNCTION_CPU_LIMIT): a quantity, 1 by default, or `request` for no headroom.
   */
  functionCpuLimit?: string;
}

export const fieldManager = 'eddy-operator';
export const functionLabel = 'eddy.dev/function';
export const codeHashAnnotation = 'eddy.dev/code-hash';
export const runtimePort = 8080;
export const codeDir = '/var/task';
/** As on Lambda: one vCPU for every 1769 MiB of memory. */
export const mebibytesPerVcpu = 1769;

/** The label every object the operator writes carries; the chart's admission policy requires it. */
export const managedByLabel = 'app.kubernetes.io/managed-by';

export function labels(fn: EddyFunction): Record<string, string> {
  return {
    'app.kubernetes.io/name': 'eddy-function',
    'app.kubernetes.io/instance': fn.metadata.name,
    'app.kubernetes.io/component': 'function',
    'app.kubernetes.io/part-of': 'eddy',
    [managedByLabel]: fieldManager,
    [functionLabel]: fn.metadata.name,
  };
}

export function ownerReference(fn: EddyFunction): V1OwnerReference {
  return {
    apiVersion,
    kind,
    name: fn.metadata.name,
    uid: fn.metadata.uid!,
    controller: true,
    blockOwnerDeletion: true,
  };
}

function meta(fn: EddyFunction, name: string) {
  return {
    name,
    namespace: fn.metadata.namespace,
    labels: labels(fn),
    ownerReferences: [ownerReference(fn)],
  };
}

export function codeConfigMapName(fn: EddyFunction): string {
  return `${fn.metadata.name}-code`;
}

/** CPU for a memory size, proportional as on Lambda, in millicores (rounded up). */
export function cpuFor(memory: string): string {
  return `${Math.ceil((mebibytes(memory) * 1000) / mebibytesPerVcpu)}m`;
}

/**
 * The most CPU a function's container may use: `ceiling` (one vCPU by default), or its `cpu`
 * when that is more; `request` for exactly its `cpu`. The request stays `cpu` (in proportion to
 * memory unless set): what the scheduler reserves and the share the kernel gives the function
 * when its node is busy. The headroom above it is what the node has idle, which a runtime
 * starting from zero needs most: held to 73m (128Mi), Node takes 0.7 to 0.9 s of throttled
 * time to answer its first invocation; with one vCPU, 70 to 80 ms.
 */
export function cpuCeiling(cpu: string, ceiling = '1'): string {
  if (ceiling === 'request') return cpu;
  const cores = parseQuantity(cpu);
  const most = parseQuantity(ceiling);
  return cores !== undefined && most !== undefined && cores >= most ? cpu : ceiling;
}

export function functionUrl(fn: EddyFunction, settings: DesiredSettings): string {
  return `${settings.gatewayUrl.replace(/\/$/, '')}/functions/${fn.metadata.namespace}/${fn.metadata.name}`;
}

/**
 * The ConfigMap holding inline code as the file its runtime loads (index.mjs, index.py or
 * bootstrap), or undefined when the code comes otherwise.
 */
export function desiredCodeConfigMap(fn: EddyFunction): V1ConfigMap | undefined {
  const inline = fn.spec.code?.inline;
  if (inline === undefined) return undefined;
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: meta(fn, codeConfigMapName(fn)),
    data: { [inlineCodeFile(fn.spec.runtime ?? envDefaults.runtime, fn.spec.handler)]: inline },
  };
}

export function desiredService(fn: EddyFunction): V1Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(fn, fn.metadata.name),
    spec: {
      type: 'ClusterIP',
      selector: { [functionLabel]: fn.metadata.name },
      ports: [{ name: 'http', port: runtimePort, targetPort: 'http', protocol: 'TCP' }],
    },
  };
}

/**
 * Ingress to the function's pods from the gateway's pods only, on the runtime's port. Nothing else
 * in the cluster (other functions included) reaches a function but through the gateway, where
 * invocations are authenticated and counted. Enforced only where the CNI plugin implements
 * NetworkPolicy.
 */
export function desiredNetworkPolicy(fn: EddyFunction, settings: DesiredSettings): V1NetworkPolicy {
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: meta(fn, fn.metadata.name),
    spec: {
      podSelector: { matchLabels: { [functionLabel]: fn.metadata.name } },
      policyTypes: ['Ingress'],
      ingress: [
        {
          // `from` on the wire: client-node's model renames the reserved word.
          _from: [
            {
              namespaceSelector: {
                matchLabels: { 'kubernetes.io/metadata.name': settings.gatewayNamespace },
              },
              podSelector: { matchLabels: { ...settings.gatewayPodLabels } },
            },
          ],
          ports: [{ protocol: 'TCP', port: runtimePort }],
        },
      ],
    },
  };
}

export function desiredDeployment(fn: EddyFunction, settings: DesiredSettings): V1Deployment {
  const spec = fn.spec;
  const memory = spec.memory ?? '128Mi';
  const memoryMb = mebibytes(memory);
  const timeoutSeconds = spec.timeoutSeconds ?? 3;
  const concurrency = spec.concurrency ?? 1;
  const cpu = spec.cpu ?? cpuFor(memory);
  const image = spec.image ?? settings.runtimeImages[spec.runtime ?? 'nodejs22'];

  // The Function's NODE_OPTIONS joins the heap flags (the CRD refuses the other names the
  // contract sets, and a name twice).
  const ownNodeOptions = spec.env?.find((e) => e.name === envNames.nodeOptions);
  const contract = runtimeEnv(
    {
      handler: spec.handler ?? 'index.handler',
      codeDir,
      functionName: fn.metadata.name,
      functionNamespace: fn.metadata.namespace,
      memoryMb,
      timeoutMs: timeoutSeconds * 1000,
      concurrency,
      port: runtimePort,
      runtime: spec.runtime,
    },
    ownNodeOptions?.value,
  );
  const env: V1EnvVar[] = [
    ...Object.entries(contract).map(([name, value]) => ({ name, value })),
    ...(spec.env ?? []).filter((e) => e !== ownNodeOptions),
  ];

  const volumes: V1Volume[] = [
    { name: 'tmp', emptyDir: { sizeLimit: spec.ephemeralStorage ?? '512Mi' } },
  ];
  const mounts: V1VolumeMount[] = [{ name: 'tmp', mountPath: '/tmp' }];
  const podAnnotations: Record<string, string> = {};
  if (spec.code) {
    const configMap =
      spec.code.inline !== undefined ? codeConfigMapName(fn) : spec.code.configMap!.name;
    volumes.push({
      name: 'code',
      // A provided Function's bootstrap is started as a program: the files are executable.
      configMap:
        spec.runtime === 'provided' ? { name: configMap, defaultMode: 0o755 } : { name: configMap },
    });
    mounts.push({ name: 'code', mountPath: codeDir, readOnly: true });
    // The runtime imports the code once at start: new inline code needs new pods.
    if (spec.code.inline !== undefined) {
      podAnnotations[codeHashAnnotation] = createHash('sha256')
        .update(spec.code.inline)
        .digest('hex')
        .slice(0, 16);
    }
  }

  const container: V1Container = {
    name: 'function',
    image,
    ports: [{ name: 'http', containerPort: runtimePort, protocol: 'TCP' }],
    env,
    ...(spec.envFrom?.length ? { envFrom: spec.envFrom } : {}),
    resources: {
      requests: { memory, cpu },
      limits: { memory, cpu: cpuCeiling(cpu, settings.functionCpuLimit) },
    },
    readinessProbe: {
      httpGet: { path: '/readyz', port: 'http' },
      periodSeconds: 1,
      failureThreshold: 1,
    },
    livenessProbe: {
      httpGet: { path: '/healthz', port: 'http' },
      periodSeconds: 10,
      failureThreshold: 3,
      timeoutSeconds: 5,
    },
    securityContext: {
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      runAsNonRoot: true,
      capabilities: { drop: ['ALL'] },
    },
    volumeMounts: mounts,
  };

  const labelSet = labels(fn);
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta(fn, fn.metadata.name),
    // No replicas: the scaler owns them (a new Deployment starts with one, proving the function runs).
    spec: {
      selector: { matchLabels: { [functionLabel]: fn.metadata.name } },
      revisionHistoryLimit: 3,
      template: {
        metadata: {
          labels: labelSet,
          ...(Object.keys(podAnnotations).length ? { annotations: podAnnotations } : {}),
        },
        spec: {
          containers: [container],
          volumes,
          // In-flight invocations finish on SIGTERM, up to the timeout; then a margin.
          terminationGracePeriodSeconds: timeoutSeconds + 15,
          automountServiceAccountToken: spec.serviceAccountName !== undefined,
          ...(spec.serviceAccountName ? { serviceAccountName: spec.serviceAccountName } : {}),
          enableServiceLinks: false,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: 1000,
            runAsGroup: 1000,
            fsGroup: 1000,
            seccompProfile: { type: 'RuntimeDefault' },
          },
        },
      },
    },
  };
}
