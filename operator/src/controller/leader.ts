/**
 * Leader election on a coordination.k8s.io Lease, so that two operator processes never both act.
 * The holder renews the lease; a graceful stop releases it so that another takes over at once.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  ApiException,
  CoordinationV1Api,
  V1MicroTime,
  type KubeConfig,
  type V1Lease,
} from '@kubernetes/client-node';
import { describeError } from '../errors.js';

/** The Lease calls leader election makes; CoordinationV1Api has them. */
export type LeaseApi = Pick<
  CoordinationV1Api,
  'readNamespacedLease' | 'createNamespacedLease' | 'replaceNamespacedLease'
>;

export interface LeaderOptions {
  namespace: string;
  name: string;
  identity: string;
  leaseDurationSeconds?: number;
  /** How often the holder renews, and how often the others try. */
  renewIntervalMs?: number;
  retryIntervalMs?: number;
  log: (message: string) => void;
  /** Where Leases are read and written; by default the API server of `kc`. */
  api?: LeaseApi;
}

export class LeaderElection {
  private readonly api: LeaseApi;
  private readonly leaseDurationSeconds: number;
  private readonly renewIntervalMs: number;
  private readonly retryIntervalMs: number;
  private lease: V1Lease | undefined;

  constructor(
    kc: KubeConfig,
    private readonly o: LeaderOptions,
  ) {
    this.api = o.api ?? kc.makeApiClient(CoordinationV1Api);
    this.leaseDurationSeconds = o.leaseDurationSeconds ?? 15;
    this.renewIntervalMs = o.renewIntervalMs ?? 5_000;
    this.retryIntervalMs = o.retryIntervalMs ?? 2_000;
  }

  /**
   * Campaigns until elected, then calls `lead` with a signal that aborts if the lease is lost;
   * repeats until `signal` aborts. On abort the lease is released; if `lead` fails, the lease is
   * released too and `run` rejects with its error, so that the caller stops rather than a leader
   * that does nothing keeping the lease.
   */
  async run(lead: (lost: AbortSignal) => Promise<void>, signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      if (!(await this.tryAcquire())) {
        await sleep(this.retryIntervalMs, undefined, { signal }).catch(() => undefined);
        continue;
      }
      this.o.log(`${this.o.identity} leads (lease ${this.o.namespace}/${this.o.name})`);
      const lost = new AbortController();
      const onStop = () => lost.abort();
      signal.addEventListener('abort', onStop, { once: true });
      const renewing = this.renewUntilLost(lost, signal);
      let failed = true;
      try {
        await lead(lost.signal);
        failed = false;
      } finally {
        lost.abort();
        await renewing;
        signal.removeEventListener('abort', onStop);
        // A leader whose work failed would hold the lease doing nothing: hand it over at once.
        if (signal.aborted || failed) await this.release();
      }
      if (!signal.aborted) this.o.log(`${this.o.identity} lost the lease; campaigning again`);
    }
  }

  private async renewUntilLost(lost: AbortController, stop: AbortSignal): Promise<void> {
    let lastRenew = Date.now();
    while (!lost.signal.aborted) {
      await sleep(this.renewIntervalMs, undefined, { signal: lost.signal }).catch(() => undefined);
      if (lost.signal.aborted || stop.aborted) return;
      if (await this.tryAcquire()) {
        lastRenew = Date.now();
      } else if (Date.now() - lastRenew > (this.leaseDurationSeconds * 1000 * 2) / 3) {
        lost.abort();
      }
    }
  }

  /** Takes or renews the lease if it is free, expired or ours. */
  private async tryAcquire(): Promise<boolean> {
    const now = new Date();
    try {
      let current: V1Lease | undefined;
      try {
        current = await this.api.readNamespacedLease({
          name: this.o.name,
          namespace: this.o.namespace,
        });
      } catch (err) {
        if (!(err instanceof ApiException && err.code === 404)) throw err;
      }
      if (!current) {
        this.lease = await this.api.createNamespacedLease({
          namespace: this.o.namespace,
          body: {
            metadata: { name: this.o.name, namespace: this.o.namespace },
            spec: this.spec(now, now, 0),
          },
        });
        return true;
      }
      const s = current.spec ?? {};
      const holder = s.holderIdentity ?? '';
      const renewed = s.renewTime ? new Date(s.renewTime).getTime() : 0;
      const expired =
        renewed + (s.leaseDurationSeconds ?? this.leaseDurationSeconds) * 1000 < now.getTime();
      if (holder !== this.o.identity && holder !== '' && !expired) return false;
      const transitions = (s.leaseTransitions ?? 0) + (holder === this.o.identity ? 0 : 1);
      const acquired = holder === this.o.identity && s.acquireTime ? new Date(s.acquireTime) : now;
      // The resourceVersion makes this a compare-and-swap: of two contenders only one wins.
      this.lease = await this.api.replaceNamespacedLease({
        name: this.o.name,
        namespace: this.o.namespace,
        body: { ...current, spec: this.spec(acquired, now, transitions) },
      });
      return true;
    } catch (err) {
      if (!(err instanceof ApiException && err.code === 409)) {
        this.o.log(`lease ${this.o.namespace}/${this.o.name}: ${describeError(err)}`);
      }
      return false;
    }
  }

  private spec(acquired: Date, renewed: Date, transitions: number): V1Lease['spec'] {
    return {
      holderIdentity: this.o.identity,
      leaseDurationSeconds: this.leaseDurationSeconds,
      acquireTime: new V1MicroTime(acquired.getTime()),
      renewTime: new V1MicroTime(renewed.getTime()),
      leaseTransitions: transitions,
    };
  }

  /** Gives the lease up so that a waiting process takes over without waiting for it to expire. */
  private async release(): Promise<void> {
    if (!this.lease) return;
    try {
      await this.api.replaceNamespacedLease({
        name: this.o.name,
        namespace: this.o.namespace,
        body: {
          ...this.lease,
          spec: { ...this.lease.spec, holderIdentity: '', leaseDurationSeconds: 1 },
        },
      });
      this.o.log(`${this.o.identity} released the lease`);
    } catch (err) {
      this.o.log(`could not release the lease: ${describeError(err)}`);
    }
  }
}
