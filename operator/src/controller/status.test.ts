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
    const lost = computeStatus(fn({ status: first }), { deployment: deployment(1) }, 'u', t1);
    expect(lost.conditions![0]).toMatchObject({
      status: 'False',
      reason: 'ReplicasNotReady',
      lastTransitionTime: t1.toISOString(),
    });
    expect(lost.conditions![1]!.lastTransitionTime).toBe(t0.toISOString());
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
