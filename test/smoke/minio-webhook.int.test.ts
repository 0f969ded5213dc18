import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CreateBucketCommand,
  PutBucketNotificationConfigurationCommand,
  PutObjectCommand,
} from '@aws-sdk/client-s3';
import { s3Client, startMinio } from '../harness/minio.js';
import { canRun, useComponent } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';

interface Delivery {
  authorization?: string;
  body: { EventName?: string; Key?: string; Records?: Array<{ s3: { object: { key: string } } }> };
}

describe.skipIf(!canRun('minio'))('MinIO bucket notifications to a webhook', () => {
  const deliveries: Delivery[] = [];
  let receiver: Server;
  let endpoint = '';
  beforeAll(async () => {
    receiver = createServer((req, res) => {
      let text = '';
      req.on('data', (c: Buffer) => (text += c.toString()));
      req.on('end', () => {
        // MinIO checks the target with an empty request when it starts.
        if (text)
          deliveries.push({
            authorization: req.headers.authorization,
            body: JSON.parse(text) as Delivery['body'],
          });
        res.end();
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    endpoint = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/sources/s3`;
  });
  afterAll(async () => {
    await new Promise((resolve) => receiver.close(resolve));
  });
  const minio = useComponent(() =>
    startMinio({ webhook: { endpoint, authToken: 'secret-token' } }),
  );

  it('posts an S3 event for an upload, with the bearer token', async () => {
    const m = minio();
    const s3 = s3Client(m);
    await s3.send(new CreateBucketCommand({ Bucket: 'photos' }));
    await s3.send(
      new PutBucketNotificationConfigurationCommand({
        Bucket: 'photos',
        NotificationConfiguration: {
          QueueConfigurations: [{ QueueArn: m.webhookArn!, Events: ['s3:ObjectCreated:*'] }],
        },
      }),
    );
    await s3.send(
      new PutObjectCommand({ Bucket: 'photos', Key: 'holiday/beach.jpg', Body: 'jpeg bytes' }),
    );
    const delivery = await waitFor('a webhook delivery', async () =>
      deliveries.find((d) => d.body.Key === 'photos/holiday/beach.jpg'),
    );
    expect(delivery.authorization).toBe('Bearer secret-token');
    expect(delivery.body.EventName).toBe('s3:ObjectCreated:Put');
    expect(delivery.body.Records?.[0]?.s3.object.key).toBe('holiday%2Fbeach.jpg');
    s3.destroy();
  });
});
