/**
 * The images, built for real from the project's Dockerfile (targets operator, runtime and the
 * runtime images of python3.11, java17 and provided) on the local base image, and the thumbnail
 * examples' images built FROM their runtime images. The thumbnail images run with a 512 MB
 * memory limit against a real MinIO, are sent an S3 CloudEvent as the operator sends it, and
 * write a 200-pixel thumbnail. A function image of each runtime-API runtime (Python, Java, and
 * Go with aws-lambda-go as `provided`) answers an event and an exception through its container.
 */
import {
  CreateBucketCommand,
  GetObjectCommand,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import sharp from 'sharp';
import { GenericContainer, Wait, type StartedTestContainer } from 'testcontainers';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import {
  buildFunctionImage,
  buildImage,
  buildProjectImages,
  buildRuntimeImages,
  type RuntimeImages,
} from '../harness/images.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseImageTag, projectRoot } from '../harness/components.js';
import { dockerCli } from '../harness/docker.js';
import { s3Client, startMinio, type Minio } from '../harness/minio.js';
import { freePorts } from '../harness/ports.js';
import { run, tail } from '../harness/proc.js';
import { canRun } from '../harness/suite.js';
import { echoEvents, errorTypes, functionCode, handlers, type ApiRuntime } from './functions.js';

const images = {
  operator: 'eddy-test/operator:latest',
  runtime: 'eddy-test/runtime:latest',
  thumbnail: 'eddy-test/thumbnail:latest',
};
const runtimeImages: RuntimeImages = {
  'python3.11': 'eddy-test/runtime:python3.11',
  java17: 'eddy-test/runtime:java17',
  provided: 'eddy-test/runtime:provided',
};
/** The test function of each runtime as an image FROM its runtime image. */
const functionImages: RuntimeImages = {
  'python3.11': 'eddy-test/fn:python3.11',
  java17: 'eddy-test/fn:java17',
  provided: 'eddy-test/fn:provided',
};
const thumbnailPython = 'eddy-test/thumbnail-python:latest';
const apiRuntimes = Object.keys(runtimeImages) as ApiRuntime[];
/**
 * The test functions that can be made here: the Java one needs javac and the client's jars
 * (`test:setup java`), the Go one its build (`test:setup runtimes`). With CI=true all are made.
 */
const canMake = (runtime: ApiRuntime) =>
  runtime === 'python3.11' || canRun(runtime === 'java17' ? 'java' : 'runtimes');

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

/** A container of `image` on the host's network, serving on a free port, once it listens. */
async function startFunction(
  image: string,
  env: Record<string, string>,
): Promise<{ container: StartedTestContainer; url: string }> {
  const [port] = (await freePorts(1)) as [number];
  const container = await new GenericContainer(image)
    .withNetworkMode('host')
    .withResourcesQuota({ memory: 0.5 })
    .withEnvironment({ PORT: String(port), EDDY_MEMORY_MB: '512', ...env })
    .withWaitStrategy(Wait.forLogMessage(/eddy runtime listening/))
    .withStartupTimeout(60_000)
    .start();
  return { container, url: `http://127.0.0.1:${port}` };
}

/** A direct invocation of a runtime: its status and JSON answer. */
async function invoke(url: string, event: unknown) {
  const res = await fetch(`${url}/`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(event),
    signal: AbortSignal.timeout(60_000),
  });
  const text = await res.text();
  return { status: res.status, body: JSON.parse(text) as Record<string, unknown>, text };
}

describe.skipIf(!canRun('docker', 'minio'))('the images', () => {
  let minio: Minio | undefined;
  let s3: S3Client | undefined;
  const started: StartedTestContainer[] = [];

  beforeAll(async () => {
    await buildProjectImages(images);
    await buildRuntimeImages(runtimeImages);
    for (const runtime of apiRuntimes.filter(canMake)) {
      const code = await functionCode(runtime);
      try {
        await buildFunctionImage(functionImages[runtime], runtimeImages[runtime], code);
      } finally {
        await rm(code, { recursive: true, force: true });
      }
    }
    await buildImage(join(projectRoot, 'examples', 'thumbnail-python'), thumbnailPython, {
      RUNTIME_IMAGE: runtimeImages['python3.11'],
    });
    minio = await startMinio();
    s3 = s3Client(minio);
    for (const bucket of ['photos', 'photos-thumbnails']) {
      await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    }
  }, 1_500_000);

  afterAll(async () => {
    for (const c of started) await c.stop({ timeout: 5_000 });
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

  it('sizes: each runtime-API runtime image is the runtime plus its language, nothing more', async () => {
    const runtime = await imageSize(images.runtime);
    const mb = (bytes: number) => (bytes / 1e6).toFixed(1);
    const sizes: Record<string, number> = {};
    for (const r of apiRuntimes) sizes[r] = await imageSize(runtimeImages[r]);
    console.log(
      `runtime image sizes: ${apiRuntimes.map((r) => `${r} ${mb(sizes[r]!)} MB (+${mb(sizes[r]! - runtime)} MB)`).join(', ')}`,
    );
    // Debian's curl, for shell-script bootstraps.
    expect(sizes.provided! - runtime).toBeLessThan(15e6);
    // No apt lists or caches (75 MB of them) in any.
    expect(sizes['python3.11']! - runtime).toBeLessThan(80e6);
    expect(sizes.java17! - runtime).toBeLessThan(260e6);
  });

  it('runtime images: each holds its language only, names it, and runs as node', async () => {
    const probe =
      'id -un; echo "runtime=$EDDY_RUNTIME python=$EDDY_PYTHON classpath=$EDDY_JAVA_CLASSPATH"; ' +
      'for c in python3 java; do command -v $c >/dev/null && echo "has $c"; done; true';
    const python = await inImage(runtimeImages['python3.11'], probe);
    expect(python).toContain('node\nruntime=python3.11 python=/opt/eddy/python/bin/python ');
    expect(python).toContain('has python3');
    expect(python).not.toContain('has java');
    const ric = await inImage(
      runtimeImages['python3.11'],
      '"$EDDY_PYTHON" -c "import awslambdaric, sys; print(sys.version_info[:2])"; pip --version',
    );
    expect(ric).toMatch(/^\(3, 11\)\npip .* from \/opt\/eddy\/python\//);

    const java = await inImage(
      runtimeImages.java17,
      `${probe}; ls /opt/eddy/java; java -version 2>&1`,
    );
    expect(java).toContain('node\nruntime=java17 python= classpath=/opt/eddy/java/*');
    expect(java).toContain('has java');
    expect(java).not.toContain('has python3');
    expect(java).toMatch(/aws-lambda-java-runtime-interface-client-2\.10\.1\.jar/);
    expect(java).toMatch(/openjdk version "17\./);

    const provided = await inImage(runtimeImages.provided, `${probe}; curl --version | head -1`);
    expect(provided).toMatch(/^node\nruntime=provided python= classpath=\ncurl \d/);
  });

  for (const runtime of ['python3.11', 'java17', 'provided'] as const) {
    it.runIf(canMake(runtime))(
      `${runtime} function image: AWS's client answers the event with its context, and an exception with its type`,
      async () => {
        const { container, url } = await startFunction(functionImages[runtime], {
          EDDY_HANDLER: handlers[runtime],
          EDDY_FUNCTION_NAME: `images-${runtime.replace('.', '')}`,
          EDDY_TIMEOUT_MS: '20000',
        });
        started.push(container);
        try {
          const answers = [];
          for (const event of echoEvents(runtime, { order: 7 }))
            answers.push(await invoke(url, event));
          for (const a of answers) expect(a.status, a.text).toBe(200);
          const merged = Object.assign({}, ...answers.map((a) => a.body)) as Record<
            string,
            unknown
          >;
          expect(merged).toMatchObject({
            echo: { order: 7 },
            functionName: `images-${runtime.replace('.', '')}`,
          });
          expect(Number(merged.memoryLimitInMB)).toBe(512);
          expect(Number(merged.remainingMs)).toBeGreaterThan(0);

          const failed = await invoke(url, { action: 'error', message: 'no order 7' });
          expect(failed.status, failed.text).toBe(500);
          expect(failed.body).toMatchObject({
            errorType: errorTypes[runtime],
            errorMessage: 'no order 7',
          });
        } catch (err) {
          const logs = await run(dockerCli, ['logs', container.getId()]).catch(String);
          throw new Error(`${String(err)}\n${tail(logs, 60)}`);
        }
      },
    );
  }

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

  /**
   * Starts `image` limited to 512 MB against MinIO, sends it an S3 CloudEvent as the operator
   * sends it, and checks the 200-pixel thumbnail it writes.
   */
  async function thumbnailStory(image: string, env: Record<string, string>, key: string) {
    const m = minio!;
    const { container, url } = await startFunction(image, {
      EDDY_TIMEOUT_MS: '30000',
      S3_ENDPOINT: m.endpoint,
      AWS_REGION: m.region,
      AWS_ACCESS_KEY_ID: m.accessKeyId,
      AWS_SECRET_ACCESS_KEY: m.secretAccessKey,
      ...env,
    });
    started.push(container);
    const memoryLimit = await run(dockerCli, [
      'inspect',
      '--format',
      '{{.HostConfig.Memory}}',
      container.getId(),
    ]);
    expect(Number(memoryLimit)).toBe(512 * 1024 * 1024);

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
        object: { key: key.replace(/ /g, '+'), size: photo.length },
      },
    };
    const res = await fetch(`${url}/`, {
      method: 'POST',
      headers: {
        'ce-specversion': '1.0',
        'ce-id': `images-e2e-${image}`,
        'ce-type': 'com.amazonaws.s3.ObjectCreated:Put',
        'ce-source': 'arn:aws:s3:::photos',
        'ce-subject': key,
        'content-type': 'application/json',
      },
      body: JSON.stringify(record),
      signal: AbortSignal.timeout(60_000),
    });
    const answer = await res.text();
    if (res.status !== 200) {
      const logs = await run(dockerCli, ['logs', container.getId()]);
      throw new Error(`invocation answered ${res.status}: ${answer}\n${tail(logs, 60)}`);
    }

    const got = await s3!.send(new GetObjectCommand({ Bucket: 'photos-thumbnails', Key: key }));
    const thumb = Buffer.from(await got.Body!.transformToByteArray());
    const meta = await sharp(thumb).metadata();
    expect(got.ContentType).toBe('image/jpeg');
    expect(meta.format).toBe('jpeg');
    expect(meta.width).toBe(200);
    expect(meta.height).toBe(150);
  }

  it('thumbnail image, limited to 512 MB: an S3 CloudEvent makes a 200-pixel thumbnail', async () => {
    await thumbnailStory(
      images.thumbnail,
      {
        EDDY_FUNCTION_NAME: 'thumbnail',
        AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      },
      'trip/beach 1.jpg',
    );
  });

  it('thumbnail-python image (boto3 and Pillow on the python3.11 runtime), limited to 512 MB: the same thumbnail', async () => {
    await thumbnailStory(
      thumbnailPython,
      {
        EDDY_FUNCTION_NAME: 'thumbnail-python',
        EDDY_HANDLER: 'lambda_function.lambda_handler',
      },
      'trip/python beach 1.jpg',
    );
  });
});
