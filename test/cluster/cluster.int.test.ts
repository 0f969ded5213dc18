/**
 * The user's story on a real one-node cluster (test/harness/cluster.ts): `helm install` Eddy with
 * the locally built operator image as its two Deployments (controller and gateway) and NATS
 * JetStream as the chart's own StatefulSet (the harness's nats-server in an image), `kubectl
 * apply` Functions, and pods of the runtime image that
 * really run under their memory limits. Invocations go through the function's Service and through
 * the in-cluster gateway, as a client in the cluster would; the thumbnail story runs with MinIO
 * on the host (pods reach it at the bridge's address) and the function as a real pod.
 * Asynchronous invocations keep flowing while the gateway Deployment's pods are deleted, and
 * every one accepted is handled.
 *
 * One cluster for the whole file: the tests run in order and build on each other (the chart is
 * installed once).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import {
  CreateBucketCommand,
  GetBucketNotificationConfigurationCommand,
  GetObjectCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { InvokeCommand, LambdaClient } from '@aws-sdk/client-lambda';
import * as k8s from '@kubernetes/client-node';
import sharp from 'sharp';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { nodeIp, startCluster, type Cluster } from '../harness/cluster.js';
import { awsCli, goBinaries, goBinaryPath, projectRoot, versions } from '../harness/components.js';
import { buildNatsImage, buildProjectImages, natsImage } from '../harness/images.js';
import { awsLambdaInvoke } from '../gateway/lambda-client.js';
import { s3Client, startMinio, type Minio } from '../harness/minio.js';
import { freePort } from '../harness/ports.js';
import { run, tail } from '../harness/proc.js';
import { canRun } from '../harness/suite.js';
import { thumbnailManifest } from '../harness/thumbnail.js';
import { waitFor } from '../harness/wait.js';

/** Polls `probe` until it is true; fails after `timeoutMs`, naming what it waited for. */
const until = (what: string, probe: () => Promise<boolean>, timeoutMs: number) =>
  waitFor(what, async () => ((await probe()) ? true : undefined), timeoutMs);

/** The tags the chart and the examples name by default: what a user's cluster would run. */
const images = {
  operator: 'eddy/operator:0.1.0',
  runtime: 'eddy/runtime:nodejs22',
  thumbnail: 'eddy/thumbnail:0.1.0',
};
const release = 'eddy';
const system = 'eddy-system';
const webhookToken = randomBytes(16).toString('hex');
/** MinIO's port on the node's address, chosen before the chart registers it as the store. */
let minioPort: number;
/** A caller's token (`kubectl create token`), sent with every POST; the chart's auth is on. */
let invokerToken: string | undefined;

interface Answer {
  status: number;
  headers: Headers;
  body: string;
}

/** A POST with a bounded wait; connection errors (a Service not yet wired) come back as status 0. */
async function post(
  url: string,
  body: string,
  headers: Record<string, string> = {},
): Promise<Answer> {
  try {
    const res = await fetch(url, {
      method: 'POST',
      body,
      headers: {
        'content-type': 'application/json',
        ...(invokerToken ? { authorization: `Bearer ${invokerToken}` } : {}),
        ...headers,
      },
      signal: AbortSignal.timeout(60_000),
    });
    return { status: res.status, headers: res.headers, body: await res.text() };
  } catch (err) {
    return { status: 0, headers: new Headers(), body: String(err) };
  }
}

/** Posts until something answers (a ClusterIP may refuse for a moment after its pod is Ready). */
async function postWhenServed(url: string, body: string, headers: Record<string, string> = {}) {
  let answer: Answer | undefined;
  await until(
    `an answer from ${url}`,
    async () => {
      answer = await post(url, body, headers);
      return answer.status !== 0;
    },
    30_000,
  );
  return answer!;
}

describe.skipIf(!canRun('cluster'))('on a one-node cluster', () => {
  let cluster: Cluster;
  let core: k8s.CoreV1Api;
  let apps: k8s.AppsV1Api;
  let custom: k8s.CustomObjectsApi;
  let minio: Minio | undefined;
  let s3: S3Client | undefined;

  const kubectl = (...args: string[]) => cluster.kubectl(args);
  const apply = async (name: string, manifest: string) => {
    const file = join(cluster.dir, `${name}.yaml`);
    await writeFile(file, manifest);
    return kubectl('apply', '-f', file);
  };
  const clusterIp = async (namespace: string, name: string) =>
    (await core.readNamespacedService({ namespace, name })).spec!.clusterIP!;
  const gatewayUrl = async () => `http://${await clusterIp(system, `${release}-gateway`)}:8080`;
  const functionPods = async (name: string) =>
    (
      await core.listNamespacedPod({
        namespace: 'default',
        labelSelector: `eddy.dev/function=${name}`,
      })
    ).items.filter((p) => !p.metadata?.deletionTimestamp);
  /**
   * MinIO on the host, on the bridge's address so pods reach it, posting bucket events to the
   * gateway's Service with the chart's token; and the photos buckets. Started once; a later call
   * finds it running.
   */
  const startStore = async (): Promise<{ minio: Minio; s3: S3Client }> => {
    if (!minio || !s3) {
      const gateway = await gatewayUrl();
      minio = await startMinio({
        host: nodeIp,
        port: minioPort,
        webhook: { endpoint: `${gateway}/sources/s3`, authToken: webhookToken },
      });
      s3 = s3Client(minio);
      for (const bucket of ['photos', 'photos-thumbnails']) {
        await s3.send(new CreateBucketCommand({ Bucket: bucket }));
      }
    }
    return { minio, s3 };
  };
  /** The operator (leader, in a pod) wrote the photos bucket's notification entry. */
  /**
   * Waits for the photos bucket to notify the gateway of `key`: the operator writes the entry a
   * trigger at a time (its filter the triggers' common suffix), so an entry that exists may not
   * let the key through yet (one for .jpeg only, while the upload is a .jpg).
   */
  const photosNotifyGateway = (store: S3Client, key = 'x.jpg') =>
    until(
      `the photos bucket to notify the gateway of ${key}`,
      async () => {
        const config = await store.send(
          new GetBucketNotificationConfigurationCommand({ Bucket: 'photos' }),
        );
        return (config.QueueConfigurations ?? []).some((q) =>
          (q.Filter?.Key?.FilterRules ?? []).every((r) =>
            r.Name?.toLowerCase() === 'prefix'
              ? key.startsWith(r.Value ?? '')
              : key.endsWith(r.Value ?? ''),
          ),
        );
      },
      120_000,
    );
  const readyReplicas = async (name: string) =>
    (await apps.readNamespacedDeployment({ namespace: 'default', name })).status?.readyReplicas ??
    0;

  beforeAll(async () => {
    await buildProjectImages(images);
    await buildNatsImage(natsImage);
    cluster = await startCluster({ images: [...Object.values(images), natsImage] });
    core = cluster.kubeConfig.makeApiClient(k8s.CoreV1Api);
    apps = cluster.kubeConfig.makeApiClient(k8s.AppsV1Api);
    custom = cluster.kubeConfig.makeApiClient(k8s.CustomObjectsApi);
  }, 1_200_000);

  afterEach(async (ctx) => {
    if (ctx.task.result?.state !== 'fail' || !cluster) return;
    for (const p of cluster.processes) {
      process.stderr.write(`\n----- ${p.name} log, last 40 lines -----\n${tail(p.log(), 40)}\n`);
    }
    for (const args of [
      ['get', 'pods', '-A', '-o', 'wide'],
      ['get', 'functions', '-A'],
      ['describe', 'pods', '-n', 'default'],
      ['get', 'pods', '-n', system, '-o', 'wide'],
      [
        'logs',
        '-n',
        system,
        '-l',
        'app.kubernetes.io/component=controller',
        '--tail=60',
        '--prefix',
      ],
      ['logs', '-n', system, '-l', 'app.kubernetes.io/component=gateway', '--tail=80', '--prefix'],
      ['logs', '-n', system, '-l', 'app.kubernetes.io/component=nats', '--tail=40', '--prefix'],
    ]) {
      const out = await kubectl(...args).catch((err: Error) => err.message);
      process.stderr.write(`\n----- kubectl ${args.join(' ')} -----\n${tail(out, 120)}\n`);
    }
  });

  afterAll(async () => {
    s3?.destroy();
    await minio?.stop();
    await cluster?.stop();
  });

  it('helm install with queue.nats.install: the controller and gateway pods and a JetStream server run under the chart, one controller leads, all ready', async () => {
    await run(
      goBinaryPath(goBinaries.helm),
      [
        'install',
        release,
        join(projectRoot, 'charts', 'eddy'),
        '--namespace',
        system,
        '--create-namespace',
        '--set',
        `s3.webhook.token=${webhookToken}`,
        '--set',
        `s3.webhook.endpoint=http://${nodeIp}:${(minioPort = await freePort())}`,
        // JetStream of the chart's own, on an emptyDir (the node has no volume provisioner).
        '--set',
        'queue.nats.install=true',
        '--set',
        'queue.nats.storage.persistent=false',
        '--set',
        `queue.nats.image.repository=${natsImage.split(':')[0]}`,
        '--set',
        `queue.nats.image.tag=${versions.natsServer}`,
        '--set',
        'queue.nats.image.pullPolicy=Never',
        '--wait',
        '--timeout',
        '4m',
        '--kubeconfig',
        cluster.kubeconfigPath,
      ],
      { timeoutMs: 300_000 },
    );
    const podsOf = async (component: string) =>
      (
        await core.listNamespacedPod({
          namespace: system,
          labelSelector: `app.kubernetes.io/component=${component}`,
        })
      ).items;
    const pods = await podsOf('controller');
    const gateways = await podsOf('gateway');
    expect(pods).toHaveLength(2);
    expect(gateways).toHaveLength(2);
    for (const [pod, account] of [
      ...pods.map((p) => [p, 'eddy-controller'] as const),
      ...gateways.map((p) => [p, 'eddy-gateway'] as const),
    ]) {
      expect(pod.spec?.serviceAccountName).toBe(account);
      expect(pod.spec?.containers[0]?.image).toBe(images.operator);
      expect(pod.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
    }
    const [nats] = await podsOf('nats');
    expect(nats?.spec?.containers[0]?.image).toBe(natsImage);
    expect(nats?.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
    // The gateway's pods were given the NATS Service's address, without cluster DNS.
    const natsUrl = await kubectl(
      'exec',
      '-n',
      system,
      gateways[0]!.metadata!.name!,
      '--',
      'printenv',
      'EDDY_NATS_URL',
    );
    expect(natsUrl.trim()).toBe(`nats://${await clusterIp(system, 'eddy-nats')}:4222`);
    // One controller pod holds the Lease.
    const coordination = cluster.kubeConfig.makeApiClient(k8s.CoordinationV1Api);
    await until(
      'a controller pod to hold the Lease',
      async () => {
        const leases = (await coordination.listNamespacedLease({ namespace: system })).items;
        const holders = leases.map((l) => l.spec?.holderIdentity);
        return holders.some((h) => pods.some((p) => p.metadata?.name === h));
      },
      60_000,
    );
    // Callers as docs/gateway.md has them: a service account bound to eddy-invoker, its token.
    await kubectl('create', 'serviceaccount', 'caller', '-n', 'default');
    await kubectl(
      'create',
      'rolebinding',
      'caller-invokes',
      '-n',
      'default',
      '--clusterrole',
      'eddy-invoker',
      '--serviceaccount',
      'default:caller',
    );
    invokerToken = (await kubectl('create', 'token', 'caller', '-n', 'default')).trim();
  }, 300_000);

  it('kubectl apply of a Function with inline code and 256Mi: a pod under a 256 MiB limit answers through its Service, READY True', async () => {
    const applied = Date.now();
    await apply(
      'echo',
      `apiVersion: eddy.dev/v1alpha1
kind: Function
metadata: {name: echo, namespace: default}
spec:
  memory: 256Mi
  timeoutSeconds: 10
  scaling: {minReplicas: 1}
  code:
    inline: |
      import v8 from 'node:v8';
      export const handler = async (event) => {
        if (event.allocateMb) {
          const hold = [];
          for (let i = 0; i < event.allocateMb; i++) hold.push(new Array(128 * 1024).fill(i));
          return { held: hold.length };
        }
        return { echo: event, heapLimit: v8.getHeapStatistics().heap_size_limit };
      };
`,
    );
    await until(
      'the echo Function to have a ready pod',
      async () => (await readyReplicas('echo')) >= 1,
      120_000,
    );
    const deployment = await apps.readNamespacedDeployment({ namespace: 'default', name: 'echo' });
    const created = new Date(deployment.metadata!.creationTimestamp!).getTime();
    console.log(
      `echo: kubectl apply -> pod Ready ${Date.now() - applied} ms (Deployment created -> pod Ready about ${Date.now() - created} ms, the API's timestamps are whole seconds)`,
    );
    const [pod] = await functionPods('echo');
    expect(pod?.spec?.containers[0]?.image).toBe(images.runtime);
    expect(pod?.spec?.containers[0]?.resources?.limits?.memory).toBe('256Mi');

    // The container's own cgroup says 256 MiB (cgroup v1 and v2 spell it differently).
    const limit = await kubectl(
      'exec',
      '-n',
      'default',
      pod!.metadata!.name!,
      '--',
      'sh',
      '-c',
      'cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes',
    );
    expect(Number(limit.trim())).toBe(256 * 1024 * 1024);

    const answer = await postWhenServed(
      `http://${await clusterIp('default', 'echo')}:8080/`,
      JSON.stringify({ hello: 'cluster' }),
      {
        'ce-specversion': '1.0',
        'ce-id': randomUUID(),
        'ce-source': 'test/cluster',
        'ce-type': 'dev.eddy.test',
      },
    );
    expect(answer.status, answer.body).toBe(200);
    const result = JSON.parse(answer.body) as { echo: unknown; heapLimit: number };
    expect(result.echo).toEqual({ hello: 'cluster' });
    // The heap is sized from the memory (docs/runtime.md): well under the limit, not V8's default.
    expect(result.heapLimit).toBeLessThan(256 * 1024 * 1024);
    expect(result.heapLimit).toBeGreaterThan(128 * 1024 * 1024);

    // kubectl's READY column for the Function.
    await until(
      'kubectl get functions to show echo READY True',
      async () => /^echo\s+True\b/m.test(await kubectl('get', 'functions', '-n', 'default')),
      60_000,
    );
  }, 300_000);

  it('a handler that allocates past its memory: the invocation fails as docs/runtime.md says, the container is replaced, the next invocation succeeds', async () => {
    const gateway = await gatewayUrl();
    const before = (await functionPods('echo'))[0]!;
    const restartsBefore = before.status?.containerStatuses?.[0]?.restartCount ?? 0;
    const oom = await postWhenServed(
      `${gateway}/functions/default/echo`,
      JSON.stringify({ allocateMb: 1024 }),
    );
    expect(oom.status, oom.body).toBe(502);
    expect(JSON.parse(oom.body)).toMatchObject({ errorType: 'Runtime.ExitError' });
    await until(
      'the echo container to be replaced and ready again',
      async () => {
        const pod = (await functionPods('echo'))[0];
        const status = pod?.status?.containerStatuses?.[0];
        return (
          (pod?.metadata?.uid !== before.metadata?.uid ||
            (status?.restartCount ?? 0) > restartsBefore) &&
          status?.ready === true
        );
      },
      120_000,
    );
    // The replaced container's log says why: V8's heap limit, not a kill by the kernel.
    const previous = await kubectl('logs', '-n', 'default', before.metadata!.name!, '--previous');
    expect(previous).toMatch(/JavaScript heap out of memory/);

    const next = await postWhenServed(
      `${gateway}/functions/default/echo`,
      JSON.stringify({ after: 'oom' }),
    );
    expect(next.status, next.body).toBe(200);
    expect(JSON.parse(next.body)).toMatchObject({ echo: { after: 'oom' } });
  }, 300_000);

  it('invoked at zero through the in-cluster gateway, a Function starts a pod and answers; idle, it goes back to zero', async () => {
    await apply(
      'hello',
      `apiVersion: eddy.dev/v1alpha1
kind: Function
metadata: {name: hello, namespace: default}
spec:
  memory: 128Mi
  timeoutSeconds: 5
  scaling: {idleSeconds: 5}
  code:
    inline: |
      export const handler = async (event) => ({ hello: event.name ?? 'world' });
`,
    );
    // A new Function starts with one replica in a cluster, then goes to zero once idle.
    await until(
      'hello to be at zero pods',
      async () => {
        const d = await apps.readNamespacedDeployment({ namespace: 'default', name: 'hello' });
        return d.spec?.replicas === 0 && (await functionPods('hello')).length === 0;
      },
      180_000,
    );
    const started = Date.now();
    const answer = await postWhenServed(
      `${await gatewayUrl()}/functions/default/hello`,
      JSON.stringify({ name: 'from zero' }),
    );
    expect(answer.status, answer.body).toBe(200);
    expect(JSON.parse(answer.body)).toEqual({ hello: 'from zero' });
    console.log(`invocation at zero answered in ${Date.now() - started} ms (pod started for it)`);
    // A replica's first invocation carries its init duration (docs/gateway.md).
    expect(answer.headers.get('x-eddy-init-duration-ms')).toMatch(/^\d/);
    await until(
      'hello to go back to zero once idle',
      async () => {
        const d = await apps.readNamespacedDeployment({ namespace: 'default', name: 'hello' });
        return d.spec?.replicas === 0 && (await functionPods('hello')).length === 0;
      },
      120_000,
    );
  }, 400_000);

  it("Lambda's Invoke API through the gateway Service: an AWS SDK caller and the AWS CLI, with an access key from a labelled Secret", async () => {
    // As docs/gateway.md has it: a Secret in Eddy's namespace naming the caller's ServiceAccount.
    const accessKeyId = 'AKIAEDDYCALLER01';
    const secretAccessKey = randomBytes(30).toString('base64');
    await kubectl(
      'create',
      'secret',
      'generic',
      'caller-invoke-key',
      '-n',
      system,
      '--from-literal',
      `accessKeyId=${accessKeyId}`,
      '--from-literal',
      `secretAccessKey=${secretAccessKey}`,
      '--from-literal',
      'serviceAccount=default/caller',
    );
    await kubectl(
      'label',
      'secret',
      'caller-invoke-key',
      '-n',
      system,
      'eddy.dev/invoke-credentials=true',
    );
    const endpoint = await gatewayUrl();
    const lambda = new LambdaClient({
      endpoint,
      region: 'eu-west-1',
      credentials: { accessKeyId, secretAccessKey },
      maxAttempts: 1,
    });
    try {
      // Both gateway replicas follow the Secret; a call is answered by either.
      const invoke = () =>
        lambda.send(
          new InvokeCommand({
            FunctionName: 'hello',
            LogType: 'Tail',
            Payload: Buffer.from(JSON.stringify({ name: 'sdk' })),
          }),
        );
      let out: Awaited<ReturnType<typeof invoke>> | undefined;
      for (let i = 0; i < 4; i++) {
        out = await waitFor(
          'the gateway to take the new key',
          () => invoke().catch(() => undefined),
          120_000,
        );
        expect(out.StatusCode).toBe(200);
      }
      expect(JSON.parse(Buffer.from(out!.Payload!).toString())).toEqual({ hello: 'sdk' });
      expect(Buffer.from(out!.LogResult!, 'base64').toString()).toMatch(/^START RequestId: /);
      const wrong = await new LambdaClient({
        endpoint,
        region: 'eu-west-1',
        credentials: { accessKeyId, secretAccessKey: 'not-it' },
        maxAttempts: 1,
      })
        .send(new InvokeCommand({ FunctionName: 'hello', Payload: Buffer.from('{}') }))
        .catch((err: Error) => err);
      expect((wrong as Error).name).toBe('InvalidSignatureException');
    } finally {
      lambda.destroy();
    }
    if (!canRun('awscli')) return;
    const out = join(cluster.dir, 'invoke-out.json');
    const stdout = await awsLambdaInvoke(awsCli, {
      endpoint,
      region: 'eu-west-1',
      keys: { accessKeyId, secretAccessKey },
      out,
      args: ['--function-name', 'hello', '--payload', '{"name":"cli"}'],
      timeoutMs: 120_000,
    });
    expect((JSON.parse(stdout) as { StatusCode: number }).StatusCode).toBe(200);
  }, 400_000);

  it('the thumbnail story: an upload to MinIO becomes a thumbnail, made by the function as a pod', async () => {
    const store = await startStore();
    const manifest = await thumbnailManifest(store.minio);
    expect(manifest).toContain(store.minio.endpoint);
    expect(manifest).not.toMatch(/eddysecret|(value|accessKeyId): eddy\b/);
    await apply('thumbnail', manifest);
    await photosNotifyGateway(store.s3, 'holiday/beach 1.jpg');

    const photo = await sharp({
      create: { width: 1600, height: 1200, channels: 3, background: { r: 200, g: 80, b: 40 } },
    })
      .jpeg()
      .toBuffer();
    await store.s3.send(
      new PutObjectCommand({
        Bucket: 'photos',
        Key: 'holiday/beach 1.jpg',
        Body: photo,
        ContentType: 'image/jpeg',
      }),
    );
    let thumbnail: Buffer | undefined;
    await until(
      'the thumbnail in photos-thumbnails',
      async () => {
        try {
          const out = await store.s3.send(
            new GetObjectCommand({ Bucket: 'photos-thumbnails', Key: 'holiday/beach 1.jpg' }),
          );
          thumbnail = Buffer.from(await out.Body!.transformToByteArray());
          return true;
        } catch {
          return false;
        }
      },
      180_000,
    );
    const meta = await sharp(thumbnail).metadata();
    expect(meta.format).toBe('jpeg');
    expect(meta.width).toBe(200);
    expect(meta.height).toBe(150);
    const pods = await functionPods('thumbnail');
    expect(pods.length).toBeGreaterThan(0);
    expect(pods[0]?.spec?.containers[0]?.image).toBe(images.thumbnail);
  }, 400_000);

  it('asynchronous invocations flowing while the gateway Deployment’s pods are deleted: every one accepted is handled', async () => {
    const total = 200;
    // What the function saw, by the key each invocation carries: a server on the node's address,
    // which pods reach as they reach MinIO.
    const seen = new Map<string, number>();
    const collector: Server = createServer((req, res) => {
      let body = '';
      req.on('data', (chunk: Buffer) => (body += chunk.toString()));
      req.on('end', () => {
        const { key } = JSON.parse(body) as { key: string };
        seen.set(key, (seen.get(key) ?? 0) + 1);
        res.end('ok');
      });
    });
    await new Promise<void>((resolve) => collector.listen(0, nodeIp, resolve));
    const collectorUrl = `http://${nodeIp}:${(collector.address() as AddressInfo).port}/seen`;
    try {
      // Two at a time, half a second each (at most 4 a second): events accepted before the
      // deletion are still waiting when the pods go, on a loaded machine too.
      await apply(
        'counter',
        `apiVersion: eddy.dev/v1alpha1
kind: Function
metadata: {name: counter, namespace: default}
spec:
  memory: 128Mi
  timeoutSeconds: 10
  concurrency: 2
  scaling: {minReplicas: 1, maxReplicas: 1}
  env: [{name: COLLECTOR, value: "${collectorUrl}"}]
  code:
    inline: |
      export const handler = async (event, context) => {
        await new Promise((resolve) => setTimeout(resolve, 500));
        const res = await fetch(process.env.COLLECTOR, {
          method: 'POST',
          body: JSON.stringify({ key: event.key, requestId: context.awsRequestId }),
          signal: AbortSignal.timeout(5000),
        });
        if (!res.ok) throw new Error('the collector answered ' + res.status);
        return { seen: event.key };
      };
`,
      );
      await until(
        'the counter Function to have a ready pod',
        async () => (await readyReplicas('counter')) >= 1,
        120_000,
      );
      const gateway = await gatewayUrl();
      const gatewayPods = async () =>
        (
          await core.listNamespacedPod({
            namespace: system,
            labelSelector: 'app.kubernetes.io/component=gateway',
          })
        ).items;
      const before = new Set((await gatewayPods()).map((p) => p.metadata!.uid));
      expect(before.size).toBe(2);

      const keys = Array.from({ length: total }, (_, i) => `event-${i}-${randomUUID()}`);
      let accepted = 0;
      let refusals = 0;
      let deletion: Promise<unknown> | undefined;
      let atDeletion: { accepted: number; seen: number } | undefined;
      /** Sends one invocation until a gateway accepts it (202); a client retries what got no answer. */
      const send = async (key: string) => {
        const deadline = Date.now() + 180_000;
        for (;;) {
          const answer = await post(
            `${gateway}/functions/default/counter/async`,
            JSON.stringify({ key }),
          );
          if (answer.status === 202) break;
          refusals++;
          if (Date.now() > deadline) {
            throw new Error(
              `${key} was never accepted; last answer ${answer.status} ${answer.body}`,
            );
          }
          await new Promise((r) => setTimeout(r, 250));
        }
        accepted++;
        if (accepted === total / 4 && !deletion) {
          atDeletion = { accepted, seen: seen.size };
          // Both gateway pods at once: their Deployment replaces them.
          deletion = kubectl(
            'delete',
            'pods',
            '-n',
            system,
            '-l',
            'app.kubernetes.io/component=gateway',
            '--wait=false',
          );
        }
      };
      const queue = [...keys];
      await Promise.all(
        Array.from({ length: 8 }, async () => {
          for (let key = queue.shift(); key; key = queue.shift()) await send(key);
        }),
      );
      await deletion;
      expect(accepted).toBe(total);
      // The pods were deleted while accepted events were still waiting to be handled.
      expect(atDeletion!.seen).toBeLessThan(atDeletion!.accepted);
      await until(
        'the gateway Deployment to run two new pods',
        async () => {
          const pods = await gatewayPods();
          return (
            pods.length === 2 &&
            pods.every(
              (p) =>
                !before.has(p.metadata!.uid) &&
                p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
            )
          );
        },
        180_000,
      );
      await until(
        `the function to have seen all ${total} events`,
        async () => keys.every((k) => seen.has(k)),
        240_000,
      );
      const deliveries = [...seen.values()].reduce((a, b) => a + b, 0);
      console.log(
        `async across the gateway pods' deletion: ${total} accepted (${refusals} sends refused or unanswered and sent again), ${seen.size} handled, ${deliveries - seen.size} duplicate deliveries; at the deletion ${atDeletion!.accepted} accepted, ${atDeletion!.seen} handled`,
      );
      expect(keys.filter((k) => !seen.has(k))).toEqual([]);
      expect([...seen.keys()].filter((k) => !keys.includes(k))).toEqual([]);
    } finally {
      collector.closeAllConnections();
      await new Promise((resolve) => collector.close(resolve));
    }
  }, 900_000);

  it('deleting Functions: their pods, Service and ConfigMap go (owner references), and the finalizer cleans the bucket', async () => {
    expect(
      (await core.readNamespacedConfigMap({ namespace: 'default', name: 'echo-code' })).metadata
        ?.name,
    ).toBe('echo-code');
    await kubectl('delete', 'function', 'echo', '-n', 'default', '--wait=true', '--timeout=120s');
    await until(
      "echo's children to be collected",
      async () => {
        const gone = async (read: () => Promise<unknown>) =>
          read().then(
            () => false,
            (err: unknown) => err instanceof k8s.ApiException && err.code === 404,
          );
        return (
          (await gone(() =>
            core.readNamespacedConfigMap({ namespace: 'default', name: 'echo-code' }),
          )) &&
          (await gone(() => core.readNamespacedService({ namespace: 'default', name: 'echo' }))) &&
          (await gone(() =>
            apps.readNamespacedDeployment({ namespace: 'default', name: 'echo' }),
          )) &&
          (await functionPods('echo')).length === 0
        );
      },
      120_000,
    );

    // The clean-up check stands on its own: the store and the thumbnail Function are set up
    // here when the thumbnail story did not (apply leaves a Function already there unchanged).
    const store = await startStore();
    await apply('thumbnail', await thumbnailManifest(store.minio));
    await photosNotifyGateway(store.s3);
    await until(
      'the thumbnail Function to hold the clean-up finalizer',
      async () => {
        const fn = (await custom.getNamespacedCustomObject({
          group: 'eddy.dev',
          version: 'v1alpha1',
          namespace: 'default',
          plural: 'functions',
          name: 'thumbnail',
        })) as { metadata: { finalizers?: string[] } };
        return (fn.metadata.finalizers ?? []).includes('eddy.dev/cleanup');
      },
      60_000,
    );
    await kubectl(
      'delete',
      'function',
      'thumbnail',
      '-n',
      'default',
      '--wait=true',
      '--timeout=120s',
    );
    const config = await store.s3.send(
      new GetBucketNotificationConfigurationCommand({ Bucket: 'photos' }),
    );
    expect(config.QueueConfigurations ?? []).toEqual([]);
    await until(
      "thumbnail's pods to go",
      async () => (await functionPods('thumbnail')).length === 0,
      120_000,
    );
  }, 300_000);
});
