/**
 * The thumbnail example (`examples/thumbnail/`) on the local platform against a real MinIO: its
 * manifest loaded as the local stack loads it, its handler run by a real runtime process from
 * the example's folder, invoked with Lambda's S3 events.
 */
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  CreateBucketCommand,
  GetObjectCommand,
  HeadObjectCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import sharp from 'sharp';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { EddyFunction } from '../../operator/src/api/types.js';
import { ManifestSet } from '../../operator/src/local/manifests.js';
import { localCodeDirAnnotation } from '../../operator/src/platform/local.js';
import { s3Client, startMinio, type Minio } from '../harness/minio.js';
import { tail } from '../harness/proc.js';
import { runtimeMain } from '../harness/runtime.js';
import { canRun } from '../harness/suite.js';
import { namespace, startStack, type Stack } from '../gateway/stack.js';

const root = resolve(import.meta.dirname, '..', '..');
const exampleDir = resolve(root, 'examples', 'thumbnail');

/** An object key as S3 events carry it: form-encoded, `/` kept, a space as `+`. */
function eventKey(key: string): string {
  return key
    .split('/')
    .map((part) => encodeURIComponent(part).replace(/%20/g, '+'))
    .join('/');
}

function s3Event(bucket: string, key: string, eventName = 'ObjectCreated:Put') {
  return {
    Records: [
      {
        eventVersion: '2.1',
        eventSource: 'aws:s3',
        awsRegion: 'us-east-1',
        eventTime: '2026-01-01T00:00:00.000Z',
        eventName,
        s3: {
          s3SchemaVersion: '1.0',
          bucket: { name: bucket, arn: `arn:aws:s3:::${bucket}` },
          object: { key: eventKey(key), size: 1 },
        },
      },
    ],
  };
}

interface Summary {
  written: Array<{ bucket: string; key: string; format: string; width: number; height: number }>;
  skipped: Array<{ bucket: string; key: string; reason: string }>;
}

const picture = (width: number, height: number) =>
  sharp({ create: { width, height, channels: 3, background: { r: 200, g: 90, b: 20 } } });

describe.runIf(canRun('minio'))('the thumbnail example', () => {
  let minio: Minio;
  let s3: S3Client;
  let stack: Stack;
  let manifest: EddyFunction;

  beforeAll(async () => {
    if (!existsSync(runtimeMain)) throw new Error(`${runtimeMain} is missing: run npm run build`);
    // The manifest as `node dist/operator/dev.js examples/thumbnail/function.yaml` reads it:
    // checked against the CRD's schema, the Function and its Secret both taken.
    const problems: string[] = [];
    const manifests = new ManifestSet({
      crdPath: resolve(root, 'crds', 'function.yaml'),
      report: (line) => problems.push(line),
    });
    await manifests.load([resolve(exampleDir, 'function.yaml')]);
    expect(problems).toEqual([]);
    manifest = manifests.store.get('default', 'thumbnail')!;
    expect(manifest).toBeDefined();
    expect(await manifests.secret('default', 's3-creds')).toEqual({
      accessKeyId: 'eddy',
      secretAccessKey: 'eddysecret',
    });

    minio = await startMinio();
    s3 = s3Client(minio);
    for (const bucket of ['photos', 'photos-thumbnails', 'elsewhere']) {
      await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    }
    // The manifest's Function, pointed at this MinIO: the same code dir (resolved from the
    // repository's root, as the local stack is run), image, memory and width.
    const connection: Record<string, string> = {
      S3_ENDPOINT: minio.endpoint,
      AWS_REGION: minio.region,
      AWS_ACCESS_KEY_ID: minio.accessKeyId,
      AWS_SECRET_ACCESS_KEY: minio.secretAccessKey,
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
    };
    const variant = (name: string, env: Record<string, string>): EddyFunction => {
      const kept = (manifest.spec.env ?? []).filter(
        (v) => !(v.name in connection) && !(v.name in env) && v.name !== 'DEST_BUCKET',
      );
      return {
        ...manifest,
        metadata: {
          ...manifest.metadata,
          name,
          namespace,
          annotations: {
            [localCodeDirAnnotation]: resolve(
              root,
              manifest.metadata.annotations![localCodeDirAnnotation]!,
            ),
          },
        },
        spec: {
          ...manifest.spec,
          triggers: undefined,
          env: [
            ...kept,
            ...Object.entries({ ...connection, ...env }).map(([n, value]) => ({ name: n, value })),
          ],
        },
      };
    };
    stack = await startStack([
      // Without DEST_BUCKET: thumbnails go to <bucket>-thumbnails.
      variant('thumbnail', {}),
      variant('elsewhere', { DEST_BUCKET: 'elsewhere', THUMBNAIL_WIDTH: '64' }),
      variant('loop', { DEST_BUCKET: 'photos' }),
    ]);
  });

  afterEach((ctx) => {
    if (ctx.task.result?.state !== 'fail') return;
    process.stderr.write(`--- stack log\n${stack?.logs.slice(-100).join('\n')}\n`);
    for (const p of minio?.processes ?? [])
      process.stderr.write(`--- minio\n${tail(p.log(), 40)}\n`);
  });

  afterAll(async () => {
    await stack?.stop();
    s3?.destroy();
    await minio?.stop();
  });

  async function upload(key: string, body: Buffer | string) {
    await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: key, Body: body }));
  }

  async function thumbnailOf(bucket: string, key: string) {
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    const bytes = Buffer.from(await got.Body!.transformToByteArray());
    return { contentType: got.ContentType, meta: await sharp(bytes).metadata() };
  }

  async function invoke(name: string, event: unknown) {
    const res = await stack.invoke(name, event);
    return {
      status: res.status,
      error: res.headers.get('x-eddy-function-error'),
      body: await res.json(),
    };
  }

  it('makes 200-pixel thumbnails of JPEG, PNG and WebP in the same format, aspect kept', async () => {
    const cases = [
      {
        key: 'a.jpg',
        format: 'jpeg',
        type: 'image/jpeg',
        bytes: await picture(1200, 800).jpeg().toBuffer(),
      },
      {
        key: 'b.png',
        format: 'png',
        type: 'image/png',
        bytes: await picture(1200, 800).png().toBuffer(),
      },
      {
        key: 'c.webp',
        format: 'webp',
        type: 'image/webp',
        bytes: await picture(1200, 800).webp().toBuffer(),
      },
    ];
    for (const c of cases) {
      await upload(c.key, c.bytes);
      const { status, error, body } = await invoke('thumbnail', s3Event('photos', c.key));
      expect({ status, error }).toEqual({ status: 200, error: null });
      expect(body).toEqual({
        written: [
          expect.objectContaining({
            bucket: 'photos-thumbnails',
            key: c.key,
            format: c.format,
            width: 200,
            height: 133,
          }),
        ],
        skipped: [],
      });
      const thumb = await thumbnailOf('photos-thumbnails', c.key);
      expect(thumb.contentType).toBe(c.type);
      expect(thumb.meta).toMatchObject({ format: c.format, width: 200, height: 133 });
    }
  });

  it('never enlarges a picture smaller than the width', async () => {
    await upload('small.png', await picture(120, 90).png().toBuffer());
    const { status, body } = await invoke('thumbnail', s3Event('photos', 'small.png'));
    expect(status).toBe(200);
    expect((body as Summary).written).toEqual([
      expect.objectContaining({ key: 'small.png', width: 120, height: 90 }),
    ]);
    expect((await thumbnailOf('photos-thumbnails', 'small.png')).meta).toMatchObject({
      format: 'png',
      width: 120,
      height: 90,
    });
  });

  it('decodes keys as S3 events carry them: spaces, non-ASCII letters and a plus sign', async () => {
    const key = 'holiday photos/été à Zürich+1.jpg';
    await upload(key, await picture(800, 800).jpeg().toBuffer());
    const { status, body } = await invoke('thumbnail', s3Event('photos', key));
    expect(status).toBe(200);
    expect((body as Summary).written).toEqual([expect.objectContaining({ key })]);
    expect((await thumbnailOf('photos-thumbnails', key)).meta).toMatchObject({
      width: 200,
      height: 200,
    });
  });

  it('skips what is not an image, or not JPEG, PNG or WebP, without an error', async () => {
    await upload('notes.txt', 'not a picture at all');
    await upload('anim.gif', await picture(300, 200).gif().toBuffer());
    for (const key of ['notes.txt', 'anim.gif']) {
      const { status, error, body } = await invoke('thumbnail', s3Event('photos', key));
      expect({ status, error }).toEqual({ status: 200, error: null });
      expect(body).toEqual({
        written: [],
        skipped: [expect.objectContaining({ bucket: 'photos', key })],
      });
      await expect(
        s3.send(new HeadObjectCommand({ Bucket: 'photos-thumbnails', Key: key })),
      ).rejects.toMatchObject({ name: 'NotFound' });
    }
    expect(stack.logs.some((l) => l.includes('skipped photos/notes.txt: not an image'))).toBe(true);
    expect(stack.logs.some((l) => l.includes('skipped photos/anim.gif: gif is not one of'))).toBe(
      true,
    );
  });

  it('answers an error for a corrupt image, so retries and the dead letter apply', async () => {
    const jpeg = await picture(1200, 800).jpeg().toBuffer();
    await upload('broken.jpg', jpeg.subarray(0, Math.floor(jpeg.length / 2)));
    const { status, error, body } = await invoke('thumbnail', s3Event('photos', 'broken.jpg'));
    expect(status).toBe(500);
    expect(error).toBe('Unhandled');
    expect(body).toMatchObject({
      errorType: 'ImageError',
      errorMessage: expect.stringContaining(
        'photos/broken.jpg is a jpeg image that cannot be decoded',
      ) as unknown,
    });
  });

  it('writes to DEST_BUCKET at THUMBNAIL_WIDTH, and refuses to write into the triggering bucket', async () => {
    await upload('d.jpg', await picture(640, 480).jpeg().toBuffer());
    const elsewhere = await invoke('elsewhere', s3Event('photos', 'd.jpg'));
    expect(elsewhere.status).toBe(200);
    expect((await thumbnailOf('elsewhere', 'd.jpg')).meta).toMatchObject({ width: 64, height: 48 });

    const loop = await invoke('loop', s3Event('photos', 'd.jpg'));
    expect(loop.status).toBe(500);
    expect(loop.error).toBe('Unhandled');
    expect(loop.body).toMatchObject({
      errorType: 'ConfigurationError',
      errorMessage: expect.stringContaining('refusing to write thumbnails into photos') as unknown,
    });
  });
});
