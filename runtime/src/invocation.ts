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
  /**
   * The caller's client context (`x-eddy-client-context`, Lambda's `X-Amz-Client-Context`),
   * decoded: what the handler sees as `context.clientContext`.
   */
  clientContext?: ClientContext;
}

/** Lambda's client context as a handler sees it. */
export interface ClientContext {
  client?: unknown;
  custom?: unknown;
  env?: unknown;
}

/** What a language process behind the Runtime API adds to an outcome. */
export interface ProcessFigures {
  /** Set on the first invocation a process takes: its start to its first `next`. */
  initDurationMs?: number;
  /** The process's peak resident set size, when the runtime cannot read its own. */
  maxMemoryUsedMb?: number;
}

export type Outcome =
  | ({
      kind: 'result';
      durationMs: number;
      /** JSON text from a Node handler; the bytes a language process answered, as it sent them. */
      body?: string | Buffer;
      error?: { code: ErrorCode; body: ErrorBody };
    } & ProcessFigures)
  /** The event could not be decoded (e.g. JSON data that is not JSON); the handler did not run. */
  | { kind: 'invalid'; message: string }
  /** `restarted`: only the language process that ran it was replaced, not the runtime. */
  | ({ kind: 'timeout'; restarted?: boolean } & ProcessFigures)
  /** Something escaped the handler (an uncaught exception) while this invocation ran. */
  | { kind: 'crash'; durationMs: number; code: ErrorCode; body: ErrorBody };

/**
 * Lambda's time for a first init (a handler's import, a language process's start) before
 * invocations go to it; an invocation that comes meanwhile waits for it, at least this long.
 */
export const initBudgetMs = 10_000;

export type InitResult =
  | { ok: true; initDurationMs: number }
  | { ok: false; code: ErrorCode; error: ErrorBody; initDurationMs: number };

/** What runs the handler: in this process (Node) or in language processes (the Runtime API). */
export interface FunctionInvoker {
  readonly ready: Promise<InitResult>;
  invoke(m: Invocation): Promise<Outcome>;
  /** The earliest deadline among invocations in flight, or 0 when none are. */
  earliestDeadline(): number;
  onDeadlinesChanged: (() => void) | undefined;
  /**
   * True when each language process reports its own init in its first outcome; `ready` then
   * only says the runtime can take invocations.
   */
  readonly initPerProcess: boolean;
}
