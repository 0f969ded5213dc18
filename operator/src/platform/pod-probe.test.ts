import type { V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { defaultEndpointUrl } from './kubernetes.js';
import { thumbnailPod } from './pod-fixture.js';
import { startingPod } from './pod-probe.js';

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
