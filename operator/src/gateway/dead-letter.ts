/**
 * Sends a failed event to its Function's `spec.deadLetter`:
 * - `url`: a structured-mode CloudEvent of type `dev.eddy.dead-letter`, POSTed;
 * - `s3`: the same document as a JSON object in the bucket.
 * Both carry the original event, the last error and the attempt count. Their names (CloudEvent
 * id, object key) hold the event's id and a suffix drawn once per accepted event: an event's id
 * may be a caller's choice (x-eddy-request-id), and must not let one caller overwrite, or have
 * deduplicated away, another event's dead letter. A dead letter sent twice for one event, as
 * at-least-once delivery allows, keeps its name and overwrites itself.
 */
import { randomBytes } from 'node:crypto';
import {
  lookup as dnsLookup,
  type LookupAddress,
  type LookupAllOptions,
  type LookupOneOptions,
} from 'node:dns';
import { lookup } from 'node:dns/promises';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { BlockList, isIP, isIPv4, type LookupFunction } from 'node:net';
import { PutObjectCommand, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { NodeHttpHandler } from '@smithy/node-http-handler';
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
  /** Which addresses a `url` dead letter may reach (the local stack allows loopback). */
  urls?: DeadLetterUrlOptions;
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

const names = new WeakMap<DeliveryEvent, string>();

/** 16 hex digits, drawn once per accepted event: see {@link deadLetterName}. */
export function acceptanceSuffix(): string {
  return randomBytes(8).toString('hex');
}

/**
 * What a dead letter of this accepted event is named by: `<event id>.<16 hex digits>`, the
 * digits drawn when the event was accepted (`acceptedAs`) or else the first time it is
 * dead-lettered, and kept for its resends.
 */
export function deadLetterName(event: DeliveryEvent): string {
  if (event.acceptedAs) return `${event.id}.${event.acceptedAs}`;
  let name = names.get(event);
  if (!name) names.set(event, (name = `${event.id}.${acceptanceSuffix()}`));
  return name;
}

/**
 * The structured-mode CloudEvent POSTed to a `url` dead letter. Its id is `<name>-dlq`
 * ({@link deadLetterName}), unique within its source (the Function) and the same on every
 * resend; its subject is the original event's id.
 */
export function deadLetterCloudEvent(
  fn: EddyFunction,
  r: DeadLetterRecord,
  now: Date,
  name = deadLetterName(r.event),
): DeadLetterCloudEvent {
  return {
    specversion: '1.0',
    id: `${name}-dlq`,
    type: eventTypes.deadLetter,
    source: `/eddy/functions/${fn.metadata.namespace}/${fn.metadata.name}`,
    subject: r.event.id,
    time: now.toISOString(),
    datacontenttype: 'application/json',
    data: deadLetterDocument(fn, r),
  };
}

/**
 * `<prefix><namespace>/<function>/<yyyy>/<mm>/<dd>/<name>.json` ({@link deadLetterName}: the
 * event's id and a suffix of its own), dated (UTC) by the event's time (by `now` if that does not
 * parse). The prefix is used as given, as S3 prefixes are: end it with `/` for a folder. The
 * Function's name keeps apart the dead letters of two Functions that share a bucket.
 */
export function deadLetterKey(
  fn: EddyFunction,
  r: DeadLetterRecord,
  now: Date,
  name = deadLetterName(r.event),
): string {
  const t = Date.parse(r.event.time);
  const at = Number.isNaN(t) ? now : new Date(t);
  const day = [
    String(at.getUTCFullYear()),
    String(at.getUTCMonth() + 1).padStart(2, '0'),
    String(at.getUTCDate()).padStart(2, '0'),
  ].join('/');
  const prefix = fn.spec.deadLetter?.s3?.prefix ?? '';
  return `${prefix}${fn.metadata.namespace}/${fn.metadata.name}/${day}/${encodeURIComponent(name)}.json`;
}

export interface DeadLetterUrlOptions {
  /**
   * Loopback addresses (127.0.0.0/8, ::1) may be reached: only the local stack sets it, where
   * the sinks run beside the gateway. Never in a cluster, where loopback is the gateway itself.
   */
  allowLoopback?: boolean;
  /** The API server's Service address. Default: KUBERNETES_SERVICE_HOST. */
  apiServerHost?: string;
  /** Resolves a host name to its addresses; default the system resolver. Tests replace it. */
  lookup?: (host: string) => Promise<Array<{ address: string; family: number }>>;
}

/** A `deadLetter.url` that must not be followed; the message says why and what to do. */
export class RefusedUrl extends Error {
  override name = 'RefusedUrl';
}

/** Where a dead letter goes: the URL, and the one address it was checked for and is sent to. */
export interface PinnedUrl {
  url: URL;
  address: string;
  family: 4 | 6;
}

const never = new BlockList();
for (const [net, prefix] of [
  ['169.254.0.0', 16],
  ['0.0.0.0', 8],
] as const) {
  never.addSubnet(net, prefix, 'ipv4');
}
for (const [net, prefix] of [
  ['fe80::', 10],
  ['fd00:ec2::', 64],
  ['::', 128],
] as const) {
  never.addSubnet(net, prefix, 'ipv6');
}
const loopback = new BlockList();
loopback.addSubnet('127.0.0.0', 8, 'ipv4');
loopback.addAddress('::1', 'ipv6');

/** How long a host name may take to resolve. */
const lookupTimeoutMs = 5_000;

/** The API server's names inside a cluster: `kubernetes`, `kubernetes.default[.svc[.<domain>]]`. */
const apiServerName = /^kubernetes(\.default(\.svc(\..*)?)?)?\.?$/i;

/** Why an address may not be reached, or undefined when it may. */
function forbidden(
  address: string,
  o: DeadLetterUrlOptions,
  apiServer?: string,
): string | undefined {
  let ip = address;
  let family: 'ipv4' | 'ipv6' = isIPv4(ip) ? 'ipv4' : 'ipv6';
  // An IPv4 address written as IPv6 (::ffff:127.0.0.1) is that IPv4 address.
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) {
    ip = mapped[1]!;
    family = 'ipv4';
  }
  if (apiServer && ip === apiServer) return "the API server's Service address";
  if (loopback.check(ip, family)) {
    return o.allowLoopback ? undefined : 'a loopback address (the gateway itself)';
  }
  if (never.check(ip, family)) {
    return /^(169\.254\.|fd00:ec2:)/i.test(ip)
      ? 'a link-local address, where cloud metadata services answer'
      : ip.startsWith('fe80') || ip.startsWith('FE80')
        ? 'a link-local address'
        : 'an unspecified address';
  }
  return undefined;
}

/**
 * Decides whether a dead letter may be sent to `raw`, and where: the one check every `url`
 * dead letter passes. The host is resolved once; the URL is refused when any of its addresses is
 * loopback (unless allowed), link-local (169.254.0.0/16, fe80::/10), AWS's metadata network
 * (fd00:ec2::/64), unspecified, or the API server's Service (by name or address). The request then
 * goes to the address checked, so an answer of the resolver that changes meanwhile (DNS
 * rebinding) cannot send it elsewhere.
 */
export function deadLetterTarget(raw: string, o: DeadLetterUrlOptions = {}): Promise<PinnedUrl> {
  return outboundTarget(raw, o, {
    name: `dead letter ${printable(raw)}`,
    fix: 'dead letters go to a sink outside the node (a Service of yours, an external URL): correct spec.deadLetter.url',
  });
}

/**
 * The same check for any URL a Function's author writes: `subject` names it in messages
 * (`trigger uploads (s3.connection): endpoint http://...`) and says what to do when refused.
 */
export async function outboundTarget(
  raw: string,
  o: DeadLetterUrlOptions,
  subject: { name: string; fix: string },
): Promise<PinnedUrl> {
  const shown = subject.name;
  const refuse = (why: string) => new RefusedUrl(`${shown} is refused: ${why}; ${subject.fix}`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw refuse('it is not a URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw refuse(`its scheme is ${url.protocol.slice(0, -1)}, not http or https`);
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (apiServerName.test(host)) throw refuse("it names the API server's Service");
  const apiServer = (o.apiServerHost ?? process.env.KUBERNETES_SERVICE_HOST)?.trim() || undefined;
  let addresses: Array<{ address: string; family: number }>;
  if (isIP(host)) addresses = [{ address: host, family: isIP(host) }];
  else {
    try {
      // The resolver takes no signal: it gets a deadline of its own.
      let timer: NodeJS.Timeout | undefined;
      addresses = await Promise.race([
        (o.lookup ?? ((h) => lookup(h, { all: true, verbatim: true })))(host),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`${host} did not resolve within ${lookupTimeoutMs / 1000} s`)),
            lookupTimeoutMs,
          );
        }),
      ]).finally(() => clearTimeout(timer));
    } catch (err) {
      throw new Error(`${shown} unreachable: ${networkCause(err)}`);
    }
    if (addresses.length === 0) throw new Error(`${shown}: ${host} has no address`);
  }
  for (const a of addresses) {
    const why = forbidden(a.address, o, apiServer);
    if (why) throw refuse(`${host === a.address ? host : `${host} (${a.address})`} is ${why}`);
  }
  const first = addresses[0]!;
  return { url, address: first.address, family: first.family === 6 ? 6 : 4 };
}

/** The `code` of a connection `checkedLookup` refused. */
export const refusedAddressCode = 'ERR_EDDY_REFUSED_ADDRESS';

/**
 * A resolver for clients that connect by name themselves (the AWS SDK's): every address a name
 * resolves to, at every connection, passes the same check as `outboundTarget`, so that a DNS
 * answer that changes after the first check (or that the check could not get) still never leads
 * to metadata, link-local or unspecified addresses or the API server. Addresses written as IPs
 * are not looked up: `outboundTarget` checks those before any client is made.
 */
export function checkedLookup(o: DeadLetterUrlOptions): LookupFunction {
  const apiServer = (o.apiServerHost ?? process.env.KUBERNETES_SERVICE_HOST)?.trim() || undefined;
  return ((
    hostname: string,
    options: LookupAllOptions | LookupOneOptions,
    done: (err: NodeJS.ErrnoException | null, ...rest: unknown[]) => void,
  ) => {
    const refused = (why: string) =>
      done(
        Object.assign(new Error(`${hostname} is refused: ${why}`), { code: refusedAddressCode }),
      );
    if (apiServerName.test(hostname)) return refused("it names the API server's Service");
    const resolve = (then: (err: Error | null, addresses: LookupAddress[]) => void) => {
      if (!o.lookup) return dnsLookup(hostname, { ...options, all: true }, then);
      o.lookup(hostname).then(
        (addresses) => then(null, addresses),
        (err: Error) => then(err, []),
      );
    };
    resolve((err, addresses) => {
      if (err) return done(err);
      for (const a of addresses) {
        const why = forbidden(a.address, o, apiServer);
        if (why) return refused(`it resolves to ${a.address}, ${why}`);
      }
      if (options.all) return done(null, addresses);
      const first = addresses[0];
      if (!first) return refused('it has no address');
      done(null, first.address, first.family);
    });
  }) as unknown as LookupFunction;
}

/** The longest a connection to a store or stream may stay silent, its answer's body included. */
const socketIdleMs = 30_000;

/**
 * The AWS SDK's HTTP/1.1 handler for an endpoint a Function's author chose: names resolved through
 * `checkedLookup` at every connection, bounded waits (the connection, the answer's headers, and
 * any 30 s of silence after them).
 */
export function checkedHttpHandler(o: DeadLetterUrlOptions): NodeHttpHandler {
  const lookup = checkedLookup(o);
  return new NodeHttpHandler({
    httpAgent: new HttpAgent({ keepAlive: true, maxSockets: 50, lookup }),
    httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets: 50, lookup }),
    connectionTimeout: 5_000,
    requestTimeout: 30_000,
    throwOnRequestTimeout: true,
    socketTimeout: socketIdleMs,
  });
}

/** POSTs `body` to the pinned address (TLS still checks the URL's host name); the status. */
function postPinned(target: PinnedUrl, body: string, signal: AbortSignal): Promise<number> {
  const { url, address, family } = target;
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<number>((resolve, reject) => {
    const req = send(
      url,
      {
        method: 'POST',
        headers: {
          'content-type': 'application/cloudevents+json',
          'content-length': Buffer.byteLength(body),
        },
        signal,
        // A fresh connection each time, to the address that was checked.
        agent: false,
        lookup: ((_host: string, opts: { all?: boolean }, done: (...args: unknown[]) => void) => {
          if (opts?.all) done(null, [{ address, family }]);
          else done(null, address, family);
        }) as unknown as LookupFunction,
      },
      (res) => {
        // Redirects are not followed (a redirected POST may turn into a GET that "succeeds").
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** A URL fit for a log line: no user info, no query (either may hold a token). */
export function printable(url: string): string {
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
    let status: number;
    try {
      const pinned = await deadLetterTarget(url, deps.urls);
      status = await postPinned(pinned, body, sendSignal(signal));
    } catch (err) {
      if (err instanceof RefusedUrl) throw err;
      if (signal?.aborted) throw new Error(`dead letter ${target}: stopped by shutdown`);
      if (timedOut(err)) {
        throw new Error(`dead letter ${target}: no answer within ${timeoutMs / 1000} s`);
      }
      throw new Error(`dead letter ${target} unreachable: ${networkCause(err)}`);
    }
    // The answer's body is the sink's own business (it may echo the event): never logged.
    if (status < 200 || status > 299) {
      throw new Error(
        `dead letter ${target} answered HTTP ${status}: it must accept a POSTed CloudEvent with a 2xx`,
      );
    }
  }

  async function clientFor(fn: EddyFunction, conn: Connection, where: string): Promise<S3Client> {
    const ns = fn.metadata.namespace;
    const ref = conn.secretRef;
    if (conn.endpoint) {
      // The store's own address may be loopback only where the gateway runs beside it anyway;
      // metadata and the API server never. A name that does not resolve is the client's to report.
      await outboundTarget(
        conn.endpoint,
        { ...deps.urls, allowLoopback: true },
        {
          name: `${where}: endpoint ${printable(conn.endpoint)}`,
          fix: 'correct spec.deadLetter.s3.connection.endpoint',
        },
      ).catch((err: unknown) => {
        if (err instanceof RefusedUrl) throw err;
      });
    }
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
      requestHandler: checkedHttpHandler({ ...deps.urls, allowLoopback: true }),
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
