/**
 * Server-side apply that writes only when needed. A child is applied when the desired object
 * changed since the last apply (a hash kept on the child) or when someone changed a field the
 * operator sets (drift). Unchanged Functions cause no writes.
 */
import { createHash } from 'node:crypto';
import {
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
    ([k, v]) => v === undefined || covers(l[k], v),
  );
}

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
