/**
 * The S3-compatible stores that may post bucket notifications to the intake, each known by the
 * bearer token it presents and the endpoint(s) triggers name it by. A record a store posts is
 * about that store's bucket: it goes only to triggers whose `connection.endpoint` is one of the
 * store's endpoints, never to a trigger on a same-named bucket of another store.
 */
import { createHash, timingSafeEqual } from 'node:crypto';

export interface S3Store {
  /** The endpoints triggers name the store by, normalised ({@link normaliseEndpoint}). */
  endpoints: string[];
  token: string;
}

/** A store as configured: one endpoint or several, and its token. */
export interface S3StoreConfig {
  endpoint?: string;
  endpoints?: string[];
  token: string;
}

const defaultPorts: Record<string, string> = { 'http:': '80', 'https:': '443' };

/**
 * The form endpoints are compared in: scheme and host in lower case, the port always written
 * (80 for http, 443 for https when none is given), no user info, query or fragment, and the path
 * without trailing slashes. `http://MinIO.minio.svc:9000/` and `http://minio.minio.svc:9000` are
 * the same store; `http://minio:9000` and `http://minio.minio.svc:9000` are not (list both when
 * triggers use both names). Undefined for what is not an http(s) URL.
 */
export function normaliseEndpoint(endpoint: string | undefined): string | undefined {
  if (!endpoint) return undefined;
  let u: URL;
  try {
    u = new URL(endpoint.trim());
  } catch {
    return undefined;
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') return undefined;
  const port = u.port || defaultPorts[u.protocol]!;
  const path = u.pathname.replace(/\/+$/, '');
  return `${u.protocol}//${u.hostname.toLowerCase()}:${port}${path}`;
}

/** Checks and normalises configured stores; throws a message naming `source` and what to fix. */
export function s3Stores(configs: readonly S3StoreConfig[], source: string): S3Store[] {
  const stores: S3Store[] = [];
  const tokens = new Set<string>();
  for (const [i, c] of configs.entries()) {
    const where = `${source}[${i}]`;
    const given = [...(c.endpoint ? [c.endpoint] : []), ...(c.endpoints ?? [])];
    if (given.length === 0) {
      throw new Error(
        `${where} has no endpoint: give the store's endpoint as triggers name it in connection.endpoint (such as http://minio.minio.svc:9000)`,
      );
    }
    const endpoints = given.map((e) => {
      const n = normaliseEndpoint(e);
      if (!n) throw new Error(`${where}: ${JSON.stringify(e)} is not an http(s) URL: correct it`);
      return n;
    });
    if (typeof c.token !== 'string' || c.token.trim() === '') {
      throw new Error(`${where} has no token: give the bearer token the store sends`);
    }
    const token = c.token.trim();
    if (tokens.has(token)) {
      throw new Error(
        `${where} has the token of another store: give each store its own token, since the token tells which store posted`,
      );
    }
    tokens.add(token);
    stores.push({ endpoints: [...new Set(endpoints)], token });
  }
  return stores;
}

const digest = (v: string) => createHash('sha256').update(v).digest();

/**
 * The store that presents `token`, if any. Every store's token is compared, each in constant
 * time whatever the lengths (both sides are hashed first).
 */
export function storeByToken(stores: readonly S3Store[], token: string): S3Store | undefined {
  const given = digest(token);
  let found: S3Store | undefined;
  for (const s of stores) if (timingSafeEqual(given, digest(s.token)) && !found) found = s;
  return found;
}

/** Whether a trigger's connection names this store. */
export function namesStore(store: S3Store, endpoint: string | undefined): boolean {
  const n = normaliseEndpoint(endpoint);
  return n !== undefined && store.endpoints.includes(n);
}
