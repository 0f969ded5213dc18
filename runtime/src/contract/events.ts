/** The CloudEvent types Eddy produces and the runtime understands. */
export const eventTypes = {
  /** A direct call through the gateway (or a plain POST to the runtime). */
  invoke: 'dev.eddy.invoke',
  /** A Kinesis batch; data is Lambda's Kinesis event, `{Records: [...]}`. */
  kinesisBatch: 'dev.eddy.kinesis.batch',
  /** A DynamoDB Streams batch; data is Lambda's DynamoDB event, `{Records: [...]}`. */
  dynamodbBatch: 'dev.eddy.dynamodb.batch',
  /** A schedule's tick; data is EventBridge's "Scheduled Event". */
  schedule: 'dev.eddy.schedule',
  /** A dead-lettered event: data carries the original event, the last error and the attempts. */
  deadLetter: 'dev.eddy.dead-letter',
} as const;

/** S3 records arrive as `com.amazonaws.s3.<eventName>` (the CloudEvents AWS S3 adapter). */
export const s3TypePrefix = 'com.amazonaws.s3.';

export function isS3Type(type: string | undefined): boolean {
  return type !== undefined && type.startsWith(s3TypePrefix);
}
