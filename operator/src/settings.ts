/** The operator's settings, from its environment (the Helm chart sets them). */
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { authModes, type AuthMode } from './auth/authorizer.js';
import type { Runtime } from './api/types.js';
import { runtimes } from './api/types.js';
import type { ReconcilerSettings } from './controller/reconciler.js';
import { existsSync } from 'node:fs';
import type { EddyRole } from './compose.js';
import { parseMemoryBudget } from './gateway/budget.js';
import type { JetStreamSettings } from './queue/jetstream.js';
import { s3Stores, type S3Store, type S3StoreConfig } from './sources/s3-stores.js';
import { parseQuantity } from './api/quantity.js';

export interface OperatorSettings extends ReconcilerSettings {
  /** Namespace of the leader-election Lease: the operator's own. */
  namespace: string;
  identity: string;
  resyncMs: number;
  workers: number;
  /** Where the gateway listens (all addresses), and the Service in front of its replicas. */
  gatewayPort: number;
  gatewayService: string;
  /** Where GET /metrics listens (all addresses): not the gateway's port. */
  metricsPort: number;
  /** The deadline of every Kubernetes API request (EDDY_API_TIMEOUT_SECONDS, default 10). */
  apiTimeoutMs?: number;
  /** Bytes of bodies and answers one gateway replica holds at most. */
  gatewayMemoryBudget?: number;
  /** The stores that may post S3 notifications; without one the intake refuses them. */
  s3Stores?: S3Store[];
  /** The ARN of the store's webhook target that posts to the gateway. */
  s3WebhookArn?: string;
}

/**
 * The S3 source's settings, shared by the cluster and the local stack: the stores that may post
 * (`EDDY_S3_STORES`, a JSON list of `{endpoint | endpoints, token | tokenEnv}`, and the store of
 * `EDDY_S3_WEBHOOK_TOKEN` at `EDDY_S3_WEBHOOK_ENDPOINT`). The local stack passes its embedded
 * store's endpoints: that store posts with `EDDY_S3_WEBHOOK_TOKEN`, or a token made up here.
 */
export function s3Settings(
  env: NodeJS.ProcessEnv = process.env,
  embedded?: { endpoints: string[] },
): { s3Stores: S3Store[]; s3WebhookToken?: string; s3WebhookArn: string } {
  const configs: S3StoreConfig[] = [];
  const listed = env.EDDY_S3_STORES?.trim();
  if (listed) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(listed);
    } catch (err) {
      throw new Error(
        `EDDY_S3_STORES is not JSON (${err instanceof Error ? err.message : String(err)}): give a list such as [{"endpoint": "http://minio.minio.svc:9000", "token": "..."}]`,
      );
    }
    if (!Array.isArray(parsed)) {
      throw new Error('EDDY_S3_STORES must be a JSON list of {endpoint, token} objects');
    }
    for (const [i, raw] of (parsed as unknown[]).entries()) {
      const item = (raw ?? {}) as S3StoreConfig & { tokenEnv?: string };
      // The chart hands tokens from Secrets over in variables of their own.
      const token = item.tokenEnv !== undefined ? env[item.tokenEnv] : item.token;
      if (item.tokenEnv !== undefined && !token?.trim()) {
        throw new Error(
          `EDDY_S3_STORES[${i}]: its token variable ${item.tokenEnv} is empty: check the Secret it comes from`,
        );
      }
      configs.push({ ...item, token: token ?? '' });
    }
  }
  let token = env.EDDY_S3_WEBHOOK_TOKEN?.trim() || undefined;
  const endpoints = [
    ...(env.EDDY_S3_WEBHOOK_ENDPOINT ?? '')
      .split(',')
      .map((e) => e.trim())
      .filter((e) => e !== ''),
    ...(embedded?.endpoints ?? []),
  ];
  if (embedded) token ??= randomBytes(24).toString('hex');
  if (token && endpoints.length === 0) {
    throw new Error(
      'EDDY_S3_WEBHOOK_TOKEN is set but EDDY_S3_WEBHOOK_ENDPOINT is not: set it to the endpoint of the store that posts with this token, as triggers name it in connection.endpoint (such as http://minio.minio.svc:9000; several separated by commas), so that its records reach only triggers on that store',
    );
  }
  if (token) configs.push({ endpoints, token });
  return {
    s3Stores: s3Stores(configs, 'the S3 stores (EDDY_S3_STORES, EDDY_S3_WEBHOOK_TOKEN)'),
    ...(token ? { s3WebhookToken: token } : {}),
    // MinIO names a webhook target configured as MINIO_NOTIFY_WEBHOOK_*_EDDY so.
    s3WebhookArn: env.EDDY_S3_WEBHOOK_ARN ?? 'arn:minio:sqs::EDDY:webhook',
  };
}

function int(
  env: NodeJS.ProcessEnv,
  name: string,
  fallback: number,
  min: number,
  max: number,
): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new Error(
      `${name}=${JSON.stringify(raw)} is not allowed: use a whole number from ${min} to ${max}`,
    );
  }
  return n;
}

/** The labels of the chart's controller and gateway pods for the release `eddy`. */
export const defaultGatewayPodLabels: Record<string, string> = {
  'app.kubernetes.io/instance': 'eddy',
  'eddy.dev/operator': 'true',
};

/** `key=value,key=value`, as a label selector's equalities; at least one. */
function labelSet(
  env: NodeJS.ProcessEnv,
  name: string,
  fallback: Record<string, string>,
): Record<string, string> {
  const raw = env[name]?.trim();
  if (!raw) return { ...fallback };
  const entries = raw.split(',').map((pair) => pair.trim().split('='));
  if (entries.some((e) => e.length !== 2 || !e[0] || e[1] === undefined)) {
    throw new Error(
      `${name}=${JSON.stringify(raw)} is not allowed: use labels as key=value pairs separated by commas, such as app.kubernetes.io/component=operator`,
    );
  }
  return Object.fromEntries(entries.map(([k, v]) => [k!.trim(), v!.trim()]));
}

/**
 * The gateway's memory budget in bytes: `EDDY_GATEWAY_MEMORY_BUDGET` (a quantity such as 64Mi),
 * in the cluster and the local stack alike.
 */
export function gatewayMemoryBudget(env: NodeJS.ProcessEnv = process.env): number {
  return parseMemoryBudget(env.EDDY_GATEWAY_MEMORY_BUDGET, 'EDDY_GATEWAY_MEMORY_BUDGET');
}

/**
 * `EDDY_FUNCTION_CPU_LIMIT`: the most CPU a function's container may use when that is more than
 * it requests: a quantity from 10m to 64 (default 1), or `request` to limit it to its request
 * (no headroom; the pods' QoS class is then Guaranteed).
 */
function functionCpuLimit(env: NodeJS.ProcessEnv): string {
  const raw = env.EDDY_FUNCTION_CPU_LIMIT?.trim();
  if (!raw) return '1';
  if (raw === 'request') return raw;
  const cores = parseQuantity(raw);
  if (cores === undefined || cores < 0.01 || cores > 64) {
    throw new Error(
      `EDDY_FUNCTION_CPU_LIMIT=${JSON.stringify(raw)} is not allowed: give a CPU quantity from 10m to 64, such as 1 or 500m, or request (no CPU above what a function requests)`,
    );
  }
  return raw;
}

export function loadSettings(env: NodeJS.ProcessEnv = process.env): OperatorSettings {
  // EDDY_RUNTIME_IMAGE names the runtime image with {runtime} for the Node.js version.
  const template = env.EDDY_RUNTIME_IMAGE ?? 'eddy/runtime:{runtime}';
  const runtimeImages = Object.fromEntries(
    runtimes.map((r) => [r, template.replaceAll('{runtime}', r)]),
  ) as Record<Runtime, string>;
  const namespace = env.POD_NAMESPACE ?? 'eddy-system';
  const gatewayPort = int(env, 'EDDY_GATEWAY_PORT', 8080, 1, 65_535);
  const metricsPort = int(env, 'EDDY_METRICS_PORT', 9090, 1, 65_535);
  if (metricsPort === gatewayPort) {
    throw new Error(
      `EDDY_METRICS_PORT=${metricsPort} is the gateway's port (EDDY_GATEWAY_PORT): metrics need a port of their own, such as 9090`,
    );
  }
  return {
    runtimeImages,
    gatewayUrl: env.EDDY_GATEWAY_URL ?? 'http://eddy-gateway.eddy-system.svc:8080',
    gatewayNamespace: namespace,
    gatewayPodLabels: labelSet(env, 'EDDY_GATEWAY_POD_LABELS', defaultGatewayPodLabels),
    functionCpuLimit: functionCpuLimit(env),
    namespace,
    identity: env.POD_NAME ?? `${hostname()}-${process.pid}`,
    resyncMs: int(env, 'EDDY_RESYNC_SECONDS', 600, 1, 86_400) * 1000,
    workers: int(env, 'EDDY_WORKERS', 4, 1, 64),
    gatewayPort,
    gatewayService: env.EDDY_GATEWAY_SERVICE ?? 'eddy-gateway',
    metricsPort,
    gatewayMemoryBudget: gatewayMemoryBudget(env),
    cleanupAttemptMs: int(env, 'EDDY_CLEANUP_ATTEMPT_SECONDS', 10, 1, 600) * 1000,
    apiTimeoutMs: int(env, 'EDDY_API_TIMEOUT_SECONDS', 10, 1, 300) * 1000,
    cleanupDeadlineMs: int(env, 'EDDY_CLEANUP_DEADLINE_SECONDS', 120, 1, 86_400) * 1000,
    ...s3Settings(env),
  };
}

/**
 * `EDDY_GATEWAY_AUTH`: `kubernetes` (the default) authenticates every invocation and listing
 * with a bearer token and RBAC; `none` lets anyone who reaches the gateway invoke every function.
 */
export function gatewayAuthSetting(env: NodeJS.ProcessEnv = process.env): AuthMode {
  const raw = env.EDDY_GATEWAY_AUTH?.trim();
  if (raw === undefined || raw === '') return 'kubernetes';
  if ((authModes as readonly string[]).includes(raw)) return raw as AuthMode;
  throw new Error(
    `EDDY_GATEWAY_AUTH=${JSON.stringify(raw)} is not allowed: use kubernetes (bearer tokens and RBAC, the default) or none (no authentication: anyone who reaches the gateway may invoke every function)`,
  );
}

/**
 * `EDDY_GATEWAY_TOKEN_AUDIENCES`: the audiences callers' tokens must be meant for, separated by
 * commas; empty (the default) for the API server's own.
 */
export function gatewayTokenAudiences(env: NodeJS.ProcessEnv = process.env): string[] {
  const audiences = (env.EDDY_GATEWAY_TOKEN_AUDIENCES ?? '')
    .split(',')
    .map((a) => a.trim())
    .filter((a) => a !== '');
  const bad = audiences.find((a) => /\s/.test(a));
  if (bad !== undefined) {
    throw new Error(
      `EDDY_GATEWAY_TOKEN_AUDIENCES: ${JSON.stringify(bad)} is not an audience: give audiences without spaces, separated by commas, such as eddy-gateway`,
    );
  }
  return audiences;
}

const roles = ['all', 'controller', 'gateway'] as const;

/**
 * `EDDY_ROLE`: what this process runs. `all` (the default): everything, as one Deployment or
 * the local stack; `controller`: the reconciler, autoscaler and leader-only sources; `gateway`:
 * the invoke API, the intakes and the queue's consumers.
 */
export function roleSetting(env: NodeJS.ProcessEnv = process.env): EddyRole {
  const raw = env.EDDY_ROLE?.trim();
  if (raw === undefined || raw === '') return 'all';
  if ((roles as readonly string[]).includes(raw)) return raw as EddyRole;
  throw new Error(
    `EDDY_ROLE=${JSON.stringify(raw)} is not allowed: use controller, gateway or all (both in one process, the default)`,
  );
}

/**
 * The durable queue: `EDDY_NATS_URL` (nats://host:4222, several separated by commas), with
 * `EDDY_NATS_CREDS_FILE`, `EDDY_QUEUE_STREAM`, `EDDY_QUEUE_REPLICAS` and
 * `EDDY_QUEUE_MAX_BYTES`. Undefined without a URL: events wait in the gateway's memory.
 */
export function queueSettings(env: NodeJS.ProcessEnv = process.env): JetStreamSettings | undefined {
  const servers = (env.EDDY_NATS_URL ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
  const credsFile = env.EDDY_NATS_CREDS_FILE?.trim() || undefined;
  if (servers.length === 0) {
    if (credsFile) {
      throw new Error(
        'EDDY_NATS_CREDS_FILE is set but EDDY_NATS_URL is not: set it to the NATS server, such as nats://nats.nats.svc:4222',
      );
    }
    return undefined;
  }
  const bad = servers.find((s) => !/^(nats|tls):\/\/[^\s/]+$/.test(s) && !/^[^\s/:]+:\d+$/.test(s));
  if (bad !== undefined) {
    throw new Error(
      `EDDY_NATS_URL: ${JSON.stringify(bad)} is not a NATS server address: give nats://host:port, several separated by commas`,
    );
  }
  if (credsFile && !existsSync(credsFile)) {
    throw new Error(
      `EDDY_NATS_CREDS_FILE=${credsFile}: no such file: mount the Secret holding the NATS credentials there`,
    );
  }
  const stream = env.EDDY_QUEUE_STREAM?.trim() || 'EDDY_EVENTS';
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(stream)) {
    throw new Error(
      `EDDY_QUEUE_STREAM=${JSON.stringify(stream)} is not allowed: use letters, digits, _ and - (up to 64), such as EDDY_EVENTS`,
    );
  }
  const maxBytes = env.EDDY_QUEUE_MAX_BYTES?.trim();
  return {
    servers,
    ...(credsFile ? { credsFile } : {}),
    stream,
    replicas: int(env, 'EDDY_QUEUE_REPLICAS', 1, 1, 5),
    ...(maxBytes ? { maxBytes: parseMemoryBudget(maxBytes, 'EDDY_QUEUE_MAX_BYTES') } : {}),
  };
}
