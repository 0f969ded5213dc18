import { describe, expect, it } from 'vitest';
import type { V1Deployment } from '@kubernetes/client-node';
import type { EddyFunction } from '../api/types.js';
import { TriggerStates } from '../sources/states.js';
import { computeStatus } from './status.js';

const fn = (over: Partial<EddyFunction> = {}): EddyFunction => ({
  apiVersion: 'eddy.dev/v1alpha1',
  kind: 'Function',
  metadata: { name: 'f', namespace: 'n', generation: 4 },
  spec: { image: 'x', triggers: [{ name: 'up', s3: { bucket: 'b', connection: {} } }] },
  ...over,
});
const t0 = new Date('2026-01-01T00:00:00Z');
const t1 = new Date('2026-01-01T00:05:00Z');
const deployment = (replicas: number, readyReplicas?: number): V1Deployment => ({
  spec: { replicas, selector: {}, template: {} },
  status: { replicas, readyReplicas },
});
const ready = deployment(2, 1);

describe('computeStatus', () => {
  it('reports an available function', () => {
    const s = computeStatus(fn(), { deployment: ready }, 'http://u', t0);
    expect(s).toMatchObject({
      observedGeneration: 4,
      replicas: 2,
      readyReplicas: 1,
      url: 'http://u',
      triggerSummary: 'up(s3)',
    });
    expect(s.conditions!.map((c) => [c.type, c.status, c.reason])).toEqual([
      ['Ready', 'True', 'Available'],
      ['Deployed', 'True', 'Applied'],
      ['TriggersReady', 'True', 'Accepted'],
    ]);
    expect(
      s.conditions!.every(
        (c) => c.observedGeneration === 4 && c.lastTransitionTime === t0.toISOString(),
      ),
    ).toBe(true);
  });

  it("reports what each trigger's source found: the problem's reason, and a schedule's times", () => {
    const f = fn({
      spec: {
        image: 'x',
        triggers: [
          { name: 'up', s3: { bucket: 'b', connection: {} } },
          { name: 'tick', schedule: { expression: 'rate(1 minute)' } },
        ],
      },
    });
    const states = new TriggerStates();
    states.set('n/f', 'up', {
      ready: false,
      reason: 'BucketNotFound',
      message: 'bucket b does not exist: create it',
    });
    states.update('n/f', 'tick', {
      lastScheduleTime: '2026-01-01T00:00:00Z',
      nextScheduleTime: '2026-01-01T00:01:00Z',
    });
    const s = computeStatus(
      f,
      { deployment: ready, triggers: (t) => states.get('n/f', t) },
      'u',
      t0,
    );
    expect(s.triggers).toEqual([
      {
        name: 'up',
        ready: false,
        reason: 'BucketNotFound',
        message: 'bucket b does not exist: create it',
      },
      {
        name: 'tick',
        ready: true,
        lastScheduleTime: '2026-01-01T00:00:00Z',
        nextScheduleTime: '2026-01-01T00:01:00Z',
      },
    ]);
    expect(s.conditions!.map((c) => [c.type, c.status, c.reason])).toEqual([
      ['Ready', 'False', 'TriggersNotReady'],
      ['Deployed', 'True', 'Applied'],
      ['TriggersReady', 'False', 'BucketNotFound'],
    ]);
    expect(s.conditions![2]!.message).toBe('trigger up: bucket b does not exist: create it');
  });

  it('calls a function scaled to zero ready', () => {
    const s = computeStatus(fn(), { deployment: deployment(0) }, 'u', t0);
    expect(s.conditions![0]).toMatchObject({
      type: 'Ready',
      status: 'True',
      reason: 'ScaledToZero',
    });
  });

  it('keeps lastTransitionTime while a condition keeps its status', () => {
    const first = computeStatus(fn(), { deployment: ready }, 'u', t0);
    const again = computeStatus(fn({ status: first }), { deployment: ready }, 'u', t1);
    expect(again).toEqual(first);
    // The Deployment gave up making progress (a crash loop, an image it cannot pull).
    const stuck: V1Deployment = {
      ...deployment(1),
      status: {
        replicas: 1,
        conditions: [
          {
            type: 'Progressing',
            status: 'False',
            reason: 'ProgressDeadlineExceeded',
            message: 'ReplicaSet "f-1" has timed out progressing.',
          },
          {
            type: 'Available',
            status: 'False',
            message: 'Deployment does not have minimum availability.',
          },
        ],
      },
    };
    const lost = computeStatus(fn({ status: first }), { deployment: stuck }, 'u', t1);
    expect(lost.conditions![0]).toMatchObject({
      status: 'False',
      reason: 'ReplicasNotReady',
      message: '0 of 1 replica(s) ready: ReplicaSet "f-1" has timed out progressing.',
      lastTransitionTime: t1.toISOString(),
    });
    expect(lost.conditions![1]!.lastTransitionTime).toBe(t0.toISOString());
  });

  it('stays Ready while a function that served starts replicas again (a cold start flips nothing)', () => {
    const zero = computeStatus(fn(), { deployment: deployment(0) }, 'u', t0);
    const starting = computeStatus(fn({ status: zero }), { deployment: deployment(1) }, 'u', t1);
    expect(starting.conditions![0]).toMatchObject({
      status: 'True',
      reason: 'Activating',
      lastTransitionTime: t0.toISOString(),
    });
    // A new generation has not served yet: its first replica is not ready until it is.
    const changed = computeStatus(
      fn({ status: zero, metadata: { name: 'f', namespace: 'n', generation: 5 } }),
      { deployment: deployment(1) },
      'u',
      t1,
    );
    expect(changed.conditions![0]).toMatchObject({ status: 'False', reason: 'ReplicasNotReady' });
  });

  it('is not Ready at zero when its replica never became ready before it was scaled down', () => {
    const starting = computeStatus(fn(), { deployment: deployment(1) }, 'u', t0);
    expect(starting.conditions![0]).toMatchObject({ status: 'False', reason: 'ReplicasNotReady' });
    const idle = computeStatus(fn({ status: starting }), { deployment: deployment(0) }, 'u', t1);
    expect(idle.conditions![0]).toMatchObject({ status: 'False', reason: 'NeverReady' });
    expect(idle.conditions![0]!.message).toContain('kubectl logs -n n -l eddy.dev/function=f');
    // Tried again and failing again, then served at last.
    const again = computeStatus(fn({ status: idle }), { deployment: deployment(1) }, 'u', t1);
    expect(again.conditions![0]).toMatchObject({ status: 'False', reason: 'ReplicasNotReady' });
    const served = computeStatus(fn({ status: again }), { deployment: deployment(1, 1) }, 'u', t1);
    expect(served.conditions![0]).toMatchObject({ status: 'True', reason: 'Available' });
  });

  it('passes a deploy error through to Ready', () => {
    const s = computeStatus(
      fn(),
      { deployError: { reason: 'NameConflict', message: 'taken' } },
      'u',
      t0,
    );
    expect(s.conditions!.slice(0, 2).map((c) => [c.status, c.reason, c.message])).toEqual([
      ['False', 'NotDeployed', 'taken'],
      ['False', 'NameConflict', 'taken'],
    ]);
  });
});
