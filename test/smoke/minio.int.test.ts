import { describe, expect, it } from 'vitest';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { s3Client, startMinio } from '../harness/minio.js';
import { canRun, useComponent } from '../harness/suite.js';

describe.skipIf(!canRun('minio'))('MinIO', () => {
  const minio = useComponent(() => startMinio());

  it('puts and gets an object', async () => {
    const m = minio();
    const s3 = s3Client(m);
    await s3.send(new CreateBucketCommand({ Bucket: 'smoke' }));
    await s3.send(new PutObjectCommand({ Bucket: 'smoke', Key: 'a/b.txt', Body: 'hello eddy' }));
    const got = await s3.send(new GetObjectCommand({ Bucket: 'smoke', Key: 'a/b.txt' }));
    expect(await got.Body?.transformToString()).toBe('hello eddy');
    s3.destroy();
  });
});
