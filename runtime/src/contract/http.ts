/** What the runtime's HTTP interface promises callers (the gateway), beyond CloudEvents. */

export const headers = {
  /** The invocation's id: sent by the gateway, echoed on every answer. */
  requestId: 'x-eddy-request-id',
  durationMs: 'x-eddy-duration-ms',
  billedDurationMs: 'x-eddy-billed-duration-ms',
  /** Present on the first answer after start: the handler's import time. */
  initDurationMs: 'x-eddy-init-duration-ms',
  /** `Unhandled` when the function failed rather than the request. */
  functionError: 'x-eddy-function-error',
  /**
   * Sent by the gateway: the caller's client context, base64-encoded JSON as Lambda's
   * `X-Amz-Client-Context` carries it; the handler sees it as `context.clientContext`.
   */
  clientContext: 'x-eddy-client-context',
  /** Sent by the gateway as `Tail`: answer with the invocation's last 4 KB of log lines. */
  logType: 'x-eddy-log-type',
  /** On the answer when `logType` was `Tail`: the invocation's last 4 KB of log lines, base64. */
  logResult: 'x-eddy-log-result',
} as const;

/** The most of an invocation's log returned by a `Tail` request, as Lambda returns it. */
export const logTailBytes = 4096;

/**
 * A request id a caller may choose; others are replaced by a new one. No `/`, and not `.` or
 * `..` alone: a language process puts the id in a Runtime API path
 * (`/invocation/<id>/response`), which its HTTP client does not escape and may normalise.
 */
export const requestIdPattern = /^(?!\.{1,2}$)[\w.:+=-]{1,128}$/;
