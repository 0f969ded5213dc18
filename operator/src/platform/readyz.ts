/**
 * A replica's `GET /readyz`, as the platforms ask it of a starting replica: ready (200), not yet,
 * or failed for good because its handler did not load, with the runtime's error (a 503 whose body
 * is `{errorType, errorMessage}` JSON; docs/runtime.md).
 */
import { get as httpGet, type Agent } from 'node:http';
import type { InitFailure } from './platform.js';

export type Readiness =
  { ready: true; initError?: undefined } | { ready: false; initError?: InitFailure };

/** The most of a failed replica's answer read: an error's type and message. */
const maxBodyBytes = 16 * 1024;

/** Asks `url`'s /readyz once, within `timeoutMs`; any failure to answer is "not yet". */
export function probeReadyz(
  url: string,
  o: { agent: Agent; signal: AbortSignal; timeoutMs: number },
): Promise<Readiness> {
  return new Promise((resolve) => {
    if (o.signal.aborted) return resolve({ ready: false });
    const req = httpGet(
      `${url}/readyz`,
      { agent: o.agent, signal: AbortSignal.any([o.signal, AbortSignal.timeout(o.timeoutMs)]) },
      (res) => {
        if (res.statusCode === 200) {
          res.resume();
          res.on('end', () => resolve({ ready: true }));
          res.on('error', () => resolve({ ready: false }));
          return;
        }
        const json = res.statusCode === 503 && /json/.test(res.headers['content-type'] ?? '');
        if (!json) {
          res.resume();
          res.on('end', () => resolve({ ready: false }));
          res.on('error', () => resolve({ ready: false }));
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size <= maxBodyBytes) chunks.push(c);
        });
        res.on('error', () => resolve({ ready: false }));
        res.on('end', () => resolve({ ready: false, initError: initFailure(chunks) }));
      },
    );
    req.on('error', () => resolve({ ready: false }));
  });
}

function initFailure(chunks: Buffer[]): InitFailure | undefined {
  try {
    const v = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Partial<InitFailure>;
    if (typeof v.errorType !== 'string' || typeof v.errorMessage !== 'string') return undefined;
    return { errorType: v.errorType, errorMessage: v.errorMessage };
  } catch {
    return undefined;
  }
}
