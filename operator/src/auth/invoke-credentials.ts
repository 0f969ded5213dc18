/**
 * Access keys for Lambda's Invoke API: Secrets in Eddy's own namespace labelled
 * `eddy.dev/invoke-credentials`, each holding an access key id, its secret access key and the
 * ServiceAccount (`namespace/name`) the key acts as. A SigV4 request signed with such a key is
 * that ServiceAccount, and RBAC decides what it may invoke, as for its bearer token.
 */
import { CoreV1Api, type KubeConfig, type V1Secret } from '@kubernetes/client-node';
import { gatewayError } from '../gateway/errors.js';
import { paginated, startInformer } from '../controller/informers.js';
import type { Identity } from './authorizer.js';
import {
  isSigV4,
  parseAuthorization,
  payloadMatches,
  requestTime,
  sameSignature,
  signature,
  sigv4Service,
  skewRefusal,
  stringToSign,
  type SignedHead,
  type SignedRequest,
  type SigV4Authorization,
} from './sigv4.js';

/** The label that makes a Secret in Eddy's namespace an access key for the Invoke API. */
export const invokeCredentialsLabel = 'eddy.dev/invoke-credentials';

/** The keys of such a Secret's data. */
export const credentialKeys = {
  accessKeyId: 'accessKeyId',
  secretAccessKey: 'secretAccessKey',
  /** `namespace/name` of the ServiceAccount the key acts as. */
  serviceAccount: 'serviceAccount',
} as const;

export interface InvokeCredential {
  accessKeyId: string;
  secretAccessKey: string;
  namespace: string;
  serviceAccount: string;
  /** The Secret it came from, `namespace/name`, for messages. */
  secret: string;
}

/** Where the keys are looked up; undefined for a key no Secret holds. */
export interface InvokeCredentials {
  /** Eddy's namespace, where the Secrets are. */
  readonly namespace: string;
  lookup(accessKeyId: string): Promise<InvokeCredential | undefined>;
}

/** The identity a key acts as: its ServiceAccount's, with the groups the API server gives one. */
export function serviceAccountIdentity(namespace: string, name: string): Identity {
  return {
    username: `system:serviceaccount:${namespace}:${name}`,
    groups: [
      'system:serviceaccounts',
      `system:serviceaccounts:${namespace}`,
      'system:authenticated',
    ],
  };
}

/** The namespace of a ServiceAccount's identity, or undefined for any other identity. */
export function serviceAccountNamespace(identity: Identity): string | undefined {
  const m = /^system:serviceaccount:([^:]+):[^:]+$/.exec(identity.username);
  return m?.[1];
}

/** The credential a Secret holds, or a string saying what it lacks. */
export function credentialOf(secret: V1Secret): InvokeCredential | string {
  const where = `${secret.metadata?.namespace}/${secret.metadata?.name}`;
  const data = secret.data ?? {};
  const read = (k: string) =>
    data[k] !== undefined ? Buffer.from(data[k], 'base64').toString('utf8').trim() : undefined;
  const accessKeyId = read(credentialKeys.accessKeyId);
  const secretAccessKey = read(credentialKeys.secretAccessKey);
  const account = read(credentialKeys.serviceAccount);
  if (!accessKeyId || !secretAccessKey || !account) {
    return `the Secret ${where} needs the keys ${Object.values(credentialKeys).join(', ')}`;
  }
  const m = /^([a-z0-9-.]+)\/([a-z0-9-.]+)$/.exec(account);
  if (!m) {
    return `the Secret ${where} names the ServiceAccount "${account}": write it as namespace/name`;
  }
  return {
    accessKeyId,
    secretAccessKey,
    namespace: m[1]!,
    serviceAccount: m[2]!,
    secret: where,
  };
}

/** Credentials held in memory (the local stack's and tests' stand-in for the Secrets). */
export function staticInvokeCredentials(
  namespace: string,
  credentials: readonly InvokeCredential[],
): InvokeCredentials {
  const byKey = new Map(credentials.map((c) => [c.accessKeyId, c]));
  return { namespace, lookup: (id) => Promise.resolve(byKey.get(id)) };
}

export interface ClusterInvokeCredentials extends InvokeCredentials {
  /** Follows the Secrets until `signal` aborts; lookups wait (up to 5 s) for the first list. */
  run(signal: AbortSignal): Promise<void>;
}

/**
 * The labelled Secrets of `namespace`, listed and watched (the gateway may list and watch
 * Secrets in its own namespace only). A Secret without the keys is logged and ignored.
 */
export function clusterInvokeCredentials(
  kc: KubeConfig,
  namespace: string,
  log: (message: string) => void,
): ClusterInvokeCredentials {
  const core = kc.makeApiClient(CoreV1Api);
  const bySecret = new Map<string, InvokeCredential>();
  let markSynced!: () => void;
  const synced = new Promise<void>((r) => (markSynced = r));
  const byKey = (id: string) => {
    for (const c of bySecret.values()) if (c.accessKeyId === id) return c;
    return undefined;
  };
  return {
    namespace,
    async lookup(id) {
      let timer: NodeJS.Timeout | undefined;
      const ok = await Promise.race([
        synced.then(() => true),
        new Promise<false>((r) => (timer = setTimeout(() => r(false), 5_000))),
      ]);
      clearTimeout(timer);
      if (!ok) {
        throw gatewayError(
          'AuthUnavailable',
          `the gateway has not yet read the invoke credentials (Secrets labelled ${invokeCredentialsLabel} in namespace ${namespace}); try again`,
          1,
        );
      }
      return byKey(id);
    },
    async run(signal) {
      const key = (s: V1Secret) => `${s.metadata?.namespace}/${s.metadata?.name}`;
      await startInformer<V1Secret>(kc, {
        name: 'invoke-credentials',
        path: `/api/v1/namespaces/${namespace}/secrets`,
        labelSelector: invokeCredentialsLabel,
        list: paginated((page) =>
          core.listNamespacedSecret({ namespace, labelSelector: invokeCredentialsLabel, ...page }),
        ),
        onChange: (s) => {
          const c = credentialOf(s);
          if (typeof c === 'string') {
            bySecret.delete(key(s));
            log(`invoke credentials: ${c}; it is ignored`);
          } else bySecret.set(key(s), c);
        },
        onDelete: (s) => bySecret.delete(key(s)),
        log,
        signal,
      });
      markSynced();
      await new Promise<void>((r) => {
        if (signal.aborted) r();
        else signal.addEventListener('abort', () => r(), { once: true });
      });
    },
  };
}

/** A signed request's headers, checked: whose key it names, before its body is read. */
export interface CheckedSignature {
  auth: SigV4Authorization;
  credential: InvokeCredential;
}

/**
 * All of a SigV4-signed request's checks that need no body: its Authorization header, its time
 * (at most 5 minutes off), its service, and a Secret holding its access key. Throws Lambda's
 * 403s: `MissingAuthenticationToken` without a signature, `InvalidSignature`, and
 * `UnrecognizedClient` for a key no Secret holds. A request refused here has its body left
 * unread.
 */
export async function checkSignedHead(
  credentials: InvokeCredentials,
  req: SignedHead,
  now: number,
): Promise<CheckedSignature> {
  if (!isSigV4(req.headers)) {
    throw gatewayError(
      'MissingAuthenticationToken',
      'Missing Authentication Token: sign the request with SigV4 (an AWS SDK or the AWS CLI does) or send a Kubernetes bearer token',
    );
  }
  const auth = parseAuthorization(req.headers.authorization!);
  if (typeof auth === 'string') throw gatewayError('InvalidSignature', auth);
  const time = requestTime(req.headers);
  if (time === undefined) {
    throw gatewayError(
      'InvalidSignature',
      'Authorization header requires existence of either a X-Amz-Date or a Date header',
    );
  }
  const skew = skewRefusal(time, now);
  if (skew !== undefined) {
    throw gatewayError('InvalidSignature', `${skew}: set the client's clock right`);
  }
  if (auth.service !== sigv4Service) {
    throw gatewayError(
      'InvalidSignature',
      `Credential should be scoped to correct service: '${sigv4Service}', not '${auth.service}'`,
    );
  }
  const credential = await credentials.lookup(auth.accessKeyId);
  if (!credential) {
    throw gatewayError(
      'UnrecognizedClient',
      `The security token included in the request is invalid: no Secret labelled ${invokeCredentialsLabel} in namespace ${credentials.namespace} holds the access key id ${auth.accessKeyId}`,
    );
  }
  return { auth, credential };
}

/**
 * The signature of a request whose headers `checkSignedHead` passed, over its body: the identity
 * of the ServiceAccount its key acts as, or `InvalidSignature`.
 */
export function verifySigned(
  { auth, credential }: CheckedSignature,
  req: SignedRequest,
): { identity: Identity; accessKeyId: string } {
  const expected = signature(credential.secretAccessKey, auth, stringToSign(req, auth));
  if (!sameSignature(expected, auth.signature) || !payloadMatches(req)) {
    throw gatewayError(
      'InvalidSignature',
      `The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method: sign with the secretAccessKey of the Secret that holds ${auth.accessKeyId}, and send the body and headers as signed`,
    );
  }
  return {
    identity: serviceAccountIdentity(credential.namespace, credential.serviceAccount),
    accessKeyId: credential.accessKeyId,
  };
}

/** Who a SigV4-signed request is: `checkSignedHead`, then `verifySigned`. */
export async function authenticateSigned(
  credentials: InvokeCredentials,
  req: SignedRequest,
  now: number,
): Promise<{ identity: Identity; accessKeyId: string }> {
  return verifySigned(await checkSignedHead(credentials, req, now), req);
}
