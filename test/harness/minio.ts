/** A real MinIO server per suite, on a temp dir, optionally with a webhook notification target. */
import { mkdtemp } from 'node:fs/promises';
import { S3Client } from '@aws-sdk/client-s3';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { goBinaries, goBinaryPath } from './components.js';
import { freePorts } from './ports.js';
import { launchInDir, type ManagedProcess } from './proc.js';

export interface MinioWebhook {
  /** Where MinIO posts bucket notifications. */
  endpoint: string;
  /** Sent as `Authorization: Bearer <authToken>`. */
  authToken?: string;
  /**
   * Keep events the endpoint did not take in a persistent queue in this directory and post them
   * again, as a production MinIO should (otherwise MinIO drops them).
   */
  queueDir?: string;
}

export interface Minio {
  endpoint: string;
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** ARN to use in a bucket notification configuration, when a webhook was given. */
  webhookArn?: string;
  processes: ManagedProcess[];
  stop(): Promise<void>;
}

/** The id of the harness's webhook target; MinIO names it arn:minio:sqs::<id>:webhook. */
const webhookId = 'EDDY';

export async function startMinio(
  options: {
    webhook?: MinioWebhook;
    /** The address to listen on: 127.0.0.1 unless pods on the test cluster's bridge need it. */
    host?: string;
    /** The API's port, when it must be known before MinIO starts (a free one by default). */
    port?: number;
  } = {},
): Promise<Minio> {
  const host = options.host ?? '127.0.0.1';
  const dir = await mkdtemp(join(tmpdir(), 'eddy-minio-'));
  const [free, consolePort] = (await freePorts(2)) as [number, number];
  const apiPort = options.port ?? free;
  const accessKeyId = `eddy${randomBytes(4).toString('hex')}`;
  const secretAccessKey = randomBytes(16).toString('hex');
  const region = 'us-east-1';
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    MINIO_ROOT_USER: accessKeyId,
    MINIO_ROOT_PASSWORD: secretAccessKey,
    MINIO_REGION: region,
    MINIO_BROWSER: 'off',
    MINIO_UPDATE: 'off',
  };
  if (options.webhook) {
    env[`MINIO_NOTIFY_WEBHOOK_ENABLE_${webhookId}`] = 'on';
    env[`MINIO_NOTIFY_WEBHOOK_ENDPOINT_${webhookId}`] = options.webhook.endpoint;
    if (options.webhook.queueDir) {
      env[`MINIO_NOTIFY_WEBHOOK_QUEUE_DIR_${webhookId}`] = options.webhook.queueDir;
    }
    if (options.webhook.authToken) {
      env[`MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_${webhookId}`] = options.webhook.authToken;
    }
  }
  const endpoint = `http://${host}:${apiPort}`;
  const { proc, stop } = await launchInDir(
    dir,
    'minio',
    goBinaryPath(goBinaries.minio),
    [
      'server',
      '--quiet',
      '--address',
      `${host}:${apiPort}`,
      '--console-address',
      `127.0.0.1:${consolePort}`,
      join(dir, 'data'),
    ],
    { env },
    async () => (await fetch(`${endpoint}/minio/health/ready`)).status === 200,
    60_000,
  );
  return {
    endpoint,
    region,
    accessKeyId,
    secretAccessKey,
    webhookArn: options.webhook ? `arn:minio:sqs:${region}:${webhookId}:webhook` : undefined,
    processes: [proc],
    stop,
  };
}

/** An S3 client for the server, with its root credentials and path-style addressing. */
export function s3Client(m: Minio): S3Client {
  return new S3Client({
    endpoint: m.endpoint,
    region: m.region,
    forcePathStyle: true,
    credentials: { accessKeyId: m.accessKeyId, secretAccessKey: m.secretAccessKey },
  });
}
