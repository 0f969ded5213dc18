/**
 * Who may invoke: the one question the gateway asks before every invocation and listing.
 * Kubernetes' own authorizer is the model: a caller is authenticated once per request, then
 * asked about attributes (verb, namespace, name) on `functions.eddy.dev`, so that
 * `kubectl auth can-i invoke functions.eddy.dev/NAME -n NAMESPACE --as ...` answers the same.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { gatewayError } from '../gateway/errors.js';
import { isSigV4, type SignedHead } from './sigv4.js';

/** The API group and resource every question is about. */
export const functionsResource = { group: 'eddy.dev', resource: 'functions' } as const;

/** The verb that lets a caller invoke a function (sync and async). */
export const invokeVerb = 'invoke';

/** What a caller asks to do: a verb on functions in a namespace, or on one function by name. */
export interface Access {
  verb: 'invoke' | 'get';
  /** '' for every namespace. */
  namespace: string;
  /** Omitted: every function in the namespace. */
  name?: string;
}

/** Who the API server says the caller is (TokenReview's user). */
export interface Identity {
  username: string;
  uid?: string;
  groups?: string[];
  extra?: Record<string, string[]>;
}

export interface Caller {
  identity: Identity;
  /** Whether the caller may; throws a GatewayError (503) when that cannot be found out. */
  may(access: Access): Promise<boolean>;
}

export interface Authorizer {
  /** `kubernetes`: tokens and RBAC; `none`: everyone may do everything (the local stack). */
  readonly mode: 'kubernetes' | 'none';
  /**
   * The caller whose bearer token the request carries. Throws the GatewayError `Unauthorized`
   * (401) without a token or with one the API server does not accept.
   */
  authenticate(headers: IncomingHttpHeaders): Promise<Caller>;
  /**
   * The caller whose SigV4 signature (Lambda's Invoke API) the request carries: the
   * ServiceAccount its access key acts as, and the body the signature covers. Everything the
   * headers decide (a known access key, the time, the service) is checked before `readBody` is
   * called. Throws Lambda's 403s (`MissingAuthenticationToken`, `UnrecognizedClient`,
   * `InvalidSignature`). Without it, signed requests are refused.
   */
  authenticateSigned?(req: SignedHead, readBody: () => Promise<Buffer>): Promise<SignedCaller>;
}

/** A caller known by its signature, and the body it signed. */
export interface SignedCaller {
  caller: Caller;
  body: Buffer;
}

/**
 * Who the caller is: by its SigV4 signature when it carries one and `signed` gives the request
 * as it arrived (its body read once its headers pass), else by its bearer token, with the body
 * left unread.
 */
export async function authenticateRequest(
  authorizer: Authorizer,
  headers: IncomingHttpHeaders,
  signed?: SignedHead & { readBody: () => Promise<Buffer> },
): Promise<{ caller: Caller; body?: Buffer }> {
  if (!signed || !isSigV4(headers)) return { caller: await authorizer.authenticate(headers) };
  if (!authorizer.authenticateSigned) {
    return Promise.reject(
      gatewayError(
        'UnrecognizedClient',
        'The security token included in the request is invalid: this gateway takes no SigV4 signatures; send a Kubernetes bearer token',
      ),
    );
  }
  const { readBody, ...head } = signed;
  return authorizer.authenticateSigned(head, readBody);
}

/** The caller if it may, else the GatewayError `Forbidden` (403, naming what is missing). */
export async function authorizeCaller(caller: Caller, access: Access): Promise<Caller> {
  if (await caller.may(access)) return caller;
  throw forbidden(caller.identity, access);
}

/**
 * The decision for one invocation: the caller if it may, else the GatewayError
 * `Unauthorized` (401) or `Forbidden` (403, naming what is missing).
 */
export async function authorize(
  authorizer: Authorizer,
  headers: IncomingHttpHeaders,
  access: Access,
): Promise<Caller> {
  return authorizeCaller(await authorizer.authenticate(headers), access);
}

/** Questions a listing asks at once. */
export const questionsAtOnce = 16;

/** Only what `caller` may `get` of `functions`: cluster-wide, whole namespaces, one by one. */
export async function visibleTo<F extends { namespace: string; name: string }>(
  caller: Caller,
  functions: readonly F[],
): Promise<F[]> {
  if (functions.length === 0) return [];
  if (await caller.may({ verb: 'get', namespace: '' })) return [...functions];
  const namespaces = [...new Set(functions.map((f) => f.namespace))];
  const wholeAnswers = await fewAtOnce(namespaces, (namespace) =>
    caller.may({ verb: 'get', namespace }),
  );
  const whole = new Set(namespaces.filter((_, i) => wholeAnswers[i]));
  const seen = await fewAtOnce(functions, (f) =>
    whole.has(f.namespace)
      ? Promise.resolve(true)
      : caller.may({ verb: 'get', namespace: f.namespace, name: f.name }),
  );
  return functions.filter((_, i) => seen[i]);
}

/**
 * `ask` for each item, `questionsAtOnce` at a time: a caller who may see little in a large
 * cluster sends the API server no burst of reviews.
 */
async function fewAtOnce<T>(
  items: readonly T[],
  ask: (item: T) => Promise<boolean>,
): Promise<boolean[]> {
  const answers: boolean[] = [];
  for (let i = 0; i < items.length; i += questionsAtOnce) {
    answers.push(...(await Promise.all(items.slice(i, i + questionsAtOnce).map(ask))));
  }
  return answers;
}

export function forbidden(identity: Identity, access: Access) {
  const what = `${access.verb} ${functionsResource.resource}.${functionsResource.group}${access.name !== undefined ? ` "${access.name}"` : ''}`;
  const where = access.namespace === '' ? 'cluster-wide' : `in namespace ${access.namespace}`;
  const grant =
    access.verb === invokeVerb
      ? `bind the ClusterRole eddy-invoker to it with a RoleBinding in ${access.namespace || 'the namespace'} (a Role with resourceNames grants single functions)`
      : `grant it the verb ${access.verb} on ${functionsResource.resource}.${functionsResource.group} ${where}`;
  return gatewayError(
    'Forbidden',
    `${identity.username} may not ${what} ${where}: it lacks the verb ${access.verb} on resource ${functionsResource.resource} (group ${functionsResource.group}) ${where}; ${grant}`,
  );
}

/**
 * The bearer token of `Authorization: Bearer <token>`; undefined without one. Only the first
 * header counts, as the API server reads it.
 */
export function bearerToken(headers: IncomingHttpHeaders): string | undefined {
  const v = headers.authorization;
  if (v === undefined) return undefined;
  const m = /^Bearer +(\S+) *$/i.exec(v);
  return m?.[1];
}

/** Everyone may do everything: for the local stack on 127.0.0.1, and `gateway.auth: none`. */
export const noAuth: Authorizer = {
  mode: 'none',
  authenticate: () => Promise.resolve(anyone),
  // The SDK and CLI always sign: any signature, or none, is taken.
  authenticateSigned: async (_req, readBody) => ({ caller: anyone, body: await readBody() }),
};

const anyone: Caller = {
  identity: { username: 'anyone (authentication off)' },
  may: () => Promise.resolve(true),
};

/** The setting's values. */
export const authModes = ['kubernetes', 'none'] as const;
export type AuthMode = (typeof authModes)[number];
