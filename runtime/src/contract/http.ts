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
} as const;

/** A request id a caller may choose; others are replaced by a new one. */
export const requestIdPattern = /^[\w.:/+=-]{1,128}$/;
