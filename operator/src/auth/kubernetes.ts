/**
 * Callers authenticated and authorised by the API server, as kube-apiserver's own webhook
 * authenticator and authorizer do it: a TokenReview says who a bearer token belongs to, a
 * SubjectAccessReview whether that identity may use a verb on functions.eddy.dev. Both answers
 * are cached (allow up to 30 s, deny up to 5 s), keyed by a hash of the token, so a warm
 * caller costs no request.
 */
import { createHash } from 'node:crypto';
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import { gatewayError, GatewayError } from '../gateway/errors.js';
import {
  bearerToken,
  functionsResource,
  type Access,
  type Authorizer,
  type Caller,
  type Identity,
} from './authorizer.js';
import { DecisionCache } from './decision-cache.js';
import {
  checkSignedHead,
  invokeCredentialsLabel,
  verifySigned,
  type InvokeCredentials,
} from './invoke-credentials.js';
import type { SignedHead } from './sigv4.js';

/** The longest an answer may be reused: a revoked grant stops working within this. */
export const maxAllowTtlMs = 30_000;
export const maxDenyTtlMs = 5_000;

export interface KubernetesAuthOptions {
  kc: KubeConfig;
  log: (message: string) => void;
  /** Deadline of one TokenReview or SubjectAccessReview. Default 5 s. */
  timeoutMs?: number;
  /** Entries per cache (identities, decisions). Default 4096. */
  maxEntries?: number;
  /** How long answers are reused; at most 30 s (allow) and 5 s (deny), the defaults. */
  allowTtlMs?: number;
  denyTtlMs?: number;
  /**
   * Audiences a caller's token must be meant for (`kubectl create token --audience`); by
   * default the API server's own. With audiences of its own, a token that reaches the gateway
   * is of no use against the API server.
   */
  audiences?: readonly string[];
  /** The clock, in ms; tests pass their own. */
  now?: () => number;
  /**
   * The access keys SigV4-signed requests (Lambda's Invoke API) are checked against; without
   * them every signed request is refused as unrecognised.
   */
  invokeCredentials?: InvokeCredentials;
  /** The clock SigV4 request times are compared with, in ms; by default the real one. */
  signingNow?: () => number;
}

type Authenticated = { identity: Identity } | { rejected: true };

export function kubernetesAuthorizer(o: KubernetesAuthOptions): Authorizer {
  const allowTtl = bounded('allowTtlMs', o.allowTtlMs ?? maxAllowTtlMs, maxAllowTtlMs);
  const denyTtl = bounded('denyTtlMs', o.denyTtlMs ?? maxDenyTtlMs, maxDenyTtlMs);
  const maxEntries = o.maxEntries ?? 4096;
  const timeoutMs = o.timeoutMs ?? 5_000;
  const identities = new DecisionCache<Authenticated>({
    maxEntries,
    ttlMs: (a) => ('identity' in a ? allowTtl : denyTtl),
    now: o.now,
  });
  const decisions = new DecisionCache<boolean>({
    maxEntries,
    ttlMs: (allowed) => (allowed ? allowTtl : denyTtl),
    now: o.now,
  });
  const post = apiPoster(o.kc, timeoutMs);
  const audiences = o.audiences?.length ? [...o.audiences] : undefined;
  /** How a caller gets a token the gateway takes. */
  const getToken = `kubectl create token <service-account>${audiences ? ` --audience ${audiences[0]}` : ''}`;
  // One Caller per token while its identity is cached: a warm call makes no new one.
  const callers = new WeakMap<Authenticated, Caller>();

  const review = async (token: string): Promise<Authenticated> => {
    const answer = (await post('/apis/authentication.k8s.io/v1/tokenreviews', {
      apiVersion: 'authentication.k8s.io/v1',
      kind: 'TokenReview',
      spec: { token, ...(audiences ? { audiences } : {}) },
    })) as TokenReview;
    const user = answer.status?.user;
    if (!answer.status?.authenticated || !user?.username) return { rejected: true };
    // The API server answers with the requested audiences the token is meant for: one at least.
    if (audiences && !answer.status.audiences?.some((a) => audiences.includes(a))) {
      return { rejected: true };
    }
    return {
      identity: {
        username: user.username,
        ...(user.uid ? { uid: user.uid } : {}),
        ...(user.groups ? { groups: user.groups } : {}),
        ...(user.extra ? { extra: user.extra } : {}),
      },
    };
  };

  const accessReview = async (identity: Identity, access: Access): Promise<boolean> => {
    const answer = (await post('/apis/authorization.k8s.io/v1/subjectaccessreviews', {
      apiVersion: 'authorization.k8s.io/v1',
      kind: 'SubjectAccessReview',
      spec: {
        user: identity.username,
        ...(identity.uid ? { uid: identity.uid } : {}),
        ...(identity.groups ? { groups: identity.groups } : {}),
        ...(identity.extra ? { extra: identity.extra } : {}),
        resourceAttributes: {
          ...functionsResource,
          verb: access.verb,
          namespace: access.namespace,
          ...(access.name !== undefined ? { name: access.name } : {}),
        },
      },
    })) as SubjectAccessReview;
    return answer.status?.allowed === true && answer.status.denied !== true;
  };

  const callerFor = (hash: string, a: Authenticated & { identity: Identity }): Caller => {
    let c = callers.get(a);
    if (!c) {
      const identity = a.identity;
      c = {
        identity,
        may: (access) =>
          decisions.get(`${hash}\0${access.verb}\0${access.namespace}\0${access.name ?? ''}`, () =>
            unavailable('SubjectAccessReview', accessReview(identity, access), o.log),
          ),
      };
      callers.set(a, c);
    }
    return c;
  };

  // One Authenticated per access key, so that a key's decisions are cached as a token's are.
  const keyIdentities = new Map<string, Authenticated & { identity: Identity }>();

  return {
    mode: 'kubernetes',
    async authenticateSigned(req: SignedHead, readBody: () => Promise<Buffer>) {
      const credentials = o.invokeCredentials ?? {
        namespace: 'the gateway',
        lookup: () => Promise.resolve(undefined),
      };
      if (!o.invokeCredentials && req.headers.authorization !== undefined) {
        throw gatewayError(
          'UnrecognizedClient',
          `The security token included in the request is invalid: this gateway takes no access keys (it reads none from Secrets labelled ${invokeCredentialsLabel}); send a Kubernetes bearer token instead`,
        );
      }
      const checked = await checkSignedHead(credentials, req, (o.signingNow ?? Date.now)());
      const body = await readBody();
      const { identity, accessKeyId } = verifySigned(checked, { ...req, body });
      const hash = `sigv4\0${accessKeyId}\0${identity.username}`;
      let a = keyIdentities.get(hash);
      if (!a) {
        if (keyIdentities.size >= maxEntries) keyIdentities.clear();
        a = { identity };
        keyIdentities.set(hash, a);
      }
      return { caller: callerFor(hash, a), body };
    },
    async authenticate(headers: IncomingHttpHeaders): Promise<Caller> {
      const token = bearerToken(headers);
      if (token === undefined) {
        throw gatewayError(
          'Unauthorized',
          `no bearer token: send Authorization: Bearer <token> with a Kubernetes token, such as \`${getToken}\` gives`,
        );
      }
      const hash = createHash('sha256').update(token).digest('base64url');
      const a = await identities.get(hash, () => unavailable('TokenReview', review(token), o.log));
      if (!('identity' in a)) {
        throw gatewayError(
          'Unauthorized',
          `the bearer token was not accepted by the Kubernetes API server (expired, revoked, or for another cluster or audience): get a new one with \`${getToken}\``,
        );
      }
      return callerFor(hash, a);
    },
  };
}

/** A failed review becomes a 503 the caller may retry; the error is logged, never the token. */
async function unavailable<T>(what: string, p: Promise<T>, log: (m: string) => void): Promise<T> {
  try {
    return await p;
  } catch (err) {
    if (err instanceof GatewayError) throw err;
    const reason = err instanceof Error ? err.message : String(err);
    log(`${what} failed: ${reason}`);
    throw gatewayError(
      'AuthUnavailable',
      `the gateway could not check the caller with the Kubernetes API server (${what}: ${reason}); try again`,
      1,
    );
  }
}

function bounded(name: string, ms: number, max: number): number {
  if (!(ms >= 0 && ms <= max)) throw new Error(`${name} must be from 0 to ${max} ms, not ${ms}`);
  return ms;
}

interface TokenReview {
  status?: {
    authenticated?: boolean;
    audiences?: string[];
    user?: { username?: string; uid?: string; groups?: string[]; extra?: Record<string, string[]> };
  };
}

interface SubjectAccessReview {
  status?: { allowed?: boolean; denied?: boolean; reason?: string };
}

/**
 * POSTs a review to the API server as the KubeConfig's user (its keep-alive agent, its token
 * re-read from the projected file) with a deadline, and returns the answer's body.
 */
function apiPoster(kc: KubeConfig, timeoutMs: number) {
  return async (path: string, body: unknown): Promise<unknown> => {
    const server = kc.getCurrentCluster()?.server;
    if (!server) throw new Error('the kubeconfig names no cluster');
    const opts: RequestOptions = { headers: {} };
    await kc.applyToHTTPSOptions(opts);
    const url = new URL(path, server.endsWith('/') ? server : `${server}/`);
    const payload = Buffer.from(JSON.stringify(body));
    const send = url.protocol === 'http:' ? httpRequest : httpsRequest;
    return new Promise((resolve, reject) => {
      const req = send(
        url,
        {
          ...opts,
          method: 'POST',
          headers: {
            ...opts.headers,
            'content-type': 'application/json',
            accept: 'application/json',
            'content-length': String(payload.length),
          },
          signal: AbortSignal.timeout(timeoutMs),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString();
            if ((res.statusCode ?? 0) >= 300) {
              let message = text.slice(0, 200);
              try {
                message = (JSON.parse(text) as { message?: string }).message ?? message;
              } catch {
                // not a Status object
              }
              reject(new Error(`HTTP ${res.statusCode}: ${message}`));
              return;
            }
            try {
              resolve(JSON.parse(text));
            } catch {
              reject(new Error(`HTTP ${res.statusCode}: not JSON`));
            }
          });
        },
      );
      req.on('error', (err) =>
        reject(err.name === 'AbortError' ? new Error(`no answer within ${timeoutMs} ms`) : err),
      );
      req.end(payload);
    });
  };
}
