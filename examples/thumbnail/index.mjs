// Thumbnails for uploads: for each S3 record, read the object, shrink it to THUMBNAIL_WIDTH
// (200 by default; aspect kept, never enlarged) and write it under the same key to
// `<bucket>-thumbnails`, or to DEST_BUCKET when set. JPEG, PNG and WebP keep their format.
// What is not one of those is skipped with a log line; an image that cannot be decoded is an
// error, so the Function's retries and dead letter apply.
//
// Environment:
//   THUMBNAIL_WIDTH   width in pixels (default 200)
//   DEST_BUCKET       where thumbnails go (default: the source bucket's name + "-thumbnails");
//                     never the bucket that triggered the invocation
//   S3_ENDPOINT       an S3-compatible endpoint such as http://127.0.0.1:9000 (path-style
//                     addressing is used then); unset means AWS S3
//   AWS_REGION        the region (default us-east-1)
//   AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or anything else the AWS SDK's default
//                     credential chain reads
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import sharp from 'sharp';

/** The formats made into thumbnails, and the content type each is written with. */
const contentTypes = { jpeg: 'image/jpeg', png: 'image/png', webp: 'image/webp' };

/** A configuration the function cannot work with. */
export class ConfigurationError extends Error {
  name = 'ConfigurationError';
}

/** An object that says it is a JPEG, PNG or WebP image but cannot be decoded as one. */
export class ImageError extends Error {
  name = 'ImageError';
}

/** An S3 event's key as the object's real key: `+` is a space, the rest is URI-encoded. */
export function decodeKey(key) {
  return decodeURIComponent(key.replace(/\+/g, ' '));
}

/** The format the first bytes announce, among those this function handles. */
function announcedFormat(bytes) {
  const starts = (...values) => values.every((v, i) => bytes[i] === v);
  if (starts(0xff, 0xd8, 0xff)) return 'jpeg';
  if (starts(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return 'png';
  const ascii = (from, to) => Buffer.from(bytes.subarray(from, to)).toString('latin1');
  if (ascii(0, 4) === 'RIFF' && ascii(8, 12) === 'WEBP') return 'webp';
  return undefined;
}

function thumbnailWidth(env) {
  const raw = env.THUMBNAIL_WIDTH;
  if (raw === undefined || raw === '') return 200;
  const width = Number(raw);
  if (!Number.isInteger(width) || width < 1 || width > 10_000) {
    throw new ConfigurationError(
      `THUMBNAIL_WIDTH is ${JSON.stringify(raw)}: use a whole number of pixels from 1 to 10000`,
    );
  }
  return width;
}

function destinationOf(bucket, env) {
  const dest = env.DEST_BUCKET || `${bucket}-thumbnails`;
  if (dest === bucket) {
    throw new ConfigurationError(
      `refusing to write thumbnails into ${bucket}, the bucket whose uploads invoke this function: every thumbnail would invoke it again; set DEST_BUCKET to another bucket or leave it unset for ${bucket}-thumbnails`,
    );
  }
  return dest;
}

let client;

/** One client per process, reused by every invocation. */
function s3() {
  const endpoint = process.env.S3_ENDPOINT;
  client ??= new S3Client({
    region: process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || 'us-east-1',
    ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
    // By default the SDK checks a CRC32 over every object it reads when the store has one (MinIO
    // keeps the uploader's) and adds one to every object it writes: about 3 ms of CPU for a
    // 3 MB photo here, a tenth of the resize. Checksums only where the API requires them; TCP
    // and the store's own checks still guard the transfer, and a thumbnail can be made again.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  return client;
}

/** Makes the thumbnail of one record's object; returns what was written or why it was skipped. */
async function thumbnail(record, width) {
  const bucket = record.s3.bucket.name;
  const key = decodeKey(record.s3.object.key);
  const where = `${bucket}/${key}`;
  if (!String(record.eventName).startsWith('ObjectCreated')) {
    return { skipped: { bucket, key, reason: `event ${record.eventName} is not an upload` } };
  }
  const dest = destinationOf(bucket, process.env);

  const object = await s3().send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  const bytes = await object.Body.transformToByteArray();

  const announced = announcedFormat(bytes);
  let format;
  try {
    ({ format } = await sharp(bytes).metadata());
  } catch (err) {
    if (announced) {
      throw new ImageError(
        `${where} starts as a ${announced} image but cannot be read: ${err.message}`,
        {
          cause: err,
        },
      );
    }
    return { skipped: { bucket, key, reason: 'not an image' } };
  }
  if (!Object.hasOwn(contentTypes, format)) {
    return { skipped: { bucket, key, reason: `${format} is not one of jpeg, png, webp` } };
  }

  let output;
  try {
    // The width goes to resize, so libvips can shrink JPEG and WebP while decoding them rather
    // than decode every pixel first. rotate() applies the EXIF orientation, which the
    // thumbnail (written without metadata) could not otherwise keep.
    output = await sharp(bytes)
      .rotate()
      .resize({ width, withoutEnlargement: true })
      .toFormat(format)
      .toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw new ImageError(`${where} is a ${format} image that cannot be decoded: ${err.message}`, {
      cause: err,
    });
  }

  await s3().send(
    new PutObjectCommand({
      Bucket: dest,
      Key: key,
      Body: output.data,
      ContentType: contentTypes[format],
    }),
  );
  const { width: w, height: h, size } = output.info;
  return { written: { bucket: dest, key, format, width: w, height: h, bytes: size, from: where } };
}

export const handler = async (event) => {
  const width = thumbnailWidth(process.env);
  const written = [];
  const skipped = [];
  for (const record of event?.Records ?? []) {
    const result = await thumbnail(record, width);
    if (result.written) {
      const t = result.written;
      console.log(`thumbnail ${t.from} -> ${t.bucket}/${t.key} ${t.width}x${t.height} ${t.format}`);
      written.push(t);
    } else {
      const s = result.skipped;
      console.log(`skipped ${s.bucket}/${s.key}: ${s.reason}`);
      skipped.push(s);
    }
  }
  return { written, skipped };
};
