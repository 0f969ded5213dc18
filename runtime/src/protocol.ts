/** Messages between the runtime's HTTP thread and the worker thread that runs the handler. */
import type { ErrorBody, ErrorCode } from './errors.js';
import type { LogFormat } from './config.js';

export interface WorkerSettings {
  codeDir: string;
  handler: string;
  functionName: string;
  functionNamespace: string;
  memoryMb: number;
  logFormat: LogFormat;
  logStreamName: string;
}

/** CloudEvents context attributes (and extensions), as strings. */
export type EventAttributes = Record<string, string>;

export interface InvokeMessage {
  type: 'invoke';
  id: number;
  requestId: string;
  /** Epoch ms after which the invocation has timed out. */
  deadline: number;
  mode: 'binary' | 'structured' | 'direct';
  /** undefined for direct invocations. */
  attributes?: EventAttributes;
  /** binary and direct: the body as received (text as a string). */
  body?: string | Uint8Array;
  /** structured: the `data` member, already parsed, or the bytes of `data_base64`. */
  data?: unknown;
}

export type WorkerMessage =
  | { type: 'ready'; initDurationMs: number }
  | { type: 'init-error'; code: ErrorCode; error: ErrorBody; initDurationMs: number }
  /** The event could not be decoded (e.g. JSON data that is not JSON); the handler did not run. */
  | { type: 'invalid'; id: number; message: string }
  | {
      type: 'result';
      id: number;
      durationMs: number;
      /** JSON text of the result; undefined when the handler returned nothing. */
      body?: string;
      error?: { code: ErrorCode; body: ErrorBody };
    }
  /** Something escaped the handler (an uncaught exception); the thread should not be trusted. */
  | { type: 'fatal'; requestIds: string[]; error: ErrorBody };
