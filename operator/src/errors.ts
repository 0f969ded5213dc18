/** What went wrong, in one line a person can act on. */
import { ApiException } from '@kubernetes/client-node';

/**
 * The message of an error. For the API server's refusals that is its Status message (such as
 * `deployments.apps "x" is forbidden: User ... cannot patch ...`) with the HTTP code, rather
 * than the client's multi-line dump.
 */
export function describeError(err: unknown): string {
  if (err instanceof ApiException) {
    try {
      const status = JSON.parse(String(err.body)) as { message?: string };
      if (status.message) return `${status.message} (HTTP ${err.code})`;
    } catch {
      // not a Status object
    }
    return `HTTP ${err.code} from the API server`;
  }
  if (err instanceof Error) return err.message.split('\n')[0]!;
  return String(err);
}
