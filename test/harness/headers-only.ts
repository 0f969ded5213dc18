/**
 * A POST that sends its headers, declaring a body, and never the body: what a caller that stalls
 * looks like to a server. Resolves with the server's answer, or rejects after `timeoutMs`
 * without one.
 */
import { request } from 'node:http';

export function postHeadersOnly(
  url: string,
  path: string,
  headers: Record<string, string | number>,
  timeoutMs = 20_000,
): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: hostname, port: Number(port), method: 'POST', path, headers, timeout: timeoutMs },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () =>
      req.destroy(new Error(`no answer within ${timeoutMs} ms: the body was awaited`)),
    );
    req.on('error', reject);
    req.flushHeaders();
  });
}
