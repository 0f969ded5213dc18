/**
 * Every error the runtime answers with, in one place: the HTTP status, the `errorType` a Lambda
 * user knows, and the message. Bodies have Lambda's shape: `{errorType, errorMessage}`.
 */

export interface ErrorBody {
  errorType: string;
  errorMessage: string;
  stackTrace?: string[];
}

export interface RuntimeErrorSpec {
  status: number;
  errorType: string;
  /** Sets `x-eddy-function-error: Unhandled`: the function failed, not the request. */
  functionError: boolean;
}

export const errorCodes = {
  /** The handler's file could not be found, or threw while it was imported. */
  ImportModuleError: { status: 502, errorType: 'Runtime.ImportModuleError', functionError: true },
  /** The file loaded but does not export the handler as a function. */
  HandlerNotFound: { status: 502, errorType: 'Runtime.HandlerNotFound', functionError: true },
  UserCodeSyntaxError: {
    status: 502,
    errorType: 'Runtime.UserCodeSyntaxError',
    functionError: true,
  },
  /**
   * The runtime failed while it handled the invocation, or (said by the gateway) the replica
   * ended while it held the invocation: process.exit in the handler, a kill, or a fatal error
   * such as the heap running out, which ends the process before it can answer.
   */
  ExitError: { status: 502, errorType: 'Runtime.ExitError', functionError: true },
  /** The handler's result cannot be turned into JSON. */
  MalformedHandlerResponse: {
    status: 502,
    errorType: 'Runtime.MalformedHandlerResponse',
    functionError: true,
  },
  ResponseSizeTooLarge: {
    status: 502,
    errorType: 'Function.ResponseSizeTooLarge',
    functionError: true,
  },
  /**
   * A language process reported an init error (Runtime API `init/error`), or ended before it
   * asked for its first invocation; the body carries the type it reported.
   */
  InitError: { status: 502, errorType: 'Runtime.Unknown', functionError: true },
  /** A language process answered with a response mode other than `streaming`. */
  InvalidResponseMode: {
    status: 502,
    errorType: 'Runtime.InvalidResponseModeHeader',
    functionError: true,
  },
  /** The handler threw, rejected or called back with an error. */
  Unhandled: { status: 500, errorType: 'Error', functionError: true },
  FunctionTimeout: { status: 504, errorType: 'Sandbox.Timedout', functionError: true },
  InvalidEvent: { status: 400, errorType: 'InvalidEvent', functionError: false },
  BatchNotSupported: { status: 415, errorType: 'UnsupportedMediaType', functionError: false },
  PayloadTooLarge: { status: 413, errorType: 'RequestEntityTooLarge', functionError: false },
  Throttled: { status: 429, errorType: 'TooManyRequestsException', functionError: false },
  /** Shutting down or recycling: the platform should send the event to another replica. */
  NotAccepting: { status: 503, errorType: 'Runtime.Unavailable', functionError: false },
  NotFound: { status: 404, errorType: 'NotFound', functionError: false },
  MethodNotAllowed: { status: 405, errorType: 'MethodNotAllowed', functionError: false },
} as const satisfies Record<string, RuntimeErrorSpec>;

export type ErrorCode = keyof typeof errorCodes;

/** Lambda's 6 MB limit on invocation payloads and results. */
export const maxPayloadBytes = 6 * 1024 * 1024;

/** "Task timed out after 3.00 seconds", as Lambda says it. */
export function timeoutMessage(timeoutMs: number): string {
  return `Task timed out after ${(timeoutMs / 1000).toFixed(2)} seconds`;
}
