/**
 * `npm run bench:thumbnail`: the thumbnail story under load, beside the same work done without
 * Eddy, measured in the same run on the same files.
 *   1. the local stack (`node dist/operator/dev.js`: gateway, S3 store (MinIO, or s3rver with
 *      BENCH_S3_STORE=s3rver), the thumbnail Function of examples/thumbnail as local processes):
 *      200 uploads of 12-megapixel JPEGs, images/s, upload-to-thumbnail p50/p99, and the CPU
 *      each image costs by process and thread;
 *   2. the first thumbnail from zero: upload to thumbnail written, for 5 copies of the Function
 *      at zero (each on a bucket of its own, never invoked before), p50 of the 5;
 *   3. the baseline: a plain Node script (bench/thumbnail-script.ts) reading the same 200 photos
 *      from the same store, making the same thumbnails with sharp and writing them back, as many
 *      at a time as the stack has slots (replicas x concurrency 1), while the stack idles;
 *   4. for context: a Node loop calling sharp alone on photos in memory (no store), and
 *      ImageMagick's `convert in.jpg -thumbnail 200x out.jpg`, one process per image (skipped
 *      when no ImageMagick `convert` is on PATH).
 * Target: the stack at least 85% of the script's images/s.
 *
 * Upload-to-thumbnail is the time from sending the PutObject to the moment the handler's log line
 * "thumbnail photos/<key> -> photos-thumbnails/<key>" reaches this process on dev.js's output:
 * the handler prints it after the store has acknowledged the thumbnail's PutObject, so the
 * thumbnail exists by then. Every thumbnail is checked in the store at the end.
 *
 * The Function runs one replica per core, each kept up (minReplicas = maxReplicas) and taking one
 * invocation at a time, after a warm-up of a few uploads; uploads go twice as many at a time as
 * there are replicas. BENCH_UPLOADS, BENCH_REPLICAS, BENCH_UPLOAD_CONCURRENCY,
 * BENCH_IDLE_UPLOADS and BENCH_MAGICK_IMAGES change those numbers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import sharp from 'sharp';
import { parseAllDocuments, stringify } from 'yaml';
import { goBinaries, goBinaryPath, projectRoot } from '../test/harness/components.js';
import { freePorts } from '../test/harness/ports.js';
import { thumbnailManifest } from '../test/harness/thumbnail.js';
import { machine } from './machine.js';

// The AWS SDK warns on every client that Node 20 support ends; the project targets Node 20.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const uploads = Number(process.env.BENCH_UPLOADS ?? 200);
/** ImageMagick's count: the same by default; fewer for a quicker look. */
const magickImages = Number(process.env.BENCH_MAGICK_IMAGES ?? uploads);
const distinctImages = 4;
const width = 4000;
const height = 3000;
/** The Function's replicas (one invocation each, since sharp keeps a core busy): one per core. */
const replicas = Number(process.env.BENCH_REPLICAS ?? availableParallelism());
/** Uploads in flight: enough to keep every replica busy while the next image travels. */
const uploadConcurrency = Number(process.env.BENCH_UPLOAD_CONCURRENCY ?? replicas * 2);
/** Uploads before the measurement: replicas started, sharp and the S3 clients warm. */
const warmUps = replicas * 2;
/** Sequential uploads after the measurement: latency with nothing queued. */
const idleUploads = Number(process.env.BENCH_IDLE_UPLOADS ?? 10);
/**
 * The local stack's S3 store: `minio` (dev.js runs MinIO when a minio binary is on PATH; the test
 * harness's build is put first on PATH when there is one) or `s3rver` (no minio on PATH).
 */
const store = process.env.BENCH_S3_STORE ?? 'minio';
if (store !== 'minio' && store !== 's3rver') throw new Error('BENCH_S3_STORE: minio or s3rver');
/** Copies of the Function at zero, each started once by an upload: the first thumbnail from zero. */
const coldSamples = 5;
const coldBuckets = Array.from({ length: coldSamples }, (_, i) => `cold${i + 1}`);
/** The stack's images/s against the script's. */
const targetRatio = 0.85;
/** The whole bench is stopped (processes and files included) past this. */
const overallLimitMs = 10 * 60_000;

const began = performance.now();
const say = (line: string) =>
  console.log(`[${((performance.now() - began) / 1000).toFixed(1)} s] ${line}`);

const quantile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? NaN;
const ms = (n: number) => `${n.toFixed(0)} ms`;
const rate = (n: number) => `${n.toFixed(2)} images/s`;

/** Runs `task(i)` for i in [0, count) with at most `limit` in flight. */
async function pool(count: number, limit: number, task: (i: number) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, count) }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

// ---------------------------------------------------------------------------------------------
// Cleanup: the stack's process group and the scratch directory go, however the bench ends.

let stack: ChildProcess | undefined;
let scratch: string | undefined;

function killStack(signal: NodeJS.Signals): void {
  if (stack?.pid === undefined || stack.exitCode !== null || stack.signalCode !== null) return;
  try {
    process.kill(-stack.pid, signal);
  } catch {
    // already gone
  }
}

async function stopStack(): Promise<void> {
  if (stack && stack.exitCode === null && stack.signalCode === null) {
    const child = stack;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    // dev.js drains and stops the Function's processes on SIGTERM.
    try {
      process.kill(child.pid!, 'SIGTERM');
    } catch {
      // already gone
    }
    await Promise.race([exited, sleep(15_000)]);
    killStack('SIGKILL');
  }
}

async function cleanup(): Promise<void> {
  await stopStack();
  if (scratch) await rm(scratch, { recursive: true, force: true });
}

process.on('exit', () => killStack('SIGKILL'));
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void cleanup().finally(() => process.exit(130)));
}
const limit = setTimeout(() => {
  console.error(`bench:thumbnail: over ${overallLimitMs / 60_000} minutes, stopping`);
  void cleanup().finally(() => process.exit(1));
}, overallLimitMs);
limit.unref();

// ---------------------------------------------------------------------------------------------
// The photos: 12 megapixels, a gradient with shapes and sensor-like noise, so that decoding
// costs what a camera's JPEG costs (a flat colour would decode much faster).

async function photo(seed: number): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 3);
  let s = (seed * 2_654_435_761) >>> 0 || 1;
  const random = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4_294_967_296;
  };
  const cx = width * (0.3 + 0.1 * seed);
  const cy = height * (0.4 + 0.05 * seed);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      const d = Math.hypot(x - cx, y - cy);
      const ring = Math.sin(d / (40 + 10 * seed)) * 40;
      const noise = (random() - 0.5) * 24;
      raw[i] = Math.max(0, Math.min(255, (x / width) * 200 + ring + noise + 20 * seed));
      raw[i + 1] = Math.max(0, Math.min(255, (y / height) * 180 - ring + noise + 30));
      raw[i + 2] = Math.max(0, Math.min(255, 120 + ring + noise - 15 * seed));
    }
  }
  return sharp(raw, { raw: { width, height, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
}

/** The handler's transformation (examples/thumbnail/index.mjs), without S3. */
async function sharpThumbnail(bytes: Buffer): Promise<Buffer> {
  const { format } = await sharp(bytes).metadata();
  return sharp(bytes)
    .rotate()
    .resize({ width: 200, withoutEnlargement: true })
    .toFormat(format)
    .toBuffer();
}

/** Images a second, and CPU per image (ms, all of this process's threads). */
async function sharpLoop(
  files: Buffer[],
  count: number,
  parallel: number,
): Promise<{ rate: number; cpu: number }> {
  const start = performance.now();
  const cpu = process.cpuUsage();
  await pool(count, parallel, async (i) => {
    await sharpThumbnail(files[i % files.length]!);
  });
  const used = process.cpuUsage(cpu);
  return {
    rate: count / ((performance.now() - start) / 1000),
    cpu: (used.user + used.system) / 1000 / count,
  };
}

/** The ImageMagick `convert` on PATH, or why there is none. */
async function findMagick(): Promise<{ ok: true } | { ok: false; why: string }> {
  const result = await run('convert', ['-version']).catch((err: Error) => ({
    code: -1,
    out: err.message,
  }));
  if (result.code === 0 && /ImageMagick/.test(result.out)) return { ok: true };
  return { ok: false, why: result.out.split('\n')[0] || `exit code ${result.code}` };
}

function run(command: string, args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code: code ?? -1, out }));
  });
}

async function magickLoop(paths: string[], count: number, parallel: number): Promise<number> {
  const start = performance.now();
  await pool(count, parallel, async (i) => {
    const out = join(scratch!, `magick-${i}.jpg`);
    const result = await run('convert', [paths[i % paths.length]!, '-thumbnail', '200x', out]);
    if (result.code !== 0) throw new Error(`convert failed (${result.code}): ${result.out}`);
  });
  return count / ((performance.now() - start) / 1000);
}

// ---------------------------------------------------------------------------------------------
// The local stack.

interface Stack {
  s3: S3Client;
  /** The store's endpoint. */
  endpoint: string;
  /** Resolves when the thumbnail of `bucket/key` is announced. */
  thumbnailOf(object: string): Promise<number>;
  /** Handler durations from the REPORT lines, in ms. */
  reports: number[];
  /** The copies at zero: their first invocation's Duration and Init Duration, in ms. */
  coldReports: Array<{ durationMs: number; initMs: number }>;
}

/** The store dev.js said it runs. */
let storeKind = 'unknown';

/** PATH with a minio first (BENCH_S3_STORE=minio) or with none (s3rver). */
function storePath(path: string): string {
  const hasMinio = (dir: string) => {
    try {
      accessSync(join(dir, 'minio'), constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  const dirs = path.split(delimiter).filter((d) => d !== '' && !hasMinio(d));
  if (store === 's3rver') return dirs.join(delimiter);
  const harness = goBinaryPath(goBinaries.minio);
  const own = path.split(delimiter).find((d) => d !== '' && hasMinio(d));
  const minioDir = own ?? (existsSync(harness) ? dirname(harness) : undefined);
  if (!minioDir) {
    throw new Error(
      'no minio on PATH and none built by the test harness (npm run test:setup minio); BENCH_S3_STORE=s3rver runs the bench on s3rver',
    );
  }
  return [minioDir, ...dirs].join(delimiter);
}

async function startStack(dir: string): Promise<Stack> {
  const [port, s3Port] = (await freePorts(2)) as [number, number];
  // examples/thumbnail/function.yaml on the free port, with one replica per core kept up (an
  // invocation at a time each: sharp keeps a core busy).
  const manifest = (await thumbnailManifest('local')).replace(
    '  timeoutSeconds: 30\n',
    `  timeoutSeconds: 30\n  concurrency: 1\n  scaling: { minReplicas: ${replicas}, maxReplicas: ${replicas} }\n`,
  );
  if (!manifest.includes(`maxReplicas: ${replicas}`)) throw new Error('function.yaml changed');
  const file = join(dir, 'thumbnail.yaml');
  await writeFile(file, `${manifest}${coldCopies(manifest)}`);
  const env: Record<string, string> = {};
  for (const variable of ['PATH', 'HOME', 'TMPDIR']) {
    const value = process.env[variable];
    if (value !== undefined) env[variable] = value;
  }
  env.PATH = storePath(env.PATH ?? '');
  // The Node the Function names, fetched once into the project's .eddy rather than each scratch dir.
  env.EDDY_LANGUAGES_DIR = process.env.EDDY_LANGUAGES_DIR ?? join(projectRoot, '.eddy');
  // In the scratch directory: the store keeps its objects under ./.eddy/s3.
  const child = spawn(
    process.execPath,
    [
      join(projectRoot, 'dist', 'operator', 'dev.js'),
      '--port',
      String(port),
      '--metrics-port',
      '0',
      '--s3-port',
      String(s3Port),
      '--s3-buckets',
      ['photos', 'photos-thumbnails', ...coldBuckets].join(','),
      file,
    ],
    { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
  stack = child;
  const waiting = new Map<string, (at: number) => void>();
  const done = new Map<string, number>();
  const reports: number[] = [];
  const coldReports: Array<{ durationMs: number; initMs: number }> = [];
  const log: string[] = [];
  let listening: () => void;
  const ready = new Promise<void>((resolve) => (listening = resolve));
  const storeLine = /eddy: S3 store on \S+ .*; (\S+)/;
  const announced = /thumbnail (\S+) -> photos-thumbnails\//;
  const report = /\[default\/thumbnail\] REPORT RequestId: \S+\tDuration: ([\d.]+) ms/;
  const coldReport =
    /\[default\/thumbnail-cold\d+\] REPORT RequestId: \S+\tDuration: ([\d.]+) ms.*\tInit Duration: ([\d.]+) ms/;
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on('line', (line) => {
      const at = performance.now();
      log.push(line);
      if (log.length > 200) log.shift();
      const m = announced.exec(line);
      if (m) {
        const resolve = waiting.get(m[1]!);
        if (resolve) resolve(at);
        else done.set(m[1]!, at);
      }
      const r = report.exec(line);
      if (r) reports.push(Number(r[1]));
      const c = coldReport.exec(line);
      if (c) coldReports.push({ durationMs: Number(c[1]), initMs: Number(c[2]) });
      const s = storeLine.exec(line);
      if (s) {
        storeKind = s[1]!.replace(/,$/, '');
        listening();
      }
    });
  }
  const exited = new Promise<never>((_, reject) =>
    child.once('exit', (code, signal) =>
      reject(new Error(`dev.js ended (${signal ?? code}):\n${log.slice(-40).join('\n')}`)),
    ),
  );
  exited.catch(() => undefined);
  await Promise.race([
    ready,
    exited,
    sleep(30_000).then(() => {
      throw new Error(`dev.js's S3 store was not ready within 30 s:\n${log.join('\n')}`);
    }),
  ]);
  const s3 = new S3Client({
    endpoint: `http://127.0.0.1:${s3Port}`,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: 'eddy', secretAccessKey: 'eddysecret' },
  });
  return {
    s3,
    endpoint: `http://127.0.0.1:${s3Port}`,
    reports,
    coldReports,
    thumbnailOf: (object) => {
      const at = done.get(object);
      if (at !== undefined) return Promise.resolve(at);
      return Promise.race([
        new Promise<number>((resolve) => waiting.set(object, resolve)),
        exited,
        sleep(120_000).then(() => {
          throw new Error(`no thumbnail of ${object} within 120 s:\n${log.slice(-40).join('\n')}`);
        }),
      ]);
    },
  };
}

/**
 * Copies of the manifest's Function at zero (minReplicas 0, never invoked), `thumbnail-coldN`
 * on bucket `coldN`, writing to photos-thumbnails: each one's first upload starts a replica.
 */
function coldCopies(manifest: string): string {
  const fn = parseAllDocuments(manifest)
    .map((d) => d.toJS() as Record<string, unknown>)
    .find((d) => d.kind === 'Function') as {
    metadata: { name: string };
    spec: {
      scaling?: unknown;
      env: Array<{ name: string; value?: string }>;
      triggers: Array<{ name: string; s3: { bucket: string } }>;
    };
  };
  return coldBuckets
    .map((bucket, i) => {
      const copy = structuredClone(fn);
      copy.metadata.name = `thumbnail-cold${i + 1}`;
      copy.spec.scaling = { minReplicas: 0, maxReplicas: 1 };
      copy.spec.env = copy.spec.env.map((e) =>
        e.name === 'DEST_BUCKET' ? { ...e, value: 'photos-thumbnails' } : e,
      );
      copy.spec.triggers = copy.spec.triggers
        .filter((t) => t.name === 'uploads-jpg')
        .map((t) => ({ ...t, s3: { ...t.s3, bucket } }));
      return `---\n${stringify(copy)}`;
    })
    .join('');
}

/** Upload to thumbnail written, once per copy at zero, one after the other (ms, in order). */
async function firstFromZero(stack: Stack, file: Buffer): Promise<number[]> {
  const out: number[] = [];
  for (const bucket of coldBuckets) {
    const sent = performance.now();
    const thumbnail = stack.thumbnailOf(`${bucket}/first.jpg`);
    await stack.s3.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: 'first.jpg',
        Body: file,
        ContentType: 'image/jpeg',
      }),
    );
    out.push((await thumbnail) - sent);
  }
  return out;
}

/** The script without Eddy on the stack's store: images/s and its CPU per image (ms). */
async function script(
  stack: Stack,
  prefix: string,
  count: number,
  parallel: number,
): Promise<{ rate: number; cpu: number }> {
  const result = await run(process.execPath, [
    '--import',
    'tsx',
    join(projectRoot, 'bench', 'thumbnail-script.ts'),
    stack.endpoint,
    'photos',
    prefix,
    String(count),
    String(parallel),
    'photos-thumbnails',
    'script',
  ]);
  const line = result.out.trim().split('\n').at(-1) ?? '';
  if (result.code !== 0 || !line.startsWith('{')) {
    throw new Error(`the script failed (${result.code}): ${result.out}`);
  }
  const { seconds, cpuMs } = JSON.parse(line) as { seconds: number; cpuMs: number };
  return { rate: count / seconds, cpu: cpuMs / count };
}

/** Uploads `photos[i]` as `<prefix>/<i>.jpg`; returns each upload's upload-to-thumbnail time. */
async function upload(
  stack: Stack,
  files: Buffer[],
  prefix: string,
  count: number,
  parallel: number,
): Promise<{ latencies: number[]; seconds: number }> {
  const latencies: number[] = [];
  const start = performance.now();
  await pool(count, parallel, async (i) => {
    const key = `${prefix}/${String(i).padStart(4, '0')}.jpg`;
    const sent = performance.now();
    const thumbnail = stack.thumbnailOf(`photos/${key}`);
    await stack.s3.send(
      new PutObjectCommand({
        Bucket: 'photos',
        Key: key,
        Body: files[i % files.length],
        ContentType: 'image/jpeg',
      }),
    );
    latencies.push((await thumbnail) - sent);
  });
  return {
    latencies: latencies.sort((a, b) => a - b),
    seconds: (performance.now() - start) / 1000,
  };
}

/** The fields of a /proc stat line after the command's name (which may hold spaces). */
function statFields(path: string): { comm: string; fields: string[] } {
  const stat = readFileSync(path, 'utf8');
  const close = stat.lastIndexOf(')');
  return {
    comm: stat.slice(stat.indexOf('(') + 1, close),
    fields: stat.slice(close + 2).split(' '),
  };
}

/** utime + stime of a stat line's fields, in ms (clock ticks are 100 a second on Linux). */
const ticksMs = (fields: string[]) => ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;

/**
 * CPU time (ms) of a process by thread: its main thread (JavaScript), libvips' workers (sharp's
 * pixels), and the rest (libuv's pool driving sharp and zlib, V8's garbage collector helpers).
 */
interface ThreadCpu {
  main: number;
  vips: number;
  other: number;
}

function threadCpu(pid: number): ThreadCpu {
  const cpu: ThreadCpu = { main: 0, vips: 0, other: 0 };
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return cpu;
  }
  for (const tid of tasks) {
    try {
      const { comm, fields } = statFields(`/proc/${pid}/task/${tid}/stat`);
      const kind = tid === String(pid) ? 'main' : comm === 'libvips worker' ? 'vips' : 'other';
      cpu[kind] += ticksMs(fields);
    } catch {
      // gone meanwhile
    }
  }
  return cpu;
}

/** Where the CPU goes: dev.js (gateway, and the S3 store when it is s3rver), its children, us. */
interface CpuSplit {
  dev: ThreadCpu;
  /** The Function's replicas (node processes started by dev.js). */
  replicas: ThreadCpu;
  /** A store running as dev.js's child (MinIO), all threads. */
  store: number;
  bench: number;
}

function cpuSplit(devPid: number): CpuSplit | undefined {
  if (!existsSync(`/proc/${devPid}/task`)) return undefined;
  const split: CpuSplit = {
    dev: threadCpu(devPid),
    replicas: { main: 0, vips: 0, other: 0 },
    store: 0,
    bench: 0,
  };
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const { comm, fields } = statFields(`/proc/${entry}/stat`);
      if (Number(fields[1]) !== devPid) continue;
      if (comm === 'node') {
        const t = threadCpu(Number(entry));
        split.replicas.main += t.main;
        split.replicas.vips += t.vips;
        split.replicas.other += t.other;
      } else {
        split.store += ticksMs(fields);
      }
    } catch {
      // gone meanwhile
    }
  }
  const own = process.cpuUsage();
  split.bench = (own.user + own.system) / 1000;
  return split;
}

/** `after - before` per image, as a line. */
function cpuLine(before: CpuSplit, after: CpuSplit, images: number): string {
  const per = (a: number, b: number) => ms((a - b) / images);
  const sum = (t: ThreadCpu) => t.main + t.vips + t.other;
  const threads = (a: ThreadCpu, b: ThreadCpu) =>
    `main thread ${per(a.main, b.main)}, libvips ${per(a.vips, b.vips)}, other threads ${per(a.other, b.other)}`;
  return [
    `    CPU per image during the ${images} uploads: ${per(sum(after.dev) + sum(after.replicas) + after.store + after.bench, sum(before.dev) + sum(before.replicas) + before.store + before.bench)} in all`,
    `      replicas ${per(sum(after.replicas), sum(before.replicas))} (${threads(after.replicas, before.replicas)})`,
    `      dev.js ${per(sum(after.dev), sum(before.dev))} (${threads(after.dev, before.dev)})${after.store > 0 ? `, the store (MinIO) ${per(after.store, before.store)}` : ''}`,
    `      the uploading client ${per(after.bench, before.bench)}`,
  ].join('\n');
}

async function countThumbnails(s3: S3Client, prefix: string): Promise<number> {
  let count = 0;
  let token: string | undefined;
  do {
    const page = await s3.send(
      new ListObjectsV2Command({
        Bucket: 'photos-thumbnails',
        Prefix: `${prefix}/`,
        ContinuationToken: token,
      }),
    );
    count += page.KeyCount ?? 0;
    token = page.NextContinuationToken;
  } while (token);
  return count;
}

// ---------------------------------------------------------------------------------------------

const results: string[] = [];
let failed = false;
try {
  scratch = await mkdtemp(join(tmpdir(), 'eddy-bench-thumbnail-'));
  say(`making ${distinctImages} distinct ${width}x${height} JPEGs`);
  const files = await Promise.all(Array.from({ length: distinctImages }, (_, i) => photo(i + 1)));
  const paths = files.map((_, i) => join(scratch!, `photo-${i + 1}.jpg`));
  await Promise.all(files.map((f, i) => writeFile(paths[i]!, f)));
  const mb = files.reduce((sum, f) => sum + f.length, 0) / files.length / 1_048_576;
  say(`photos of ${mb.toFixed(1)} MB on average`);

  say(
    `starting the local stack (${replicas} replica${replicas === 1 ? '' : 's'}, concurrency 1 each)`,
  );
  const local = await startStack(scratch);
  say(`warming up: ${warmUps} uploads`);
  await upload(local, files, 'warm', warmUps, uploadConcurrency);
  say(`${uploads} uploads, ${uploadConcurrency} at a time`);
  const reportsBefore = local.reports.length;
  const cpuBefore = cpuSplit(stack!.pid!);
  const loaded = await upload(local, files, 'load', uploads, uploadConcurrency);
  const cpuAfter = cpuSplit(stack!.pid!);
  const handlerMs = local.reports.slice(reportsBefore).sort((a, b) => a - b);
  say(`${idleUploads} uploads, one at a time`);
  const idle = await upload(local, files, 'idle', idleUploads, 1);
  const stored = await countThumbnails(local.s3, 'load');
  if (stored !== uploads) throw new Error(`${stored} thumbnails in the store, not ${uploads}`);
  say(`the first thumbnail from zero: ${coldSamples} copies of the Function at zero, one by one`);
  const coldByOrder = await firstFromZero(local, files[0]!);
  const cold = [...coldByOrder].sort((a, b) => a - b);
  say(
    `the same work without Eddy: a plain Node script, the ${uploads} photos from the same store, ${replicas} at a time`,
  );
  const plain = await script(local, 'load', uploads, replicas);
  const scripted = await countThumbnails(local.s3, 'script/load');
  local.s3.destroy();
  if (scripted !== uploads)
    throw new Error(`the script wrote ${scripted} thumbnails, not ${uploads}`);
  await stopStack();
  const stackRate = uploads / loaded.seconds;

  say(`sharp loop: ${uploads} images, one at a time`);
  await sharpLoop(files, distinctImages, 1); // warm-up
  const sharpOne = await sharpLoop(files, uploads, 1);
  say(`sharp loop: ${uploads} images, ${replicas} at a time`);
  const sharpPar = await sharpLoop(files, uploads, replicas);

  const magick = await findMagick();
  let magickOne: number | undefined;
  let magickPar: number | undefined;
  if (magick.ok) {
    say(`ImageMagick convert -thumbnail 200x: ${magickImages} images, one at a time`);
    magickOne = await magickLoop(paths, magickImages, 1);
    say(`ImageMagick convert -thumbnail 200x: ${magickImages} images, ${replicas} at a time`);
    magickPar = await magickLoop(paths, magickImages, replicas);
  } else {
    say(`ImageMagick skipped: no ImageMagick convert on PATH (${magick.why})`);
  }

  const ratio = stackRate / plain.rate;
  const coldInit = local.coldReports.map((c) => c.initMs).sort((a, b) => a - b);
  const coldDuration = local.coldReports.map((c) => c.durationMs).sort((a, b) => a - b);
  // Paired by order: the copies are started one after the other.
  const coldRest = coldByOrder
    .map(
      (total, i) =>
        total - (local.coldReports[i]?.initMs ?? NaN) - (local.coldReports[i]?.durationMs ?? NaN),
    )
    .sort((a, b) => a - b);
  results.push(
    `${uploads} uploads of ${width}x${height} JPEGs (${mb.toFixed(1)} MB each on average), thumbnails 200 wide:`,
    `  local stack (S3 store ${storeKind}, ${replicas} replica${replicas === 1 ? '' : 's'} x concurrency 1, ${uploadConcurrency} uploads in flight): ${rate(stackRate)}`,
    `    upload-to-thumbnail under that load: p50 ${ms(quantile(loaded.latencies, 0.5))}, p99 ${ms(quantile(loaded.latencies, 0.99))}`,
    `    upload-to-thumbnail one at a time (${idleUploads}): p50 ${ms(quantile(idle.latencies, 0.5))}, p99 ${ms(quantile(idle.latencies, 0.99))}`,
    `    handler Duration (REPORT lines, S3 read and write included): p50 ${ms(quantile(handlerMs, 0.5))}, p99 ${ms(quantile(handlerMs, 0.99))}`,
    `    invocations running on average (sum of handler Durations / wall time): ${(handlerMs.reduce((a, b) => a + b, 0) / 1000 / loaded.seconds).toFixed(2)} of ${replicas} replica${replicas === 1 ? '' : 's'}`,
    cpuBefore && cpuAfter
      ? cpuLine(cpuBefore, cpuAfter, uploads)
      : '    CPU per image: not measured (no /proc)',
    `    the first thumbnail from zero (upload to thumbnail written, ${coldSamples} Functions at zero): p50 ${ms(quantile(cold, 0.5))} (${cold.map((c) => c.toFixed(0)).join(', ')} ms)`,
    `      of which the runtime's Init Duration (importing the handler: sharp, the AWS SDK) p50 ${ms(quantile(coldInit, 0.5))}, the handler's Duration p50 ${ms(quantile(coldDuration, 0.5))}; the rest (the store's notification, activation, the process's start) p50 ${ms(quantile(coldRest, 0.5))}`,
    `  plain Node script without Eddy (the same photos from the same store, sharp, written back; ${replicas} at a time): ${rate(plain.rate)}; CPU per image ${ms(plain.cpu)} in its process`,
    `  for context: sharp alone on photos in memory: ${rate(sharpOne.rate)} one at a time, ${rate(sharpPar.rate)} ${replicas} at a time; CPU per image ${ms(sharpPar.cpu)}`,
    magickOne !== undefined && magickPar !== undefined
      ? `  for context: ImageMagick convert -thumbnail 200x (${magickImages} images): ${rate(magickOne)} one at a time, ${rate(magickPar)} ${replicas} at a time`
      : `  ImageMagick: skipped (${magick.ok ? '' : magick.why})`,
    `stack / script: ${(ratio * 100).toFixed(1)}% (target at least ${targetRatio * 100}%: ${ratio >= targetRatio ? 'met' : 'missed'})`,
    magickPar !== undefined
      ? `for context: stack vs ImageMagick at ${replicas} at a time: ${(stackRate / magickPar).toFixed(1)}x`
      : 'stack vs ImageMagick: not measured',
  );
} catch (err) {
  failed = true;
  results.push(`failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
} finally {
  await cleanup();
}
console.log(`\nbench:thumbnail on ${machine()}`);
for (const line of results) console.log(line);
process.exit(failed ? 1 : 0);
