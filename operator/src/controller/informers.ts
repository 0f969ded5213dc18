/**
 * Informers that keep going: client-node's informer stops on any watch error but 410 Gone, so
 * each is restarted with a backoff, and the caller is told when it has its first full list. Each
 * watch is bounded (request-deadlines.ts): one over a connection that stalled is cut and
 * restarted rather than leaving the cache silently stale.
 */
import {
  ListWatch,
  type Informer,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  type ObjectCache,
} from '@kubernetes/client-node';
import { boundedWatch, type BoundedWatchOptions } from '../request-deadlines.js';

export type Resilient<T extends KubernetesObject> = Informer<T> & ObjectCache<T>;

export interface InformerOptions<T extends KubernetesObject> {
  name: string;
  path: string;
  list: () => Promise<KubernetesListObject<T>>;
  labelSelector?: string;
  onChange: (obj: T) => void;
  onDelete?: (obj: T) => void;
  log: (message: string) => void;
  signal: AbortSignal;
  /** The bounds of each watch; tests shorten them. */
  watch?: BoundedWatchOptions;
  /** Makes the informer; by default client-node's ListWatch over a bounded watch. */
  makeInformer?: (
    kc: KubeConfig,
    path: string,
    list: () => Promise<KubernetesListObject<T>>,
    labelSelector?: string,
  ) => Resilient<T>;
}

/** A page of a list, as the API returns it. */
type Page<T extends KubernetesObject> = KubernetesListObject<T>;

/**
 * Lists in pages of `limit`, dropping managedFields page by page, so a large list never sits in
 * memory twice over (the response text and its objects) all at once.
 */
export function paginated<T extends KubernetesObject>(
  fetchPage: (page: { limit: number; _continue?: string }) => Promise<Page<T>>,
  limit = 250,
): () => Promise<KubernetesListObject<T>> {
  return async () => {
    const items: T[] = [];
    let next: string | undefined;
    let last: Page<T>;
    do {
      last = await fetchPage({ limit, ...(next ? { _continue: next } : {}) });
      for (const item of last.items) {
        if (item.metadata) delete item.metadata.managedFields;
        items.push(item);
      }
      // Typed lists carry the token as _continue; custom objects, as plain JSON, as continue.
      const meta: { _continue?: string; continue?: string } | undefined = last.metadata;
      next = meta?._continue ?? meta?.continue;
    } while (next);
    return { ...last, items };
  };
}

export async function startInformer<T extends KubernetesObject>(
  kc: KubeConfig,
  o: InformerOptions<T>,
): Promise<Resilient<T>> {
  const informer = o.makeInformer
    ? o.makeInformer(kc, o.path, o.list, o.labelSelector)
    : new ListWatch<T>(o.path, boundedWatch(kc, o.watch), o.list, false, o.labelSelector);
  // The cache keeps the very objects handed to these callbacks. managedFields are most of a
  // Deployment's size and nothing here reads them (drift is checked against the spec itself).
  const slim = (obj: T) => {
    if (obj.metadata) delete obj.metadata.managedFields;
    o.onChange(obj);
  };
  informer.on('add', slim);
  informer.on('update', slim);
  informer.on('delete', o.onDelete ?? o.onChange);
  let backoffMs = 500;
  let timer: NodeJS.Timeout | undefined;
  // Collects the errors of the start() under way. client-node says 'connect' before it lists and
  // reports a failed list or watch as 'error' while start() still resolves: an attempt succeeded
  // only if start() resolved with no 'error' meanwhile.
  let errors: unknown[] | undefined;
  const attempt = async (): Promise<unknown[]> => {
    const seen: unknown[] = (errors = []);
    try {
      await informer.start();
    } catch (err) {
      seen.push(err);
    } finally {
      errors = undefined;
    }
    // client-node goes on from its list to a watch even if stop() came meanwhile.
    if (o.signal.aborted) void informer.stop();
    return seen;
  };
  const restartLater = (err: unknown) => {
    if (o.signal.aborted) return;
    const message = err instanceof Error ? err.message : String(err);
    o.log(`${o.name} watch failed (${message}); restarting in ${backoffMs} ms`);
    timer = setTimeout(() => void restart(), backoffMs);
    backoffMs = Math.min(backoffMs * 2, 30_000);
  };
  const restart = async () => {
    timer = undefined;
    const seen = await attempt();
    if (seen.length === 0) backoffMs = 500;
    else restartLater(seen[0]);
  };
  informer.on('error', (err: unknown) => {
    // During a start() its outcome decides; otherwise a watch that was running has failed.
    if (errors) errors.push(err);
    else if (timer === undefined) restartLater(err);
  });
  const onAbort = () => {
    clearTimeout(timer);
    void informer.stop();
  };
  o.signal.addEventListener('abort', onAbort, { once: true });
  let seen = await attempt();
  // The API server asked for another try (429 from its priority and fairness queues, or a 5xx
  // while it starts): tried again with the backoff, a few times, before the caller hears of it.
  for (let retries = 0; retries < firstStartRetries && seen.length > 0; retries++) {
    if (o.signal.aborted || !askedToRetry(seen[0])) break;
    o.log(
      `${o.name} list or watch refused (${describe(seen[0])}); trying again in ${backoffMs} ms`,
    );
    await new Promise((resolve) => setTimeout(resolve, backoffMs));
    backoffMs = Math.min(backoffMs * 2, 30_000);
    seen = await attempt();
  }
  backoffMs = 500;
  if (seen.length > 0) {
    // The caller was promised a full list: it decides what a failed first one means.
    o.signal.removeEventListener('abort', onAbort);
    void informer.stop();
    throw seen[0];
  }
  return informer;
}

/** How many times a first list or watch the API server refused as busy is tried again. */
const firstStartRetries = 5;

/** Whether the API server asked for another try: 429, or a 5xx. */
function askedToRetry(err: unknown): boolean {
  const status = (err as { statusCode?: unknown } | undefined)?.statusCode;
  return typeof status === 'number' && (status === 429 || (status >= 500 && status <= 599));
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
