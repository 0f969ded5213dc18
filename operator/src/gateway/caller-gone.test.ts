import { once } from 'node:events';
import {
  createServer,
  request,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { responseGone } from './caller-gone.js';

let server: Server | undefined;

afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((r) => server?.close(r) ?? r(undefined));
  server = undefined;
});

/** A server whose requests wait for the test; resolves with the first request's response. */
async function held(): Promise<{ port: number; response: Promise<ServerResponse> }> {
  let take!: (res: ServerResponse) => void;
  const response = new Promise<ServerResponse>((r) => (take = r));
  server = createServer((_req, res) => take(res));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { port: (server.address() as AddressInfo).port, response };
}

function call(port: number) {
  const req = request({ host: '127.0.0.1', port, method: 'POST', path: '/' });
  req.on('error', () => undefined);
  req.end('{}');
  return req;
}

describe('responseGone', () => {
  it('aborts, and calls its listener, when the caller disconnects before the answer', async () => {
    const { port, response } = await held();
    const req = call(port);
    const res = await response;
    const gone = responseGone(res);
    expect(gone.aborted).toBe(false);
    let calls = 0;
    gone.addEventListener('abort', () => calls++, { once: true });
    req.destroy();
    await once(res, 'close');
    expect(gone.aborted).toBe(true);
    expect(calls).toBe(1);
  });

  it('does not abort when the answer was written whole', async () => {
    const { port, response } = await held();
    const req = call(port);
    const res = await response;
    const gone = responseGone(res);
    let calls = 0;
    gone.addEventListener('abort', () => calls++);
    const answered = once(req, 'response');
    const closed = once(res, 'close');
    res.end('ok');
    const [answer] = (await answered) as [IncomingMessage];
    answer.resume();
    await closed;
    expect(gone.aborted).toBe(false);
    expect(calls).toBe(0);
  });

  it('stops listening once the listener is removed', async () => {
    const { port, response } = await held();
    const req = call(port);
    const res = await response;
    const gone = responseGone(res);
    let calls = 0;
    const listener = () => calls++;
    gone.addEventListener('abort', listener);
    expect(res.listenerCount('close')).toBeGreaterThan(0);
    const before = res.listenerCount('close');
    gone.removeEventListener('abort', listener);
    expect(res.listenerCount('close')).toBe(before - 1);
    req.destroy();
    await once(res, 'close');
    expect(gone.aborted).toBe(true);
    expect(calls).toBe(0);
  });
});
