/**
 * The images, built for real from the project's Dockerfile (targets operator and runtime) on the
 * local base image, and the thumbnail example's image built FROM that runtime image. The
 * thumbnail image runs with a 512 MB memory limit against a real MinIO, is sent an S3
 * CloudEvent as the operator sends it, and writes a 200-pixel thumbnail.
 */
import {
  CreateBucketCommand,
  GetObjectCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import sharp from 'sharp';
import { GenericContainer, Wait, type StartedTestContainer } from 'testcontainers';
import { buildProjectImages } from '../harness/images.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseImageTag } from '../harness/components.js';
import { dockerCli } from '../harness/docker.js';
import { s3Client, startMinio, type Minio } from '../harness/minio.js';
import { freePorts } from '../harness/ports.js';
import { run, tail } from '../harness/proc.js';
import { canRun } from '../harness/suite.js';

const images = {
  operator: 'eddy-test/operator:latest',
  runtime: 'eddy-test/runtime:latest',
  thumbnail: 'eddy-test/thumbnail:latest',
};

async function imageSize(tag: string): Promise<number> {
  return Number(await run(dockerCli, ['image', 'inspect', '--format', '{{.Size}}', tag]));
}

/** Runs a shell command in an image, as its user, without a network; its output and exit code. */
async function inImage(tag: string, script: string): Promise<string> {
  return run(
    dockerCli,
    ['run', '--rm', '--network', 'none', '--entrypoint', 'sh', tag, '-c', script],
    { timeoutMs: 60_000 },
  );
}

describe.skipIf(!canRun('docker', 'minio'))('the images', () => {
  let minio: Minio | undefined;
  let s3: S3Client | undefined;
  let thumbnail: StartedTestContainer | undefined;

  beforeAll(async () => {
    await buildProjectImages(images);
    minio = await startMinio();
    s3 = s3Client(minio);
    for (const bucket of ['photos', 'photos-thumbnails']) {
      await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    }
  }, 900_000);

  afterAll(async () => {
    await thumbnail?.stop({ timeout: 5_000 });
    s3?.destroy();
    await minio?.stop();
  });

  it('sizes: the runtime image within a few megabytes of the base', async () => {
    const base = await imageSize(baseImageTag);
    const runtime = await imageSize(images.runtime);
    const operator = await imageSize(images.operator);
    const mb = (bytes: number) => (bytes / 1e6).toFixed(1);
    console.log(
      `image sizes: base ${mb(base)} MB, runtime ${mb(runtime)} MB (+${mb(runtime - base)} MB), operator ${mb(operator)} MB (+${mb(operator - base)} MB)`,
    );
    expect(runtime - base).toBeLessThan(10e6);
    expect(operator - base).toBeLessThan(25e6);
  });

  it('runtime image: the runtime and prom-client, nothing else, run as node', async () => {
    const out = await inImage(
      images.runtime,
      'id -un; cd /opt/eddy && ls node_modules node_modules/@*; ls dist/runtime',
    );
    const [user, ...rest] = out.trim().split('\n');
    expect(user).toBe('node');
    const listed = rest.join('\n');
    for (const present of ['prom-client', 'tdigest', 'bintrees', 'api', 'main.js']) {
      expect(listed).toContain(present);
    }
    for (const absent of ['kubernetes', 'express', 'sharp', 'client-s3', 'typescript', 'esbuild']) {
      expect(listed).not.toContain(absent);
    }
    // prom-client resolves from the runtime's folder, as main.js imports it.
    const loaded = await inImage(
      images.runtime,
      `cd /opt/eddy/dist/runtime && node --input-type=module -e "const { Registry } = await import('prom-client'); console.log(typeof Registry)"`,
    );
    expect(loaded.trim()).toBe('function');
  });

  it('operator image: the bundle loads with no node_modules and starts', async () => {
    // No cluster here: the operator loads, says it has no cluster to talk to, and exits 1.
    const out = await inImage(
      images.operator,
      'id -un; ls /opt/eddy; node /opt/eddy/dist/operator/main.js 2>&1; echo "exit $?"',
    );
    const lines = out.trim().split('\n');
    expect(lines[0]).toBe('node');
    expect(lines.slice(1, 3).sort()).toEqual(['dist', 'package.json']);
    expect(out).toMatch(/eddy-operator: no cluster to talk to: .*set KUBECONFIG/);
    expect(out.trim()).toMatch(/exit 1$/);
    expect(out).not.toMatch(/ERR_MODULE_NOT_FOUND|Cannot find (module|package)/);
  });

  it('thumbnail image, limited to 512 MB: an S3 CloudEvent makes a 200-pixel thumbnail', async () => {
    const m = minio!;
    const [port] = (await freePorts(1)) as [number];
    // Host networking: the container reaches MinIO on the host's loopback, and is reached there.
    thumbnail = await new GenericContainer(images.thumbnail)
      .withNetworkMode('host')
      .withResourcesQuota({ memory: 0.5 })
      .withEnvironment({
        PORT: String(port),
        EDDY_MEMORY_MB: '512',
        EDDY_TIMEOUT_MS: '30000',
        EDDY_FUNCTION_NAME: 'thumbnail',
        S3_ENDPOINT: m.endpoint,
        AWS_REGION: m.region,
        AWS_ACCESS_KEY_ID: m.accessKeyId,
        AWS_SECRET_ACCESS_KEY: m.secretAccessKey,
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      })
      .withWaitStrategy(Wait.forLogMessage(/eddy runtime listening/))
      .withStartupTimeout(60_000)
      .start();
    const memoryLimit = await run(dockerCli, [
      'inspect',
      '--format',
      '{{.HostConfig.Memory}}',
      thumbnail.getId(),
    ]);
    expect(Number(memoryLimit)).toBe(512 * 1024 * 1024);

    const key = 'trip/beach 1.jpg';
    const photo = await sharp({
      create: { width: 1600, height: 1200, channels: 3, background: { r: 30, g: 120, b: 200 } },
    })
      .jpeg()
      .toBuffer();
    await s3!.send(
      new PutObjectCommand({
        Bucket: 'photos',
        Key: key,
        Body: photo,
        ContentType: 'image/jpeg',
      }),
    );
    const record = {
      eventVersion: '2.1',
      eventSource: 'aws:s3',
      awsRegion: m.region,
      eventTime: new Date().toISOString(),
      eventName: 'ObjectCreated:Put',
      s3: {
        s3SchemaVersion: '1.0',
        bucket: { name: 'photos', arn: 'arn:aws:s3:::photos' },
        object: { key: 'trip/beach+1.jpg', size: photo.length },
      },
    };
    const res = await fetch(`http://127.0.0.1:${port}/`, {
      method: 'POST',
      headers: {
        'ce-specversion': '1.0',
        'ce-id': 'images-e2e-1',
        'ce-type': 'com.amazonaws.s3.ObjectCreated:Put',
        'ce-source': 'arn:aws:s3:::photos',
        'ce-subject': key,
        'content-type': 'application/json',
      },
      body: JSON.stringify(record),
    });
    const answer = await res.text();
    if (res.status !== 200) {
      const logs = await run(dockerCli, ['logs', thumbnail.getId()]);
      throw new Error(`invocation answered ${res.status}: ${answer}\n${tail(logs, 60)}`);
    }

    const got = await s3!.send(new GetObjectCommand({ Bucket: 'photos-thumbnails', Key: key }));
    const thumb = Buffer.from(await got.Body!.transformToByteArray());
    const meta = await sharp(thumb).metadata();
    expect(got.ContentType).toBe('image/jpeg');
    expect(meta.format).toBe('jpeg');
    expect(meta.width).toBe(200);
    expect(meta.height).toBe(150);
  });
});
