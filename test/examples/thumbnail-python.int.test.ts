/**
 * The Python thumbnail example (`examples/thumbnail-python/`) on the local stack against a real
 * MinIO: its manifest checked as the local stack loads it, its handler (boto3 and Pillow) run by
 * AWS's awslambdaric in a python3.11 process from the example's folder, invoked through the
 * stack's gateway with Lambda's S3 events.
 *
 * The stack makes the function's virtual environment from its requirements.txt (boto3 and
 * Pillow from PyPI) as `npm start` would, once, under the harness's cache.
 */
import { join, resolve } from 'node:path';
import {
  CreateBucketCommand,
  GetObjectCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import sharp from 'sharp';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EddyFunction } from '../../operator/src/api/types.js';
import { ManifestSet } from '../../operator/src/local/manifests.js';
import { localCodeDirAnnotation } from '../../operator/src/platform/local.js';
import { cacheRoot, projectRoot } from '../harness/components.js';
import { s3Client, startMinio, type Minio } from '../harness/minio.js';
import { tail } from '../harness/proc.js';
import { canRun } from '../harness/suite.js';
import { startStack, type Stack } from '../runtimes/stack.js';

const exampleDir = resolve(projectRoot, 'examples', 'thumbnail-python');

/** An object key as S3 events carry it: form-encoded, `/` kept, a space as `+`. */
const eventKey = (key: string) =>
  key
    .split('/')
    .map((part) => encodeURIComponent(part).replace(/%20/g, '+'))
    .join('/');

const s3Event = (bucket: string, key: string) => ({
  Records: [
    {
      eventVersion: '2.1',
      eventSource: 'aws:s3',
      awsRegion: 'us-east-1',
      eventTime: '2026-01-01T00:00:00.000Z',
      eventName: 'ObjectCreated:Put',
      s3: {
        s3SchemaVersion: '1.0',
        bucket: { name: bucket, arn: `arn:aws:s3:::${bucket}` },
        object: { key: eventKey(key), size: 1 },
      },
    },
  ],
});

const picture = (width: number, height: number) =>
  sharp({ create: { width, height, channels: 3, background: { r: 20, g: 90, b: 200 } } });

describe.runIf(canRun('minio', 'runtimes'))('the Python thumbnail example, locally', () => {
  let minio: Minio;
  let s3: S3Client;
  let stack: Stack | undefined;

  beforeAll(async () => {
    const problems: string[] = [];
    const manifests = new ManifestSet({
      crdPath: resolve(projectRoot, 'crds', 'function.yaml'),
      report: (line) => problems.push(line),
    });
    await manifests.load([join(exampleDir, 'function.yaml')]);
    expect(problems).toEqual([]);
    const manifest = manifests.store.get('default', 'thumbnail-python')!;
    expect(manifest.spec).toMatchObject({
      runtime: 'python3.11',
      handler: 'lambda_function.lambda_handler',
    });

    minio = await startMinio();
    s3 = s3Client(minio);
    for (const bucket of ['photos', 'photos-thumbnails']) {
      await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    }
    // The manifest's Function, pointed at this MinIO, its code dir absolute, without triggers.
    const connection: Record<string, string> = {
      S3_ENDPOINT: minio.endpoint,
      AWS_REGION: minio.region,
      AWS_ACCESS_KEY_ID: minio.accessKeyId,
      AWS_SECRET_ACCESS_KEY: minio.secretAccessKey,
    };
    const variant = (name: string, env: Record<string, string>): EddyFunction => ({
      ...manifest,
      metadata: {
        name,
        namespace: 'dev',
        annotations: {
          [localCodeDirAnnotation]: resolve(
            projectRoot,
            manifest.metadata.annotations![localCodeDirAnnotation]!,
          ),
        },
      },
      spec: {
        ...manifest.spec,
        triggers: undefined,
        env: [
          ...(manifest.spec.env ?? []).filter((v) => !(v.name in connection) && !(v.name in env)),
          ...Object.entries({ ...connection, ...env }).map(([n, value]) => ({ name: n, value })),
        ],
      },
    });
    // JSON is YAML: the stack reads the Functions as written.
    // The stack makes the example's virtual environment itself (awslambdaric and its
    // requirements.txt), as `npm start` does; kept in the harness's cache across runs.
    stack = await startStack(
      [
        `${JSON.stringify(variant('thumbnail-python', {}))}\n`,
        `${JSON.stringify(variant('loop', { DEST_BUCKET: 'photos' }))}\n`,
      ],
      { EDDY_PYTHON: '', EDDY_LANGUAGES_DIR: join(cacheRoot, 'languages') },
    );
  }, 900_000);

  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail' && stack)
      process.stderr.write(`--- stack log\n${tail(stack.log(), 80)}\n`);
  });

  afterAll(async () => {
    await stack?.stop();
    s3?.destroy();
    await minio?.stop();
  });

  async function thumbnailOf(key: string) {
    const got = await s3.send(new GetObjectCommand({ Bucket: 'photos-thumbnails', Key: key }));
    const bytes = Buffer.from(await got.Body!.transformToByteArray());
    return { contentType: got.ContentType, meta: await sharp(bytes).metadata() };
  }

  it('makes 200-pixel thumbnails of a JPEG and a PNG, format and aspect kept, keys decoded', async () => {
    const cases = [
      { key: 'holiday photos/été+1.jpg', format: 'jpeg', type: 'image/jpeg', size: [1600, 1200] },
      { key: 'b.png', format: 'png', type: 'image/png', size: [1600, 1200] },
      // 3:2, whose height rounds down: the width stays 200.
      { key: 'c.jpg', format: 'jpeg', type: 'image/jpeg', size: [1200, 800] },
    ] as const;
    for (const c of cases) {
      const image = picture(c.size[0], c.size[1]);
      const bytes = await (c.format === 'jpeg' ? image.jpeg() : image.png()).toBuffer();
      await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: c.key, Body: bytes }));
      const { status, body } = await stack!.invoke('thumbnail-python', s3Event('photos', c.key));
      expect(status, JSON.stringify(body)).toBe(200);
      const height = Math.round((200 * c.size[1]) / c.size[0]);
      expect(body).toEqual({
        written: [{ bucket: 'photos-thumbnails', key: c.key, width: 200, height }],
      });
      const thumb = await thumbnailOf(c.key);
      expect(thumb.contentType).toBe(c.type);
      expect(thumb.meta).toMatchObject({ format: c.format, width: 200, height });
    }
    expect(stack!.log()).toContain(
      'thumbnail photos/holiday photos/été+1.jpg -> photos-thumbnails/holiday photos/été+1.jpg 200x150',
    );
  });

  it('refuses to write into the triggering bucket: a ValueError, so retries apply', async () => {
    await s3.send(
      new PutObjectCommand({
        Bucket: 'photos',
        Key: 'd.jpg',
        Body: await picture(640, 480).jpeg().toBuffer(),
      }),
    );
    const { status, body } = await stack!.invoke('loop', s3Event('photos', 'd.jpg'));
    expect(status).toBe(500);
    expect(body).toMatchObject({
      errorType: 'ValueError',
      errorMessage: expect.stringContaining('refusing to write thumbnails into photos') as unknown,
    });
  });
});
