/**
 * AWS Signature Version 4, as the AWS SDKs and CLI sign a Lambda request: the gateway takes the
 * request as it arrived (method, raw path and query, headers, body), rebuilds the canonical
 * request the client signed, and compares the signatures in constant time. Only the header form
 * (`Authorization: AWS4-HMAC-SHA256 ...`) is taken; presigned URLs are not.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';

export const sigv4Algorithm = 'AWS4-HMAC-SHA256';
/** The service a request must be signed for. */
export const sigv4Service = 'lambda';
/** How far a request's time may be from the gateway's, as AWS allows. */
export const maxClockSkewMs = 5 * 60_000;

/** A request as it arrived: what its signature covers. */
export interface SignedHead {
  method: string;
  /** The path and query as sent (`req.url`), not decoded. */
  url: string;
  headers: IncomingHttpHeaders;
}

export interface SignedRequest extends SignedHead {
  body: Buffer;
}

/** The parts of `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`. */
export interface SigV4Authorization {
  accessKeyId: string;
  /** yyyymmdd */
  date: string;
  region: string;
  service: string;
  signedHeaders: string[];
  signature: string;
}

/** Whether the request carries a SigV4 `Authorization` header (well formed or not). */
export function isSigV4(headers: IncomingHttpHeaders): boolean {
  return headers.authorization?.startsWith(`${sigv4Algorithm} `) === true;
}

/** The parsed header, or a string saying what is wrong with it. */
export function parseAuthorization(value: string): SigV4Authorization | string {
  if (!value.startsWith(`${sigv4Algorithm} `)) return `the algorithm is not ${sigv4Algorithm}`;
  const fields = new Map<string, string>();
  for (const part of value.slice(sigv4Algorithm.length + 1).split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) fields.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
  }
  const credential = fields.get('Credential');
  const signedHeaders = fields.get('SignedHeaders');
  const signature = fields.get('Signature');
  if (!credential || !signedHeaders || !signature) {
    return 'Authorization header requires Credential, SignedHeaders and Signature';
  }
  const scope = credential.split('/');
  if (scope.length !== 5 || scope[4] !== 'aws4_request' || !/^\d{8}$/.test(scope[1]!)) {
    return `Credential should be <access key id>/<yyyymmdd>/<region>/${sigv4Service}/aws4_request, not ${credential}`;
  }
  if (!/^[0-9a-f]{64}$/.test(signature)) return 'the Signature is not 64 hexadecimal digits';
  return {
    accessKeyId: scope[0]!,
    date: scope[1]!,
    region: scope[2]!,
    service: scope[3]!,
    signedHeaders: signedHeaders.split(';'),
    signature,
  };
}

/** The request's time (X-Amz-Date, else Date) in ms, or undefined when it has none readable. */
export function requestTime(headers: IncomingHttpHeaders): number | undefined {
  const amz = headerValue(headers, 'x-amz-date');
  if (amz !== undefined) {
    const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amz);
    if (!m) return undefined;
    return Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!);
  }
  const date = headerValue(headers, 'date');
  if (date === undefined) return undefined;
  const t = Date.parse(date);
  return Number.isNaN(t) ? undefined : t;
}

/** yyyymmddThhmmssZ, as SigV4 writes times. */
export function amzDate(ms: number): string {
  return new Date(ms)
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d{3}/, '');
}

/**
 * Why the request's time is refused, in AWS's words, or undefined when it is within
 * `maxClockSkewMs` of `now`.
 */
export function skewRefusal(time: number, now: number): string | undefined {
  if (time < now - maxClockSkewMs) {
    return `Signature expired: ${amzDate(time)} is now earlier than ${amzDate(now - maxClockSkewMs)} (${amzDate(now)} - 5 min.)`;
  }
  if (time > now + maxClockSkewMs) {
    return `Signature not yet current: ${amzDate(time)} is still later than ${amzDate(now + maxClockSkewMs)} (${amzDate(now)} + 5 min.)`;
  }
  return undefined;
}

/** The string the client signed, built from the request as it arrived. */
export function stringToSign(req: SignedRequest, auth: SigV4Authorization): string {
  const canonical = canonicalRequest(req, auth.signedHeaders);
  return [
    sigv4Algorithm,
    headerValue(req.headers, 'x-amz-date') ?? amzDate(requestTime(req.headers) ?? 0),
    `${auth.date}/${auth.region}/${auth.service}/aws4_request`,
    sha256Hex(canonical),
  ].join('\n');
}

export function canonicalRequest(req: SignedRequest, signedHeaders: readonly string[]): string {
  const q = req.url.indexOf('?');
  const rawPath = q < 0 ? req.url : req.url.slice(0, q);
  const rawQuery = q < 0 ? '' : req.url.slice(q + 1);
  const headers = signedHeaders
    .map(
      (name) => `${name}:${(headerValue(req.headers, name) ?? '').trim().replace(/\s+/g, ' ')}\n`,
    )
    .join('');
  return [
    req.method.toUpperCase(),
    canonicalPath(rawPath),
    canonicalQuery(rawQuery),
    headers,
    signedHeaders.join(';'),
    headerValue(req.headers, 'x-amz-content-sha256') ?? sha256Hex(req.body),
  ].join('\n');
}

/**
 * Services other than S3 sign the path encoded once more than it is sent: each segment as it
 * arrived (already percent-encoded by the client) is encoded again.
 */
function canonicalPath(raw: string): string {
  if (raw === '') return '/';
  return raw
    .split('/')
    .map((segment) => uriEncode(segment))
    .join('/');
}

function canonicalQuery(raw: string): string {
  if (raw === '') return '';
  const pairs = raw
    .split('&')
    .filter((p) => p !== '')
    .map((p) => {
      const eq = p.indexOf('=');
      const k = eq < 0 ? p : p.slice(0, eq);
      const v = eq < 0 ? '' : p.slice(eq + 1);
      return [uriEncode(safeDecode(k)), uriEncode(safeDecode(v))] as const;
    });
  pairs.sort(([ak, av], [bk, bv]) => (ak < bk ? -1 : ak > bk ? 1 : av < bv ? -1 : av > bv ? 1 : 0));
  return pairs.map(([k, v]) => `${k}=${v}`).join('&');
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** RFC 3986 encoding: everything but unreserved characters. */
function uriEncode(s: string): string {
  return encodeURIComponent(s).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

/** The signature `secretAccessKey` gives `stringToSign` under the request's scope. */
export function signature(
  secretAccessKey: string,
  auth: Pick<SigV4Authorization, 'date' | 'region' | 'service'>,
  toSign: string,
): string {
  // The key changes once a day per scope: derived once, as AWS's own signers keep it.
  const scope = `${auth.date}/${auth.region}/${auth.service}\0${secretAccessKey}`;
  let kSigning = signingKeys.get(scope);
  if (!kSigning) {
    const kDate = hmac(`AWS4${secretAccessKey}`, auth.date);
    const kRegion = hmac(kDate, auth.region);
    const kService = hmac(kRegion, auth.service);
    kSigning = hmac(kService, 'aws4_request');
    if (signingKeys.size >= 1024) signingKeys.clear();
    signingKeys.set(scope, kSigning);
  }
  return createHmac('sha256', kSigning).update(toSign).digest('hex');
}

const signingKeys = new Map<string, Buffer>();

/** Whether two hex signatures are equal, in time that does not depend on where they differ. */
export function sameSignature(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

/** Whether the request's body is what its `x-amz-content-sha256` header (if any) says. */
export function payloadMatches(req: SignedRequest): boolean {
  const declared = headerValue(req.headers, 'x-amz-content-sha256');
  return declared === undefined || declared === sha256Hex(req.body);
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function headerValue(headers: IncomingHttpHeaders, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(',') : v;
}
