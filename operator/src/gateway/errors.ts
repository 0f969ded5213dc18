/**
 * Every error the gateway answers with, in one place: status, the `errorType` a Lambda user
 * knows, and whether the function failed (as opposed to the request). Bodies have Lambda's
 * shape, `{errorType, errorMessage}`; `gatewayError` is the one way to make them.
 */
import { errorCodes, type ErrorBody } from '../../../runtime/src/contract/index.js';

export const gatewayErrors = {
  FunctionNotFound: { status: 404, errorType: 'ResourceNotFoundException', functionError: false },
  NotFound: errorCodes.NotFound,
  /** A malformed event at a source's intake (an S3 notification body, say). */
  InvalidEvent: errorCodes.InvalidEvent,
  /**
   * No bearer token, or one that is not valid: an invocation or listing without a Kubernetes
   * token the API server accepts, or a source's intake without its own token.
   */
  Unauthorized: { status: 401, errorType: 'UnauthorizedException', functionError: false },
  /** The caller is known but RBAC does not let it invoke the function (Lambda's IAM denial). */
  Forbidden: { status: 403, errorType: 'AccessDeniedException', functionError: false },
  /** Lambda's Invoke API: a request with neither a SigV4 signature nor a bearer token. */
  MissingAuthenticationToken: {
    status: 403,
    errorType: 'MissingAuthenticationTokenException',
    functionError: false,
  },
  /** Lambda's Invoke API: a SigV4 access key id no invoke-credentials Secret holds. */
  UnrecognizedClient: {
    status: 403,
    errorType: 'UnrecognizedClientException',
    functionError: false,
  },
  /** Lambda's Invoke API: a SigV4 signature that does not match, or a time too far off. */
  InvalidSignature: { status: 403, errorType: 'InvalidSignatureException', functionError: false },
  /** Lambda's Invoke API: a body that is not JSON, or a client context that is not base64 JSON. */
  InvalidRequestContent: {
    status: 400,
    errorType: 'InvalidRequestContentException',
    functionError: false,
  },
  /** Lambda's Invoke API: a parameter (invocation type, log type, function name) it does not take. */
  InvalidParameterValue: {
    status: 400,
    errorType: 'InvalidParameterValueException',
    functionError: false,
  },
  /** Lambda's Invoke API: a body over 6 MB. */
  RequestTooLarge: { status: 413, errorType: 'RequestTooLargeException', functionError: false },
  /** The gateway could not ask the API server who the caller is or what it may do. */
  AuthUnavailable: { status: 503, errorType: 'EddyAuthUnavailable', functionError: false },
  /** A source's intake could not finish delivering: the sender should keep the event and retry. */
  DeliveryIncomplete: { status: 503, errorType: 'EddyDeliveryIncomplete', functionError: false },
  /**
   * A source's intake found the gateway's memory budget full: the sender keeps the event and
   * posts it again (a synchronous invocation gets `Throttled` instead).
   */
  GatewayBusy: { status: 503, errorType: 'EddyGatewayBusy', functionError: false },
  /**
   * The durable queue (NATS JetStream) did not acknowledge the event in time: nothing was
   * accepted, and the caller (or the store) sends it again.
   */
  QueueUnavailable: { status: 503, errorType: 'EddyQueueUnavailable', functionError: false },
  MethodNotAllowed: errorCodes.MethodNotAllowed,
  PayloadTooLarge: errorCodes.PayloadTooLarge,
  Throttled: errorCodes.Throttled,
  /** No replica became ready within the activation timeout. */
  ActivationTimeout: {
    status: 503,
    errorType: 'EddyActivationTimeout',
    functionError: false,
  },
  /** The platform cannot start the function (an image the local platform cannot run, say). */
  ActivationFailed: { status: 503, errorType: 'EddyActivationFailed', functionError: false },
  /** The replica ended (crashed, process.exit, killed) while it held the invocation. */
  ExitError: errorCodes.ExitError,
  FunctionTimeout: errorCodes.FunctionTimeout,
  /** Lambda's API: an operation other than Invoke (ListFunctions, InvokeWithResponseStream). */
  UnknownOperation: { status: 404, errorType: 'UnknownOperationException', functionError: false },
  /** Lambda's Invoke API: the gateway itself failed (Lambda's ServiceException). */
  ServiceException: { status: 500, errorType: 'ServiceException', functionError: false },
  /** The gateway is stopping and takes no new invocations. */
  ShuttingDown: { status: 503, errorType: 'EddyShuttingDown', functionError: false },
} as const;

export type GatewayErrorCode = keyof typeof gatewayErrors;

/**
 * Why an invocation was throttled, as Lambda's TooManyRequestsException says it in `Reason`:
 * the function at its own limit (its replicas' concurrency), or the gateway's shared capacity
 * (its memory budget, its backlog of events, the event queue), Lambda's account-wide pool.
 */
export type ThrottleReason =
  'ReservedFunctionConcurrentInvocationLimitExceeded' | 'ConcurrentInvocationLimitExceeded';

export class GatewayError extends Error {
  readonly status: number;
  readonly errorType: string;
  readonly functionError: boolean;

  constructor(
    readonly code: GatewayErrorCode,
    message: string,
    /** Seconds to wait before trying again, sent as Retry-After. */
    readonly retryAfterSeconds?: number,
    /** A `Throttled` error's cause, for Lambda's Invoke API. */
    readonly reason?: ThrottleReason,
  ) {
    super(message);
    const spec = gatewayErrors[code];
    this.status = spec.status;
    this.errorType = spec.errorType;
    this.functionError = spec.functionError;
  }

  body(): ErrorBody {
    return { errorType: this.errorType, errorMessage: this.message };
  }
}

export function gatewayError(
  code: GatewayErrorCode,
  message: string,
  retryAfterSeconds?: number,
  reason?: ThrottleReason,
): GatewayError {
  return new GatewayError(code, message, retryAfterSeconds, reason);
}
