/**
 * A trigger's `connection`: endpoint, region and the access key pair from a Secret in the
 * Function's namespace, read when needed (the operator may `get` a Secret by name, never list
 * them). Also how a failed call to the service becomes a trigger problem the user can act on.
 * Credentials never leave here in a message.
 */
import { S3Client } from '@aws-sdk/client-s3';
import { describeError } from '../errors.js';
import type { Connection, EddyFunction } from '../api/types.js';
import type { SecretReader } from '../functions.js';
import {
  checkedHttpHandler,
  outboundTarget,
  printable,
  refusedAddressCode,
  RefusedUrl,
} from '../gateway/dead-letter.js';
import { SecretNotAllowed } from '../secrets.js';
import type { TriggerProblem } from './states.js';

export interface ResolvedConnection {
  endpoint?: string;
  region: string;
  forcePathStyle: boolean;
  credentials: { accessKeyId: string; secretAccessKey: string };
}

/** A trigger cannot deliver, for a reason its status names. */
export class SourceProblem extends Error {
  constructor(
    readonly reason: TriggerProblem,
    message: string,
  ) {
    super(message);
  }
}

/**
 * The connection with its credentials. `where` names the field in messages, such as
 * `trigger uploads (spec.triggers[0].s3.connection)`.
 */
export async function resolveConnection(
  secrets: SecretReader,
  fn: EddyFunction,
  conn: Connection,
  where: string,
): Promise<ResolvedConnection> {
  const ns = fn.metadata.namespace;
  const ref = conn.secretRef;
  await checkEndpoint(conn.endpoint, where);
  if (!ref) {
    // The operator's own identity must never act where a Function's author points it.
    throw new SourceProblem(
      'SecretNotFound',
      `${where}: secretRef is missing: name a Secret in namespace ${ns} holding accessKeyId and secretAccessKey`,
    );
  }
  let data: Record<string, string>;
  try {
    data = await secrets(ns, ref.name);
  } catch (err) {
    throw new SourceProblem(
      err instanceof SecretNotAllowed ? 'SecretNotAllowed' : 'SecretNotFound',
      `${where}: ${describeError(err)}`,
    );
  }
  const idKey = ref.accessKeyIdKey ?? 'accessKeyId';
  const secretKey = ref.secretAccessKeyKey ?? 'secretAccessKey';
  for (const key of [idKey, secretKey]) {
    if (!data[key]) {
      throw new SourceProblem(
        'SecretNotFound',
        `${where}: Secret ${ns}/${ref.name} has no key "${key}": add it, or name the right key in secretRef`,
      );
    }
  }
  return {
    ...(conn.endpoint ? { endpoint: conn.endpoint } : {}),
    region: conn.region ?? 'us-east-1',
    forcePathStyle: conn.forcePathStyle ?? true,
    credentials: { accessKeyId: data[idKey]!, secretAccessKey: data[secretKey]! },
  };
}

/** Where a trigger's or store's endpoint may lead: loopback is the operator's own pod. */
const endpointChecks = { allowLoopback: true };

/**
 * Refuses an endpoint that is, or resolves to, a link-local or metadata address, an unspecified
 * one, or the API server's Service: the operator would send the trigger's requests, and show
 * parts of the answers in its status, there. Loopback is the operator's own pod (and the local
 * stack's stores): allowed. A name that does not resolve is left to the client, which reports it
 * as unreachable; the clients' own connections pass the same check at every lookup
 * (`checkedHttpHandler`), so a name that resolves differently later still leads nowhere refused.
 */
export async function checkEndpoint(endpoint: string | undefined, where: string): Promise<void> {
  if (!endpoint) return;
  await outboundTarget(endpoint, endpointChecks, {
    name: `${where}: endpoint ${printable(endpoint)}`,
    fix: 'name the service by an address outside the node: correct connection.endpoint',
  }).catch((err: unknown) => {
    if (err instanceof RefusedUrl) throw new SourceProblem('InvalidTrigger', err.message);
  });
}

/** Same connection and credentials: a client made for one can be kept for the other. */
export function connectionFingerprint(c: ResolvedConnection): string {
  return JSON.stringify([
    c.endpoint,
    c.region,
    c.forcePathStyle,
    c.credentials.accessKeyId,
    c.credentials.secretAccessKey,
  ]);
}

const unreachableCodes = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ETIMEDOUT',
  'TimeoutError',
  'RequestTimeout',
]);
const deniedNames = new Set([
  'AccessDenied',
  'AccessDeniedException',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'UnrecognizedClientException',
  'InvalidSignatureException',
  'ExpiredToken',
  'ExpiredTokenException',
  'Forbidden',
]);

/**
 * What a failed call to S3 or Kinesis means for the trigger. `what` names the bucket or stream
 * (`bucket photos at http://minio:9000`); `notFound` is the problem a missing one is.
 */
export function classifyError(
  err: unknown,
  what: string,
  notFound: 'BucketNotFound' | 'StreamNotFound',
): SourceProblem {
  if (err instanceof SourceProblem) return err;
  const e = err as {
    name?: string;
    code?: string;
    Code?: string;
    cause?: { code?: string };
    $metadata?: { httpStatusCode?: number };
  };
  const name = e?.name ?? e?.Code ?? '';
  const code = e?.code ?? e?.cause?.code ?? '';
  const status = e?.$metadata?.httpStatusCode;
  if (code === refusedAddressCode) {
    return new SourceProblem(
      'InvalidTrigger',
      `${what}: ${describeError(err)}: name the service by an address outside the node: correct connection.endpoint`,
    );
  }
  if (
    name === 'NoSuchBucket' ||
    name === 'NotFound' ||
    name === 'ResourceNotFoundException' ||
    (status === 404 && notFound === 'BucketNotFound')
  ) {
    return new SourceProblem(
      notFound,
      `${what} does not exist: create it, or correct the trigger (${describeError(err)})`,
    );
  }
  if (deniedNames.has(name) || status === 403) {
    return new SourceProblem(
      'AccessDenied',
      `${what}: access denied with the trigger's credentials: check the Secret's key pair and its permissions (${name || `HTTP ${status}`})`,
    );
  }
  if (unreachableCodes.has(code) || unreachableCodes.has(name) || status === undefined) {
    return new SourceProblem(
      'EndpointUnreachable',
      `${what}: the endpoint could not be reached: check connection.endpoint and that the service runs (${describeError(err)})`,
    );
  }
  return new SourceProblem('SourceError', `${what}: ${describeError(err)}`);
}

/** Exponential backoff for retrying a trigger that could not start: 1 s doubling to 60 s. */
export function problemBackoffMs(failures: number, baseMs = 1_000, maxMs = 60_000): number {
  return Math.min(maxMs, baseMs * 2 ** Math.max(0, failures - 1));
}

/**
 * What a stream service's client (Kinesis, DynamoDB Streams) is given for a connection: its
 * region and credentials, and at a custom endpoint HTTP/1.1 with bounded waits (the clients
 * speak HTTP/2 by default; compatible servers often only HTTP/1.1).
 */
export function streamClientConfig(conn: ResolvedConnection) {
  return {
    region: conn.region,
    credentials: conn.credentials,
    ...(conn.endpoint
      ? {
          endpoint: conn.endpoint,
          requestHandler: checkedHttpHandler(endpointChecks),
        }
      : {}),
  };
}

/**
 * An S3 client for a connection, with bounded waits: an endpoint that accepts connections but
 * never answers must not hold a source forever.
 */
export function s3ClientFor(c: ResolvedConnection): S3Client {
  return new S3Client({
    ...(c.endpoint ? { endpoint: c.endpoint } : {}),
    region: c.region,
    forcePathStyle: c.forcePathStyle,
    credentials: c.credentials,
    maxAttempts: 2,
    requestHandler: checkedHttpHandler(endpointChecks),
  });
}
