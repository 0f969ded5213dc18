import * as k8s from '@kubernetes/client-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startKube } from '../harness/kube.js';
import {
  installChart,
  operatorKubeConfig,
  releaseNamespace,
  startOperator,
  type RunningOperator,
} from '../harness/operator.js';
import { canRun, useComponent } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';
import { functionsIn } from '../harness/functions.js';

const ns = 'default';
const inline = { code: { inline: 'export const handler = () => 1;' } };

describe.skipIf(!canRun('kube'))(
  'operator lifecycle: leader election and cleanup on delete',
  () => {
    const kube = useComponent(() => startKube());
    let operatorKc: k8s.KubeConfig;
    let fns: ReturnType<typeof functionsIn>;
    let apps: k8s.AppsV1Api;
    let running: RunningOperator[] = [];

    const start = (identity: string, options?: Parameters<typeof startOperator>[2]) => {
      const o = startOperator(operatorKc, identity, options);
      running.push(o);
      return o;
    };
    const createFn = (name: string) => fns.create(name, inline);
    const deploymentOf = (name: string) =>
      waitFor(`Deployment ${name}`, () => apps.readNamespacedDeployment({ name, namespace: ns }));
    const gone = (name: string, timeoutMs?: number) => fns.gone(name, timeoutMs);

    beforeAll(async () => {
      await installChart(kube());
      operatorKc = await operatorKubeConfig(kube());
      fns = functionsIn(kube().kubeConfig, ns);
      apps = kube().kubeConfig.makeApiClient(k8s.AppsV1Api);
    }, 120_000);

    afterEach(async (ctx) => {
      if (ctx.task.result?.state === 'fail')
        for (const o of running) process.stderr.write(`--- ${o.identity}\n${o.logs.join('\n')}\n`);
      await Promise.all(running.map((o) => o.stop()));
      running = [];
    });

    it('lets one of two operators lead, and hands over at once on a graceful stop', async () => {
      const a = start('operator-a');
      await waitFor('a to lead', async () => (a.leading() ? true : undefined));
      const b = start('operator-b');
      await createFn('one');
      await deploymentOf('one');
      // b campaigns every 300 ms; a renews its 6 s lease every second: b never gets it.
      await sleep(2_000);
      expect(a.leading()).toBe(true);
      expect(b.leading()).toBe(false);
      const coordination = kube().kubeConfig.makeApiClient(k8s.CoordinationV1Api);
      const lease = await coordination.readNamespacedLease({
        name: 'eddy-operator',
        namespace: releaseNamespace,
      });
      expect(lease.spec?.holderIdentity).toBe('operator-a');

      const stopped = Date.now();
      await a.stop();
      await waitFor('b to lead', async () => (b.leading() ? true : undefined));
      // Well within the lease's 6 s: the lease was released, not left to expire.
      expect(Date.now() - stopped).toBeLessThan(3_000);
      await createFn('two');
      await deploymentOf('two');
      const after = await coordination.readNamespacedLease({
        name: 'eddy-operator',
        namespace: releaseNamespace,
      });
      expect(after.spec?.holderIdentity).toBe('operator-b');
      expect(after.spec?.leaseTransitions).toBeGreaterThanOrEqual(1);
    });

    it('runs cleanup before letting a Function go', async () => {
      const cleaned: string[] = [];
      const o = start('operator-c', {
        cleaners: [async (fn) => void cleaned.push(fn.metadata.name)],
      });
      await waitFor('c to lead', async () => (o.leading() ? true : undefined));
      await createFn('tidy');
      await deploymentOf('tidy');
      await fns.delete('tidy');
      await gone('tidy');
      expect(cleaned).toEqual(['tidy']);
    });

    it('keeps the finalizer only on Functions with something outside the cluster to clean up', async () => {
      const cleaned: string[] = [];
      const cleaner = Object.assign(
        async (fn: { metadata: { name: string } }) => void cleaned.push(fn.metadata.name),
        {
          needed: (fn: { spec: { env?: Array<{ name: string }> } }) =>
            (fn.spec.env ?? []).some((e) => e.name === 'OUTSIDE'),
        },
      );
      const o = start('operator-d', { cleaners: [cleaner] });
      await waitFor('d to lead', async () => (o.leading() ? true : undefined));
      await fns.create('outside', { ...inline, env: [{ name: 'OUTSIDE', value: '1' }] });
      await createFn('inside');
      await deploymentOf('outside');
      await deploymentOf('inside');
      expect((await fns.get('outside')).metadata.finalizers).toEqual(['eddy.dev/cleanup']);
      expect((await fns.get('inside')).metadata.finalizers ?? []).toEqual([]);
      // Once it has nothing outside any more, the finalizer goes.
      await fns.patch('outside', { spec: { env: [] } });
      await waitFor('the finalizer to go', async () =>
        ((await fns.get('outside')).metadata.finalizers ?? []).length === 0 ? true : undefined,
      );
      await fns.delete('inside');
      await gone('inside');
      expect(cleaned).toEqual([]);
    });

    it('does not let a cleanup that never answers block deletion past its deadline', async () => {
      let attempts = 0;
      const hanging = (_fn: unknown, signal: AbortSignal) =>
        new Promise<void>((_resolve, reject) => {
          attempts++;
          signal.addEventListener(
            'abort',
            () => reject(new Error('the bucket endpoint did not answer')),
            { once: true },
          );
        });
      const o = start('operator-d', {
        cleaners: [hanging],
        settings: { cleanupAttemptMs: 300, cleanupDeadlineMs: 2_000 },
      });
      await waitFor('d to lead', async () => (o.leading() ? true : undefined));
      await createFn('stuck');
      await deploymentOf('stuck');
      const deleted = Date.now();
      await fns.delete('stuck');
      await gone('stuck', 10_000);
      expect(Date.now() - deleted).toBeGreaterThanOrEqual(1_500);
      expect(attempts).toBeGreaterThan(1);
      const core = kube().kubeConfig.makeApiClient(k8s.CoreV1Api);
      const events = await core.listNamespacedEvent({
        namespace: ns,
        fieldSelector: 'involvedObject.name=stuck',
      });
      const reasons = events.items.map((e) => e.reason);
      expect(reasons).toContain('CleanupFailed');
      expect(reasons).toContain('CleanupAbandoned');
      expect(events.items.find((e) => e.reason === 'CleanupAbandoned')!.message).toMatch(
        /the bucket endpoint did not answer/,
      );
    });
    it('keeps working when the API server goes away and comes back: failed watches restart', async () => {
      // A long lease, so that leadership holds through the outage and only the watches must recover.
      const o = start('operator-e', { lease: { durationSeconds: 120, renewIntervalMs: 5_000 } });
      await waitFor('e to lead', async () => (o.leading() ? true : undefined));
      await createFn('before-outage');
      await deploymentOf('before-outage');
      const controller = o.controller();
      await kube().restartApiServer();
      await createFn('after-outage');
      await waitFor(
        'the Deployment of a Function made after the outage',
        () => apps.readNamespacedDeployment({ name: 'after-outage', namespace: ns }),
        60_000,
      );
      expect(o.controller()).toBe(controller);
      expect(o.logs.some((l) => /watch failed .*; restarting in \d+ ms/.test(l))).toBe(true);
    });
  },
);
