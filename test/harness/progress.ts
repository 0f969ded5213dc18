/** Progress lines with elapsed time for operations that take minutes. */

export function formatElapsed(ms: number): string {
  const s = Math.floor(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

export interface Progress {
  /** Print a line now, prefixed with the step's name and elapsed time. */
  say(message: string): void;
  /** Remember the latest detail; a heartbeat prints it so a quiet step still shows life. */
  update(detail: string): void;
  done(message?: string): void;
  fail(message: string): void;
}

export function startProgress(step: string, heartbeatMs = 10_000): Progress {
  const started = Date.now();
  let detail = 'working';
  const line = (m: string) =>
    process.stdout.write(`[${step} ${formatElapsed(Date.now() - started)}] ${m}\n`);
  const timer = setInterval(() => line(detail), heartbeatMs);
  timer.unref();
  line('started');
  return {
    say: line,
    update(d) {
      detail = d;
    },
    done(m = 'done') {
      clearInterval(timer);
      line(m);
    },
    fail(m) {
      clearInterval(timer);
      line(`FAILED: ${m}`);
    },
  };
}
