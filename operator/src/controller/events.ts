/** Kubernetes Events on a Function, for `kubectl describe fn` and `kubectl get events`. */
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import type { EddyFunction } from '../api/types.js';

export type EventType = 'Normal' | 'Warning';

export interface Recorder {
  event(fn: EddyFunction, type: EventType, reason: string, message: string): void;
}

export function eventRecorder(
  kc: KubeConfig,
  identity: string,
  log: (m: string) => void,
): Recorder {
  const api = kc.makeApiClient(CoreV1Api);
  return {
    event(fn, type, reason, message) {
      const now = new Date();
      api
        .createNamespacedEvent({
          namespace: fn.metadata.namespace,
          body: {
            metadata: { generateName: `${fn.metadata.name}.`, namespace: fn.metadata.namespace },
            involvedObject: {
              apiVersion: fn.apiVersion,
              kind: fn.kind,
              name: fn.metadata.name,
              namespace: fn.metadata.namespace,
              uid: fn.metadata.uid,
              resourceVersion: fn.metadata.resourceVersion,
            },
            type,
            reason,
            message,
            source: { component: 'eddy-operator' },
            reportingComponent: 'eddy.dev/operator',
            reportingInstance: identity,
            firstTimestamp: now,
            lastTimestamp: now,
            count: 1,
          },
        })
        // An event that cannot be recorded is worth a log line, never a failed reconcile.
        .catch((err: unknown) =>
          log(
            `event ${reason} for ${fn.metadata.namespace}/${fn.metadata.name} not recorded: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`,
          ),
        );
    },
  };
}
