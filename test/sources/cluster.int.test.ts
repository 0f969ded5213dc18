/**
 * The sources in the operator binary under the chart's service account, against a real API
 * server, a real MinIO, kinesalite and moto (DynamoDB Streams): Secrets read with `get` alone, each trigger's state in the Function's
 * status, poll progress in a ConfigMap owned by the Function, and the bucket entry removed by
 * the finalizer when the Function goes. Credentials appear nowhere.
 */
import * as k8s from '@kubernetes/client-node';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  CreateBucketCommand,
  GetBucketNotificationConfigurationCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { afterAll, describe, expect, it } from 'vitest';
import { functionsIn } from '../harness/functions.js';
import { startKube, type AuditEvent } from '../harness/kube.js';
import { s3Client, startMinio } from '../harness/minio.js';
import { startKinesis } from '../harness/kinesis.js';
import { startMoto } from '../harness/moto.js';
import { invokeCredentialsLabel } from '../../operator/src/auth/invoke-credentials.js';
import { createTable, dynamoClient } from './dynamodb-table.js';
import { createStream, kinesisClient } from './kinesis-stream.js';
import {
  allRolesAccount,
  installChart,
  releaseNamespace,
  startOperatorBinary,
} from '../harness/operator.js';
import { freePort } from '../harness/ports.js';
import { waitUntilReady, type ManagedProcess } from '../harness/proc.js';
import { canRun, useComponent } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';

const token = 'cluster-webhook-token-42';

describe.skipIf(!canRun('kube', 'minio', 'kinesis', 'moto'))(
  'sources in a cluster, under the chart role',
  () => {
    const kube = useComponent(() => startKube({ audit: true }));
    let proc: ManagedProcess | undefined;
    let dir: string | undefined;
    let s3: S3Client | undefined;
    let stopMinio: (() => Promise<void>) | undefined;
    let stopKinesis: (() => Promise<void>) | undefined;
    let stopMoto: (() => Promise<void>) | undefined;

    afterAll(async () => {
      await proc?.stop(15_000);
      s3?.destroy();
      await stopMinio?.();
      await stopKinesis?.();
      await stopMoto?.();
      if (dir) await rm(dir, { recursive: true, force: true });
    });

    it('report each trigger (S3, Kinesis, DynamoDB, schedule), keep poll progress in a ConfigMap, and clean up on delete', async () => {
      await installChart(kube());
      dir = await mkdtemp(join(tmpdir(), 'eddy-sources-cluster-'));
      const port = await freePort();
      const minio = await startMinio({
        webhook: { endpoint: `http://127.0.0.1:${port}/sources/s3`, authToken: token },
      });
      stopMinio = () => minio.stop();
      s3 = s3Client(minio);
      await s3.send(new CreateBucketCommand({ Bucket: 'cluster-photos' }));
      const kinesis = await startKinesis();
      stopKinesis = () => kinesis.stop();
      const streams = kinesisClient(kinesis);
      await createStream(streams, 'clicks', 1);
      streams.destroy();
      const moto = await startMoto();
      stopMoto = () => moto.stop();
      const tables = dynamoClient(moto);
      await createTable(tables, 'orders');
      tables.destroy();

      const kc = kube().kubeConfig;
      const core = kc.makeApiClient(k8s.CoreV1Api);
      await core.createNamespacedSecret({
        namespace: 'default',
        body: {
          metadata: { name: 'minio-creds', labels: { 'eddy.dev/connection': 'true' } },
          stringData: { accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey },
        },
      });
      await core.createNamespacedSecret({
        namespace: 'default',
        body: {
          metadata: { name: 'kinesis-creds', labels: { 'eddy.dev/connection': 'true' } },
          stringData: {
            accessKeyId: kinesis.accessKeyId,
            secretAccessKey: kinesis.secretAccessKey,
          },
        },
      });

      await core.createNamespacedSecret({
        namespace: 'default',
        body: {
          metadata: { name: 'dynamodb-creds', labels: { 'eddy.dev/connection': 'true' } },
          stringData: { accessKeyId: moto.accessKeyId, secretAccessKey: moto.secretAccessKey },
        },
      });

      // Credentials not meant for Functions: unlabelled, so no trigger may send them anywhere.
      await core.createNamespacedSecret({
        namespace: 'default',
        body: {
          metadata: { name: 'app-creds' },
          stringData: { accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey },
        },
      });

      const operator = await startOperatorBinary(kube(), dir, {
        POD_NAME: 'operator-sources',
        EDDY_GATEWAY_PORT: String(port),
        EDDY_S3_WEBHOOK_TOKEN: token,
        EDDY_S3_WEBHOOK_ENDPOINT: minio.endpoint,
        EDDY_S3_WEBHOOK_ARN: minio.webhookArn!,
      });
      proc = operator;
      const url = `http://127.0.0.1:${port}`;
      try {
        await waitUntilReady(
          operator,
          async () => (await fetch(`${url}/readyz`)).status === 200,
          30_000,
        );
        const connection = {
          endpoint: minio.endpoint,
          region: minio.region,
          secretRef: { name: 'minio-creds' },
        };
        const fns = functionsIn(kc, 'default');
        await fns.create('photos', {
          code: { inline: 'export const handler = async () => 1;' },
          triggers: [
            { name: 'uploads', s3: { bucket: 'cluster-photos', connection } },
            { name: 'missing', s3: { bucket: 'no-such-bucket', connection } },
            {
              name: 'unlabelled',
              s3: {
                bucket: 'cluster-photos',
                mode: 'poll',
                connection: { ...connection, secretRef: { name: 'app-creds' } },
              },
            },
            { name: 'listing', s3: { bucket: 'cluster-photos', mode: 'poll', connection } },
            {
              name: 'clicks',
              kinesis: {
                stream: 'clicks',
                connection: {
                  endpoint: kinesis.endpoint,
                  region: kinesis.region,
                  secretRef: { name: 'kinesis-creds' },
                },
              },
            },
            {
              name: 'orders',
              dynamodb: {
                table: 'orders',
                filterCriteria: { filters: [{ pattern: '{"eventName": ["INSERT"]}' }] },
                connection: {
                  endpoint: moto.endpoint,
                  region: moto.region,
                  secretRef: { name: 'dynamodb-creds' },
                },
              },
            },
            {
              name: 'daily',
              schedule: { expression: 'cron(0 3 * * ? *)', timezone: 'Europe/Berlin' },
            },
          ],
        });

        const fn = await waitFor(
          'the triggers in status',
          async () => {
            const f = await fns.get('photos');
            const t = f.status?.triggers ?? [];
            const ok = (n: string) => t.find((x) => x.name === n)?.ready === true;
            return ok('uploads') &&
              ok('listing') &&
              ok('clicks') &&
              ok('orders') &&
              t.find((x) => x.name === 'daily')?.nextScheduleTime &&
              t.find((x) => x.name === 'missing')?.reason &&
              t.find((x) => x.name === 'unlabelled')?.reason
              ? f
              : undefined;
          },
          30_000,
        );
        expect(fn.status!.triggers!.find((t) => t.name === 'missing')).toMatchObject({
          ready: false,
          reason: 'BucketNotFound',
        });
        expect(fn.status!.conditions!.find((c) => c.type === 'TriggersReady')).toMatchObject({
          status: 'False',
          reason: 'BucketNotFound',
        });
        // A Secret without the label is refused, and the status says how to allow it.
        expect(fn.status!.triggers!.find((t) => t.name === 'unlabelled')).toMatchObject({
          ready: false,
          reason: 'SecretNotAllowed',
        });
        expect(fn.status!.triggers!.find((t) => t.name === 'unlabelled')!.message).toContain(
          'kubectl label secret app-creds -n default eddy.dev/connection=true',
        );
        expect(fn.metadata.finalizers).toContain('eddy.dev/cleanup');
        // The next 03:00 in Berlin is 01:00 or 02:00 UTC.
        expect(fn.status!.triggers!.find((t) => t.name === 'daily')!.nextScheduleTime).toMatch(
          /T0[12]:00:00/,
        );

        const entries = async () =>
          (
            await s3!.send(
              new GetBucketNotificationConfigurationCommand({ Bucket: 'cluster-photos' }),
            )
          ).QueueConfigurations ?? [];
        expect((await entries()).map((e) => e.Id)).toEqual(['eddy']);

        const cm = await waitFor('the poll progress ConfigMap', () =>
          core.readNamespacedConfigMap({ name: 'photos.listing.source', namespace: 'default' }),
        );
        expect(cm.data?.watermark).toBeDefined();
        expect(cm.metadata?.ownerReferences?.[0]).toMatchObject({
          kind: 'Function',
          name: 'photos',
          uid: fn.metadata.uid,
        });
        // The DynamoDB trigger's checkpoint names its stream, in a ConfigMap the Function owns.
        const orders = await waitFor('the DynamoDB checkpoint ConfigMap', () =>
          core.readNamespacedConfigMap({ name: 'photos.orders.source', namespace: 'default' }),
        );
        expect(orders.data?.stream).toMatch(/^arn:aws:dynamodb:[^:]+:\d+:table\/orders\/stream\//);
        expect(orders.metadata?.ownerReferences?.[0]).toMatchObject({ uid: fn.metadata.uid });

        // Credentials appear in no status, event or log line.
        const events = await core.listNamespacedEvent({ namespace: 'default' });
        const said = [
          JSON.stringify((await fns.get('photos')).status),
          JSON.stringify(events.items.map((e) => e.message)),
          operator.log(),
        ].join('\n');
        expect(said).not.toContain(minio.secretAccessKey);

        // Deleted: the finalizer removes the bucket entry first.
        await fns.delete('photos');
        await fns.gone('photos', 30_000);
        expect(await entries()).toEqual([]);

        // The operator read the Functions' Secrets one by one; it listed and watched only the
        // invoke credentials in its own namespace, by their label.
        const audit = readFileSync(kube().auditLog!, 'utf8')
          .split('\n')
          .filter((l) => l !== '')
          .map((l) => JSON.parse(l) as AuditEvent)
          .filter(
            (e) =>
              e.user.username === `system:serviceaccount:${releaseNamespace}:${allRolesAccount}` &&
              e.objectRef?.resource === 'secrets',
          );
        const elsewhere = audit.filter((e) => e.objectRef?.namespace !== releaseNamespace);
        expect(elsewhere.length).toBeGreaterThan(0);
        expect(new Set(elsewhere.map((e) => e.verb))).toEqual(new Set(['get']));
        for (const e of audit.filter((e) => e.verb === 'list' || e.verb === 'watch')) {
          expect(e.objectRef?.namespace).toBe(releaseNamespace);
          expect(decodeURIComponent(e.requestURI ?? '')).toContain(
            `labelSelector=${invokeCredentialsLabel}`,
          );
        }
      } catch (err) {
        process.stderr.write(`--- operator log\n${operator.log()}\n`);
        throw err;
      }
    }, 120_000);
  },
);
