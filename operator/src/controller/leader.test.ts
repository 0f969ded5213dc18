import { ApiException, KubeConfig, type V1Lease } from '@kubernetes/client-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { LeaderElection, type LeaseApi } from './leader.js';

/** One Lease kept in memory, with the API server's compare-and-swap on resourceVersion. */
class LeaseStore implements LeaseApi {
  lease: V1Lease | undefined;
  replaces = 0;
  private version = 0;

  async readNamespacedLease(): Promise<V1Lease> {
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
