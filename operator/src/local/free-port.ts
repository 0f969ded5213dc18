/** Whether the local stack can listen where it was told, before it starts what listens there. */
import { createServer } from 'node:net';
import { portTakenOr } from '../errors.js';

/**
 * Resolves with `port` once a listener could take it on `host` (for 0, with the free port the
 * system gave), and rejects with PortTaken when another process holds it. For stores started
 * as other processes (MinIO), which would otherwise fail later and less clearly.
 */
export function freePortOn(listener: string, host: string, port: number): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    const probe = createServer();
    probe.once('error', (err) => reject(portTakenOr(err, listener, host, port)));
    probe.listen(port, host, () => {
      const { port: taken } = probe.address() as { port: number };
      probe.close(() => resolve(taken));
    });
  });
}
