/** The operator as a whole: leader election around the controller. */
import type { KubeConfig } from '@kubernetes/client-node';
import { withConnectionReuse } from './connection-reuse.js';
import { startController, type Controller } from './controller/controller.js';
import { LeaderElection } from './controller/leader.js';
import type { Cleaner } from './controller/reconciler.js';
import type { OperatorSettings } from './settings.js';

export interface OperatorOptions {
  kc: KubeConfig;
  settings: OperatorSettings;
  cleaners?: Cleaner[];
  log?: (message: string) => void;
  /** Lease timings; tests shorten them. */
  lease?: { durationSeconds?: number; renewIntervalMs?: number; retryIntervalMs?: number };
  /** Called with the controller each time this process starts leading. */
  onLeading?: (controller: Controller) => void;
}

/** Runs until `signal` aborts: campaigns for the lease and runs the controller while leading. */
export async function runOperator(o: OperatorOptions, signal: AbortSignal): Promise<void> {
  withConnectionReuse(o.kc);
  const log = o.log ?? ((m: string) => console.log(`eddy-operator: ${m}`));
  const election = new LeaderElection(o.kc, {
    namespace: o.settings.namespace,
    name: 'eddy-operator',
    identity: o.settings.identity,
    leaseDurationSeconds: o.lease?.durationSeconds,
    renewIntervalMs: o.lease?.renewIntervalMs,
    retryIntervalMs: o.lease?.retryIntervalMs,
    log,
  });
  await election.run(async (lost) => {
    const controller = await startController(
      {
        kc: o.kc,
        settings: o.settings,
        identity: o.settings.identity,
        cleaners: o.cleaners,
        workers: o.settings.workers,
        resyncMs: o.settings.resyncMs,
        log,
      },
      lost,
    );
    o.onLeading?.(controller);
    await controller.done;
  }, signal);
}
