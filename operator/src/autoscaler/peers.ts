/**
 * In a cluster, the autoscaler adds up the load every gateway replica reports: the pods behind
 * the gateway's Service, found through its EndpointSlices, each asked for GET /functions.
 */
import { DiscoveryV1Api, type KubeConfig } from '@kubernetes/client-node';
import type { FunctionState } from '../gateway/app.js';
import { httpUrl } from '../platform/platform.js';
import { withSignal } from '../request-deadlines.js';
import type { LoadReport, LoadSource } from './load.js';

export interface PeersOptions {
  kc: KubeConfig;
  /** Namespace and name of the gateway's Service. */
  namespace: string;
  service: string;
  log: (message: string) => void;
  /** Longest wait for one replica's answer. */
  timeoutMs?: number;
  /** The URL of a gateway pod; tests map the fake pod IPs they publish to local ports. */
  endpointUrl?: (address: string, port: number) => string;
}

export function gatewayPeersLoad(o: PeersOptions): LoadSource {
  const discovery = o.kc.makeApiClient(DiscoveryV1Api);
  return async (signal) => {
    const slices = await discovery.listNamespacedEndpointSlice(
      { namespace: o.namespace, labelSelector: `kubernetes.io/service-name=${o.service}` },
      withSignal(signal),
    );
    const urls: string[] = [];
    for (const slice of slices.items) {
      const port = slice.ports?.find((p) => p.name === 'http')?.port ?? slice.ports?.[0]?.port;
      if (!port) continue;
      for (const e of slice.endpoints) {
        if (e.conditions?.ready === false) continue;
        for (const address of e.addresses.slice(0, 1)) {
          urls.push((o.endpointUrl ?? httpUrl)(address, port));
        }
      }
    }
    const authorization = await bearerOf(o.kc);
    const reports = await Promise.all(
      urls.map(async (url): Promise<LoadReport | undefined> => {
        try {
          const res = await fetch(`${url}/functions`, {
            // Gateways list only what the caller may get: the operator's own token sees all.
            ...(authorization ? { headers: { authorization } } : {}),
            signal: AbortSignal.any([signal, AbortSignal.timeout(o.timeoutMs ?? 1_500)]),
          });
          if (!res.ok) throw new Error(`HTTP ${res.status}`);
          const { functions } = (await res.json()) as { functions: FunctionState[] };
          const report: LoadReport = {};
          for (const f of functions) {
            report[`${f.namespace}/${f.name}`] = {
              inFlight: f.inFlight,
              queued: f.queued,
              concurrencySeconds: f.concurrencySeconds,
              requests: f.requests,
              ...(typeof f.burstReplicas === 'number' ? { burstReplicas: f.burstReplicas } : {}),
            };
          }
          return report;
        } catch (err) {
          // A replica that does not answer is named as missing: the others still count, and
          // the autoscaler scales nothing down while a report is missing.
          o.log(
            `gateway ${url} did not report its load: ${err instanceof Error ? err.message : String(err)}`,
          );
          return undefined;
        }
      }),
    );
    return {
      reports: reports.filter((r): r is LoadReport => r !== undefined),
      missing: urls.filter((_, i) => reports[i] === undefined),
    };
  };
}

/**
 * The `Authorization` header the KubeConfig's user sends the API server, when it is a bearer
 * token: in a pod, the projected service-account token, re-read as the client refreshes it.
 */
async function bearerOf(kc: KubeConfig): Promise<string | undefined> {
  const opts: { headers: Record<string, unknown> } = { headers: {} };
  await kc.applyToHTTPSOptions(opts);
  const v = opts.headers.Authorization ?? opts.headers.authorization;
  return typeof v === 'string' && /^Bearer /i.test(v) ? v : undefined;
}
