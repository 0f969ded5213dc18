/** The pieces of the in-cluster operator: the lease, and the reconciler as a leader-only runnable. */
import type { KubeConfig } from '@kubernetes/client-node';
import { LazyClusterCaches } from './caches.js';
import { withConnectionReuse } from './connection-reuse.js';
import { startController, type Controller } from './controller/controller.js';
import { LeaderElection } from './controller/leader.js';
import type { Cleaner } from './controller/reconciler.js';
import { Manager, type Runnable } from './manager.js';
import { boundTo, withRequestDeadlines } from './request-deadlines.js';
import type { OperatorSettings } from './settings.js';
import type { TriggerStates } from './sources/states.js';

export interface LeaseTimings {
  durationSeconds?: number;
  /** How long the leader tries to renew before it steps down (two thirds of the lease). */
  renewDeadlineMs?: number;
  renewIntervalMs?: number;
  retryIntervalMs?: number;
}

export function clusterElector(
  kc: KubeConfig,
  settings: OperatorSettings,
  log: (message: string) => void,
  lease?: LeaseTimings,
): LeaderElection {
  return new LeaderElection(kc, {
    namespace: settings.namespace,
    name: 'eddy-operator',
    identity: settings.identity,
    leaseDurationSeconds: lease?.durationSeconds,
    renewDeadlineMs: lease?.renewDeadlineMs,
    renewIntervalMs: lease?.renewIntervalMs,
    retryIntervalMs: lease?.retryIntervalMs,
    log,
  });
}

export interface ControllerRunnableOptions {
  kc: KubeConfig;
  caches: LazyClusterCaches;
  settings: OperatorSettings;
  cleaners?: Cleaner[];
  log: (message: string) => void;
  /** Called with the controller each time this process starts leading. */
  onLeading?: (controller: Controller) => void;
  /** What the sources report about triggers, for the Functions' status. */
  states?: TriggerStates;
}

/**
 * The reconciler, run while this process leads. Its API calls are abandoned when leading stops,
 * so that a leader that stepped down has none left to land after another took over.
 */
export function controllerRunnable(o: ControllerRunnableOptions): Runnable {
  return {
    name: 'reconciler',
    leaderOnly: true,
    async run(signal) {
      const controller = await startController(
        {
          kc: boundTo(o.kc, signal),
          caches: o.caches.get(),
          settings: o.settings,
          identity: o.settings.identity,
          cleaners: o.cleaners,
          workers: o.settings.workers,
          resyncMs: o.settings.resyncMs,
          log: o.log,
          ...(o.states ? { states: o.states } : {}),
        },
        signal,
      );
      o.onLeading?.(controller);
      await controller.done;
    },
  };
}

export interface OperatorOptions {
  kc: KubeConfig;
  settings: OperatorSettings;
  cleaners?: Cleaner[];
  log?: (message: string) => void;
  /** Lease timings; tests shorten them. */
  lease?: LeaseTimings;
  /** Called with the controller each time this process starts leading. */
  onLeading?: (controller: Controller) => void;
}

/**
 * The reconciler alone under leader election, with no gateway: what the operator's tests and
 * bench:operator run. Runs until `signal` aborts.
 */
export async function runOperator(o: OperatorOptions, signal: AbortSignal): Promise<void> {
  withRequestDeadlines(withConnectionReuse(o.kc), o.settings.apiTimeoutMs);
  const log = o.log ?? ((m: string) => console.log(`eddy-operator: ${m}`));
  const caches = new LazyClusterCaches(o.kc, log);
  await new Manager({
    elector: clusterElector(o.kc, o.settings, log, o.lease),
    log,
    startCaches: (s) => caches.start(s),
  })
    .add(controllerRunnable({ ...o, caches, log }))
    .start(signal);
}
