/**
 * Lambda-style log lines: START, the handler's console lines (timestamp, request id, level),
 * END and REPORT; or the same as JSON lines. Written synchronously to stdout from both threads,
 * so a request's lines keep their order.
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

export function write(text: string): void {
  try {
    writeSync(1, text);
  } catch {
    // stdout closed or full: logging must never fail an invocation.
  }
}

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

/** The process's peak resident set size, in MB (what Lambda reports as Max Memory Used). */
export function maxMemoryUsedMb(): number {
  return Math.ceil(process.resourceUsage().maxRSS / 1024);
}
