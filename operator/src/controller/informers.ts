/**
 * Informers that keep going: client-node's informer stops on any watch error but 410 Gone, so
 * each is restarted with a backoff, and the caller is told when it has its first full list.
 */
import {
  makeInformer,
  type Informer,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  type ObjectCache,
} from '@kubernetes/client-node';

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
}

export async function startInformer<T extends KubernetesObject>(
  kc: KubeConfig,
  o: InformerOptions<T>,
): Promise<Resilient<T>> {
  const informer = makeInformer<T>(kc, o.path, o.list, o.labelSelector);
  informer.on('add', o.onChange);
  informer.on('update', o.onChange);
  informer.on('delete', o.onDelete ?? o.onChange);
  let backoffMs = 500;
  let timer: NodeJS.Timeout | undefined;
  informer.on('connect', () => {
    backoffMs = 500;
  });
  informer.on('error', (err: unknown) => {
    if (o.signal.aborted) return;
    const message = err instanceof Error ? err.message : String(err);
    o.log(`${o.name} watch failed (${message}); restarting in ${backoffMs} ms`);
    timer = setTimeout(() => {
      if (!o.signal.aborted) informer.start().catch(() => undefined);
    }, backoffMs);
    backoffMs = Math.min(backoffMs * 2, 30_000);
  });
  o.signal.addEventListener(
    'abort',
    () => {
      clearTimeout(timer);
      void informer.stop();
    },
    { once: true },
  );
  await informer.start();
  return informer;
}
