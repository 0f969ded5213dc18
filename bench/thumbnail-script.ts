/**
 * The thumbnail story's work without Eddy, as a user would script it: read each photo from the
 * store, make its thumbnail with sharp as examples/thumbnail's handler does (200 wide, never
 * enlarged, same format, EXIF rotation) and write it back, `parallel` photos at a time, in one
 * plain Node process. The same S3 client settings as the handler (checksums only where the API
 * requires them). bench:thumbnail runs it against its own stack's store, in the same run:
 *
 *   node --import tsx bench/thumbnail-script.ts <endpoint> <bucket> <prefix> <count> <parallel> <dest bucket> <dest prefix>
 *
 * The source keys are `<prefix>/0000.jpg` onwards. After a warm-up of `parallel` photos (the S3
 * client's connections, sharp loaded), prints one JSON line: `{"seconds": ..., "cpuMs": ...}`
 * for the `count` photos.
 */
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const [endpoint, bucket, prefix, countArg, parallelArg, destBucket, destPrefix] =
  process.argv.slice(2);
const count = Number(countArg);
const parallel = Number(parallelArg);
if (
  !endpoint ||
  !bucket ||
  !prefix ||
  !destBucket ||
  !destPrefix ||
  !(count > 0) ||
  !(parallel > 0)
) {
  throw new Error(
    'usage: thumbnail-script.ts <endpoint> <bucket> <prefix> <count> <parallel> <dest bucket> <dest prefix>',
  );
}

const contentTypes: Record<string, string> = {
  jpeg: 'image/jpeg',
  png: 'image/png',
  webp: 'image/webp',
};

const s3 = new S3Client({
  endpoint,
  region: 'us-east-1',
  forcePathStyle: true,
  credentials: {
    accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? 'eddy',
    secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? 'eddysecret',
  },
  requestChecksumCalculation: 'WHEN_REQUIRED',
  responseChecksumValidation: 'WHEN_REQUIRED',
});

async function thumbnail(i: number): Promise<void> {
  const key = `${prefix}/${String(i).padStart(4, '0')}.jpg`;
  const object = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const bytes = await object.Body!.transformToByteArray();
  const { format } = await sharp(bytes).metadata();
  if (!format || !(format in contentTypes)) throw new Error(`${bucket}/${key}: not an image`);
  const output = await sharp(bytes)
    .rotate()
    .resize({ width: 200, withoutEnlargement: true })
    .toFormat(format)
    .toBuffer();
  await s3.send(
    new PutObjectCommand({
      Bucket: destBucket,
      Key: `${destPrefix}/${key}`,
      Body: output,
      ContentType: contentTypes[format],
    }),
  );
}

/** `task(i)` for i in [from, from + n), at most `parallel` at a time. */
async function pool(from: number, n: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = from;
  await Promise.all(
    Array.from({ length: Math.min(parallel, n) }, async () => {
      while (next < from + n) await task(next++);
    }),
  );
}

await pool(0, Math.min(parallel, count), thumbnail);
const cpu = process.cpuUsage();
const started = performance.now();
await pool(0, count, thumbnail);
const seconds = (performance.now() - started) / 1000;
const used = process.cpuUsage(cpu);
s3.destroy();
console.log(JSON.stringify({ seconds, cpuMs: (used.user + used.system) / 1000 }));
