/**
 * Upload-to-handler-start latency through MinIO notifications, warm function: from just before
 * PutObject is sent to the moment the handler starts (it writes the time down), against the same
 * measure with MinIO posting to a bare HTTP receiver (what any webhook consumer would see), in
 * the same run. The gateway, source and a real runtime process run in this process.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { s3IntakePath, s3Source } from '../../operator/src/sources/s3.js';
import { normaliseEndpoint } from '../../operator/src/sources/s3-stores.js';
import { s3Client, startMinio } from '../../test/harness/minio.js';
import { freePort } from '../../test/harness/ports.js';
import { waitFor } from '../../test/harness/wait.js';
import { inlineFunction, startStack } from '../../test/gateway/stack.js';

const samples = Number(process.env.BENCH_S3_SAMPLES ?? 200);
const token = 'bench-token';

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};

/** Uploads one object at a time; resolves each sample's latency once `arrived(key)` says when. */
async function measure(
  s3: S3Client,
  bucket: string,
  arrivals: () => Promise<Map<string, number>>,
): Promise<number[]> {
  const sent = new Map<string, number>();
  for (let i = 0; i < samples; i++) {
    const key = `bench/${i}.jpg`;
    sent.set(key, performance.timeOrigin + performance.now());
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: 'x' }));
    // One at a time: wait for this one to arrive, so the function stays warm but never queues.
    await waitFor(
      `${key} to arrive`,
      async () => ((await arrivals()).has(key) ? true : undefined),
      30_000,
    );
  }
  const got = await arrivals();
  return [...sent].map(([k, t]) => got.get(k)! - t);
}

export async function benchS3(say: (line: string) => void): Promise<string[]> {
  const dir = await mkdtemp(join(tmpdir(), 'eddy-bench-s3-'));
  try {
    // Baseline: MinIO posting to a bare receiver.
    const bare = new Map<string, number>();
    const receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const now = performance.timeOrigin + performance.now();
        const body = JSON.parse(Buffer.concat(chunks).toString()) as { Key?: string };
        if (body.Key) bare.set(decodeURIComponent(body.Key.split('/').slice(1).join('/')), now);
        res.end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    const barePort = (receiver.address() as AddressInfo).port;
    say('S3: MinIO posting to a bare receiver (baseline)');
    const m1 = await startMinio({
      webhook: { endpoint: `http://127.0.0.1:${barePort}/`, authToken: token },
    });
    let baseline: number[];
    try {
      const s3 = s3Client(m1);
      await s3.send(new CreateBucketCommand({ Bucket: 'bench' }));
      const { PutBucketNotificationConfigurationCommand } = await import('@aws-sdk/client-s3');
      await s3.send(
        new PutBucketNotificationConfigurationCommand({
          Bucket: 'bench',
          NotificationConfiguration: {
            QueueConfigurations: [{ QueueArn: m1.webhookArn!, Events: ['s3:ObjectCreated:*'] }],
          },
        }),
      );
      baseline = await measure(s3, 'bench', async () => bare);
      s3.destroy();
    } finally {
      await m1.stop();
      receiver.close();
    }

    say('S3: MinIO -> gateway -> warm function');
    const port = await freePort();
    const m2 = await startMinio({
      webhook: { endpoint: `http://127.0.0.1:${port}${s3IntakePath}`, authToken: token },
    });
    const seen = join(dir, 'seen.txt');
    const fn = inlineFunction(
      'bench-s3',
      `import { appendFileSync } from 'node:fs';
export const handler = async (event) => {
  const t = performance.timeOrigin + performance.now();
  for (const r of event.Records) appendFileSync(process.env.SEEN, decodeURIComponent(r.s3.object.key.replace(/\\+/g, ' ')) + ' ' + t + '\\n');
};`,
      {
        env: [{ name: 'SEEN', value: seen }],
        triggers: [
          {
            name: 'uploads',
            s3: {
              bucket: 'bench',
              connection: {
                endpoint: m2.endpoint,
                region: m2.region,
                secretRef: { name: 'creds' },
              },
            },
          },
        ],
      },
    );
    const stack = await startStack([fn], {
      gateway: { port, host: '127.0.0.1' },
      sources: [
        s3Source({
          stores: [{ endpoints: [normaliseEndpoint(m2.endpoint)!], token }],
          webhookArn: m2.webhookArn,
        }).factory,
      ],
      secrets: async () => ({ accessKeyId: m2.accessKeyId, secretAccessKey: m2.secretAccessKey }),
    });
    let eddy: number[];
    try {
      const s3 = s3Client(m2);
      await s3.send(new CreateBucketCommand({ Bucket: 'bench' }));
      const { GetBucketNotificationConfigurationCommand } = await import('@aws-sdk/client-s3');
      await waitFor(
        'the bucket entry',
        async () =>
          (await s3.send(new GetBucketNotificationConfigurationCommand({ Bucket: 'bench' })))
            .QueueConfigurations?.length
            ? true
            : undefined,
        30_000,
      );
      // Warm: the first upload starts a replica.
      await s3.send(new PutObjectCommand({ Bucket: 'bench', Key: 'warm.jpg', Body: 'x' }));
      const arrivals = async () => {
        const m = new Map<string, number>();
        let text = '';
        try {
          text = await readFile(seen, 'utf8');
        } catch {
          return m;
        }
        for (const line of text.split('\n')) {
          const at = line.lastIndexOf(' ');
          if (at > 0) m.set(line.slice(0, at), Number(line.slice(at + 1)));
        }
        return m;
      };
      await waitFor(
        'the warm-up',
        async () => ((await arrivals()).has('warm.jpg') ? true : undefined),
        60_000,
      );
      eddy = await measure(s3, 'bench', arrivals);
      s3.destroy();
    } finally {
      await stack.stop();
      await m2.stop();
    }
    const ms = (n: number) => `${n.toFixed(1)} ms`;
    const signed = (n: number) => `${n >= 0 ? '+' : ''}${ms(n)}`;
    return [
      `S3 upload -> handler start (warm, ${samples} uploads one at a time):`,
      `  through Eddy         p50 ${ms(pct(eddy, 50))}  p99 ${ms(pct(eddy, 99))}`,
      `  bare webhook (base)  p50 ${ms(pct(baseline, 50))}  p99 ${ms(pct(baseline, 99))}`,
      `  Eddy adds            p50 ${signed(pct(eddy, 50) - pct(baseline, 50))}  p99 ${signed(pct(eddy, 99) - pct(baseline, 99))}`,
    ];
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
