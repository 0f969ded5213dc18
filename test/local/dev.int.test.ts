/**
 * The local stack as a user runs it: `node dist/operator/dev.js <files...>`, with a bad Function
 * among good ones, a Secret-less file, and a file edited while it runs.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile, rename } from 'node:fs/promises';
import {
  GetObjectCommand,
  HeadBucketCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import sharp from 'sharp';
import { freePort } from '../harness/ports.js';
import { thumbnailManifest } from '../harness/thumbnail.js';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { goBinaries, goBinaryPath, projectRoot } from '../harness/components.js';
import { startProcess, waitUntilReady, type ManagedProcess } from '../harness/proc.js';
import { canRun } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';

const devMain = join(projectRoot, 'dist', 'operator', 'dev.js');

const fn = (name: string, code: string, extra = '') => `apiVersion: eddy.dev/v1alpha1
kind: Function
metadata:
  name: ${name}
  namespace: dev
spec:
  memory: 128Mi${extra}
  code:
    inline: |
      ${code}
`;

let dir: string;
let proc: ManagedProcess | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eddy-dev-'));
});

afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail' && proc)
    process.stderr.write(`--- dev.js log\n${proc.log()}\n`);
  await proc?.stop(15_000);
  proc = undefined;
  await rm(dir, { recursive: true, force: true });
});

/** PATH without any minio on it: dev.js runs s3rver then. */
const pathWithoutMinio = (process.env.PATH ?? '')
  .split(delimiter)
  .filter((d) => d !== '' && !existsSync(join(d, 'minio')))
  .join(delimiter);

async function startDev(
  files: string[],
  flags: string[] = [],
  path = pathWithoutMinio,
): Promise<string> {
  proc = startProcess(
    'dev',
    process.execPath,
    [devMain, '--port', '0', '--metrics-port', '0', ...flags, ...files],
    join(dir, 'dev.log'),
    {
      cwd: dir,
      env: { PATH: path, HOME: process.env.HOME },
    },
  );
  let url = '';
  await waitUntilReady(
    proc,
    async () => {
      const m = /gateway listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(proc!.log());
      if (m) url = m[1]!;
      return url !== '';
    },
    30_000,
    50,
  );
  return url;
}

/** An S3 client for the local stack's store, with the demo's key pair. */
const demoS3Client = (endpoint: string) =>
  new S3Client({
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'eddy', secretAccessKey: 'eddysecret' },
  });

/**
 * Uploads a JPEG of `size` to photos/`key` with the demo's key pair, waits for its
 * thumbnail in photos-thumbnails and checks it is a 200-pixel-wide JPEG of the same aspect.
 * The thumbnail is read once the handler has logged it as written (the store acknowledged its
 * PutObject): s3rver shows an object while its body is still being written, so an earlier read
 * can find it empty.
 */
async function uploadAndFindThumbnail(
  endpoint: string,
  key: string,
  size: { width: number; height: number },
): Promise<void> {
  const s3 = demoS3Client(endpoint);
  try {
    const photo = await sharp({
      create: { ...size, channels: 3, background: { r: 200, g: 80, b: 40 } },
    })
      .jpeg()
      .toBuffer();
    await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: key, Body: photo }));
    const thumbnail = await waitFor(
      'the thumbnail',
      async () => {
        if (!proc!.log().includes(`-> photos-thumbnails/${key} `)) return undefined;
        const got = await s3.send(new GetObjectCommand({ Bucket: 'photos-thumbnails', Key: key }));
        return Buffer.from(await got.Body!.transformToByteArray());
      },
      60_000,
    );
    const meta = await sharp(thumbnail).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual([
      'jpeg',
      200,
      Math.round((200 * size.height) / size.width),
    ]);
  } finally {
    s3.destroy();
  }
}

const invoke = (url: string, name: string, body: unknown = {}) =>
  fetch(`${url}/functions/dev/${name}`, { method: 'POST', body: JSON.stringify(body) });

describe('the local stack (dev.js)', () => {
  it('tells the thumbnail story: an upload to photos becomes a thumbnail in photos-thumbnails', async () => {
    const s3Port = await freePort();
    const manifest = await thumbnailManifest(s3Port);
    const file = join(dir, 'thumbnail.yaml');
    await writeFile(file, manifest);
    await startDev([file], ['--s3-port', String(s3Port)]);
    await uploadAndFindThumbnail(`http://127.0.0.1:${s3Port}`, 'trip/beach day.jpg', {
      width: 1200,
      height: 800,
    });
    // The invocation shows as it happens, with its REPORT line.
    await waitFor('the REPORT line', async () =>
      /\[default\/thumbnail\] REPORT RequestId: /.test(proc!.log()) ? true : undefined,
    );
  });

  it.runIf(canRun('minio'))(
    'runs MinIO as the store when a minio binary is on PATH, with the same buckets, keys and events',
    async () => {
      const s3Port = await freePort();
      const endpoint = `http://127.0.0.1:${s3Port}`;
      const file = join(dir, 'thumbnail.yaml');
      await writeFile(file, await thumbnailManifest(s3Port));
      const minioDir = dirname(goBinaryPath(goBinaries.minio));
      await startDev(
        [file],
        ['--s3-port', String(s3Port)],
        `${minioDir}${delimiter}${pathWithoutMinio}`,
      );
      // MinIO starts once the gateway listens: the store says when it takes requests.
      await waitFor('the S3 store', async () =>
        proc!.log().includes(`S3 store on ${endpoint} (access key eddy, secret eddysecret)`)
          ? true
          : undefined,
      );
      expect(proc!.log()).toContain(`MinIO, ${join(minioDir, 'minio')}`);
      // MinIO escapes keys differently from AWS: the handler still finds the object.
      await uploadAndFindThumbnail(endpoint, 'trip/ü day+1.jpg', { width: 900, height: 600 });
      // MinIO keeps its objects in the working directory and stops with the local stack.
      expect(existsSync(join(dir, '.eddy', 'minio', 'photos'))).toBe(true);
      await proc!.stop(30_000);
      await expect(fetch(`${endpoint}/minio/health/live`)).rejects.toThrow();
    },
  );

  it.runIf(canRun('minio'))('MinIO ends with dev.js even when dev.js is killed', async () => {
    const s3Port = await freePort();
    const endpoint = `http://127.0.0.1:${s3Port}`;
    const minioDir = dirname(goBinaryPath(goBinaries.minio));
    await startDev(
      [join(projectRoot, 'examples', 'hello', 'function.yaml')],
      ['--s3-port', String(s3Port)],
      `${minioDir}${delimiter}${pathWithoutMinio}`,
    );
    await waitFor('the S3 store', async () =>
      proc!.log().includes(`S3 store on ${endpoint}`) ? true : undefined,
    );
    proc!.child.kill('SIGKILL');
    await proc!.exited;
    // No exit handler runs on SIGKILL: the kernel ends MinIO with its parent.
    await waitFor(
      'MinIO to stop answering',
      () =>
        fetch(`${endpoint}/minio/health/live`).then(
          () => undefined,
          () => true,
        ),
      10_000,
    );
  });

  it('runs an S3-compatible store whose uploads reach the functions triggered by them', async () => {
    const s3Port = await freePort();
    const endpoint = `http://127.0.0.1:${s3Port}`;
    const seen = join(dir, 'seen.txt');
    const file = join(dir, 'photos.yaml');
    await writeFile(
      file,
      `${fn(
        'photos',
        `import { appendFileSync } from 'node:fs'; export const handler = async (e) => { appendFileSync(${JSON.stringify(seen)}, e.Records[0].s3.object.key + '\\n'); };`,
        // One replica taking one invocation at a time: the gateway hands it records first come,
        // first served, so a record handled shows every record that came before it was too.
        `\n  scaling: {maxReplicas: 1}\n  triggers:\n    - name: uploads\n      s3:\n        bucket: photos\n        filter: {suffix: .jpg}\n        connection: {endpoint: '${endpoint}', secretRef: {name: s3-creds}}`,
      )}---
apiVersion: v1
kind: Secret
metadata: {name: s3-creds, namespace: dev, labels: {eddy.dev/connection: 'true'}}
stringData: {accessKeyId: eddy, secretAccessKey: eddysecret}
`,
    );
    await startDev([file], ['--s3-port', String(s3Port)]);
    expect(proc!.log()).toContain(`S3 store on ${endpoint} (access key eddy, secret eddysecret)`);
    const s3 = demoS3Client(endpoint);
    try {
      const handled = (key: string) =>
        waitFor(
          `${key} handled`,
          async () => {
            const text = await readFile(seen, 'utf8').catch(() => '');
            return text.includes(key) ? text : undefined;
          },
          30_000,
        );
      await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'notes.txt', Body: 'x' }));
      await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'beach day.jpg', Body: 'x' }));
      await handled('beach+day.jpg');
      // A marker the trigger takes, uploaded only now: by the time it is handled, a record the
      // filter let through by mistake, uploaded before the others, would have been handled too.
      await s3.send(new PutObjectCommand({ Bucket: 'photos', Key: 'zz-marker.jpg', Body: 'x' }));
      const lines = await handled('zz-marker.jpg');
      expect(lines.trim().split('\n')).toEqual(['beach+day.jpg', 'zz-marker.jpg']);
      // The buckets the demo needs are there.
      await s3.send(new HeadBucketCommand({ Bucket: 'photos-thumbnails' }));
    } finally {
      s3.destroy();
    }
  });

  it('reports a bad Function, skips it, and runs the others', async () => {
    const good = join(dir, 'good.yaml');
    const mixed = join(dir, 'mixed.yaml');
    await writeFile(good, fn('one', `export const handler = async () => 'one';`));
    await writeFile(
      mixed,
      [
        fn('bad', `export const handler = async () => 'bad';`, '\n  timeoutSeconds: 901'),
        fn('two', `export const handler = async (e) => ({ two: e.x });`),
      ].join('---\n'),
    );
    const url = await startDev([good, mixed]);
    // Its first line (after the harness's command line) says that no caller is checked.
    expect(proc!.log().split('\n')[1]).toMatch(
      /^eddy: invocations on 127\.0\.0\.1 are not authenticated: anyone who can reach that address may invoke/,
    );
    expect(proc!.log()).toMatch(/Function dev\/bad.*timeoutSeconds/);
    const one = await invoke(url, 'one');
    expect(await one.json()).toBe('one');
    const two = await invoke(url, 'two', { x: 2 });
    expect(await two.json()).toEqual({ two: 2 });
    const bad = await invoke(url, 'bad');
    expect(bad.status).toBe(404);
    expect(((await bad.json()) as { errorMessage: string }).errorMessage).toBe(
      'no function bad in namespace dev; it has: one, two',
    );
    // Replicas' log lines carry the function's name.
    await waitFor('a prefixed REPORT line', async () =>
      /\[dev\/two\] REPORT RequestId/.test(proc!.log()) ? true : undefined,
    );
  });

  it.runIf(canRun('nats'))(
    'queues events in a nats-server found on PATH, says so in its first lines, and ends it with the stack',
    async () => {
      const file = join(dir, 'queued.yaml');
      await writeFile(
        file,
        fn(
          'queued',
          `export const handler = async (e) => { console.log('got', e.n); return 'ok'; };`,
        ),
      );
      const natsDir = dirname(goBinaryPath(goBinaries.natsServer));
      const url = await startDev([file], [], `${natsDir}${delimiter}${pathWithoutMinio}`);
      expect(proc!.log().split('\n')[2]).toMatch(
        /^eddy: events are queued in NATS JetStream \(.*nats-server, store \.eddy\/nats\): accepted events survive a restart/,
      );
      await waitFor('the queue', async () =>
        /queue: NATS JetStream at nats:\/\/127\.0\.0\.1:\d+, stream EDDY_EVENTS/.test(proc!.log())
          ? true
          : undefined,
      );
      const res = await fetch(`${url}/functions/dev/queued/async`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ n: 42 }),
      });
      expect(res.status).toBe(202);
      await waitFor('the event handled', async () =>
        /\[dev\/queued\] .*INFO\tgot 42/.test(proc!.log()) ? true : undefined,
      );
      expect(existsSync(join(dir, '.eddy', 'nats', 'jetstream'))).toBe(true);
      await proc!.stop(15_000);
      proc = undefined;
      // No nats-server outlives the stack.
      const store = join(dir, '.eddy', 'nats');
      const left = readdirSync('/proc')
        .filter((p) => /^\d+$/.test(p))
        .filter((p) => {
          try {
            return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(store);
          } catch {
            return false;
          }
        });
      expect(left).toEqual([]);
    },
  );

  it('picks up an edited file without a restart', async () => {
    const file = join(dir, 'fn.yaml');
    await writeFile(file, fn('greet', `export const handler = async () => 'v1';`));
    const url = await startDev([file]);
    expect(await (await invoke(url, 'greet')).json()).toBe('v1');
    // Saved the way editors do: a new file renamed over the old one.
    await writeFile(
      `${file}.tmp`,
      fn('greet', `export const handler = async () => 'v2';`) +
        '---\n' +
        fn('added', `export const handler = async () => 'new';`),
    );
    await rename(`${file}.tmp`, file);
    await waitFor(
      'the new code to answer',
      async () => {
        const res = await invoke(url, 'greet');
        return (await res.json()) === 'v2' ? true : undefined;
      },
      30_000,
    );
    expect(await (await invoke(url, 'added')).json()).toBe('new');
  });
});
