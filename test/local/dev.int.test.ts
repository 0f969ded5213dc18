/**
 * The local stack as a user runs it: `node dist/operator/dev.js <files...>`, with a bad Function
 * among good ones, a Secret-less file, and a file edited while it runs.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile, rename } from 'node:fs/promises';
import {
  GetObjectCommand,
  HeadBucketCommand,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { createServer as createNetServer, type AddressInfo, type Server } from 'node:net';
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
  env: Record<string, string> = {},
): Promise<string> {
  proc = startProcess(
    'dev',
    process.execPath,
    [devMain, '--port', '0', '--metrics-port', '0', ...flags, ...files],
    join(dir, 'dev.log'),
    {
      cwd: dir,
      env: { PATH: path, HOME: process.env.HOME, ...env },
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
  it('tells the thumbnail story on the store port chosen: an upload to photos becomes a thumbnail in photos-thumbnails', async () => {
    // Another port than the default 9000: the example names the store http://eddy-local-s3,
    // and its triggers and the function's S3 client (keys from the Secret) reach this port.
    const s3Port = await freePort();
    expect(s3Port).not.toBe(9000);
    const manifest = await thumbnailManifest('local');
    expect(manifest).not.toMatch(/:9000|value: eddy/);
    expect(manifest).toContain('secretKeyRef: { name: s3-creds, key: secretAccessKey }');
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

  it.runIf(existsSync('/usr/bin/curl'))(
    "README's upload and download commands, run one after the other, save the thumbnail; the download fails loudly while there is none",
    async () => {
      const s3Port = await freePort();
      const endpoint = `http://127.0.0.1:${s3Port}`;
      const file = join(dir, 'thumbnail.yaml');
      await writeFile(file, await thumbnailManifest('local'));
      await startDev([file], ['--s3-port', String(s3Port)]);
      await waitFor('the S3 store', async () =>
        proc!.log().includes(`S3 store on ${endpoint}`) ? true : undefined,
      );
      // The commands as README.md writes them (one per line once continuations are joined),
      // on this stack's store port.
      const readme = await readFile(join(projectRoot, 'README.md'), 'utf8');
      const block = /```sh\n(curl --aws-sigv4[\s\S]*?)```/.exec(readme)?.[1];
      if (!block) throw new Error('README.md no longer has the upload and download commands');
      const commands = block
        .replace(/\\\n\s*/g, '')
        .split('\n')
        .map((line) => line.replace(/\s+#.*$/, '').trim())
        .filter((line) => line.includes('127.0.0.1:9000'))
        .map((line) => line.replaceAll('http://127.0.0.1:9000', endpoint));
      expect(commands).toHaveLength(2);
      const [upload, download] = commands as [string, string];
      expect(upload).toContain('-T photo.jpg');
      // dev.js prints the same download command.
      await waitFor('the printed download command', async () =>
        proc!.log().includes(`eddy: thumbnail  ${download}`) ? true : undefined,
      );
      await sharp({
        create: { width: 1200, height: 800, channels: 3, background: { r: 20, g: 80, b: 200 } },
      })
        .jpeg()
        .toFile(join(dir, 'photo.jpg'));
      const run = (script: string) =>
        new Promise<{ code: number | null; stderr: string }>((resolve) => {
          const child = spawn('bash', ['-c', script], {
            cwd: dir,
            stdio: ['ignore', 'ignore', 'pipe'],
          });
          let stderr = '';
          child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
          child.on('close', (code) => resolve({ code, stderr }));
        });
      // One after the other, as a user pastes them: the download waits for the thumbnail.
      const both = await run(`${upload}\n${download}`);
      expect(both.code, both.stderr).toBe(0);
      const meta = await sharp(await readFile(join(dir, 'thumbnail.jpg'))).metadata();
      expect([meta.format, meta.width, meta.height]).toEqual(['jpeg', 200, 133]);
      // A thumbnail that never comes: a non-zero exit and no file (fewer tries, same command).
      const never = await run(
        download
          .replace('--retry 30', '--retry 2')
          .replace('-o thumbnail.jpg', '-o never.jpg')
          .replace('photos-thumbnails/photo.jpg', 'photos-thumbnails/never.jpg'),
      );
      expect(never.code).toBe(22);
      expect(never.stderr).toContain('404');
      expect(existsSync(join(dir, 'never.jpg'))).toBe(false);
    },
  );

  it.runIf(canRun('minio'))(
    'runs MinIO as the store when a minio binary is on PATH, with the same buckets, keys and events',
    async () => {
      const s3Port = await freePort();
      const endpoint = `http://127.0.0.1:${s3Port}`;
      const file = join(dir, 'thumbnail.yaml');
      await writeFile(file, await thumbnailManifest('local'));
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

  it('gives a Function the keys of a Secret in its files (secretKeyRef, envFrom), and refuses to start one whose Secret key is missing, naming it', async () => {
    const file = join(dir, 'secrets.yaml');
    await writeFile(
      file,
      `${fn(
        'keyed',
        `export const handler = async () => [process.env.TOKEN, process.env.APP_token, process.env.OPTIONAL ?? 'unset'];`,
        `\n  env:\n    - name: TOKEN\n      valueFrom: {secretKeyRef: {name: app, key: token}}\n    - name: OPTIONAL\n      valueFrom: {secretKeyRef: {name: app, key: nope, optional: true}}\n  envFrom:\n    - {prefix: APP_, secretRef: {name: app}}`,
      )}---
${fn(
  'keyless',
  `export const handler = async () => 'ran';`,
  `\n  env:\n    - name: TOKEN\n      valueFrom: {secretKeyRef: {name: app, key: missing}}`,
)}---
apiVersion: v1
kind: Secret
metadata: {name: app, namespace: dev}
stringData: {token: s3cr3t}
`,
    );
    const url = await startDev([file]);
    const keyed = await invoke(url, 'keyed');
    expect(await keyed.json()).toEqual(['s3cr3t', 's3cr3t', 'unset']);
    const keyless = await invoke(url, 'keyless');
    expect(keyless.status).toBe(503);
    const body = (await keyless.json()) as { errorType: string; errorMessage: string };
    expect(body.errorType).toBe('EddyActivationFailed');
    expect(body.errorMessage).toContain(
      'env TOKEN names key missing of Secret dev/app, which has no such key',
    );
  });

  it('says so when a Function names the local S3 store and none runs', async () => {
    const file = join(dir, 'store.yaml');
    await writeFile(
      file,
      fn(
        'stored',
        `export const handler = async () => process.env.S3_ENDPOINT;`,
        `\n  env:\n    - {name: S3_ENDPOINT, value: 'http://eddy-local-s3'}`,
      ),
    );
    await startDev([file]);
    expect(proc!.log()).toContain(
      'Function dev/stored names the local S3 store (http://eddy-local-s3), but none runs: start the local stack with --s3-port <port>',
    );
  });

  it('says when a trigger does not deliver, since there is no status to read locally', async () => {
    // Port 1: nothing listens there, so the connection is refused at once.
    const closed = 1;
    const file = join(dir, 'unreachable.yaml');
    await writeFile(
      file,
      fn(
        'unreached',
        `export const handler = async () => 1;`,
        `\n  triggers:\n    - name: uploads\n      s3:\n        bucket: photos\n        connection: {endpoint: 'http://127.0.0.1:${closed}', secretRef: {name: creds}}`,
      ) +
        `---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: dev
  labels: {eddy.dev/connection: 'true'}
stringData: {accessKeyId: a, secretAccessKey: b}
`,
    );
    await startDev([file]);
    const line = await waitFor(
      'the trigger problem',
      async () =>
        proc!
          .log()
          .split('\n')
          .find((l) => l.includes('dev/unreached: trigger uploads does not deliver')),
      30_000,
    );
    expect(line).toMatch(
      /^eddy: dev\/unreached: trigger uploads does not deliver \(EndpointUnreachable: .*the endpoint could not be reached/,
    );
  });

  it('logs each failed attempt of an asynchronous invocation as it fails, with its number, error type and message', async () => {
    const file = join(dir, 'failing.yaml');
    await writeFile(
      file,
      fn(
        'failing',
        `let n = 0; export const handler = async () => { n++; console.log('try ' + n); throw new TypeError('boom ' + n); };`,
        '\n  retry: {maxAttempts: 1}',
      ),
    );
    const url = await startDev([file]);
    const res = await fetch(`${url}/functions/dev/failing/async`, { method: 'POST', body: '{}' });
    expect(res.status).toBe(202);
    const { requestId } = (await res.json()) as { requestId: string };
    const lines = await waitFor(
      'the event dropped',
      async () => {
        const all = proc!.log().split('\n');
        return all.some((l) => l.includes(`DROPPED event ${requestId}`)) ? all : undefined;
      },
      30_000,
    );
    const at = (pattern: RegExp) => lines.findIndex((l) => pattern.test(l));
    const first = at(
      new RegExp(
        `^eddy: attempt 1 of event ${requestId} to dev/failing failed: TypeError: boom 1; retrying in \\d+ ms$`,
      ),
    );
    const second = at(
      new RegExp(
        `^eddy: attempt 2 of event ${requestId} to dev/failing failed: TypeError: boom 2; not retried \\(RetriesExhausted\\)$`,
      ),
    );
    expect(first).toBeGreaterThan(0);
    // Said when it failed: before the second try ran.
    expect(first).toBeLessThan(at(/\[dev\/failing\] .*try 2/));
    expect(second).toBeGreaterThan(first);
    expect(second).toBeLessThan(at(/DROPPED event/));
  });

  it('drains on Ctrl-C, saying how long and that a second one stops at once, which leaves nothing behind', async () => {
    const file = join(dir, 'sleepy.yaml');
    await writeFile(
      file,
      fn(
        'sleepy',
        `export const handler = async () => { console.log('sleeping'); await new Promise((r) => setTimeout(r, 60000)); };`,
        '\n  timeoutSeconds: 120',
      ),
    );
    const tmp = join(dir, 'tmp');
    await mkdir(tmp, { recursive: true });
    const url = await startDev([file], [], pathWithoutMinio, { TMPDIR: tmp });
    expect((await readdir(tmp)).filter((f) => f.startsWith('eddy-local-'))).toHaveLength(1);
    const call = fetch(`${url}/functions/dev/sleepy`, { method: 'POST', body: '{}' }).catch(
      () => undefined,
    );
    await waitFor('the handler to run', async () => proc!.log().includes('sleeping') || undefined);
    proc!.child.kill('SIGINT');
    await waitFor('the drain', async () => proc!.log().includes('SIGINT: draining') || undefined);
    expect(proc!.log()).toContain(
      "eddy: SIGINT: draining (invocations in flight get up to 30 s), then stopping the functions' processes; Ctrl-C again stops at once",
    );
    proc!.child.kill('SIGINT');
    expect(await proc!.exited).toBe('exited with code 130');
    expect(proc!.log()).toContain('eddy: SIGINT again: stopping at once');
    expect((await readdir(tmp)).filter((f) => f.startsWith('eddy-local-'))).toEqual([]);
    await call;
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

  describe('with a port taken by another process', () => {
    let holder: Server | undefined;
    /** A real listener on a free port of 127.0.0.1, as another program would hold it. */
    const occupy = async (): Promise<number> => {
      holder = createNetServer();
      await new Promise<void>((resolve, reject) => {
        holder!.once('error', reject);
        holder!.listen(0, '127.0.0.1', resolve);
      });
      return (holder.address() as AddressInfo).port;
    };
    afterEach(async () => {
      await new Promise((resolve) => (holder ? holder.close(resolve) : resolve(undefined)));
      holder = undefined;
    });
    /**
     * Runs dev.js with `flags` until it exits on its own; its exit, and its log once the harness
     * has written out what it printed (the file is written after the exit is seen).
     */
    const runToExit = async (flags: string[], path = pathWithoutMinio) => {
      proc = startProcess(
        'dev',
        process.execPath,
        [devMain, ...flags, join(projectRoot, 'examples', 'hello', 'function.yaml')],
        join(dir, 'dev.log'),
        { cwd: dir, env: { PATH: path, HOME: process.env.HOME } },
      );
      const closed = new Promise<void>((resolve) => proc!.child.once('close', () => resolve()));
      const how = await Promise.race([
        proc.exited,
        new Promise<string>((resolve) =>
          setTimeout(() => resolve('still running after 30 s'), 30_000).unref(),
        ),
      ]);
      if (how.startsWith('still')) return { how, log: proc.log() };
      await closed;
      const log = await waitFor(
        'its last line in the log',
        async () => {
          const text = proc!.log();
          return /eddy: .* cannot listen on /.test(text) ? text : undefined;
        },
        10_000,
      ).catch(() => proc!.log());
      return { how, log };
    };

    it('the gateway’s: says which port and how to choose another, and exits non-zero', async () => {
      const taken = await occupy();
      const { how, log } = await runToExit(['--port', String(taken), '--metrics-port', '0']);
      expect(how).toBe('exited with code 1');
      expect(log).toContain(
        `eddy: the gateway cannot listen on 127.0.0.1:${taken}: another process is using port ${taken}: stop that process, or choose another port with --port <port> (npm start -- --port ${taken + 100};`,
      );
      expect(log).not.toMatch(/Unhandled|\n\s+at /);
    });

    it('the metrics endpoint’s: names --metrics-port, and exits non-zero', async () => {
      const taken = await occupy();
      const { how, log } = await runToExit(['--port', '0', '--metrics-port', String(taken)]);
      expect(how).toBe('exited with code 1');
      expect(log).toContain(
        `eddy: the metrics endpoint cannot listen on 127.0.0.1:${taken}: another process is using port ${taken}: stop that process, or choose another port with --metrics-port <port>`,
      );
    });

    it('the S3 store’s (s3rver): says which port and how to choose another, without a stack trace, and exits non-zero', async () => {
      const taken = await occupy();
      const { how, log } = await runToExit([
        '--port',
        '0',
        '--metrics-port',
        '0',
        '--s3-port',
        String(taken),
      ]);
      expect(how).toBe('exited with code 1');
      expect(log).toContain(
        `eddy: the S3 store cannot listen on 127.0.0.1:${taken}: another process is using port ${taken}: stop that process, or choose another port with --s3-port <port> (npm start -- --s3-port ${taken + 100};`,
      );
      expect(log).not.toMatch(/Unhandled|\n\s+at /);
    });

    it.runIf(canRun('minio'))(
      'the S3 store’s (MinIO): says so before MinIO starts, and exits non-zero',
      async () => {
        const taken = await occupy();
        const minioDir = dirname(goBinaryPath(goBinaries.minio));
        const { how, log } = await runToExit(
          ['--port', '0', '--metrics-port', '0', '--s3-port', String(taken)],
          `${minioDir}${delimiter}${pathWithoutMinio}`,
        );
        expect(how).toBe('exited with code 1');
        expect(log).toContain(
          `eddy: the S3 store cannot listen on 127.0.0.1:${taken}: another process is using port ${taken}: stop that process, or choose another port with --s3-port <port>`,
        );
      },
    );
  });

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
