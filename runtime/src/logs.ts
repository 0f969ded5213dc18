/**
 * Lambda-style log lines: START, the handler's console lines (timestamp, request id, level),
 * END and REPORT; or the same as JSON lines. Written synchronously to stdout, from the main
 * thread and the watchdog's, so a request's lines keep their order.
 */
import { writeSync } from 'node:fs';
import type { LogFormat } from './config.js';

export const functionVersion = '$LATEST';

export interface ReportFields {
  requestId: string;
  durationMs: number;
  billedDurationMs: number;
  memorySizeMb: number;
  maxMemoryUsedMb: number;
  initDurationMs?: number;
  status?: 'timeout' | 'error';
}

let pending = '';
let flushScheduled = false;

function writeOut(text: string): void {
  try {
    writeSync(1, text);
  } catch {
    // stdout closed or full: logging must never fail an invocation.
  }
}

/** Writes what is pending and then `text`, now. For the handler's own lines and rare notes. */
export function write(text: string): void {
  const out = pending + text;
  pending = '';
  writeOut(out);
}

/**
 * Queues a platform line (START, END, REPORT) to go out at the end of this turn of the event
 * loop, so that many invocations share one write. A handler's console line flushes the queue
 * first, which keeps every request's lines in order.
 */
export function queue(text: string): void {
  pending += text;
  if (pending.length > 65_536) {
    flush();
  } else if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush);
  }
}

export function flush(): void {
  flushScheduled = false;
  if (pending === '') return;
  const out = pending;
  pending = '';
  writeOut(out);
}

process.on('exit', flush);

export function startLine(format: LogFormat, requestId: string): string {
  return format === 'json'
    ? `${JSON.stringify({ time: new Date().toISOString(), type: 'platform.start', record: { requestId, version: functionVersion } })}\n`
    : `START RequestId: ${requestId} Version: ${functionVersion}\n`;
}

export function consoleLine(
  format: LogFormat,
  requestId: string | undefined,
  level: string,
  message: string,
): string {
  const timestamp = new Date().toISOString();
  return format === 'json'
    ? `${JSON.stringify({ timestamp, level, requestId, message })}\n`
    : `${timestamp}\t${requestId ?? 'undefined'}\t${level}\t${message.replaceAll('\n', '\r')}\n`;
}

export function timeoutLine(format: LogFormat, requestId: string, message: string): string {
  return consoleLine(format, requestId, 'ERROR', message);
}

/** END and REPORT together, in one write. */
export function endAndReport(format: LogFormat, r: ReportFields): string {
  if (format === 'json') {
    const time = new Date().toISOString();
    const metrics: Record<string, number> = {
      durationMs: r.durationMs,
      billedDurationMs: r.billedDurationMs,
      memorySizeMB: r.memorySizeMb,
      maxMemoryUsedMB: r.maxMemoryUsedMb,
    };
    if (r.initDurationMs !== undefined) metrics.initDurationMs = r.initDurationMs;
    return (
      `${JSON.stringify({ time, type: 'platform.end', record: { requestId: r.requestId } })}\n` +
      `${JSON.stringify({ time, type: 'platform.report', record: { requestId: r.requestId, status: r.status ?? 'success', metrics } })}\n`
    );
  }
  let report =
    `REPORT RequestId: ${r.requestId}\tDuration: ${r.durationMs.toFixed(2)} ms\t` +
    `Billed Duration: ${r.billedDurationMs} ms\tMemory Size: ${r.memorySizeMb} MB\t` +
    `Max Memory Used: ${r.maxMemoryUsedMb} MB`;
  if (r.initDurationMs !== undefined)
    report += `\tInit Duration: ${r.initDurationMs.toFixed(2)} ms`;
  if (r.status) report += `\tStatus: ${r.status}`;
  return `END RequestId: ${r.requestId}\n${report}\n`;
}

/** How old a reading of the peak memory may be when a REPORT line uses it. */
export const maxRssSampleMs = 10;
let maxRssMb = 0;
let maxRssReadAt = -Infinity;

/**
 * The process's peak resident set size, in MB (what Lambda reports as Max Memory Used), read
 * from the kernel at most every `maxRssSampleMs` however many invocations end meanwhile.
 */
export function maxMemoryUsedMb(): number {
  const now = Date.now();
  if (now - maxRssReadAt >= maxRssSampleMs) {
    maxRssMb = Math.ceil(process.resourceUsage().maxRSS / 1024);
    maxRssReadAt = now;
  }
  return maxRssMb;
}
