/** The watching thread of watchdog.ts. */
import { workerData } from 'node:worker_threads';
import { timeoutMessage } from './contract/errors.js';
import { consoleLine, write } from './logs.js';
import { DEADLINE, HEARTBEAT, heartbeatMs, type WatchdogData } from './watchdog.js';

const { shared, base, logFormat, timeoutMs } = workerData as WatchdogData;
const view = new Int32Array(shared);
// Past the deadline by this much with no heartbeat since before it: the loop is stuck.
const graceMs = 2.5 * heartbeatMs;

setInterval(() => {
  const deadline = Atomics.load(view, DEADLINE);
  if (deadline === 0) return;
  const now = Date.now() - base;
  if (now > deadline + graceMs && Atomics.load(view, HEARTBEAT) < deadline) {
    write(
      consoleLine(
        logFormat,
        undefined,
        'ERROR',
        `${timeoutMessage(timeoutMs)}: the handler blocked the event loop, so the runtime stops (exit 137) and the platform starts a fresh one`,
      ),
    );
    process.kill(process.pid, 'SIGKILL');
  }
}, heartbeatMs);
