/** Kubernetes Events on a Function, for `kubectl describe fn` and `kubectl get events`. */
import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import type { EddyFunction } from '../api/types.js';
import { describeError } from '../errors.js';

export type EventType = 'Normal' | 'Warning';

export interface Recorder {
  event(fn: EddyFunction, type: EventType, reason: string, message: string): void;
}

/** Events go out in the background, a few at a time; a backlog past this many is dropped. */
const maxInFlight = 2;
const maxQueued = 1_000;

export function eventRecorder(
  kc: KubeConfig,
  identity: string,
  log: (m: string) => void,
): Recorder {
  const api = kc.makeApiClient(CoreV1Api);
  const queue: Array<() => Promise<void>> = [];
  let inFlight = 0;
  let dropped = 0;
  const pump = () => {
    while (inFlight < maxInFlight && queue.length > 0) {
      inFlight++;
      void queue.shift()!().finally(() => {
        inFlight--;
        pump();
      });
    }
  };
  return {
    event(fn, type, reason, message) {
      if (queue.length >= maxQueued) {
        if (dropped++ % 100 === 0) log(`events are backing up; ${dropped} dropped so far`);
        return;
      }
      const now = new Date();
      queue.push(() =>
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
          .then(
            () => undefined,
            // An event that cannot be recorded is worth a log line, never a failed reconcile.
            (err: unknown) =>
              log(
                `event ${reason} for ${fn.metadata.namespace}/${fn.metadata.name} not recorded: ${describeError(err)}`,
              ),
          ),
      );
      pump();
    },
  };
}
