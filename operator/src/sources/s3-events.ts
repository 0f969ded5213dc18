/**
 * S3 event records: what MinIO or AWS post, normalised to AWS's shape, matched against triggers,
 * and turned into CloudEvents per the CloudEvents AWS S3 adapter. Pure.
 *
 * MinIO differs from AWS in three ways, all normalised here: its body also carries `EventName`
 * and `Key`; its eventName has an `s3:` prefix (`s3:ObjectCreated:Put`); and its object keys are
 * query-escaped (`/` becomes `%2F`), where AWS form-encodes them but keeps `/`.
 */
import { createHash } from 'node:crypto';
import type { S3Trigger } from '../api/types.js';
import { s3TypePrefix } from '../../../runtime/src/contract/index.js';
import type { DeliveryEvent } from '../gateway/delivery.js';

/** An S3 event record in AWS's shape (the fields Eddy reads; the rest travels along). */
export interface S3Record {
  eventVersion: string;
  eventSource: string;
  awsRegion: string;
  eventTime: string;
  /** Without the `s3:` prefix: `ObjectCreated:Put`. */
  eventName: string;
  s3: {
    s3SchemaVersion?: string;
    configurationId?: string;
    bucket: { name: string; arn?: string; [k: string]: unknown };
    /** `key` is form-encoded as AWS sends it: decode with {@link decodeS3Key}. */
    object: { key: string; size?: number; eTag?: string; sequencer?: string; [k: string]: unknown };
    [k: string]: unknown;
  };
  responseElements?: Record<string, string>;
  [k: string]: unknown;
}

/** A body that cannot be taken: the message says what is wrong. */
export class InvalidS3Body extends Error {}

/** The key as stored: `a+b%2Fc.jpg` becomes `a b/c.jpg`. */
export function decodeS3Key(key: string): string {
  try {
    return decodeURIComponent(key.replace(/\+/g, ' '));
  } catch {
    throw new InvalidS3Body(`object key ${JSON.stringify(key)} is not URL-encoded correctly`);
  }
}

/** The key as AWS puts it in an event: form-encoded, `/` kept. */
export function encodeS3Key(key: string): string {
  return encodeURIComponent(key).replace(/%20/g, '+').replace(/%2F/gi, '/');
}

/**
 * The records of a notification body (MinIO's `{EventName, Key, Records}` or AWS's `{Records}`),
 * in AWS's shape. An S3 test event (`{Event: "s3:TestEvent"}`) has none. Throws InvalidS3Body,
 * before anything is delivered, when any record is malformed.
 */
export function parseNotification(body: unknown, defaultRegion: string): S3Record[] {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new InvalidS3Body(
      'the body must be a JSON object with Records (an S3 event notification)',
    );
  }
  const b = body as { Records?: unknown; Event?: unknown };
  if (b.Records === undefined && b.Event === 's3:TestEvent') return [];
  if (!Array.isArray(b.Records)) {
    throw new InvalidS3Body('the body has no Records array: post S3 event notifications here');
  }
  return b.Records.map((r, i) => normaliseRecord(r, i, defaultRegion));
}

function normaliseRecord(raw: unknown, i: number, defaultRegion: string): S3Record {
  const where = `Records[${i}]`;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new InvalidS3Body(`${where} is not an object`);
  }
  const r = raw as Partial<S3Record>;
  if (typeof r.eventName !== 'string' || r.eventName === '') {
    throw new InvalidS3Body(`${where}.eventName is missing`);
  }
  const s3 = r.s3;
  if (!s3 || typeof s3 !== 'object') throw new InvalidS3Body(`${where}.s3 is missing`);
  if (typeof s3.bucket?.name !== 'string' || s3.bucket.name === '') {
    throw new InvalidS3Body(`${where}.s3.bucket.name is missing`);
  }
  if (typeof s3.object?.key !== 'string' || s3.object.key === '') {
    throw new InvalidS3Body(`${where}.s3.object.key is missing`);
  }
  const key = decodeS3Key(s3.object.key);
  const eventSource = r.eventSource === 'minio:s3' || !r.eventSource ? 'aws:s3' : r.eventSource;
  return {
    ...r,
    eventVersion: r.eventVersion ?? '2.1',
    eventSource,
    awsRegion: r.awsRegion || defaultRegion,
    eventTime: typeof r.eventTime === 'string' ? r.eventTime : new Date().toISOString(),
    eventName: r.eventName.replace(/^s3:/, ''),
    s3: {
      ...s3,
      object: { ...s3.object, key: encodeS3Key(key) },
    },
  };
}

/**
 * MinIO's event types that its `s3:ObjectCreated:*` and `s3:ObjectRemoved:*` cover and AWS's do
 * not: tagging (AWS's `s3:ObjectTagging:*`), retention and legal hold (no event on AWS), and the
 * delete of a key that was not there. A trigger gets them only by naming them.
 */
const notUnderWildcard = new Set([
  'ObjectCreated:PutTagging',
  'ObjectCreated:DeleteTagging',
  'ObjectCreated:PutRetention',
  'ObjectCreated:PutLegalHold',
  'ObjectRemoved:NoOP',
]);

/**
 * Whether `eventName` (`ObjectCreated:Put`) is one of a trigger's `events` (`s3:ObjectCreated:*`),
 * the wildcards covering what they cover on AWS: a function that tags the photo it was called
 * for is not called again.
 */
export function eventMatches(patterns: readonly string[], eventName: string): boolean {
  const name = `s3:${eventName}`;
  return patterns.some((p) =>
    p.endsWith(':*')
      ? name.startsWith(p.slice(0, -1)) && !notUnderWildcard.has(eventName)
      : p === name,
  );
}

export const defaultS3Events = ['s3:ObjectCreated:*'];

/** Whether the record is for this trigger: bucket, event type, key prefix and suffix. */
export function recordMatches(t: S3Trigger, r: S3Record): boolean {
  if (r.s3.bucket.name !== t.bucket) return false;
  if (!eventMatches(t.events ?? defaultS3Events, r.eventName)) return false;
  const key = decodeS3Key(r.s3.object.key);
  return key.startsWith(t.filter?.prefix ?? '') && key.endsWith(t.filter?.suffix ?? '');
}

/**
 * The CloudEvent (binary mode) for one record, per the CloudEvents AWS S3 adapter:
 * type `com.amazonaws.s3.<eventName>`, source `<eventSource>.<region>.<bucket>`, subject
 * `s3.object.key`, time the eventTime, data the record. The id is stable for the same record and
 * trigger, so a redelivered notification keeps its id (and overwrites its own dead letter).
 */
export function s3CloudEvent(r: S3Record, trigger: string): DeliveryEvent {
  const body = Buffer.from(JSON.stringify(r));
  // Unique per record and trigger (one DeleteObjects request makes many records with the same
  // request ids), and the same each time the store posts that record again.
  const id = createHash('sha256')
    .update(
      JSON.stringify([
        trigger,
        r.responseElements?.['x-amz-request-id'] ?? '',
        r.responseElements?.['x-amz-id-2'] ?? '',
        r.s3.bucket.name,
        r.s3.object.key,
        r.eventName,
        r.eventTime,
        r.s3.object.sequencer ?? r.s3.object.eTag ?? '',
      ]),
    )
    .digest('hex')
    .slice(0, 32);
  const type = `${s3TypePrefix}${r.eventName}`;
  const source = `${r.eventSource}.${r.awsRegion}.${r.s3.bucket.name}`;
  return {
    id,
    type,
    source,
    time: r.eventTime,
    body,
    trigger,
    headers: {
      'content-type': 'application/json',
      'ce-specversion': '1.0',
      'ce-id': id,
      'ce-type': type,
      'ce-source': source,
      // The key as the record has it (form-encoded): printable ASCII, as a header must be.
      'ce-subject': r.s3.object.key,
      'ce-time': r.eventTime,
    },
  };
}
