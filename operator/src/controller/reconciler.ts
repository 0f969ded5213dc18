/**
 * The reconciler, told as a story: get the Function; if it is being deleted, clean up what lives
 * outside the cluster and let it go; keep a finalizer where there is such to clean; apply the children it should
 * have; write what was observed. An error thrown means "retry with backoff"; a problem with the
 * spec is a condition, not a retry.
 *
 * It reads the informer caches, and the API server only when a name it means to create is taken.
 * The Function as it last wrote it counts until the cache shows it (RecentWrites), so a reconcile
 * that runs before the watch event of its own status write does not write that status again.
 */
import {
  ApiException,
  CustomObjectsApi,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type KubernetesObject,
  type ObjectCache,
  type V1ConfigMap,
  type V1Deployment,
  type V1NetworkPolicy,
  type V1Service,
} from '@kubernetes/client-node';
import { group, plural, version, type EddyFunction, type FunctionStatus } from '../api/types.js';
import { createByApply, RecentWrites, serverSideApply, upToDate, withHash } from './apply.js';
import {
  codeConfigMapName,
  desiredCodeConfigMap,
  desiredDeployment,
  desiredNetworkPolicy,
  desiredService,
  fieldManager,
  functionUrl,
  type DesiredSettings,
} from './desired.js';
import type { Recorder } from './events.js';
import { computeStatus, type Observed } from './status.js';
import type { TriggerStates } from '../sources/states.js';
import { describeError } from '../errors.js';

export const finalizer = 'eddy.dev/cleanup';

/**
 * Cleans up what a Function set up outside the cluster (bucket notifications, say). `needed`
 * tells whether a Function has anything there; the finalizer is kept only on those that do (a
 * cleaner without `needed` applies to every Function).
 */
export type Cleaner = ((fn: EddyFunction, signal: AbortSignal) => Promise<void>) & {
  needed?: (fn: EddyFunction) => boolean;
};

export interface ReconcilerSettings extends DesiredSettings {
  /** Longest one cleanup attempt may take. */
  cleanupAttemptMs: number;
  /** After this long since deletion began, cleanup is abandoned and the Function goes anyway. */
  cleanupDeadlineMs: number;
}

export interface Caches {
  functions: ObjectCache<EddyFunction>;
  deployments: ObjectCache<V1Deployment>;
  services: ObjectCache<V1Service>;
  configMaps: ObjectCache<V1ConfigMap>;
  networkPolicies: ObjectCache<V1NetworkPolicy>;
}

export interface ReconcilerDeps {
  kc: KubeConfig;
  caches: Caches;
  settings: ReconcilerSettings;
  cleaners: Cleaner[];
  recorder: Recorder;
  log: (message: string) => void;
  now?: () => Date;
  /** What the sources report about each trigger. */
  states?: TriggerStates;
}

export interface Result {
  /** Look again after this long, though nothing changed (a cleanup to retry). */
  requeueAfterMs?: number;
}

class NameConflict extends Error {}

/** How long the Function as last written counts while the cache has not shown it. */
const cacheLagAllowanceMs = 10_000;

export class Reconciler {
  private readonly objects: KubernetesObjectApi;
  private readonly custom: CustomObjectsApi;
  private readonly now: () => Date;
  private readonly written: RecentWrites;

  constructor(private readonly d: ReconcilerDeps) {
    this.objects = KubernetesObjectApi.makeApiClient(d.kc);
    this.custom = d.kc.makeApiClient(CustomObjectsApi);
    this.now = d.now ?? (() => new Date());
    this.written = new RecentWrites(cacheLagAllowanceMs);
  }

  async reconcile(key: string): Promise<Result> {
    const [namespace, name] = key.split('/') as [string, string];
    // 1. Get the Function; gone means nothing to do (its children go with it).
    const cached = this.d.caches.functions.get(name, namespace);
    if (!cached) return {};
    let fn = this.written.latest(cached.metadata.uid!, cached)!;

    // 2. Being deleted: clean up outside the cluster, then drop the finalizer.
    if (fn.metadata.deletionTimestamp) return this.finalize(fn);

    // 3. The finalizer, so that deletion waits for that cleanup, only where there is something to
    // clean up: a write per Function saved, and nothing to wait for on delete otherwise.
    const finalizers = fn.metadata.finalizers ?? [];
    const needed = this.d.cleaners.some((c) => c.needed?.(fn) ?? true);
    if (needed !== finalizers.includes(finalizer)) {
      fn = await this.setFinalizers(
        fn,
        needed ? [...finalizers, finalizer] : finalizers.filter((f) => f !== finalizer),
      );
      this.written.remember(fn.metadata.uid!, fn);
    }

    // 4. The children, applied only where they differ from what should be.
    const states = this.d.states;
    const observed: Observed = states ? { triggers: (t) => states.get(key, t) } : {};
    try {
      observed.deployment = await this.applyChildren(fn);
    } catch (err) {
      if (err instanceof NameConflict) {
        observed.deployError = { reason: 'NameConflict', message: err.message };
      } else if (
        err instanceof ApiException &&
        err.code >= 400 &&
        err.code < 500 &&
        err.code !== 409 &&
        err.code !== 429
      ) {
        // The API server refused what the spec makes (an invalid env entry, say): a condition.
        observed.deployError = { reason: 'ApplyRefused', message: describeError(err) };
      } else {
        throw err;
      }
    }

    // 5. Status: what was observed, written only when it changed.
    await this.writeStatus(
      fn,
      computeStatus(fn, observed, functionUrl(fn, this.d.settings), this.now()),
    );
    return {};
  }

  private async applyChildren(fn: EddyFunction): Promise<V1Deployment> {
    const { caches, settings } = this.d;
    const created: string[] = [];
    const codeMap = desiredCodeConfigMap(fn);
    if (codeMap) await this.ensure(fn, caches.configMaps, codeMap, created);
    else await this.removeOwned(fn, caches.configMaps, codeConfigMapName(fn), 'v1', 'ConfigMap');
    const deployment = await this.ensure(
      fn,
      caches.deployments,
      desiredDeployment(fn, settings),
      created,
    );
    await this.ensure(fn, caches.services, desiredService(fn), created);
    await this.ensure(fn, caches.networkPolicies, desiredNetworkPolicy(fn, settings), created);
    if (created.length > 0)
      this.d.recorder.event(fn, 'Normal', 'Created', `created ${created.join(', ')}`);
    return deployment;
  }

  /**
   * Applies `desired` unless the live object already matches it; returns the live object, and
   * adds "<Kind> <name>" to `created` when it made it. An object the cache does not have is
   * created only if its name is free: one request, where reading first took two.
   */
  private async ensure<T extends KubernetesObject>(
    fn: EddyFunction,
    cache: ObjectCache<T>,
    desired: T,
    created: string[],
  ): Promise<T> {
    const target = withHash(desired);
    const name = desired.metadata!.name!;
    let live = cache.get(name, fn.metadata.namespace);
    if (!live) {
      const made = await createByApply(this.objects, target);
      if (made) {
        created.push(`${desired.kind} ${name}`);
        return made;
      }
      // The name is taken: by this Function's object that the cache has not shown yet, or by
      // someone else's (the cache holds only objects with the operator's label).
      live = (await this.read(desired)) as T | undefined;
      if (!live) throw new Error(`${desired.kind} ${name} was deleted while being created`);
      if (!isOwnedBy(live, fn)) {
        throw new NameConflict(
          `a ${desired.kind} named ${name} already exists in ${fn.metadata.namespace} and is not this Function's: rename the Function or remove the ${desired.kind}`,
        );
      }
    }
    if (upToDate(live, target)) return live;
    return serverSideApply(this.objects, target);
  }

  private async read(obj: KubernetesObject): Promise<KubernetesObject | undefined> {
    try {
      return await this.objects.read({
        apiVersion: obj.apiVersion!,
        kind: obj.kind!,
        metadata: { name: obj.metadata!.name!, namespace: obj.metadata!.namespace! },
      });
    } catch (err) {
      if (err instanceof ApiException && err.code === 404) return undefined;
      throw err;
    }
  }

  private async removeOwned<T extends KubernetesObject>(
    fn: EddyFunction,
    cache: ObjectCache<T>,
    name: string,
    apiVersion: string,
    kind: string,
  ): Promise<void> {
    const live = cache.get(name, fn.metadata.namespace);
    if (!live || !isOwnedBy(live, fn)) return;
    try {
      await this.objects.delete({
        apiVersion,
        kind,
        metadata: { name, namespace: fn.metadata.namespace },
      });
    } catch (err) {
      if (!(err instanceof ApiException && err.code === 404)) throw err;
    }
  }

  private async finalize(fn: EddyFunction): Promise<Result> {
    if (!(fn.metadata.finalizers ?? []).includes(finalizer)) return {};
    const deletedAt = new Date(fn.metadata.deletionTimestamp!).getTime();
    const pastDeadline = this.now().getTime() - deletedAt > this.d.settings.cleanupDeadlineMs;
    const failures: string[] = [];
    for (const clean of this.d.cleaners) {
      try {
        await clean(fn, AbortSignal.timeout(this.d.settings.cleanupAttemptMs));
      } catch (err) {
        failures.push(err instanceof Error ? err.message : String(err));
      }
    }
    if (failures.length > 0 && !pastDeadline) {
      this.d.recorder.event(
        fn,
        'Warning',
        'CleanupFailed',
        `cleanup failed, retrying: ${failures.join('; ')}`,
      );
      return { requeueAfterMs: Math.min(10_000, this.d.settings.cleanupDeadlineMs / 4) };
    }
    if (failures.length > 0) {
      this.d.recorder.event(
        fn,
        'Warning',
        'CleanupAbandoned',
        `cleanup still failing ${Math.round(this.d.settings.cleanupDeadlineMs / 1000)} s after deletion; deleting anyway (${failures.join('; ')}). Remove what is left by hand.`,
      );
    }
    await this.setFinalizers(
      fn,
      (fn.metadata.finalizers ?? []).filter((f) => f !== finalizer),
    );
    return {};
  }

  private async setFinalizers(fn: EddyFunction, finalizers: string[]): Promise<EddyFunction> {
    return (await this.custom.patchNamespacedCustomObject(
      {
        group,
        version,
        plural,
        namespace: fn.metadata.namespace,
        name: fn.metadata.name,
        // The resourceVersion makes the patch fail (409, retried) if someone changed the list meanwhile.
        body: { metadata: { finalizers, resourceVersion: fn.metadata.resourceVersion } },
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    )) as EddyFunction;
  }

  private async writeStatus(fn: EddyFunction, status: FunctionStatus): Promise<void> {
    if (sameStatus(fn.status, status)) return;
    const before = new Map((fn.status?.conditions ?? []).map((c) => [c.type, c.status]));
    const written = (await this.custom.patchNamespacedCustomObjectStatus(
      {
        group,
        version,
        plural,
        namespace: fn.metadata.namespace,
        name: fn.metadata.name,
        // A merge patch of the whole status (fields gone are set to null): the operator is the
        // status's only writer, and a merge patch costs the API server less than an apply.
        body: { status: { ...cleared(fn.status), ...status } },
        fieldManager,
      },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    )) as EddyFunction;
    this.written.remember(fn.metadata.uid!, written);
    // Notable transitions only: becoming ready, ceasing to be, and what stops deployment.
    for (const c of status.conditions ?? []) {
      const was = before.get(c.type);
      if (was === c.status) continue;
      if (c.type === 'Ready') {
        if (c.status === 'True') this.d.recorder.event(fn, 'Normal', c.reason, c.message);
        else if (was === 'True') this.d.recorder.event(fn, 'Warning', c.reason, c.message);
      } else if (c.status === 'False') {
        this.d.recorder.event(fn, 'Warning', c.reason, c.message);
      }
    }
  }
}

function isOwnedBy(obj: KubernetesObject, fn: EddyFunction): boolean {
  return (obj.metadata?.ownerReferences ?? []).some(
    (r) => r.uid === fn.metadata.uid && r.controller,
  );
}

/** Every top-level field of `status` set to null, so a merge patch removes those it leaves out. */
function cleared(status: FunctionStatus | undefined): Record<string, null> {
  return Object.fromEntries(Object.keys(status ?? {}).map((k) => [k, null]));
}

function sameStatus(a: FunctionStatus | undefined, b: FunctionStatus): boolean {
  return JSON.stringify(normalize(a ?? {})) === JSON.stringify(normalize(b));
}

function normalize(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(normalize);
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(
      Object.entries(v as Record<string, unknown>)
        .filter(([, x]) => x !== undefined)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, x]) => [k, normalize(x)]),
    );
  }
  return v;
}
