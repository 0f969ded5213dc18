/**
 * Answers the API server gave, kept for a while so that a warm caller costs no request: bounded
 * in entries (least recently used go first), each kept for a time that depends on the answer
 * (allow longer than deny), and identical questions asked at once share one request.
 */

export interface DecisionCacheOptions<V> {
  /** Most entries kept; past it the least recently used is dropped. */
  maxEntries: number;
  /** How long an answer may be reused, in ms; 0 keeps it not at all. */
  ttlMs: (value: V) => number;
  /** The clock, in ms; tests pass their own. */
  now?: () => number;
}

interface Entry<V> {
  value: V;
  expiresAt: number;
}

export class DecisionCache<V> {
  private readonly entries = new Map<string, Entry<V>>();
  private readonly pending = new Map<string, Promise<V>>();
  private readonly now: () => number;

  constructor(private readonly o: DecisionCacheOptions<V>) {
    if (!(o.maxEntries >= 1)) throw new Error(`maxEntries must be at least 1, not ${o.maxEntries}`);
    this.now = o.now ?? Date.now;
  }

  /** The answer kept for `key` if it has not expired, else `load`'s (shared while it runs). */
  get(key: string, load: () => Promise<V>): Promise<V> {
    const hit = this.peek(key);
    if (hit !== undefined) return Promise.resolve(hit);
    const running = this.pending.get(key);
    if (running) return running;
    // The answer's age counts from the question: it may be reused at most ttl after it was asked.
    const askedAt = this.now();
    const p = load().then(
      (value) => {
        this.pending.delete(key);
        this.set(key, value, askedAt);
        return value;
      },
      (err: unknown) => {
        // Failures (the API server unreachable) are not answers: the next caller asks again.
        this.pending.delete(key);
        throw err;
      },
    );
    this.pending.set(key, p);
    return p;
  }

  /** The unexpired answer for `key`, made the most recently used; undefined if none. */
  peek(key: string): V | undefined {
    const e = this.entries.get(key);
    if (e === undefined) return undefined;
    this.entries.delete(key);
    if (this.now() >= e.expiresAt) return undefined;
    this.entries.set(key, e);
    return e.value;
  }

  get size(): number {
    return this.entries.size;
  }

  private set(key: string, value: V, askedAt: number): void {
    const ttl = this.o.ttlMs(value);
    this.entries.delete(key);
    if (ttl <= 0) return;
    this.entries.set(key, { value, expiresAt: askedAt + ttl });
    while (this.entries.size > this.o.maxEntries) {
      // A Map iterates in insertion order: the first key is the least recently used.
      this.entries.delete(this.entries.keys().next().value!);
    }
  }
}
