/** What the HTTP side hands the invoker, and what it gets back. */
import type { ErrorBody, ErrorCode } from './contract/errors.js';

/** CloudEvents context attributes (and extensions), as strings. */
export type EventAttributes = Record<string, string>;

export interface Invocation {
  requestId: string;
  /** Epoch ms after which the invocation has timed out. */
  deadline: number;
  mode: 'binary' | 'structured' | 'direct';
  /** undefined for direct invocations. */
  attributes?: EventAttributes;
  /** binary and direct: the body as received. */
  body?: Buffer;
  /** structured: the `data` member, already parsed, or the bytes of `data_base64`. */
  data?: unknown;
}

export type Outcome =
  | {
      kind: 'result';
      durationMs: number;
      body?: string;
      error?: { code: ErrorCode; body: ErrorBody };
    }
  /** The event could not be decoded (e.g. JSON data that is not JSON); the handler did not run. */
  | { kind: 'invalid'; message: string }
  | { kind: 'timeout' }
  /** Something escaped the handler (an uncaught exception) while this invocation ran. */
  | { kind: 'crash'; durationMs: number; code: ErrorCode; body: ErrorBody };

export type InitResult =
  | { ok: true; initDurationMs: number }
  | { ok: false; code: ErrorCode; error: ErrorBody; initDurationMs: number };
