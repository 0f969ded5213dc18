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

/**
 * A Kubernetes API request that got no complete answer within its deadline: the API server, or
 * the network to it, stalled. Callers retry as they retry any failed call.
 */
export class ApiRequestTimeout extends Error {
  override readonly name = 'ApiRequestTimeout';

  constructor(method: string, path: string, timeoutMs: number) {
    super(
      `the Kubernetes API did not answer ${method} ${path} within ${timeoutMs} ms: the API server or the network to it is stalled; the call is retried`,
    );
  }
}

/** An activation the Kubernetes API did not complete within its deadline; the gateway retries it. */
export class ActivationStalled extends Error {
  override readonly name = 'ActivationStalled';

  constructor(key: string, timeoutMs: number) {
    super(
      `the Kubernetes API did not complete the activation of ${key} within ${timeoutMs} ms: the API server or the network to it is stalled`,
    );
  }
}

/** A Kubernetes API call given up because the work that made it stopped (leading ended, say). */
export class ApiRequestAbandoned extends Error {
  override readonly name = 'ApiRequestAbandoned';

  constructor(method: string, path: string) {
    super(
      `${method} ${path} was abandoned: the work that made it stopped (this process stopped leading, or is stopping)`,
    );
  }
}

/**
 * A listener that cannot start because another process holds its port. `listener` names it as
 * a user knows it (`the gateway`, `the metrics endpoint`, `the S3 store`); the entry point that
 * chose the port adds how to choose another.
 */
export class PortTaken extends Error {
  override readonly name = 'PortTaken';

  constructor(
    readonly listener: string,
    readonly host: string,
    readonly port: number,
  ) {
    super(
      `${listener} cannot listen on ${host.includes(':') ? `[${host}]` : host}:${port}: another process is using port ${port}`,
    );
  }
}

/** `err` as a PortTaken when it is a listen error for a port in use; otherwise `err` itself. */
export function portTakenOr(err: Error, listener: string, host: string, port: number): Error {
  return (err as NodeJS.ErrnoException).code === 'EADDRINUSE'
    ? new PortTaken(listener, host, port)
    : err;
}
