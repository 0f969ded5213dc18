/**
 * Whether a caller went away before its answer, as the dispatcher asks it. An AbortSignal
 * answers that; so does `responseGone`, which costs an invocation nothing until it has to wait
 * for a replica (an AbortController and a 'close' listener per request were about 4 % of the
 * gateway's CPU under load).
 */
import type { ServerResponse } from 'node:http';

/** The part of AbortSignal the dispatcher uses. */
export interface GoneSignal {
  readonly aborted: boolean;
  addEventListener(type: 'abort', listener: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', listener: () => void): void;
}

/**
 * Aborted once `res` has closed without its answer written whole: the caller disconnected (or
 * the connection broke) first. Listeners are attached to the response only while someone
 * listens, which the dispatcher does only while an invocation waits.
 */
export function responseGone(res: ServerResponse): GoneSignal {
  let listening: Map<() => void, () => void> | undefined;
  return {
    get aborted() {
      return res.closed && !res.writableFinished;
    },
    addEventListener(_type, listener) {
      if (listening?.has(listener)) return;
      const onClose = () => {
        listening?.delete(listener);
        if (!res.writableFinished) listener();
      };
      (listening ??= new Map()).set(listener, onClose);
      res.once('close', onClose);
    },
    removeEventListener(_type, listener) {
      const onClose = listening?.get(listener);
      if (onClose === undefined) return;
      listening!.delete(listener);
      res.removeListener('close', onClose);
    },
  };
}
