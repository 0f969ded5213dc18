/**
 * The local stack's S3-compatible store when a `minio` binary is on PATH: a MinIO server as a
 * child process, with the same key pair, buckets and event wiring as the s3rver store
 * (embedded-s3.ts): every upload's and deletion's event is posted to the gateway's intake with
 * its token, several at once.
 *
 * MinIO takes its webhook target from its environment at start, so it starts once the gateway
 * listens. It posts events without a queue directory: with one, MinIO posts a target's events one
 * at a time, and since the intake answers once the invocations have ended, that would run one
 * invocation at a time. Without one, it posts with as many workers as GOMAXPROCS (set to
 * `postsInFlight` here), and an event the gateway does not take is dropped and logged by MinIO:
 * as with s3rver, whose queue is in memory, events are not kept across restarts.
 */
import { accessSync, constants } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { setTimeout as wait } from 'node:timers/promises';
import {
  CreateBucketCommand,
  GetBucketNotificationConfigurationCommand,
  PutBucketNotificationConfigurationCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { EmbeddedS3, LocalStoreOptions } from './embedded-s3.js';
import { startTiedProcess } from './tied-process.js';

/** How long each call that sets MinIO up may take. */
const setupCallTimeoutMs = 15_000;
const setupCall = () => ({ abortSignal: AbortSignal.timeout(setupCallTimeoutMs) });

/** The webhook target's id: MinIO names it `arn:minio:sqs:<region>:EDDY:webhook`. */
const targetId = 'EDDY';
const region = 'us-east-1';
/** Events posted at once (MinIO's send workers), as the s3rver store does. */
const postsInFlight = 16;
/** The store's own entry in each bucket's notification configuration (triggers write none here). */
const entryId = 'eddy-local';

export interface EmbeddedMinioOptions extends LocalStoreOptions {
  /** The `minio` executable. */
  binary: string;
  /** Where every S3 event is posted (the gateway's `/sources/s3`), and the bearer token. */
  intake: { url: string; token: string };
  /** How long MinIO may take to become ready. */
  startTimeoutMs?: number;
}

/** The first executable `name` on PATH, or undefined. */
export function findOnPath(name: string, path = process.env.PATH ?? ''): string | undefined {
  for (const dir of path.split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

export async function startEmbeddedMinio(o: EmbeddedMinioOptions): Promise<EmbeddedS3> {
  await mkdir(o.directory, { recursive: true });
  const host = o.host.includes(':') ? `[${o.host}]` : o.host;
  const endpoint = `http://${host}:${o.port}`;
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    ...(process.env.TMPDIR ? { TMPDIR: process.env.TMPDIR } : {}),
    MINIO_ROOT_USER: o.accessKeyId,
    MINIO_ROOT_PASSWORD: o.secretAccessKey,
    MINIO_REGION: region,
    MINIO_BROWSER: 'off',
    MINIO_UPDATE: 'off',
    GOMAXPROCS: String(postsInFlight),
    [`MINIO_NOTIFY_WEBHOOK_ENABLE_${targetId}`]: 'on',
    [`MINIO_NOTIFY_WEBHOOK_ENDPOINT_${targetId}`]: o.intake.url,
    [`MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_${targetId}`]: o.intake.token,
  };
  const args = ['server', '--quiet', '--address', `${host}:${o.port}`, o.directory];
  const proc = startTiedProcess({ binary: o.binary, args, env, onLine: o.log });
  const { lines, stop } = proc;

  const deadline = Date.now() + (o.startTimeoutMs ?? 30_000);
  for (;;) {
    if (proc.exited() !== undefined) {
      throw new Error(`MinIO (${o.binary}) ended (${proc.exited()}): ${lines.join(' / ')}`);
    }
    try {
      if (
        (await fetch(`${endpoint}/minio/health/ready`, { signal: AbortSignal.timeout(1_000) })).ok
      )
        break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`MinIO (${o.binary}) was not ready within ${o.startTimeoutMs ?? 30_000} ms`);
    }
    await wait(100);
  }

  const s3 = new S3Client({
    endpoint,
    region,
    forcePathStyle: true,
    credentials: { accessKeyId: o.accessKeyId, secretAccessKey: o.secretAccessKey },
    // A MinIO that takes connections and then stalls must not hold the stack's start: every
    // call here has its deadline, body included.
    requestHandler: new NodeHttpHandler({
      connectionTimeout: 5_000,
      requestTimeout: setupCallTimeoutMs,
      throwOnRequestTimeout: true,
      socketTimeout: setupCallTimeoutMs,
    }),
  });
  try {
    for (const bucket of o.buckets) {
      try {
        await s3.send(new CreateBucketCommand({ Bucket: bucket }), setupCall());
      } catch (err) {
        if ((err as { name?: string }).name !== 'BucketAlreadyOwnedByYou') throw err;
      }
      // Every upload and deletion is posted, as s3rver does; the gateway matches the triggers.
      // Entries someone else put on the bucket (the data directory outlives a run) are kept.
      const current = await s3.send(
        new GetBucketNotificationConfigurationCommand({ Bucket: bucket }),
        setupCall(),
      );
      const others = (current.QueueConfigurations ?? []).filter((q) => q.Id !== entryId);
      await s3.send(
        new PutBucketNotificationConfigurationCommand({
          Bucket: bucket,
          NotificationConfiguration: {
            ...(current.TopicConfigurations?.length
              ? { TopicConfigurations: current.TopicConfigurations }
              : {}),
            ...(current.LambdaFunctionConfigurations?.length
              ? { LambdaFunctionConfigurations: current.LambdaFunctionConfigurations }
              : {}),
            QueueConfigurations: [
              ...others,
              {
                Id: entryId,
                QueueArn: `arn:minio:sqs:${region}:${targetId}:webhook`,
                Events: ['s3:ObjectCreated:*', 's3:ObjectRemoved:*'],
              },
            ],
          },
        }),
        setupCall(),
      );
    }
  } catch (err) {
    await stop();
    throw err;
  } finally {
    s3.destroy();
  }
  return { endpoint, port: o.port, close: stop };
}
