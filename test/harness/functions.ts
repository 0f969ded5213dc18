/** Function resources in a test API server, through a kubeconfig: create, read, patch, delete, wait. */
import * as k8s from '@kubernetes/client-node';
import type { EddyFunction, FunctionSpec } from '../../operator/src/api/types.js';
import { waitFor } from './wait.js';

const group = 'eddy.dev';
const version = 'v1alpha1';
const plural = 'functions';

export function functionsIn(kc: k8s.KubeConfig, namespace: string) {
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const get = async (name: string) =>
    (await custom.getNamespacedCustomObject({
      group,
      version,
      namespace,
      plural,
      name,
    })) as EddyFunction;
  return {
    get,
    create: async (name: string, spec: FunctionSpec | Record<string, unknown>) =>
      (await custom.createNamespacedCustomObject({
        group,
        version,
        namespace,
        plural,
        body: { apiVersion: `${group}/${version}`, kind: 'Function', metadata: { name }, spec },
      })) as EddyFunction,
    patch: (name: string, patch: object) =>
      custom.patchNamespacedCustomObject(
        { group, version, namespace, plural, name, body: patch },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      ),
    delete: (name: string) =>
      custom.deleteNamespacedCustomObject({ group, version, namespace, plural, name }),
    /** Resolves once the Function no longer exists (its finalizer has run). */
    gone: (name: string, timeoutMs?: number) =>
      waitFor(
        `Function ${namespace}/${name} to be gone`,
        async () => {
          try {
            await get(name);
            return undefined;
          } catch (err) {
            return err instanceof k8s.ApiException && err.code === 404 ? true : undefined;
          }
        },
        timeoutMs,
      ),
  };
}
