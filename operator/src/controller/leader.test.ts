import { ApiException, KubeConfig, type V1Lease } from '@kubernetes/client-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LeaderElection, type LeaseApi } from './leader.js';

/** One Lease kept in memory, with the API server's compare-and-swap on resourceVersion. */
class LeaseStore implements LeaseApi {
  lease: V1Lease | undefined;
  replaces = 0;
  /** Reads never answer, as from an API server that stalled. */
  hang = false;
  private version = 0;

  async readNamespacedLease(): Promise<V1Lease> {
    if (this.hang) return new Promise<V1Lease>(() => undefined);
    if (!this.lease) throw new ApiException(404, 'not found', {}, {});
    return structuredClone(this.lease);
  }

  async createNamespacedLease({ body }: { body: V1Lease }): Promise<V1Lease> {
    if (this.lease) throw new ApiException(409, 'already exists', {}, {});
    return this.store(body);
  }

  async replaceNamespacedLease({ body }: { body: V1Lease }): Promise<V1Lease> {
    this.replaces++;
    if (body.metadata?.resourceVersion !== this.lease?.metadata?.resourceVersion) {
      throw new ApiException(409, 'conflict', {}, {});
    }
    return this.store(body);
  }

  private store(body: V1Lease): V1Lease {
    this.lease = {
      ...structuredClone(body),
      metadata: { ...body.metadata, resourceVersion: String(++this.version) },
    };
    return structuredClone(this.lease);
  }
}

describe('LeaderElection', () => {
  const stop = new AbortController();
  afterEach(() => stop.abort());

  const election = (api: LeaseStore) =>
    new LeaderElection(new KubeConfig(), {
      namespace: 'eddy-system',
      name: 'eddy-operator',
      identity: 'operator-a',
      renewIntervalMs: 20,
      retryIntervalMs: 20,
      log: () => undefined,
      api,
    });

  it('stops renewing and releases the lease when lead fails, and rejects with its error', async () => {
    const store = new LeaseStore();
    const crash = new Error('the controller could not start');
    const running = election(store).run(async () => {
      await sleep(70);
      throw crash;
    }, stop.signal);

    await expect(running).rejects.toBe(crash);
    expect(store.lease?.spec?.holderIdentity).toBe('');
    const replaces = store.replaces;
    await sleep(100);
    expect(store.replaces).toBe(replaces);
  });

  it('steps down when it cannot renew within the renew deadline, and leads again only after its work stopped', async () => {
    const store = new LeaseStore();
    const logs: string[] = [];
    const events: string[] = [];
    const mine = new AbortController();
    let terms = 0;
    const running = new LeaderElection(new KubeConfig(), {
      namespace: 'eddy-system',
      name: 'eddy-operator',
      identity: 'operator-a',
      leaseDurationSeconds: 2,
      renewDeadlineMs: 300,
      renewIntervalMs: 50,
      retryIntervalMs: 50,
      log: (m) => logs.push(m),
      api: store,
    }).run(async (lost) => {
      const term = ++terms;
      events.push(`leads ${term}`);
      if (term === 1) store.hang = true;
      await new Promise((resolve) => lost.addEventListener('abort', resolve, { once: true }));
      // Stopping takes a while; the API server answers again meanwhile.
      store.hang = false;
      await sleep(100);
      events.push(`stopped ${term}`);
    }, mine.signal);

    await vi.waitFor(() => expect(events).toContain('leads 2'), { timeout: 5_000 });
    expect(events.slice(0, 3)).toEqual(['leads 1', 'stopped 1', 'leads 2']);
    expect(logs).toContain(
      'operator-a could not renew the lease within 300 ms; stepping down: leader-only work stops before the lease can expire for others',
    );
    mine.abort();
    await running;
  });

  it('refuses timings that leave leader-only work no time to stop before the lease expires', () => {
    expect(
      () =>
        new LeaderElection(new KubeConfig(), {
          namespace: 'eddy-system',
          name: 'eddy-operator',
          identity: 'operator-a',
          leaseDurationSeconds: 10,
          renewDeadlineMs: 9_500,
          log: () => undefined,
          api: new LeaseStore(),
        }),
    ).toThrow(/leaves less than 1 s of a 10 s lease/);
  });

  it('releases the lease on a graceful stop', async () => {
    const store = new LeaseStore();
    const graceful = new AbortController();
    let led = false;
    const running = election(store).run(async (lost) => {
      led = true;
      await new Promise((resolve) => lost.addEventListener('abort', resolve, { once: true }));
    }, graceful.signal);
    await sleep(50);
    expect(store.lease?.spec?.holderIdentity).toBe('operator-a');
    graceful.abort();

    await running;
    expect(led).toBe(true);
    expect(store.lease?.spec?.holderIdentity).toBe('');
  });
});
