import { describe, expect, it } from 'vitest';
import type { EddyFunction } from '../api/types.js';
import {
  consumerConfig,
  consumerNameOf,
  maxInFlight,
  streamConfig,
  subjectOf,
} from './jetstream.js';

const fn = (namespace: string, name: string, spec: EddyFunction['spec'] = {}): EddyFunction => ({
  apiVersion: 'eddy.dev/v1alpha1',
  kind: 'Function',
  metadata: { namespace, name },
  spec,
});

describe('the stream and consumers Eddy asks JetStream for', () => {
  it('gives each Function its own subject and consumer, distinct for distinct Functions', () => {
    expect(subjectOf('EDDY_EVENTS', fn('team-a', 'thumbs'))).toBe('EDDY_EVENTS.team-a.thumbs');
    expect(consumerNameOf(fn('team-a', 'thumbs'))).toBe('fn_team-a_thumbs');
    // A '.' cannot be in a subject token or a consumer name; Kubernetes names have no '_'.
    expect(subjectOf('S', fn('a', 'b.c'))).toBe('S.a.b_c');
    expect(consumerNameOf(fn('a', 'b.c'))).not.toBe(consumerNameOf(fn('a-b', 'c')));
  });

  it('holds at most what the function can run at once in flight: maxReplicas x concurrency', () => {
    expect(maxInFlight(fn('a', 'b', { concurrency: 4, scaling: { maxReplicas: 3 } }))).toBe(12);
    expect(maxInFlight(fn('a', 'b'))).toBe(10);
    expect(maxInFlight(fn('a', 'b', { scaling: { maxReplicas: 0 } }))).toBe(1);
    const c = consumerConfig(
      fn('a', 'b', { concurrency: 2, scaling: { maxReplicas: 5 } }),
      'S',
      30_000,
    );
    expect(c).toMatchObject({
      durable_name: 'fn_a_b',
      filter_subject: 'S.a.b',
      ack_policy: 'explicit',
      max_ack_pending: 10,
      max_deliver: -1,
      ack_wait: 30_000_000_000,
    });
  });

  it('keeps events on disk, once each within the duplicate window, and only until acknowledged', () => {
    expect(
      streamConfig({ servers: [], stream: 'TEAM', replicas: 3, maxBytes: 2 ** 30 }),
    ).toMatchObject({
      name: 'TEAM',
      subjects: ['TEAM.>'],
      retention: 'workqueue',
      storage: 'file',
      num_replicas: 3,
      discard: 'new',
      max_bytes: 2 ** 30,
      duplicate_window: 120_000_000_000,
    });
  });
});
