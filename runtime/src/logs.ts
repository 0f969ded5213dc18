/**
 * Lambda-style log lines: START, the handler's console lines (timestamp, request id, level),
 * END and REPORT; or the same as JSON lines. Written synchronously to stdout, from the main
 * thread and the watchdog's, so a request's lines keep their order.
 */
import { writeSync } from 'node:fs';
import { format as formatArgsOf } from 'node:util';
import type { LogFormat } from './config.js';
import { logTailBytes } from './contract/index.js';

export const functionVersion = '$LATEST';

const formatArgs = (args: unknown[]): string => formatArgsOf(...(args as [unknown, ...unknown[]]));

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
/** Whether stdout's last write ended a line: a language process may write part of one. */
let atLineStart = true;

function writeOut(text: string): void {
  if (text === '') return;
  atLineStart = text.endsWith('\n');
  try {
    writeSync(1, text);
  } catch {
    // stdout closed or full: logging must never fail an invocation.
  }
}

/**
 * The log text of invocations whose caller asked for its tail (`x-eddy-log-type: Tail`), by
 * request id, from START on; each holds a little more than the tail, never all of it.
 */
const tails = new Map<string, { text: string }>();

/** Starts keeping the log lines of `requestId`, for `takeTail`. */
export function startTail(requestId: string): void {
  tails.set(requestId, { text: '' });
}

/**
 * The last `logTailBytes` of `requestId`'s log lines, base64, as Lambda's `X-Amz-Log-Result`
 * carries them; undefined when no tail was started. Stops keeping them.
 */
export function takeTail(requestId: string): string | undefined {
  const tail = tails.get(requestId);
  if (!tail) return undefined;
  tails.delete(requestId);
  let bytes = Buffer.from(tail.text, 'utf8');
  if (bytes.length > logTailBytes) {
    let start = bytes.length - logTailBytes;
    // Not in the middle of a character: skip its continuation bytes.
    while (start < bytes.length && (bytes[start]! & 0xc0) === 0x80) start++;
    bytes = bytes.subarray(start);
  }
  return bytes.toString('base64');
}

/** Adds text to the tail of `requestId`, if one is kept (it is not written again). */
export function keep(requestId: string | undefined, text: string): void {
  if (requestId === undefined || tails.size === 0) return;
  const tail = tails.get(requestId);
  if (!tail) return;
  tail.text += text;
  // A character is at least one byte: the last logTailBytes characters hold the byte tail.
  if (tail.text.length > 2 * logTailBytes) tail.text = tail.text.slice(-logTailBytes);
}

/**
 * Writes what is pending and then `text`, now. For the handler's own lines and rare notes.
 * `requestId`: the invocation the text belongs to, whose tail (if asked for) keeps it.
 */
export function write(text: string, requestId?: string): void {
  keep(requestId, text);
  const out = pending + text;
  pending = '';
  writeOut(out);
}

/**
 * Queues a platform line (START, END, REPORT) to go out at the end of this turn of the event
 * loop, so that many invocations share one write. A handler's console line flushes the queue
 * first, which keeps every request's lines in order.
 */
export function queue(text: string, requestId?: string): void {
  text = fromLineStart(text);
  keep(requestId, text);
  pending += text;
  if (pending.length > 65_536) {
    flush();
  } else if (!flushScheduled) {
    flushScheduled = true;
    setImmediate(flush);
  }
}

/**
 * Writes a line of the runtime's own (START, an init error) as `write` does, on a line of its
 * own even after a language process's output that did not end its line.
 */
export function writeLine(text: string, requestId?: string): void {
  write(fromLineStart(text), requestId);
}

/** `text` with a line break first when stdout is in the middle of a line nothing queued ends. */
function fromLineStart(text: string): string {
  return pending === '' && !atLineStart ? `\n${text}` : text;
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
  if (format === 'json') return `${JSON.stringify({ timestamp, level, requestId, message })}\n`;
  // Each line of a multi-line message is a log line of its own with the same prefix, so that
  // kubectl logs shows it as written (a carriage return in its place, as Lambda's text format
  // writes for CloudWatch, makes a terminal print each line over the one before).
  const prefix = `${timestamp}\t${requestId ?? 'undefined'}\t${level}\t`;
  const lines = message.split(/\r?\n/);
  if (lines.length > 1 && lines[lines.length - 1] === '') lines.pop();
  return lines.map((line) => `${prefix}${line}\n`).join('');
}

/**
 * A handler's console call as a log line. In JSON format, as Lambda's Node.js runtime writes it:
 * one argument is the message as it is (an object stays an object, an Error becomes its
 * errorType, errorMessage and stackTrace); several are formatted into one string, and the first
 * Error among them adds its fields beside the message.
 */
export function consoleCall(
  format: LogFormat,
  requestId: string | undefined,
  level: string,
  args: unknown[],
): string {
  if (format !== 'json') return consoleLine(format, requestId, level, formatArgs(args));
  const timestamp = new Date().toISOString();
  const record: Record<string, unknown> = { timestamp, level, requestId };
  if (args.length === 1) {
    record.message = args[0];
    try {
      return `${JSON.stringify(record, errorFields)}\n`;
    } catch {
      // A BigInt or a cycle: the message as util.format shows it.
      record.message = formatArgs(args);
      return `${JSON.stringify(record)}\n`;
    }
  }
  record.message = formatArgs(args);
  const error = args.find((a): a is Error => a instanceof Error);
  if (error) Object.assign(record, errorFieldsOf(error));
  return `${JSON.stringify(record)}\n`;
}

function errorFieldsOf(e: Error): Record<string, unknown> {
  return {
    errorType: e.constructor?.name ?? 'UnknownError',
    errorMessage: e.message,
    stackTrace: typeof e.stack === 'string' ? e.stack.split('\n') : [],
  };
}

function errorFields(_key: string, value: unknown): unknown {
  return value instanceof Error ? { ...errorFieldsOf(value), ...value } : value;
}

/**
 * The line Lambda's Node.js runtime logs for an invocation that failed: `Invoke Error` and the
 * error (in JSON format, its fields beside the message), so the logs tell why.
 */
export function invokeErrorLine(
  format: LogFormat,
  requestId: string,
  error: { errorType: string; errorMessage: string; stackTrace?: string[] },
): string {
  if (format === 'json') {
    const timestamp = new Date().toISOString();
    return `${JSON.stringify({ timestamp, level: 'ERROR', requestId, message: 'Invoke Error', ...error })}\n`;
  }
  const { errorType, errorMessage, stackTrace } = error;
  return consoleLine(
    format,
    requestId,
    'ERROR',
    `Invoke Error \t${JSON.stringify({ errorType, errorMessage, stack: stackTrace ?? [] })}`,
  );
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
