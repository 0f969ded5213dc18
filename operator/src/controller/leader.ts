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
import { withSignal } from '../request-deadlines.js';

/** The Lease calls leader election makes; CoordinationV1Api has them. */
export type LeaseApi = Pick<
  CoordinationV1Api,
  'readNamespacedLease' | 'createNamespacedLease' | 'replaceNamespacedLease'
>;

export interface LeaderOptions {
  namespace: string;
  name: string;
  identity: string;
  /** How long a lease holds after its last renewal, as others see it (default 15 s). */
  leaseDurationSeconds?: number;
  /**
   * How long the holder keeps trying to renew before it steps down: it stops its leader-only
   * work then, so that the work has stopped before the lease can expire for anyone else. At
   * least a second shorter than the lease; by default two thirds of it (10 s of 15 s).
   */
  renewDeadlineMs?: number;
  /** How often the holder renews (default 2 s). */
  renewIntervalMs?: number;
  /** How often the others try (default 2 s). */
  retryIntervalMs?: number;
  log: (message: string) => void;
  /** Where Leases are read and written; by default the API server of `kc`. */
  api?: LeaseApi;
  /** A monotonic clock in milliseconds; performance.now() by default. */
  now?: () => number;
}

/** What a contender saw of the lease, and when on its own clock it first saw it so. */
interface Observed {
  record: string;
  at: number;
}

export class LeaderElection {
  private readonly api: LeaseApi;
  private readonly leaseDurationSeconds: number;
  private readonly renewDeadlineMs: number;
  private readonly renewIntervalMs: number;
  private readonly retryIntervalMs: number;
  private readonly now: () => number;
  private lease: V1Lease | undefined;
  private observed: Observed | undefined;
  /** The local time at which the last successful write of the lease started. */
  private renewedAt = 0;
  /** Set when a read showed the lease held by another: renewing is hopeless. */
  private takenBy: string | undefined;

  constructor(
    kc: KubeConfig,
    private readonly o: LeaderOptions,
  ) {
    this.api = o.api ?? kc.makeApiClient(CoordinationV1Api);
    this.leaseDurationSeconds = o.leaseDurationSeconds ?? 15;
    const leaseMs = this.leaseDurationSeconds * 1000;
    this.renewDeadlineMs = o.renewDeadlineMs ?? Math.round((leaseMs * 2) / 3);
    this.renewIntervalMs = o.renewIntervalMs ?? 2_000;
    this.retryIntervalMs = o.retryIntervalMs ?? 2_000;
    this.now = o.now ?? (() => performance.now());
    if (leaseMs - this.renewDeadlineMs < 1_000) {
      throw new Error(
        `lease ${o.namespace}/${o.name}: a renew deadline of ${this.renewDeadlineMs} ms leaves less than 1 s of a ${this.leaseDurationSeconds} s lease for leader-only work to stop: shorten the renew deadline or lengthen the lease`,
      );
    }
    if (this.renewIntervalMs >= this.renewDeadlineMs) {
      throw new Error(
        `lease ${o.namespace}/${o.name}: renewing every ${this.renewIntervalMs} ms leaves no second attempt within the renew deadline of ${this.renewDeadlineMs} ms: renew more often`,
      );
    }
  }

  /**
   * Campaigns until elected, then calls `lead` with a signal that aborts if the lease is lost;
   * repeats until `signal` aborts. The lease is lost when a renewal cannot be written within
   * the renew deadline (the API server stalled, say): `lost` aborts then, and this process
   * campaigns again only once `lead` has resolved, that is once its work has stopped. On abort
   * the lease is released; if `lead` fails, the lease is released too and `run` rejects with its
   * error, so that the caller stops rather than a leader that does nothing keeping the lease.
   */
  async run(lead: (lost: AbortSignal) => Promise<void>, signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      if (!(await this.tryAcquire(signal))) {
        await sleep(this.retryIntervalMs, undefined, { signal }).catch(() => undefined);
        continue;
      }
      this.o.log(`${this.o.identity} leads (lease ${this.o.namespace}/${this.o.name})`);
      const lost = new AbortController();
      const onStop = () => lost.abort();
      signal.addEventListener('abort', onStop, { once: true });
      const renewing = this.renewUntilLost(lost);
      let failed = true;
      try {
        await lead(lost.signal);
        failed = false;
      } finally {
        lost.abort();
        const steppedDown = await renewing;
        signal.removeEventListener('abort', onStop);
        if (steppedDown) this.checkStoppedInTime();
        // A leader whose work failed would hold the lease doing nothing: hand it over at once.
        if (signal.aborted || failed) await this.release();
      }
      if (!signal.aborted) this.o.log(`${this.o.identity} lost the lease; campaigning again`);
    }
  }

  /**
   * Renews every renewIntervalMs; each attempt may take only until the renew deadline (the
   * last successful write's start plus renewDeadlineMs). Resolves true if it stepped down
   * (aborted `lost` because the deadline passed or another holds the lease), false once `lost`
   * was aborted by someone else.
   */
  private async renewUntilLost(lost: AbortController): Promise<boolean> {
    while (!lost.signal.aborted) {
      const deadlineAt = this.renewedAt + this.renewDeadlineMs;
      const wait = Math.min(this.renewIntervalMs, Math.max(0, deadlineAt - this.now()));
      await sleep(wait, undefined, { signal: lost.signal }).catch(() => undefined);
      if (lost.signal.aborted) return false;
      const left = deadlineAt - this.now();
      if (left > 0) {
        const deadline = new AbortController();
        const timer = setTimeout(() => deadline.abort(new Error('renew deadline')), left);
        const renewed = await this.tryAcquire(AbortSignal.any([lost.signal, deadline.signal]));
        clearTimeout(timer);
        if (renewed) continue;
        if (lost.signal.aborted) return false;
      }
      if (this.takenBy !== undefined) {
        this.o.log(
          `${this.o.identity} finds the lease held by ${this.takenBy}; stepping down: leader-only work stops`,
        );
      } else if (this.now() >= deadlineAt) {
        this.o.log(
          `${this.o.identity} could not renew the lease within ${this.renewDeadlineMs} ms; stepping down: leader-only work stops before the lease can expire for others`,
        );
      } else continue;
      lost.abort();
      return true;
    }
    return false;
  }

  /** Says so if leader-only work took longer to stop than the lease left it. */
  private checkStoppedInTime(): void {
    const late = this.now() - (this.renewedAt + this.leaseDurationSeconds * 1000);
    if (late > 0) {
      this.o.log(
        `leader-only work of ${this.o.identity} stopped ${Math.round(late)} ms after its lease could expire: another replica may have led meanwhile; it must stop within ${this.leaseDurationSeconds * 1000 - this.renewDeadlineMs} ms of losing the lease`,
      );
    }
  }

  /**
   * Takes or renews the lease if it is free, expired or ours; every call to the API server
   * gives up when `signal` aborts. A lease held by another expires when it has not changed for
   * its duration on this process's own clock (client-go's rule), so clocks that disagree
   * between replicas do not matter.
   */
  private async tryAcquire(signal: AbortSignal): Promise<boolean> {
    this.takenBy = undefined;
    const started = this.now();
    const now = new Date();
    const options = withSignal(signal);
    try {
      let current: V1Lease | undefined;
      try {
        current = await untilAborted(
          this.api.readNamespacedLease({ name: this.o.name, namespace: this.o.namespace }, options),
          signal,
        );
      } catch (err) {
        if (!(err instanceof ApiException && err.code === 404)) throw err;
      }
      if (!current) {
        this.lease = await untilAborted(
          this.api.createNamespacedLease(
            {
              namespace: this.o.namespace,
              body: {
                metadata: { name: this.o.name, namespace: this.o.namespace },
                spec: this.spec(now, now, 0),
              },
            },
            options,
          ),
          signal,
        );
        this.renewedAt = started;
        return true;
      }
      const s = current.spec ?? {};
      const holder = s.holderIdentity ?? '';
      // Seen now, after the read: never earlier than the write that made this version.
      if (holder !== this.o.identity && holder !== '' && !this.expired(current, this.now())) {
        this.takenBy = holder;
        return false;
      }
      const transitions = (s.leaseTransitions ?? 0) + (holder === this.o.identity ? 0 : 1);
      const acquired = holder === this.o.identity && s.acquireTime ? new Date(s.acquireTime) : now;
      // The resourceVersion makes this a compare-and-swap: of two contenders only one wins.
      this.lease = await untilAborted(
        this.api.replaceNamespacedLease(
          {
            name: this.o.name,
            namespace: this.o.namespace,
            body: { ...current, spec: this.spec(acquired, now, transitions) },
          },
          options,
        ),
        signal,
      );
      this.renewedAt = started;
      return true;
    } catch (err) {
      if (!(err instanceof ApiException && err.code === 409)) {
        const why = signal.aborted ? 'no answer in time' : describeError(err);
        this.o.log(`lease ${this.o.namespace}/${this.o.name}: ${why}`);
      }
      return false;
    }
  }

  /** Whether another's lease has gone unchanged for its duration since this process saw it. */
  private expired(lease: V1Lease, now: number): boolean {
    const s = lease.spec ?? {};
    const record = JSON.stringify([
      lease.metadata?.resourceVersion,
      s.holderIdentity,
      s.renewTime,
      s.leaseDurationSeconds,
    ]);
    if (this.observed?.record !== record) this.observed = { record, at: now };
    const durationMs = (s.leaseDurationSeconds ?? this.leaseDurationSeconds) * 1000;
    return now - this.observed.at >= durationMs;
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
      this.lease = undefined;
      this.o.log(`${this.o.identity} released the lease`);
    } catch (err) {
      this.o.log(`could not release the lease: ${describeError(err)}`);
    }
  }
}

/** `call`, or a rejection as soon as `signal` aborts (for an API that ignores the signal). */
function untilAborted<T>(call: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    call.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}
