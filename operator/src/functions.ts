/**
 * The Functions a process knows about, wherever they come from: the shared informer cache in a
 * cluster, the manifest files in the local stack. The gateway, autoscaler, platforms and
 * sources read Functions only through this.
 */
import type { EddyFunction } from './api/types.js';

export interface FunctionStore {
  get(namespace: string, name: string): EddyFunction | undefined;
  /** Every Function, or those of one namespace. */
  list(namespace?: string): readonly EddyFunction[];
  /** Called on every add, change and delete. Returns an unsubscribe. */
  onChange(listener: (fn: EddyFunction, deleted: boolean) => void): () => void;
}

/** Reads a Secret's data (decoded) in a namespace; rejects naming the Secret when it is missing. */
export type SecretReader = (namespace: string, name: string) => Promise<Record<string, string>>;

/** A FunctionStore held in memory: the local stack's, and the base of tests. */
export class MemoryFunctionStore implements FunctionStore {
  private readonly byKey = new Map<string, EddyFunction>();
  private readonly listeners = new Set<(fn: EddyFunction, deleted: boolean) => void>();

  get(namespace: string, name: string): EddyFunction | undefined {
    return this.byKey.get(`${namespace}/${name}`);
  }

  list(namespace?: string): EddyFunction[] {
    const all = [...this.byKey.values()];
    return namespace === undefined ? all : all.filter((f) => f.metadata.namespace === namespace);
  }

  onChange(listener: (fn: EddyFunction, deleted: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  set(fn: EddyFunction): void {
    this.byKey.set(`${fn.metadata.namespace}/${fn.metadata.name}`, fn);
    for (const l of this.listeners) l(fn, false);
  }

  delete(namespace: string, name: string): void {
    const fn = this.byKey.get(`${namespace}/${name}`);
    if (!fn) return;
    this.byKey.delete(`${namespace}/${name}`);
    for (const l of this.listeners) l(fn, true);
  }
}
