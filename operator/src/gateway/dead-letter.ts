/**
 * Sends a failed event to its Function's `spec.deadLetter`:
 * - `url`: a structured-mode CloudEvent of type `dev.eddy.dead-letter`, POSTed;
 * - `s3`: the same document as a JSON object in the bucket.
 * Both carry the original event, the last error and the attempt count. The names are
 * deterministic (CloudEvent id `<event id>-dlq`, object key from the event's id and time), so a
 * dead letter sent twice, as at-least-once delivery allows, can be deduplicated or overwrites
 * itself.
 */
import { PutObjectCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { eventTypes } from '../../../runtime/src/contract/index.js';
import type { Connection, EddyFunction } from '../api/types.js';
import { describeError } from '../errors.js';
import type { SecretReader } from '../functions.js';
import type {
  AttemptError,
  DeadLetterCondition,
  DeadLetterRecord,
  DeadLetterSender,
  DeliveryEvent,
} from './delivery.js';

/**
 * The original event as a CloudEvent in JSON format: its attributes (extensions included), and
 * `data` when the body is JSON or `data_base64` when it is not (CloudEvents' own convention).
 */
export interface OriginalEvent {
  specversion: string;
  id: string;
  type: string;
  source: string;
  time: string;
  datacontenttype?: string;
  data?: unknown;
  data_base64?: string;
  [attribute: string]: unknown;
}

/** The dead letter's content: the CloudEvent's `data`, and the S3 object. */
export interface DeadLetterDocument {
  originalEvent: OriginalEvent;
  error: AttemptError;
  attempts: number;
  condition: DeadLetterCondition;
  firstAttemptAt: string;
  lastAttemptAt: string;
  function: { namespace: string; name: string };
  trigger?: string;
}

export interface DeadLetterSenderDeps {
  /** Reads the Secret an S3 dead letter's connection names. */
  secrets: SecretReader;
  fetch?: typeof fetch;
  /** Makes the S3 client for a connection; tests may wrap it. */
  s3ClientFor?: (config: S3ClientConfig) => S3Client;
  now?: () => number;
  /** How long one send may take. Default 10 s. */
  timeoutMs?: number;
}

const attributesFromRecord = new Set(['specversion', 'id', 'type', 'source', 'time']);

function decodeHeader(value: string): string {
  // Binary-mode CloudEvent headers are percent-encoded where they are not printable ASCII.
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

function isJsonType(contentType: string | undefined): boolean {
  return contentType === undefined || /^application\/([\w.-]+\+)?json\b/i.test(contentType);
}

/** The event as received, rebuilt as a JSON-format CloudEvent. */
export function originalEvent(e: DeliveryEvent): OriginalEvent {
  const out: OriginalEvent = {
    specversion: '1.0',
    id: e.id,
    type: e.type,
    source: e.source,
    time: e.time,
  };
  let contentType: string | undefined;
  for (const [rawName, value] of Object.entries(e.headers)) {
    const name = rawName.toLowerCase();
    if (name === 'content-type') contentType = value;
    else if (name.startsWith('ce-') && !attributesFromRecord.has(name.slice(3))) {
      out[name.slice(3)] = decodeHeader(value);
    }
  }
  if (contentType) out.datacontenttype = contentType;
  if (e.body.length === 0) return out;
  if (isJsonType(contentType)) {
    try {
      out.data = JSON.parse(e.body.toString('utf8')) as unknown;
      return out;
    } catch {
      // not JSON after all: keep the bytes
    }
  }
  out.data_base64 = e.body.toString('base64');
  return out;
}

/** What a dead letter says about a failed event (pure). */
export function deadLetterDocument(fn: EddyFunction, r: DeadLetterRecord): DeadLetterDocument {
  return {
    originalEvent: originalEvent(r.event),
    error: { errorType: r.error.errorType, errorMessage: r.error.errorMessage },
    attempts: r.attempts,
    condition: r.condition,
    firstAttemptAt: r.firstAttemptAt,
    lastAttemptAt: r.lastAttemptAt,
    function: { namespace: fn.metadata.namespace, name: fn.metadata.name },
    ...(r.event.trigger ? { trigger: r.event.trigger } : {}),
  };
}

/** A `dev.eddy.dead-letter` CloudEvent in JSON format. */
export interface DeadLetterCloudEvent {
  specversion: '1.0';
  id: string;
  type: typeof eventTypes.deadLetter;
  source: string;
  /** The original event's id. */
  subject: string;
  time: string;
  datacontenttype: 'application/json';
  data: DeadLetterDocument;
}

/**
 * The structured-mode CloudEvent POSTed to a `url` dead letter. Its id is `<event id>-dlq`,
 * unique within its source (the Function) and the same on every resend.
 */
export function deadLetterCloudEvent(
  fn: EddyFunction,
  r: DeadLetterRecord,
  now: Date,
): DeadLetterCloudEvent {
  return {
    specversion: '1.0',
    id: `${r.event.id}-dlq`,
    type: eventTypes.deadLetter,
    source: `/eddy/functions/${fn.metadata.namespace}/${fn.metadata.name}`,
    subject: r.event.id,
    time: now.toISOString(),
    datacontenttype: 'application/json',
    data: deadLetterDocument(fn, r),
  };
}

/**
 * `<prefix><namespace>/<name>/<yyyy>/<mm>/<dd>/<event id>.json`, dated (UTC) by the event's time
 * (by `now` if that does not parse). The prefix is used as given, as S3 prefixes are: end it
 * with `/` for a folder. The Function's name keeps apart the dead letters of two Functions that
 * share a bucket and got the same event.
 */
export function deadLetterKey(fn: EddyFunction, r: DeadLetterRecord, now: Date): string {
  const t = Date.parse(r.event.time);
  const at = Number.isNaN(t) ? now : new Date(t);
  const day = [
    String(at.getUTCFullYear()),
    String(at.getUTCMonth() + 1).padStart(2, '0'),
    String(at.getUTCDate()).padStart(2, '0'),
  ].join('/');
  const prefix = fn.spec.deadLetter?.s3?.prefix ?? '';
  return `${prefix}${fn.metadata.namespace}/${fn.metadata.name}/${day}/${encodeURIComponent(r.event.id)}.json`;
}

/** A URL fit for a log line: no user info, no query (either may hold a token). */
function printable(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return url;
  }
}

function networkCause(err: unknown): string {
  // fetch says only "fetch failed"; the reason (ECONNREFUSED, ENOTFOUND, ...) is its cause.
  const cause = err instanceof Error ? err.cause : undefined;
  return describeError(cause ?? err);
}

function timedOut(err: unknown): boolean {
  return err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError');
}

/** Why an S3 PutObject failed and what to do about it. */
function s3Problem(err: unknown, where: string, fn: EddyFunction, secretName: string): string {
  const name = err instanceof Error ? err.name : '';
  const ns = fn.metadata.namespace;
  const message = describeError(err);
  switch (name) {
    case 'NoSuchBucket':
      return `${where}: the bucket does not exist (${message}): create it, or set spec.deadLetter.s3.bucket to one that exists`;
    case 'AccessDenied':
    case 'InvalidAccessKeyId':
    case 'SignatureDoesNotMatch':
    case 'InvalidToken':
    case 'ExpiredToken':
      return `${where}: refused (${name}: ${message}): check the access key pair in Secret ${ns}/${secretName} and that it may write to the bucket`;
    default:
      return `${where} failed (${name || 'Error'}: ${message}): check spec.deadLetter.s3.connection (endpoint, region) and that the store is up`;
  }
}

/** A DeadLetterSender for `url` and `s3` destinations; `close` releases its cached S3 clients. */
export function createDeadLetterSender(
  deps: DeadLetterSenderDeps,
): DeadLetterSender & { close(): void } {
  const doFetch = deps.fetch ?? fetch;
  const makeClient = deps.s3ClientFor ?? ((config: S3ClientConfig) => new S3Client(config));
  const now = deps.now ?? Date.now;
  const timeoutMs = deps.timeoutMs ?? 10_000;
  // One client per (namespace, connection), remade when the Secret's keys change.
  const clients = new Map<string, { credentials: string; client: S3Client }>();

  const sendSignal = (signal: AbortSignal | undefined) =>
    signal
      ? AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)])
      : AbortSignal.timeout(timeoutMs);

  async function toUrl(url: string, fn: EddyFunction, r: DeadLetterRecord, signal?: AbortSignal) {
    const target = printable(url);
    const body = JSON.stringify(deadLetterCloudEvent(fn, r, new Date(now())));
    let res: Response;
    try {
      res = await doFetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/cloudevents+json' },
        body,
        // A redirected POST may turn into a GET that "succeeds" without the event: a 3xx fails.
        redirect: 'manual',
        signal: sendSignal(signal),
      });
    } catch (err) {
      if (signal?.aborted) throw new Error(`dead letter ${target}: stopped by shutdown`);
      if (timedOut(err)) {
        throw new Error(`dead letter ${target}: no answer within ${timeoutMs / 1000} s`);
      }
      throw new Error(`dead letter ${target} unreachable: ${networkCause(err)}`);
    }
    const text = await res.text().catch(() => '');
    if (res.status < 200 || res.status > 299) {
      const said = text.trim().slice(0, 200);
      throw new Error(
        `dead letter ${target} answered HTTP ${res.status}${said ? `: ${said}` : ''}: it must accept a POSTed CloudEvent with a 2xx`,
      );
    }
  }

  async function clientFor(fn: EddyFunction, conn: Connection, where: string): Promise<S3Client> {
    const ns = fn.metadata.namespace;
    const ref = conn.secretRef;
    if (!ref) {
      // The operator's own identity must never write where a Function's author points it.
      throw new Error(
        `${where}: spec.deadLetter.s3.connection.secretRef is missing: name a Secret in namespace ${ns} holding accessKeyId and secretAccessKey`,
      );
    }
    let data: Record<string, string>;
    try {
      data = await deps.secrets(ns, ref.name);
    } catch (err) {
      throw new Error(`${where}: ${describeError(err)}`);
    }
    const idKey = ref.accessKeyIdKey ?? 'accessKeyId';
    const secretKey = ref.secretAccessKeyKey ?? 'secretAccessKey';
    for (const key of [idKey, secretKey]) {
      if (!data[key]) {
        throw new Error(
          `${where}: Secret ${ns}/${ref.name} has no key "${key}": add it, or name the right key in spec.deadLetter.s3.connection.secretRef`,
        );
      }
    }
    const credentials = { accessKeyId: data[idKey]!, secretAccessKey: data[secretKey]! };
    const cacheKey = JSON.stringify([ns, conn.endpoint, conn.region, conn.forcePathStyle, ref]);
    const fingerprint = JSON.stringify(credentials);
    const cached = clients.get(cacheKey);
    if (cached?.credentials === fingerprint) return cached.client;
    cached?.client.destroy();
    const client = makeClient({
      ...(conn.endpoint ? { endpoint: conn.endpoint } : {}),
      region: conn.region ?? 'us-east-1',
      forcePathStyle: conn.forcePathStyle ?? true,
      credentials,
    });
    clients.set(cacheKey, { credentials: fingerprint, client });
    return client;
  }

  async function toS3(fn: EddyFunction, r: DeadLetterRecord, signal?: AbortSignal) {
    const target = fn.spec.deadLetter!.s3!;
    const key = deadLetterKey(fn, r, new Date(now()));
    const where = `dead letter s3://${target.bucket}/${key}`;
    const client = await clientFor(fn, target.connection, where);
    try {
      await client.send(
        new PutObjectCommand({
          Bucket: target.bucket,
          Key: key,
          Body: JSON.stringify(deadLetterDocument(fn, r)),
          ContentType: 'application/json',
        }),
        { abortSignal: sendSignal(signal) },
      );
    } catch (err) {
      if (signal?.aborted) throw new Error(`${where}: stopped by shutdown`);
      if (timedOut(err)) throw new Error(`${where}: no answer within ${timeoutMs / 1000} s`);
      throw new Error(s3Problem(err, where, fn, target.connection.secretRef!.name));
    }
  }

  return {
    async send(fn, record, signal) {
      const dl = fn.spec.deadLetter;
      if (dl?.url) return toUrl(dl.url, fn, record, signal);
      if (dl?.s3) return toS3(fn, record, signal);
      throw new Error(
        `Function ${fn.metadata.namespace}/${fn.metadata.name} has no spec.deadLetter`,
      );
    },
    close() {
      for (const { client } of clients.values()) client.destroy();
      clients.clear();
    },
  };
}
