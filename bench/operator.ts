/**
 * `npm run bench:operator`: 1,000 Functions against a real kube-apiserver + etcd, with the operator
 * running as its own process under the chart's RBAC. Reports the time until every Function has
 * its Deployment and an up-to-date status, the operator's peak RSS, its API requests per
 * Function (from the API server's audit log), and what a full resync (a restart over unchanged
 * Functions) costs. The baseline, in the same run: a plain client creating the same children
 * (Deployment, Service, NetworkPolicy, ConfigMap) itself, with the same parallelism.
 * Targets: under 60 s, under 200 MB, zero writes on a resync.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { availableParallelism, cpus } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import { projectRoot } from '../test/harness/components.js';
import { startKube, type AuditEvent, type Kube } from '../test/harness/kube.js';
import {
  installChart,
  operatorAccount,
  operatorKubeConfig,
  releaseNamespace,
  testSettings,
} from '../test/harness/operator.js';
import { startProcess, type ManagedProcess } from '../test/harness/proc.js';
import { formatElapsed } from '../test/harness/progress.js';
import {
  desiredCodeConfigMap,
  desiredDeployment,
  desiredNetworkPolicy,
  desiredService,
} from '../operator/src/controller/desired.js';
import type { EddyFunction } from '../operator/src/api/types.js';

const count = Number(process.env.BENCH_FUNCTIONS ?? 1000);
const parallelism = 16;
const operatorUser = `system:serviceaccount:${releaseNamespace}:${operatorAccount}`;
const writeVerbs = new Set(['create', 'update', 'patch', 'delete', 'deletecollection']);

async function inParallel<T>(items: T[], work: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: parallelism }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

function spec(i: number) {
  return {
    code: { inline: `export const handler = async () => ${i};` },
    memory: `${128 + (i % 8) * 64}Mi`,
  };
}

function auditSince(kube: Kube, offset: number): { events: AuditEvent[]; end: number } {
  const text = readFileSync(kube.auditLog!, 'utf8');
  const events = text
    .slice(offset)
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as AuditEvent)
    .filter((e) => e.user.username === operatorUser);
  return { events, end: text.length };
}

function summarize(events: AuditEvent[]): { total: number; writes: number; byVerb: string } {
  const byVerb = new Map<string, number>();
  for (const e of events) {
    const k = `${e.verb} ${e.objectRef?.resource ?? ''}${e.objectRef?.subresource ? `/${e.objectRef.subresource}` : ''}`;
    byVerb.set(k, (byVerb.get(k) ?? 0) + 1);
  }
  return {
    total: events.length,
    // Lease renewals are the leader election at work, not writes to Functions or their children.
    // A request the API server refused changed nothing, so it is no write either.
    writes: events.filter(
      (e) =>
        writeVerbs.has(e.verb) &&
        e.objectRef?.resource !== 'leases' &&
        (e.responseStatus?.code ?? 0) < 400,
    ).length,
    byVerb: [...byVerb]
      .sort((a, b) => b[1] - a[1])
      .map(([k, n]) => `${k}: ${n}`)
      .join(', '),
  };
}

function peakRssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Math.round(Number(/VmHWM:\s+(\d+) kB/.exec(status)![1]) / 1024);
}

async function main(): Promise<void> {
  console.log(`starting kube-apiserver + etcd (audit log on) for ${count} Functions`);
  const kube = await startKube({ audit: true });
  let operator: ManagedProcess | undefined;
  try {
    await installChart(kube);
    const admin = kube.kubeConfig;
    const core = admin.makeApiClient(k8s.CoreV1Api);
    const custom = admin.makeApiClient(k8s.CustomObjectsApi);
    const objects = k8s.KubernetesObjectApi.makeApiClient(admin);
    for (const name of ['bench', 'baseline'])
      await core.createNamespace({ body: { metadata: { name } } });

    // Baseline: a client creating the children itself.
    const settings = testSettings('baseline');
    console.log(
      `${cpus()[0]?.model ?? 'unknown CPU'}, ${availableParallelism()} cores, node ${process.version}`,
    );
    const t0 = Date.now();
    await inParallel([...Array(count).keys()], async (i) => {
      const fn: EddyFunction = {
        apiVersion: 'eddy.dev/v1alpha1',
        kind: 'Function',
        metadata: {
          name: `fn-${i}`,
          namespace: 'baseline',
          uid: '00000000-0000-0000-0000-000000000000',
        },
        spec: spec(i),
      };
      for (const obj of [
        desiredCodeConfigMap(fn)!,
        desiredDeployment(fn, settings),
        desiredService(fn),
        desiredNetworkPolicy(fn, settings),
      ]) {
        obj.metadata!.ownerReferences = undefined;
        await objects.create(obj);
      }
    });
    const baselineMs = Date.now() - t0;
    console.log(
      `baseline: created ${count * 4} objects in ${formatElapsed(baselineMs)} (${baselineMs} ms)`,
    );

    // The operator, as its own process, under the chart's service account.
    const kc = await operatorKubeConfig(kube);
    const kubeconfig = join(kube.dir, 'operator.kubeconfig');
    writeFileSync(kubeconfig, kc.exportConfig());
    const startOperator = (identity: string) =>
      startProcess(
        'operator',
        process.execPath,
        [join(projectRoot, 'dist', 'operator', 'main.js')],
        join(kube.dir, `${identity}.log`),
        {
          env: {
            PATH: process.env.PATH,
            KUBECONFIG: kubeconfig,
            POD_NAMESPACE: releaseNamespace,
            POD_NAME: identity,
          },
        },
      );
    operator = startOperator('bench-1');
    let offset = auditSince(kube, 0).end;

    const t1 = Date.now();
    await inParallel([...Array(count).keys()], (i) =>
      custom.createNamespacedCustomObject({
        group: 'eddy.dev',
        version: 'v1alpha1',
        namespace: 'bench',
        plural: 'functions',
        body: {
          apiVersion: 'eddy.dev/v1alpha1',
          kind: 'Function',
          metadata: { name: `fn-${i}` },
          spec: spec(i),
        },
      }),
    );
    const createdMs = Date.now() - t1;
    // Watched rather than listed every half second: the observer should cost the API server as
    // little as the baseline's (nothing), or it is the bench that is measured.
    const isDone = (f: EddyFunction) =>
      f.status?.observedGeneration === f.metadata.generation &&
      (f.status?.conditions ?? []).some((c) => c.type === 'Deployed' && c.status === 'True');
    const doneFns = new Set<string>();
    const seenDeployments = new Set<string>();
    const watch = new k8s.Watch(admin);
    const watches = await Promise.all([
      watch.watch(
        '/apis/eddy.dev/v1alpha1/namespaces/bench/functions',
        {},
        (_type: string, f: EddyFunction) => {
          if (isDone(f)) doneFns.add(f.metadata.name);
          else doneFns.delete(f.metadata.name);
        },
        () => undefined,
      ),
      watch.watch(
        '/apis/apps/v1/namespaces/bench/deployments',
        {},
        (type: string, d: k8s.V1Deployment) => {
          if (type !== 'DELETED') seenDeployments.add(d.metadata!.name!);
        },
        () => undefined,
      ),
    ]);
    for (let tick = 0; doneFns.size < count || seenDeployments.size < count; tick++) {
      await sleep(100);
      if (tick % 10 === 0)
        process.stdout.write(
          `\r[${formatElapsed(Date.now() - t1)}] ${seenDeployments.size}/${count} Deployments, ${doneFns.size}/${count} statuses up to date `,
        );
      if (Date.now() - t1 > 600_000) throw new Error('not done after 10 minutes');
    }
    for (const w of watches) w.abort();
    const convergeMs = Date.now() - t1;
    process.stdout.write('\n');
    const rss = peakRssMb(operator.child.pid!);
    await sleep(1000);
    const phase1 = auditSince(kube, offset);
    offset = phase1.end;
    const p1 = summarize(phase1.events);

    // A full resync: a new operator process lists everything and reconciles every Function.
    await operator.stop();
    operator = startOperator('bench-2');
    const t2 = Date.now();
    while (!/reconciled all \d+ Function\(s\) found at start/.test(operator.log())) {
      await sleep(200);
      if (Date.now() - t2 > 300_000)
        throw new Error(`resync not done after 5 minutes:\n${operator.log()}`);
    }
    const resyncMs = Date.now() - t2;
    await sleep(1000);
    const p2 = summarize(auditSince(kube, offset).events);
    const rss2 = peakRssMb(operator.child.pid!);

    console.log(
      `\n| measure | baseline (a client writing the children) | eddy operator | target |`,
    );
    console.log('| --- | --- | --- | --- |');
    console.log(
      `| ${count} Functions to Deployments and up-to-date status | ${(baselineMs / 1000).toFixed(1)} s | ${(convergeMs / 1000).toFixed(1)} s (creating the Functions took ${(createdMs / 1000).toFixed(1)} s of it) | < 60 s ${convergeMs < 60_000 ? 'met' : 'MISSED'} |`,
    );
    const ratio = convergeMs / baselineMs;
    console.log(
      `| time against the baseline | | ${ratio.toFixed(2)}x | <= 1.5x ${ratio <= 1.5 ? 'met' : 'MISSED'} |`,
    );
    console.log(
      `| operator peak RSS | | ${rss} MB (after the resync: ${rss2} MB) | < 200 MB ${Math.max(rss, rss2) < 200 ? 'met' : 'MISSED'} |`,
    );
    console.log(
      `| API requests per Function | 4 | ${(p1.total / count).toFixed(2)} (${p1.writes} writes) | <= 6 ${p1.total / count <= 6 ? 'met' : 'MISSED'} |`,
    );
    console.log(
      `| full resync (restart) | | ${(resyncMs / 1000).toFixed(1)} s, ${p2.total} requests, ${p2.writes} writes | 0 writes ${p2.writes === 0 ? 'met' : 'MISSED'} |`,
    );
    console.log(`\n${/reconciled all.*/.exec(operator.log())?.[0] ?? ''}`);
    console.log(`operator requests while converging: ${p1.byVerb}`);
    console.log(`operator requests during the resync: ${p2.byVerb}`);
  } finally {
    await operator?.stop();
    await kube.stop();
  }
}

await main();
