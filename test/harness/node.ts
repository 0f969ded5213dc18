/**
 * Plays the node for the data-path tests, since the harness runs no kubelet: for every Function
 * Deployment in a namespace it keeps as many real runtime processes as `spec.replicas` asks
 * (the code read from the Function's code ConfigMap, as the pod would mount it), and publishes
 * the ready ones in an EndpointSlice, as the EndpointSlice controller would, under fake pod IPs
 * (the API server refuses loopback addresses) that `endpointUrl` maps to the runtimes' ports.
 */
import * as k8s from '@kubernetes/client-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { defaultEndpointUrl } from '../../operator/src/platform/kubernetes.js';
import { startRuntime, waitForReadyz, type Runtime } from './runtime.js';

interface Pod {
  name: string;
  ip: string;
  runtime: Runtime;
  /** Out of the slice, not yet stopped: still running, as a terminating pod is. */
  terminating?: boolean;
}

export interface TestNode {
  /** The platform's seam: a fake pod IP to the runtime playing that pod. */
  endpointUrl(address: string, port: number): string;
  /** Most replicas each Deployment asked for since the node started. */
  maxReplicas: Map<string, number>;
  /** Runtime processes running per Deployment now, terminating ones included. */
  running(name: string): number;
  logs: string[];
  stop(): Promise<void>;
}

export function startTestNode(admin: k8s.KubeConfig, namespace: string): TestNode {
  const apps = admin.makeApiClient(k8s.AppsV1Api);
  const core = admin.makeApiClient(k8s.CoreV1Api);
  const discovery = admin.makeApiClient(k8s.DiscoveryV1Api);
  const pods = new Map<string, Pod[]>();
  const urls = new Map<string, string>();
  const maxReplicas = new Map<string, number>();
  const logs: string[] = [];
  let nextIp = 10;
  let stopped = false;

  const publish = async (name: string) => {
    const svc = await core.readNamespacedService({ name, namespace });
    const body: k8s.V1EndpointSlice = {
      metadata: {
        name: `${name}-node`,
        namespace,
        labels: {
          ...svc.metadata!.labels,
          'kubernetes.io/service-name': name,
          'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io',
        },
      },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: (pods.get(name) ?? [])
        .filter((p) => !p.terminating)
        .map((p) => ({
          addresses: [p.ip],
          conditions: { ready: true, serving: true, terminating: false },
          targetRef: { kind: 'Pod', name: p.name, namespace },
        })),
    };
    try {
      const live = await discovery.readNamespacedEndpointSlice({ name: `${name}-node`, namespace });
      body.metadata!.resourceVersion = live.metadata!.resourceVersion;
      await discovery.replaceNamespacedEndpointSlice({ name: `${name}-node`, namespace, body });
    } catch (err) {
      if (!(err instanceof k8s.ApiException && err.code === 404)) throw err;
      await discovery.createNamespacedEndpointSlice({ namespace, body });
    }
  };

  const startPod = async (d: k8s.V1Deployment): Promise<Pod> => {
    const name = d.metadata!.name!;
    const code = await core.readNamespacedConfigMap({ name: `${name}-code`, namespace });
    const env = Object.fromEntries(
      d
        .spec!.template.spec!.containers[0]!.env!.filter(
          (e) => e.value !== undefined && !['PORT', 'EDDY_CODE_DIR'].includes(e.name),
        )
        .map((e) => [e.name, e.value!]),
    );
    const runtime = await startRuntime(code.data ?? {}, env);
    await waitForReadyz(runtime.url, 200);
    const ip = `10.244.0.${nextIp++}`;
    urls.set(ip, runtime.url);
    return { name: `${name}-pod-${ip.split('.').pop()}`, ip, runtime };
  };

  const loop = (async () => {
    while (!stopped) {
      try {
        const list = await apps.listNamespacedDeployment({
          namespace,
          labelSelector: 'app.kubernetes.io/managed-by=eddy-operator',
        });
        for (const d of list.items) {
          const name = d.metadata!.name!;
          const want = d.spec!.replicas ?? 1;
          maxReplicas.set(name, Math.max(maxReplicas.get(name) ?? 0, want));
          const have = pods.get(name) ?? [];
          const live = have.filter((p) => !p.terminating);
          if (want > live.length) {
            have.push(await startPod(d));
            pods.set(name, have);
            logs.push(`${name}: started a pod (${have.length}/${want})`);
            await publish(name);
          } else if (want < live.length) {
            const gone = live[live.length - 1]!;
            // Out of the slice first, then stopped, as a terminating pod leaves its endpoints.
            gone.terminating = true;
            await publish(name);
            await gone.runtime.stop();
            have.splice(have.indexOf(gone), 1);
            logs.push(`${name}: stopped a pod (${have.length}/${want})`);
          }
        }
      } catch (err) {
        logs.push(`node: ${err instanceof Error ? err.message : String(err)}`);
      }
      await sleep(50);
    }
  })();

  return {
    endpointUrl: (address, port) => urls.get(address) ?? defaultEndpointUrl(address, port),
    maxReplicas,
    running: (name) => pods.get(name)?.length ?? 0,
    logs,
    async stop() {
      stopped = true;
      await loop;
      for (const list of pods.values()) for (const p of list) await p.runtime.stop();
    },
  };
}
