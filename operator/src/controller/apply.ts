/**
 * Server-side apply that writes only when needed. A child is applied when the desired object
 * changed since the last apply (a hash kept on the child) or when someone changed a field the
 * operator sets (drift). Unchanged Functions cause no writes, and neither does an informer cache
 * that has not yet shown the operator its own last write.
 */
import { createHash } from 'node:crypto';
import {
  ApiException,
  PatchStrategy,
  type KubernetesObject,
  type KubernetesObjectApi,
} from '@kubernetes/client-node';
import { parseQuantity } from '../api/quantity.js';
import { fieldManager } from './desired.js';

export const appliedHashAnnotation = 'eddy.dev/applied-hash';

function sameScalar(desired: unknown, live: unknown): boolean {
  if (desired === live) return true;
  // The API server rewrites quantities into its canonical form (0.5Gi becomes 512Mi).
  if (typeof desired === 'string' && typeof live === 'string') {
    const a = parseQuantity(desired);
    const b = parseQuantity(live);
    return a !== undefined && b !== undefined && Math.abs(a - b) <= Math.abs(a) * 1e-12;
  }
  return false;
}

function named(v: unknown): v is { name: string } {
  return v !== null && typeof v === 'object' && typeof (v as { name?: unknown }).name === 'string';
}

/**
 * True when every field of `desired` is in `live` with the same value. Fields the server or
 * others add are ignored; lists of named entries (env, containers, volumes) match by name.
 */
export function covers(live: unknown, desired: unknown): boolean {
  if (desired === null || typeof desired !== 'object') return sameScalar(desired, live);
  if (Array.isArray(desired)) {
    if (!Array.isArray(live)) return false;
    if (desired.every(named) && live.every(named)) {
      return desired.every((d) => live.some((l) => l.name === d.name && covers(l, d)));
    }
    return desired.length === live.length && desired.every((d, i) => covers(live[i], d));
  }
  if (live === null || typeof live !== 'object' || Array.isArray(live)) return false;
  const l = live as Record<string, unknown>;
  return Object.entries(desired as Record<string, unknown>).every(
    ([k, v]) => v === undefined || covers(l[k] ?? l[wireNames[k] ?? k], v),
  );
}

/**
 * Fields client-node's models name otherwise than the API (reserved words): desired objects are
 * typed with the model's name, while a cached object is in the model's form when it came from a
 * list and in the API's when it came from a watch event.
 */
const wireNames: Record<string, string> = { _from: 'from', _except: 'except' };

export function hashOf(obj: unknown): string {
  return createHash('sha256').update(JSON.stringify(obj)).digest('hex').slice(0, 20);
}

/** The desired object with its hash annotation, as it is applied. */
export function withHash<T extends KubernetesObject>(desired: T): T {
  const hash = hashOf(desired);
  return {
    ...desired,
    metadata: {
      ...desired.metadata,
      annotations: { ...desired.metadata?.annotations, [appliedHashAnnotation]: hash },
    },
  };
}

/** Whether `live` already is what applying `desired` (with its hash) would make it. */
export function upToDate(
  live: KubernetesObject | undefined,
  desiredWithHash: KubernetesObject,
): boolean {
  if (!live) return false;
  const want = desiredWithHash.metadata?.annotations?.[appliedHashAnnotation];
  // Objects from a list carry no apiVersion or kind (only the list does): compare the rest.
  const { apiVersion: _a, kind: _k, ...rest } = desiredWithHash;
  return live.metadata?.annotations?.[appliedHashAnnotation] === want && covers(live, rest);
}

export async function serverSideApply<T extends KubernetesObject>(
  client: KubernetesObjectApi,
  obj: T,
): Promise<T> {
  // force: fields someone else changed (kubectl edit) are taken back, which is the point.
  return client.patch(obj, undefined, undefined, fieldManager, true, PatchStrategy.ServerSideApply);
}

/**
 * A resourceVersion no object has (etcd counts revisions from 1 and its first write is 2). As the
 * precondition of an apply it fails with 409 Conflict on any object that exists; when the apply
 * creates the object the API server ignores it. The Java Operator SDK creates dependents this way.
 */
const noObjectHasThisVersion = '1';

/**
 * Server-side apply that only creates: the object is made, its fields owned by the operator's
 * field manager through an Apply entry (as every later apply's, so a field dropped from the desired
 * object later is removed), unless an object of that name already exists, the operator's or
 * anyone else's. Then nothing is written and the answer is undefined.
 *
 * A plain create (POST) would not do: its fields belong to an Update entry that later applies do
 * not own, so a field removed from the desired object would stay forever.
 */
export async function createByApply<T extends KubernetesObject>(
  client: KubernetesObjectApi,
  obj: T,
): Promise<T | undefined> {
  try {
    return await serverSideApply(client, {
      ...obj,
      metadata: { ...obj.metadata, resourceVersion: noObjectHasThisVersion },
    });
  } catch (err) {
    if (err instanceof ApiException && err.code === 409) return undefined;
    throw err;
  }
}

/**
 * Orders two resourceVersions of one object: negative when `a` is older, 0 when equal, positive
 * when newer; undefined when either is not an integer. The API server's versions are integers that
 * only grow (etcd revisions; Kubernetes 1.35 promises as much to clients, KEP-5504).
 */
export function compareResourceVersions(
  a: string | undefined,
  b: string | undefined,
): number | undefined {
  const integer = /^[1-9][0-9]*$/;
  if (a === undefined || b === undefined || !integer.test(a) || !integer.test(b)) return undefined;
  return a.length !== b.length ? a.length - b.length : a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Objects as this process last wrote them (the API server's answers), until the informer cache
 * shows them: a watch event arrives some time after the write, and a reconcile in between would
 * otherwise take the cache's older copy and write the same again. An entry goes once the cache
 * holds that version or a newer one (someone else's change), and at the latest after `maxAgeMs`;
 * a cache still behind then costs a needless write, never a wrong one.
 */
export class RecentWrites {
  private readonly entries = new Map<string, { obj: KubernetesObject; at: number }>();

  constructor(
    private readonly maxAgeMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  remember(key: string, obj: KubernetesObject): void {
    // Without managedFields, as the caches keep objects: they are most of an object's size.
    const { managedFields: _m, ...metadata } = obj.metadata ?? {};
    this.entries.delete(key); // re-inserted last: the map stays ordered by age
    this.entries.set(key, { obj: { ...obj, metadata }, at: this.now() });
    for (const [k, e] of this.entries) {
      if (this.now() - e.at <= this.maxAgeMs) break;
      this.entries.delete(k);
    }
  }

  /** The newer of the cached object and the one written last (while the cache lacks it, that). */
  latest<T extends KubernetesObject>(key: string, cached: T | undefined): T | undefined {
    const entry = this.entries.get(key);
    if (!entry) return cached;
    const order = cached
      ? compareResourceVersions(
          cached.metadata?.resourceVersion,
          entry.obj.metadata?.resourceVersion,
        )
      : -1;
    if (this.now() - entry.at > this.maxAgeMs || order === undefined || order >= 0) {
      this.entries.delete(key);
      return cached;
    }
    return entry.obj as T;
  }

  get size(): number {
    return this.entries.size;
  }
}
