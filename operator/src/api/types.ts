/** The Function resource (`eddy.dev/v1alpha1`), as crds/function.yaml defines it. */
import type { V1EnvFromSource, V1EnvVar, V1ObjectMeta } from '@kubernetes/client-node';
import { runtimeNames, type RuntimeName } from '../../../runtime/src/contract/index.js';

export const group = 'eddy.dev';
export const version = 'v1alpha1';
export const apiVersion = `${group}/${version}`;
export const kind = 'Function';
export const plural = 'functions';

/** spec.runtime: the runtime's contract names them. */
export type Runtime = RuntimeName;
export const runtimes: Runtime[] = [...runtimeNames];

export interface Connection {
  endpoint?: string;
  region?: string;
  forcePathStyle?: boolean;
  secretRef?: { name: string; accessKeyIdKey?: string; secretAccessKeyKey?: string };
}

export interface S3Trigger {
  bucket: string;
  events?: string[];
  filter?: { prefix?: string; suffix?: string };
  mode?: 'notifications' | 'poll';
  connection: Connection;
}

/** Lambda's event filtering: a record goes on when it matches any filter's pattern. */
export interface FilterCriteria {
  filters: Array<{ pattern: string }>;
}

/** What Kinesis and DynamoDB Streams triggers share: Lambda's stream event source mapping. */
export interface StreamTriggerBase {
  startingPosition?: 'TRIM_HORIZON' | 'LATEST' | 'AT_TIMESTAMP';
  batchSize?: number;
  maxBatchingWindowSeconds?: number;
  bisectOnError?: boolean;
  maxRetryAttempts?: number;
  maxRecordAgeSeconds?: number;
  reportBatchItemFailures?: boolean;
  filterCriteria?: FilterCriteria;
  connection: Connection;
}

export interface KinesisTrigger extends StreamTriggerBase {
  stream: string;
  startingTimestamp?: string;
}

export interface DynamoDBTrigger extends StreamTriggerBase {
  /** The stream's ARN; or `table`, whose latest stream is looked up. */
  streamArn?: string;
  table?: string;
  startingPosition?: 'TRIM_HORIZON' | 'LATEST';
}

export interface ScheduleTrigger {
  expression: string;
  timezone?: string;
  /** The Scheduled Event's `detail`. */
  payload?: Record<string, unknown>;
  /** The whole event instead of the Scheduled Event: an EventBridge target's constant Input. */
  input?: Record<string, unknown>;
  startingDeadlineSeconds?: number;
}

export interface Trigger {
  name: string;
  s3?: S3Trigger;
  kinesis?: KinesisTrigger;
  dynamodb?: DynamoDBTrigger;
  schedule?: ScheduleTrigger;
}

export interface FunctionSpec {
  runtime?: Runtime;
  image?: string;
  code?: { inline?: string; configMap?: { name: string } };
  handler?: string;
  memory?: string;
  cpu?: string;
  ephemeralStorage?: string;
  timeoutSeconds?: number;
  concurrency?: number;
  scaling?: {
    minReplicas?: number;
    maxReplicas?: number;
    targetConcurrency?: number;
    idleSeconds?: number;
    activationTimeoutSeconds?: number;
  };
  retry?: { maxAttempts?: number; maxEventAgeSeconds?: number };
  deadLetter?: { url?: string; s3?: { bucket: string; prefix?: string; connection: Connection } };
  env?: V1EnvVar[];
  envFrom?: V1EnvFromSource[];
  serviceAccountName?: string;
  triggers?: Trigger[];
}

export type ConditionType = 'Ready' | 'Deployed' | 'TriggersReady';

export interface Condition {
  type: ConditionType;
  status: 'True' | 'False' | 'Unknown';
  observedGeneration?: number;
  lastTransitionTime: string;
  reason: string;
  message: string;
}

export interface TriggerStatus {
  name: string;
  ready: boolean;
  /** Why not, as a word: BucketNotFound, StreamNotFound, AccessDenied, EndpointUnreachable... */
  reason?: string;
  message?: string;
  lastScheduleTime?: string;
  nextScheduleTime?: string;
}

export interface FunctionStatus {
  observedGeneration?: number;
  conditions?: Condition[];
  replicas?: number;
  readyReplicas?: number;
  url?: string;
  triggers?: TriggerStatus[];
  triggerSummary?: string;
}

export interface EddyFunction {
  apiVersion: typeof apiVersion;
  kind: typeof kind;
  metadata: V1ObjectMeta & { name: string; namespace: string };
  spec: FunctionSpec;
  status?: FunctionStatus;
}

/** The kind of a trigger, from the one field it sets. */
export function triggerKind(t: Trigger): 's3' | 'kinesis' | 'dynamodb' | 'schedule' | undefined {
  return t.s3
    ? 's3'
    : t.kinesis
      ? 'kinesis'
      : t.dynamodb
        ? 'dynamodb'
        : t.schedule
          ? 'schedule'
          : undefined;
}
