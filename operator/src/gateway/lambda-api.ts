/**
 * Lambda's Invoke API on the gateway, so that code written for the AWS SDK or CLI works pointed
 * at Eddy (`endpoint`, `--endpoint-url`):
 *   POST /2015-03-31/functions/{FunctionName}/invocations[?Qualifier=$LATEST]
 * with `X-Amz-Invocation-Type` (RequestResponse, Event, DryRun), `X-Amz-Log-Type: Tail` and
 * `X-Amz-Client-Context`, answered as Lambda answers. Callers sign with SigV4 (access keys in
 * Secrets, see auth/invoke-credentials.ts) or send a Kubernetes bearer token; either way RBAC
 * decides, as on `/functions/{namespace}/{name}`. An Event invocation takes the very path of
 * `/async` (the event queue).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { EddyFunction } from '../api/types.js';
import {
  authenticateRequest,
  authorizeCaller,
  invokeVerb,
  type Authorizer,
  type Caller,
} from '../auth/authorizer.js';
import { serviceAccountNamespace } from '../auth/invoke-credentials.js';
import { isSigV4, parseAuthorization } from '../auth/sigv4.js';
import { headers as h } from '../../../runtime/src/contract/index.js';
import type { AsyncInvoke } from './app.js';
import { responseGone } from './caller-gone.js';
import type { Dispatcher } from './dispatcher.js';
import type { Hold } from './budget.js';
import { gatewayError, GatewayError, type GatewayErrorCode } from './errors.js';

/** Invoke's paths start so. */
export const lambdaApiPrefix = '/2015-03-31/functions/';
/**
 * A path of Lambda's API, whatever its version (`/2015-03-31/...`, InvokeWithResponseStream's
 * `/2021-11-15/...`): answered in Lambda's shape, which SDKs read, even when not served here.
 */
export const lambdaApiPath = /^\/\d{4}-\d{2}-\d{2}\//;
const invokePath = /^\/2015-03-31\/functions\/([^/]+)\/invocations\/?$/;
/** The one version a function has. */
export const latest = '$LATEST';
const invocationTypes = ['RequestResponse', 'Event', 'DryRun'] as const;
type InvocationType = (typeof invocationTypes)[number];

/** The region an ARN names when the caller signed for none (a bearer token, or no auth). */
export const defaultRegion = 'eddy';

/** What the gateway lends the API: the pieces `/functions/...` is made of. */
export interface LambdaApiDeps {
  auth: Authorizer;
  /** The function, or the GatewayError `FunctionNotFound` naming those the caller may see. */
  find(caller: Caller, namespace: string, name: string): Promise<EddyFunction>;
  /** Namespaces that hold a function of this name (for a bare name with no namespace known). */
  namespacesOf(name: string): string[];
  /** The body, counted in `hold`; 413 past 6 MB, 429 past the memory budget. */
  readBody(req: IncomingMessage, hold: Hold): Promise<Buffer>;
  /** What one request holds of the memory budget, and when it lets go. */
  holdFor(res: ServerResponse): {
    hold: Hold;
    keep(delivery: Promise<unknown>): void;
    done(): void;
  };
  dispatcher: Dispatcher;
  asyncInvoke?: AsyncInvoke;
  log: (message: string) => void;
  /**
   * Invocations not answered yet, each with how to answer it with an error: the gateway cuts
   * those still open when its drain ends.
   */
  open?: Map<ServerResponse, (err: GatewayError) => void>;
}

/** A FunctionName resolved: where the function is and the qualifier it names, if any. */
export interface FunctionRef {
  /** undefined: a bare name, in the caller's namespace. */
  namespace?: string;
  name: string;
  qualifier?: string;
  /** The region of a full ARN. */
  region?: string;
}

/**
 * Lambda's FunctionName forms, with the account field standing for the namespace:
 * `name`, `name:qualifier`, `namespace:function:name[:qualifier]`,
 * `arn:aws:lambda:region:namespace:function:name[:qualifier]`. A string says what is wrong.
 */
export function parseFunctionName(given: string): FunctionRef | string {
  const parts = given.split(':');
  const hint =
    'name a function as NAME (in your namespace), NAMESPACE:function:NAME, or arn:aws:lambda:REGION:NAMESPACE:function:NAME';
  if (parts.some((p) => p === '')) return `${given} is not a function name: ${hint}`;
  if (parts[0] === 'arn') {
    if (parts.length < 7 || parts.length > 8 || parts[2] !== 'lambda' || parts[5] !== 'function') {
      return `${given} is not a Lambda function ARN: ${hint}`;
    }
    return {
      region: parts[3]!,
      namespace: parts[4]!,
      name: parts[6]!,
      ...(parts[7] !== undefined ? { qualifier: parts[7] } : {}),
    };
  }
  if (parts.length >= 3 && parts[1] === 'function' && parts.length <= 4) {
    return {
      namespace: parts[0]!,
      name: parts[2]!,
      ...(parts[3] !== undefined ? { qualifier: parts[3] } : {}),
    };
  }
  if (parts.length === 1) return { name: parts[0]! };
  if (parts.length === 2) return { name: parts[0]!, qualifier: parts[1]! };
  return `${given} is not a function name: ${hint}`;
}

export function functionArn(region: string, namespace: string, name: string): string {
  return `arn:aws:lambda:${region}:${namespace}:function:${name}`;
}

/** How a gateway error reads on this API, where Lambda's statuses and types differ. */
const asLambda: Partial<Record<GatewayErrorCode, GatewayErrorCode>> = {
  // A bearer token the API server does not take: Lambda's answer to a key it does not know.
  Unauthorized: 'UnrecognizedClient',
  PayloadTooLarge: 'RequestTooLarge',
  InvalidEvent: 'InvalidRequestContent',
};

export interface LambdaApi {
  handle(req: IncomingMessage, res: ServerResponse, requestId: string): void;
}

export function createLambdaApi(deps: LambdaApiDeps): LambdaApi {
  async function invoke(
    req: IncomingMessage,
    res: ServerResponse,
    requestId: string,
    held: ReturnType<LambdaApiDeps['holdFor']>,
  ): Promise<void> {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const query = new URLSearchParams(q < 0 ? '' : url.slice(q + 1));
    const m = invokePath.exec(path);
    if (!m) {
      const instead = /\/response-streaming-invocations\/?$/.test(path)
        ? ' (InvokeWithResponseStream is not served: Invoke returns the same response, whole)'
        : '';
      throw gatewayError(
        'UnknownOperation',
        `${req.method} ${path}: this gateway serves only Lambda's Invoke, POST ${lambdaApiPrefix}{FunctionName}/invocations${instead}`,
      );
    }
    if (req.method !== 'POST') {
      throw gatewayError('MethodNotAllowed', `${req.method} ${path}: Invoke is a POST`);
    }
    const type = (header(req, 'x-amz-invocation-type') ?? 'RequestResponse') as InvocationType;
    if (!invocationTypes.includes(type)) {
      throw gatewayError(
        'InvalidParameterValue',
        `X-Amz-Invocation-Type ${type} is not one of ${invocationTypes.join(', ')}`,
      );
    }
    const logType = header(req, 'x-amz-log-type') ?? 'None';
    if (logType !== 'None' && logType !== 'Tail') {
      throw gatewayError('InvalidParameterValue', `X-Amz-Log-Type ${logType} is not None or Tail`);
    }
    const clientContext = header(req, 'x-amz-client-context');
    if (clientContext !== undefined && !isBase64JsonObject(clientContext)) {
      throw gatewayError(
        'InvalidRequestContent',
        'Client context must be a valid Base64-encoded JSON object (X-Amz-Client-Context)',
      );
    }
    let given: string;
    try {
      given = decodeURIComponent(m[1]!);
    } catch {
      throw gatewayError('InvalidParameterValue', `${m[1]}: not a function name (bad %-escape)`);
    }
    const ref = parseFunctionName(given);
    if (typeof ref === 'string') throw gatewayError('InvalidParameterValue', ref);
    const qualifier = query.get('Qualifier') ?? undefined;
    if (qualifier !== undefined && ref.qualifier !== undefined && qualifier !== ref.qualifier) {
      throw gatewayError(
        'InvalidParameterValue',
        `The derived qualifier from the function name (${ref.qualifier}) does not match the specified qualifier (${qualifier})`,
      );
    }

    // A signature covers the body: once its headers pass (a known access key, the time, the
    // service), the body is read (counted against the memory budget, and at most 6 MB) and the
    // signature checked over it. A bearer token, or no credentials at all, is decided on the
    // headers.
    const signed = isSigV4(req.headers);
    if (!signed && req.headers.authorization === undefined && deps.auth.mode !== 'none') {
      throw gatewayError(
        'MissingAuthenticationToken',
        'Missing Authentication Token: sign the request with SigV4 (an AWS SDK or the AWS CLI does, with an access key from a Secret labelled eddy.dev/invoke-credentials) or send a Kubernetes bearer token',
      );
    }
    const authenticated = await authenticateRequest(
      deps.auth,
      req.headers,
      signed
        ? {
            method: req.method ?? 'POST',
            url,
            headers: req.headers,
            readBody: () => deps.readBody(req, held.hold),
          }
        : undefined,
    );
    const caller = authenticated.caller;
    let body = authenticated.body;
    const region =
      ref.region ??
      (signed ? signedRegion(req.headers.authorization!) : undefined) ??
      defaultRegion;
    const namespace = ref.namespace ?? callerNamespace(caller, ref.name);
    const arn = functionArn(region, namespace, ref.name);
    await authorizeCaller(caller, { verb: invokeVerb, namespace, name: ref.name });
    const fn = await deps.find(caller, namespace, ref.name).catch((err: unknown) => {
      if (err instanceof GatewayError && err.code === 'FunctionNotFound') {
        throw gatewayError('FunctionNotFound', `Function not found: ${arn} (${err.message})`);
      }
      throw err;
    });
    const version = qualifier ?? ref.qualifier;
    if (version !== undefined && version !== latest) {
      throw gatewayError(
        'FunctionNotFound',
        `Function not found: ${arn}:${version}: Eddy keeps one version of a function, ${latest}; invoke it without a qualifier or with ${latest}`,
      );
    }
    body ??= await deps.readBody(req, held.hold);
    // Lambda takes no payload as an empty object.
    if (body.length === 0) body = Buffer.from('{}');
    else if (!isJson(body)) {
      throw gatewayError(
        'InvalidRequestContent',
        'Could not parse request body into json: the payload of Invoke must be JSON',
      );
    }
    const base = { 'x-amzn-RequestId': requestId, [h.requestId]: requestId };
    if (type === 'DryRun') {
      send(res, 204, base);
      return;
    }
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (type === 'Event') {
      // Lambda hands the client context to synchronous invocations only.
      if (!deps.asyncInvoke) {
        throw gatewayError('NotFound', 'asynchronous invocation is not enabled here');
      }
      const { delivered } = await deps.asyncInvoke(
        fn,
        { requestId, body, headers, trigger: 'async' },
        new Date(),
      );
      if (delivered) held.keep(delivered);
      send(res, 202, base);
      return;
    }
    if (clientContext !== undefined) headers[h.clientContext] = clientContext;
    if (logType === 'Tail') headers[h.logType] = 'Tail';
    const answer = await deps.dispatcher.invoke(fn, {
      requestId,
      body,
      headers,
      trigger: 'invoke',
      signal: responseGone(res),
    });
    held.hold.force(answer.body.length);
    const out: Record<string, string> = {
      ...base,
      'content-type': 'application/json',
      'X-Amz-Executed-Version': latest,
    };
    const tail = answer.headers[h.logResult];
    if (tail !== undefined) out['X-Amz-Log-Result'] = tail;
    if (answer.headers[h.functionError] !== undefined) {
      // The function failed, not the request: 200, as Lambda answers it.
      out['X-Amz-Function-Error'] = 'Unhandled';
      send(res, 200, out, answer.body);
      return;
    }
    if (answer.status >= 300) {
      throw runtimeRefusal(answer.status, answer.body);
    }
    // A handler that returned nothing: Lambda's payload is null.
    send(res, 200, out, answer.status === 204 ? 'null' : answer.body);
  }

  /** The namespace of a bare function name. */
  function callerNamespace(caller: Caller, name: string): string {
    const own = serviceAccountNamespace(caller.identity);
    if (own !== undefined) return own;
    if (deps.auth.mode === 'none') {
      // No identity to go by: the one namespace that holds a function of this name.
      const found = deps.namespacesOf(name);
      if (found.length === 1) return found[0]!;
      if (found.length > 1) {
        throw gatewayError(
          'InvalidParameterValue',
          `functions named ${name} are in the namespaces ${found.sort().join(', ')}: name one as NAMESPACE:function:${name} or by its ARN`,
        );
      }
      throw gatewayError(
        'FunctionNotFound',
        `Function not found: ${name}: no namespace holds a function of that name (name another namespace's as NAMESPACE:function:${name})`,
      );
    }
    throw gatewayError(
      'InvalidParameterValue',
      `${caller.identity.username} is not a ServiceAccount, so ${name} names no namespace: name the function by its ARN, arn:aws:lambda:REGION:NAMESPACE:function:${name}, or as NAMESPACE:function:${name}`,
    );
  }

  function handle(req: IncomingMessage, res: ServerResponse, requestId: string): void {
    const held = deps.holdFor(res);
    deps.open?.set(res, (err) => fail(res, requestId, err));
    invoke(req, res, requestId, held)
      .catch((err: unknown) => fail(res, requestId, err))
      .finally(() => {
        deps.open?.delete(res);
        held.done();
      });
  }

  function fail(res: ServerResponse, requestId: string, err: unknown): void {
    if (res.destroyed) return;
    const given =
      err instanceof GatewayError
        ? err
        : new GatewayError('ServiceException', 'the gateway failed to handle the request');
    if (!(err instanceof GatewayError)) {
      // Not the caller's doing: its stack goes to the log, as on /functions/...
      deps.log(`Invoke: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    }
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'x-amzn-RequestId': requestId,
      [h.requestId]: requestId,
    };
    if (given.functionError) {
      // The gateway found the function's timeout passed, or its replica ended while it ran the
      // invocation (a crash, a kill, process.exit): the function failed, not the request. 200
      // with Unhandled, as Lambda answers it; a 5xx would have SDKs and the CLI send it again.
      headers['X-Amz-Function-Error'] = 'Unhandled';
      headers['X-Amz-Executed-Version'] = latest;
      if (!res.headersSent) send(res, 200, headers, JSON.stringify(given.body()));
      else res.destroy();
      return;
    }
    const code = asLambda[given.code];
    const e = code ? gatewayError(code, given.message, given.retryAfterSeconds) : given;
    headers['X-Amzn-ErrorType'] = e.errorType;
    if (e.retryAfterSeconds !== undefined) headers['retry-after'] = String(e.retryAfterSeconds);
    const body: Record<string, string> = {
      Type: e.status < 500 ? 'User' : 'Service',
      Message: e.message,
      message: e.message,
    };
    // TooManyRequestsException's Reason, which SDKs expose: the function's limit or the gateway's.
    if (e.code === 'Throttled') body.Reason = e.reason ?? 'ConcurrentInvocationLimitExceeded';
    if (!res.headersSent) send(res, e.status, headers, JSON.stringify(body));
    else res.destroy();
  }

  return { handle };
}

/** A refusal the runtime answered (not a function error), as this API's error. */
function runtimeRefusal(status: number, body: Buffer): GatewayError {
  let message = body.toString('utf8').slice(0, 1_000);
  let type = '';
  try {
    const parsed = JSON.parse(message) as { errorType?: string; errorMessage?: string };
    message = parsed.errorMessage ?? message;
    type = parsed.errorType ?? '';
  } catch {
    // not Lambda's error shape: keep the text
  }
  // The replica at its own concurrency limit: the function's.
  if (status === 429) {
    return gatewayError(
      'Throttled',
      message,
      1,
      'ReservedFunctionConcurrentInvocationLimitExceeded',
    );
  }
  if (status === 413) return gatewayError('RequestTooLarge', message);
  if (status >= 400 && status < 500) return gatewayError('InvalidRequestContent', message);
  return gatewayError('ServiceException', `the runtime answered ${status} ${type}: ${message}`);
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function signedRegion(authorization: string): string | undefined {
  const auth = parseAuthorization(authorization);
  return typeof auth === 'string' ? undefined : auth.region;
}

function isJson(body: Buffer): boolean {
  try {
    JSON.parse(body.toString('utf8'));
    return true;
  } catch {
    return false;
  }
}

function isBase64JsonObject(value: string): boolean {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value)) return false;
  try {
    const parsed: unknown = JSON.parse(Buffer.from(value, 'base64').toString('utf8'));
    return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed);
  } catch {
    return false;
  }
}

function send(
  res: ServerResponse,
  status: number,
  headers: Record<string, string>,
  body?: string | Buffer,
): void {
  const buf = body === undefined ? undefined : typeof body === 'string' ? Buffer.from(body) : body;
  res.writeHead(status, { ...headers, 'content-length': String(buf?.length ?? 0) });
  res.end(buf);
}
