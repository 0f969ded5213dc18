import * as k8s from '@kubernetes/client-node';
import { afterEach, describe, expect, it } from 'vitest';
import { withConnectionReuse } from '../../operator/src/connection-reuse.js';
import { LeaderElection } from '../../operator/src/controller/leader.js';
import { Manager } from '../../operator/src/manager.js';
import { withRequestDeadlines } from '../../operator/src/request-deadlines.js';
import { startKube } from '../harness/kube.js';
import { kubeConfigVia, startStallProxy, type StallProxy } from '../harness/stall-proxy.js';
import { canRun, useComponent } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';

const ns = 'default';

/** When a replica's leader-only work ran: from its start until it had stopped (performance.now()). */
interface Interval {
  who: string;
  from: number;
  to?: number;
}

describe.skipIf(!canRun('kube'))('leader election when the API server stalls mid-renewal', () => {
  const kube = useComponent(() => startKube({ installCrds: false }));
  let proxy: StallProxy | undefined;
  const running: { stop: AbortController; done: Promise<void>; logs: string[] }[] = [];

  afterEach(async (ctx) => {
    for (const r of running) r.stop.abort();
    await Promise.all(running.map((r) => r.done));
    if (ctx.task.result?.state === 'fail') {
      for (const r of running) process.stderr.write(`${r.logs.join('\n')}\n`);
    }
    running.splice(0);
    await proxy?.stop();
    proxy = undefined;
  });

  it('steps the leader down before its lease can expire; the other takes over only then', async () => {
    proxy = await startStallProxy(kube().server);
    const intervals: Interval[] = [];
    // The request deadline (10 s) is longer than the lease: only the renewal's own deadline can
    // step the leader down in time.
    const kcA = withRequestDeadlines(
      withConnectionReuse(kubeConfigVia(kube().kubeConfig, proxy.url)),
      10_000,
    );
    const kcB = withRequestDeadlines(
      withConnectionReuse(kubeConfigVia(kube().kubeConfig, kube().server)),
      10_000,
    );

    const start = (who: string, kc: k8s.KubeConfig) => {
      const logs: string[] = [];
      const log = (m: string) => logs.push(`${new Date().toISOString()} ${who}: ${m}`);
      const stop = new AbortController();
      const manager = new Manager({
        elector: new LeaderElection(kc, {
          namespace: ns,
          name: 'stall-test',
          identity: who,
          leaseDurationSeconds: 4,
          renewDeadlineMs: 2_500,
          renewIntervalMs: 300,
          retryIntervalMs: 200,
          log,
        }),
        log,
      }).add({
        name: 'leader-only work',
        leaderOnly: true,
        run: (signal) =>
          new Promise<void>((resolve) => {
            const interval: Interval = { who, from: performance.now() };
            intervals.push(interval);
            signal.addEventListener(
              'abort',
              () => {
                interval.to = performance.now();
                resolve();
              },
              { once: true },
            );
          }),
      });
      const r = { stop, logs, done: manager.start(stop.signal).catch(() => undefined) };
      running.push(r);
      return r;
    };

    const a = start('replica-a', kcA);
    await waitFor('replica-a to lead', async () =>
      intervals.some((i) => i.who === 'replica-a') ? true : undefined,
    );
    start('replica-b', kcB);
    // Between two of a's renewals, its API server stops answering.
    proxy.stall();

    const b = await waitFor(
      'replica-b to take over',
      async () => intervals.find((i) => i.who === 'replica-b'),
      30_000,
    );
    const led = intervals.filter((i) => i.who === 'replica-a');
    expect(led).toHaveLength(1);
    expect(led[0]!.to).toBeDefined();
    // No moment with two leaders doing work.
    expect(led[0]!.to!).toBeLessThanOrEqual(b.from);
    expect(
      a.logs.some((m) => /could not renew the lease within 2500 ms; stepping down/.test(m)),
    ).toBe(true);
  });
});
