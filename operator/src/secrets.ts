/**
 * Secrets a Function names (trigger connections, S3 dead letters), read from the API server.
 * A Function's author may name any Secret of their namespace, and the key pair in it is then
 * sent to an endpoint of their choosing; so only Secrets labelled for the purpose may be used,
 * and {@link mayUseSecret} is the one place that decides it.
 */
import { ApiException, CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { describeError } from './errors.js';
import type { SecretReader } from './functions.js';

/** The label (value `"true"`) a Secret needs before a Function may name it. */
export const connectionLabel = 'eddy.dev/connection';

/** A Secret that exists but is not labelled for Functions' use. */
export class SecretNotAllowed extends Error {
  constructor(
    readonly namespace: string,
    readonly secretName: string,
  ) {
    super(
      `Secret ${namespace}/${secretName} is not labelled ${connectionLabel}: "true", so no Function may use it: if it holds only credentials meant for this trigger or dead letter, run \`kubectl label secret ${secretName} -n ${namespace} ${connectionLabel}=true\``,
    );
    this.name = 'SecretNotAllowed';
  }
}

/** Whether a Function may use a Secret with these labels; throws {@link SecretNotAllowed} if not. */
export function mayUseSecret(
  namespace: string,
  name: string,
  labels: Readonly<Record<string, string>> | undefined,
): void {
  if (labels?.[connectionLabel] !== 'true') throw new SecretNotAllowed(namespace, name);
}

export function clusterSecrets(kc: KubeConfig): SecretReader {
  const core = kc.makeApiClient(CoreV1Api);
  return async (namespace, name) => {
    let secret;
    try {
      secret = await core.readNamespacedSecret({ namespace, name });
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) {
        throw new Error(
          `Secret ${namespace}/${name} not found: create it in the Function's namespace`,
        );
      }
      throw new Error(`Secret ${namespace}/${name} could not be read: ${describeError(err)}`);
    }
    mayUseSecret(namespace, name, secret.metadata?.labels);
    const data: Record<string, string> = {};
    for (const [k, v] of Object.entries(secret.data ?? {})) {
      data[k] = Buffer.from(v, 'base64').toString('utf8');
    }
    return { ...data, ...secret.stringData };
  };
}
