import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { defaultEndpointUrl } from './kubernetes.js';
import { thumbnailPod } from './pod-fixture.js';
import { PodProber, startingPod } from './pod-probe.js';

/** A pod as the Deployment of Function photos/thumbnail makes it, starting, with an address. */
const pod = thumbnailPod;

describe('startingPod', () => {
  it("takes a Function's Deployment's pod with an address, before its container runs or is ready", () => {
    expect(startingPod(pod(), defaultEndpointUrl)).toEqual({
      key: 'photos/thumbnail',
      replica: { id: 'thumbnail-5f7d9c-x2x4q', url: 'http://10.244.0.9:8080' },
    });
    expect(
      startingPod(
        pod((p) => (p.status!.phase = 'Running')),
        defaultEndpointUrl,
      ),
    ).toBeDefined();
  });

  it('refuses a pod another controller owns, or named or labelled otherwise', () => {
    const refused: [string, (p: V1Pod) => void][] = [
      [
        'owned by another ReplicaSet',
        (p) => (p.metadata!.ownerReferences![0]!.name = 'other-5f7d9c'),
      ],
      ['owned by a Job', (p) => (p.metadata!.ownerReferences![0]!.kind = 'Job')],
      ['owned, not as controller', (p) => (p.metadata!.ownerReferences![0]!.controller = false)],
      ['no owner', (p) => (p.metadata!.ownerReferences = [])],
      ['named otherwise', (p) => (p.metadata!.name = 'intruder-5f7d9c-x2x4q')],
      ['not managed by Eddy', (p) => delete p.metadata!.labels!['app.kubernetes.io/managed-by']],
      ['no template hash', (p) => delete p.metadata!.labels!['pod-template-hash']],
    ];
    for (const [why, change] of refused) {
      expect(startingPod(pod(change), defaultEndpointUrl), why).toBeUndefined();
    }
  });

  it('leaves pods without an address, being deleted, or ended', () => {
    const left: [string, (p: V1Pod) => void][] = [
      ['no address', (p) => delete p.status!.podIP],
      ['being deleted', (p) => (p.metadata!.deletionTimestamp = new Date())],
      ['ended', (p) => (p.status!.phase = 'Failed')],
    ];
    for (const [why, change] of left) {
      expect(startingPod(pod(change), defaultEndpointUrl), why).toBeUndefined();
    }
  });
});

describe('PodProber', () => {
  it("tells a pod whose handler did not load, with the runtime's error, and probes it no more", async () => {
    let probes = 0;
    const runtime = createServer((_req, res) => {
      probes++;
      const body = JSON.stringify({
        errorType: 'Runtime.HandlerNotFound',
        errorMessage: 'index.nope is not a function',
      });
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(body);
    });
    await new Promise<void>((resolve) => runtime.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(runtime.address() as AddressInfo).port}`;
    const told: unknown[] = [];
    const prober = new PodProber({
      onReady: () => told.push('ready'),
      onInitError: (key, replica, failure) => told.push({ key, id: replica.id, failure }),
    });
    try {
      prober.track('photos/thumbnail', [{ id: 'thumbnail-5f7d-aaaaa', url }]);
      for (let i = 0; i < 200 && told.length === 0; i++) await sleep(10);
      expect(told).toEqual([
        {
          key: 'photos/thumbnail',
          id: 'thumbnail-5f7d-aaaaa',
          failure: {
            errorType: 'Runtime.HandlerNotFound',
            errorMessage: 'index.nope is not a function',
          },
        },
      ]);
      await sleep(200);
      expect(probes).toBe(1);
    } finally {
      prober.stop();
      runtime.close();
    }
  });
});
