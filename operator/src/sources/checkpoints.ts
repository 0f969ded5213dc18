/**
 * Where a source keeps its progress (a Kinesis shard's last sequence number, a poll's position,
 * a schedule's last fire) so that a restarted or newly elected operator resumes where the last
 * one stopped. In a cluster: one ConfigMap per trigger in the Function's namespace, owned by the
 * Function so that it goes with it. In the local stack: one JSON file per trigger.
 *
 * A ConfigMap holds at most 1 MiB: a source keeps a bounded summary here, never a list that
 * grows with the data.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  ApiException,
  KubernetesObjectApi,
  PatchStrategy,
  type KubeConfig,
  type V1ConfigMap,
} from '@kubernetes/client-node';
import type { EddyFunction } from '../api/types.js';
import { apiVersion, kind } from '../api/types.js';
import { fieldManager as operatorFieldManager, managedByLabel } from '../controller/desired.js';

export type Checkpoint = Record<string, string>;

export interface CheckpointStore {
  /** The trigger's saved progress; `{}` when there is none. */
  load(fn: EddyFunction, trigger: string): Promise<Checkpoint>;
  /** Replaces the trigger's saved progress. */
  save(fn: EddyFunction, trigger: string, data: Checkpoint): Promise<void>;
  /** Forgets it (the trigger was removed). */
  remove(fn: EddyFunction, trigger: string): Promise<void>;
}

/** The ConfigMap holding a trigger's progress. */
export function checkpointName(fn: EddyFunction, trigger: string): string {
  // Dots, which trigger names cannot hold, keep the two names apart: a-b + c and a + b-c differ.
  const name = `${fn.metadata.name}.${trigger}.source`;
  if (name.length <= 253) return name;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 16);
  return `${fn.metadata.name.slice(0, 253 - trigger.length - 25)}.${hash}.${trigger}.source`;
}

const fieldManager = 'eddy-sources';

export function configMapCheckpoints(kc: KubeConfig): CheckpointStore {
  const api = KubernetesObjectApi.makeApiClient(kc);
  const ref = (fn: EddyFunction, trigger: string) => ({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: checkpointName(fn, trigger), namespace: fn.metadata.namespace },
  });
  return {
    async load(fn, trigger) {
      try {
        const cm = await api.read<V1ConfigMap>(ref(fn, trigger));
        return { ...cm.data };
      } catch (err) {
        if (err instanceof ApiException && err.code === 404) return {};
        throw err;
      }
    },
    async save(fn, trigger, data) {
      const cm: V1ConfigMap = {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: {
          ...ref(fn, trigger).metadata,
          // The operator's label, which the chart's admission policy requires of every ConfigMap
          // the operator writes; but not the function label the reconciler's cache also selects:
          // a checkpoint written every second must not wake the reconciler.
          labels: {
            [managedByLabel]: operatorFieldManager,
            'app.kubernetes.io/part-of': 'eddy',
            'app.kubernetes.io/component': 'source-checkpoint',
            'eddy.dev/source-function': fn.metadata.name,
            'eddy.dev/source-trigger': trigger,
          },
          ...(fn.metadata.uid
            ? {
                ownerReferences: [
                  {
                    apiVersion,
                    kind,
                    name: fn.metadata.name,
                    uid: fn.metadata.uid,
                    blockOwnerDeletion: false,
                  },
                ],
              }
            : {}),
        },
        data,
      };
      await api.patch(cm, undefined, undefined, fieldManager, true, PatchStrategy.ServerSideApply);
    },
    async remove(fn, trigger) {
      try {
        await api.delete(ref(fn, trigger));
      } catch (err) {
        if (!(err instanceof ApiException && err.code === 404)) throw err;
      }
    },
  };
}

/** The local stack's: `<dir>/<namespace>.<function>.<trigger>.json`, written atomically. */
export function fileCheckpoints(dir: string): CheckpointStore {
  const path = (fn: EddyFunction, trigger: string) =>
    join(dir, `${fn.metadata.namespace}.${fn.metadata.name}.${trigger}.json`);
  return {
    async load(fn, trigger) {
      try {
        return JSON.parse(await readFile(path(fn, trigger), 'utf8')) as Checkpoint;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
        throw err;
      }
    },
    async save(fn, trigger, data) {
      await mkdir(dir, { recursive: true });
      const file = path(fn, trigger);
      await writeFile(`${file}.tmp`, JSON.stringify(data));
      await rename(`${file}.tmp`, file);
    },
    async remove(fn, trigger) {
      await rm(path(fn, trigger), { force: true });
    },
  };
}

/** Held in memory: for unit tests. */
export function memoryCheckpoints(): CheckpointStore & { data: Map<string, Checkpoint> } {
  const data = new Map<string, Checkpoint>();
  const key = (fn: EddyFunction, t: string) => `${fn.metadata.namespace}/${fn.metadata.name}/${t}`;
  return {
    data,
    load: async (fn, t) => ({ ...data.get(key(fn, t)) }),
    save: async (fn, t, d) => void data.set(key(fn, t), { ...d }),
    remove: async (fn, t) => void data.delete(key(fn, t)),
  };
}
