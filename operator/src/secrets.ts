/** Secrets read from the API server, for the credentials Functions name (dead letters, sources). */
import { ApiException, CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { describeError } from './errors.js';
import type { SecretReader } from './functions.js';

export function clusterSecrets(kc: KubeConfig): SecretReader {
  const core = kc.makeApiClient(CoreV1Api);
  return async (namespace, name) => {
    try {
      const secret = await core.readNamespacedSecret({ namespace, name });
      const data: Record<string, string> = {};
      for (const [k, v] of Object.entries(secret.data ?? {})) {
        data[k] = Buffer.from(v, 'base64').toString('utf8');
      }
      return { ...data, ...secret.stringData };
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) {
        throw new Error(
          `Secret ${namespace}/${name} not found: create it in the Function's namespace`,
        );
      }
      throw new Error(`Secret ${namespace}/${name} could not be read: ${describeError(err)}`);
    }
  };
}
