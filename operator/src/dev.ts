/**
 * The local stack (`npm start`): the gateway, autoscaler and local platform of a cluster, with
 * Functions from manifest files and their replicas as processes on 127.0.0.1. Wiring only.
 *
 *   node dist/operator/dev.js [--port 8080] [--metrics-port 9090] <manifest files...>
 */
import { constants as osConstants } from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { noAuth } from './auth/authorizer.js';
import { composeEddy, drainMs } from './compose.js';
import { PortTaken } from './errors.js';
import { freePortOn } from './local/free-port.js';
import { ManifestSet } from './local/manifests.js';
import { soleLeader } from './manager.js';
import { createLocalPlatform } from './platform/local.js';
import { splitKey } from './platform/platform.js';
import { gatewayMemoryBudget, queueSettings, s3Settings } from './settings.js';
import { fileCheckpoints } from './sources/checkpoints.js';
import { startEmbeddedS3, type EmbeddedS3 } from './local/embedded-s3.js';
import { findOnPath, startEmbeddedMinio } from './local/embedded-minio.js';
import { startEmbeddedNats, type EmbeddedNats } from './local/embedded-nats.js';
import { dynamodbSource } from './sources/dynamodb.js';
import { kinesisSource } from './sources/kinesis.js';
import { s3PollSource } from './sources/s3-poll.js';
import { s3IntakePath, s3Source } from './sources/s3.js';
import { normaliseEndpoint } from './sources/s3-stores.js';
import { scheduleSource } from './sources/schedule.js';
import { TriggerStates } from './sources/states.js';
import type { SourceFactory } from './sources/source.js';

function storeFailedOn(port: number | undefined, err: unknown): string {
  return `eddy: the S3 store could not start on ${values.host}:${port}: ${err instanceof Error ? err.message : String(err)}`;
}

const usage = `usage: node dist/operator/dev.js [--port 8080] [--metrics-port 9090] [--host 127.0.0.1] [--s3-port 9000] <manifest files...>
  Runs the gateway, the autoscaler and each Function's replicas as local processes.
  Files hold Function, Secret and ConfigMap manifests (several documents per file); edits
  are picked up while it runs. Triggers run too (progress is kept under .eddy/sources).
  Invoke with:
    curl -d '{"name":"eddy"}' http://127.0.0.1:8080/functions/<namespace>/<name>

  --port <port>           where the gateway listens: invocations, the Lambda Invoke API
                          (default 8080; 0 for any free port, which it prints)
  --host <address>        the address the gateway, the metrics and the S3 store listen on
                          (default 127.0.0.1; invocations are not authenticated: keep it local)
  --metrics-port <port>   where Prometheus metrics are served, GET /metrics (default 9090; 0
                          for any free port, which it prints)

  --s3-port <port>        also run an S3-compatible store there that posts every upload's event
                          to the gateway: MinIO when a minio binary is on PATH (objects under
                          .eddy/minio), otherwise s3rver (objects under .eddy/s3). Manifests
                          name it http://eddy-local-s3 (connection.endpoint, env values): the
                          stack puts this store's address there, whichever port it has
  --s3-access-key <id>    its access key id (default eddy)
  --s3-secret-key <key>   its secret access key (default eddysecret)
  --s3-buckets <a,b>      buckets it starts with (default photos,photos-thumbnails)
  Other S3-compatible stores post to /sources/s3 with EDDY_S3_WEBHOOK_TOKEN as bearer token,
  registered at EDDY_S3_WEBHOOK_ENDPOINT (the endpoint their triggers name), or in EDDY_S3_STORES.`;

const { values, positionals } = (() => {
  try {
    return parseArgs({
      allowPositionals: true,
      options: {
        port: { type: 'string', default: '8080' },
        'metrics-port': { type: 'string', default: '9090' },
        host: { type: 'string', default: '127.0.0.1' },
        's3-port': { type: 'string' },
        's3-access-key': { type: 'string', default: 'eddy' },
        's3-secret-key': { type: 'string', default: 'eddysecret' },
        's3-buckets': { type: 'string', default: 'photos,photos-thumbnails' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    console.error(`${err instanceof Error ? err.message : String(err)}\n${usage}`);
    process.exit(2);
  }
})();
const portOf = (flag: string, raw: string | undefined): number | undefined => {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65_535) {
    console.error(`${flag} ${raw}: use 0 to 65535\n${usage}`);
    process.exit(2);
  }
  return n;
};
if (values.help || positionals.length === 0) {
  console.error(usage);
  process.exit(values.help ? 0 : 2);
}
const port = portOf('--port', values.port)!;
const metricsPort = portOf('--metrics-port', values['metrics-port'])!;
// First, before anything else is printed: the local stack checks no caller.
console.log(
  `eddy: invocations on ${values.host}${port === 0 ? '' : `:${port}`} are not authenticated: anyone who can reach that address may invoke and list every function (the local stack; in a cluster every call needs a Kubernetes token)`,
);
// Second: where accepted events wait. EDDY_NATS_URL names a NATS JetStream; otherwise a
// nats-server on PATH is started with its store under .eddy/nats; otherwise memory.
let jetstream = (() => {
  try {
    return queueSettings();
  } catch (err) {
    console.error(`eddy: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(2);
  }
})();
let embeddedNats: EmbeddedNats | undefined;
if (!jetstream) {
  const natsBinary = findOnPath('nats-server');
  if (natsBinary) {
    try {
      embeddedNats = await startEmbeddedNats({
        binary: natsBinary,
        directory: resolve(process.cwd(), '.eddy', 'nats'),
        log: (line) => console.log(`eddy: nats: ${line}`),
      });
      jetstream = { servers: [embeddedNats.url] };
    } catch (err) {
      console.error(`eddy: ${err instanceof Error ? err.message : String(err)}`);
      process.exit(1);
    }
  }
}
console.log(
  embeddedNats
    ? `eddy: events are queued in NATS JetStream (${findOnPath('nats-server')}, store .eddy/nats): accepted events survive a restart`
    : jetstream
      ? `eddy: events are queued in NATS JetStream at ${jetstream.servers.join(',')}`
      : 'eddy: events wait in memory (no nats-server on PATH and no EDDY_NATS_URL): accepted events not yet delivered are lost when the stack stops',
);
let s3Port = portOf('--s3-port', values['s3-port']);
const minioBinary = s3Port !== undefined ? findOnPath('minio') : undefined;
/** The flag that chooses each listener's port, for the message when another process has it. */
const portFlags: Record<string, string> = {
  'the gateway': '--port',
  'the metrics endpoint': '--metrics-port',
  'the S3 store': '--s3-port',
};
/** What to tell the user when a port is taken: which, and how to choose another. */
const portAdvice = (err: PortTaken) => {
  const flag = portFlags[err.listener] ?? '--port';
  return `eddy: ${err.message}: stop that process, or choose another port with ${flag} <port> (npm start -- ${flag} ${err.port + 100}; ${flag} 0 takes any free port and prints it)`;
};
if (minioBinary && s3Port !== undefined) {
  // MinIO is told its port; the triggers' endpoints are matched against it before it starts,
  // and a taken port is said now rather than once MinIO fails.
  try {
    s3Port = await freePortOn('the S3 store', values.host, s3Port);
  } catch (err) {
    console.error(err instanceof PortTaken ? portAdvice(err) : storeFailedOn(s3Port, err));
    await embeddedNats?.stop();
    process.exit(1);
  }
}

// The AWS SDK warns on every client that Node 20 support ends; the project targets Node 20.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
// Replicas print three lines per invocation (START, END, REPORT): gathered into one write per
// turn of the event loop rather than one each, which under load costs the gateway a fifth of its time.
let pending: string[] = [];
const flush = () => {
  const lines = pending;
  pending = [];
  process.stdout.write(`${lines.join('\n')}\n`);
};
const log = (line: string) => {
  if (pending.push(line) === 1) setImmediate(flush);
};
const sources: SourceFactory[] = [scheduleSource(), kinesisSource(), dynamodbSource()];
let gatewayUrl: string | undefined;
let embedded: EmbeddedS3 | undefined;
const buckets = values['s3-buckets'].split(',').filter((b) => b !== '');
const storeFailed = (err: unknown) =>
  err instanceof PortTaken ? portAdvice(err) : storeFailedOn(s3Port, err);
if (s3Port !== undefined && !minioBinary) {
  try {
    embedded = await startEmbeddedS3({
      port: s3Port,
      host: values.host,
      directory: resolve(process.cwd(), '.eddy', 's3'),
      accessKeyId: values['s3-access-key'],
      secretAccessKey: values['s3-secret-key'],
      buckets,
      intake: () =>
        gatewayUrl && webhookToken
          ? { url: `${gatewayUrl}${s3IntakePath}`, token: webhookToken }
          : undefined,
      log: (m) => log(`eddy: s3: ${m}`),
    });
  } catch (err) {
    console.error(storeFailed(err));
    await embeddedNats?.stop();
    process.exit(1);
  }
}
const embeddedPort = minioBinary ? s3Port : embedded?.port;
// Manifests name this store http://eddy-local-s3 (localS3Endpoint), whichever port it has: they
// are served with its address (docs/sources.md).
const localS3 =
  embeddedPort === undefined
    ? undefined
    : `http://${values.host.includes(':') ? `[${values.host}]` : values.host}:${embeddedPort}`;
const manifests = new ManifestSet({
  crdPath: resolve(root, 'crds', 'function.yaml'),
  report: (line) => console.error(line),
  localS3: () => localS3,
});
await manifests.load(positionals);
const stop = new AbortController();
let signalled = false;
// SIGHUP: the terminal closed.
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
  process.on(signal, () => {
    if (!signalled) {
      signalled = true;
      log(
        `eddy: ${signal}: draining (invocations in flight get up to ${drainMs / 1000} s), then stopping the functions' processes; ${signal === 'SIGINT' ? 'Ctrl-C' : signal} again stops at once`,
      );
      stop.abort();
      return;
    }
    log(`eddy: ${signal} again: stopping at once`);
    // What is gathered goes out before the exit, which does not wait for the next turn.
    if (pending.length > 0) flush();
    process.exit(128 + (osConstants.signals[signal] ?? 0));
  });
}
manifests.watch(stop.signal);
// The embedded store is registered under every name of this machine triggers may give it; it
// posts with EDDY_S3_WEBHOOK_TOKEN, or a token of its own when none is set.
const embeddedEndpoints =
  embeddedPort === undefined
    ? undefined
    : [
        ...new Set(
          ['127.0.0.1', 'localhost', '[::1]', values.host].map(
            (h) => `http://${h.includes(':') && !h.startsWith('[') ? `[${h}]` : h}:${embeddedPort}`,
          ),
        ),
      ];
let settings: ReturnType<typeof s3Settings>;
try {
  settings = s3Settings(process.env, embeddedEndpoints && { endpoints: embeddedEndpoints });
} catch (err) {
  console.error(`eddy: ${err instanceof Error ? err.message : String(err)}`);
  await embedded?.close();
  process.exit(1);
}
const webhookToken = settings.s3WebhookToken;
const s3 = s3Source({
  stores: settings.s3Stores,
  ...(settings.s3WebhookArn ? { webhookArn: settings.s3WebhookArn } : {}),
  // The embedded store posts every event itself: its buckets need no configuration.
  postsEverything: (endpoint) =>
    embeddedEndpoints !== undefined &&
    embeddedEndpoints.some((e) => normaliseEndpoint(e) === normaliseEndpoint(endpoint)),
});
sources.push(s3.factory, s3PollSource());
let minioStarting: Promise<void> | undefined;
/** What the user needs to use the store, once it takes requests. */
function storeReady(store: EmbeddedS3, kind: string): void {
  // The bucket to show an upload to: the first of the store's that a Function's trigger names.
  const triggered = new Set(
    manifests.store
      .list()
      .flatMap((f) => f.spec.triggers ?? [])
      .flatMap((t) => (t.s3 ? [t.s3.bucket] : [])),
  );
  const first = buckets.find((b) => triggered.has(b));
  // curl signs for S3 with --aws-sigv4; the store wants the payload hash header too.
  const sign = `--aws-sigv4 aws:amz:us-east-1:s3 --user ${values['s3-access-key']}:${values['s3-secret-key']} -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD'`;
  log(
    `eddy: S3 store on ${store.endpoint} (access key ${values['s3-access-key']}, secret ${values['s3-secret-key']}), buckets ${buckets.join(', ')}; ${kind}`,
  );
  if (!first) {
    log(
      `eddy: no Function has an S3 trigger on ${buckets.join(', ') || 'its buckets'} yet: uploads there invoke nothing`,
    );
  } else {
    log(`eddy: upload  curl ${sign} -T photo.jpg ${store.endpoint}/${first}/photo.jpg`);
    // The demo's thumbnail function writes next door: where to look.
    if (buckets.includes(`${first}-thumbnails`)) {
      log(
        `eddy: thumbnail  curl --fail --retry 30 --retry-delay 1 --retry-all-errors ${sign} -o thumbnail.jpg ${store.endpoint}/${first}-thumbnails/photo.jpg`,
      );
    }
  }
}
// There is no Function status to read locally: a trigger that stops delivering, and one that
// delivers again, is said.
const triggerStates = new TriggerStates();
const saidStates = new Map<string, string>();
triggerStates.onChange((key) => {
  const { namespace, name } = splitKey(key);
  const fn = manifests.store.get(namespace, name);
  for (const t of fn?.spec.triggers ?? []) {
    const state = triggerStates.get(key, t.name);
    const id = `${key}/${t.name}`;
    const before = saidStates.get(id);
    if (!state || state.ready) {
      if (before !== undefined && state?.ready)
        log(`eddy: ${key}: trigger ${t.name} delivers again`);
      saidStates.delete(id);
      continue;
    }
    const now = `${state.reason ?? 'SourceError'}: ${state.message ?? ''}`;
    if (now === before) continue;
    saidStates.set(id, now);
    log(`eddy: ${key}: trigger ${t.name} does not deliver (${now})`);
  }
});
const eddy = composeEddy({
  ...(jetstream ? { jetstream } : {}),
  states: triggerStates,
  platform: createLocalPlatform({
    store: manifests.store,
    runtimeMain: resolve(root, 'dist', 'runtime', 'main.js'),
    configMaps: manifests.configMap,
    secrets: manifests.secretData,
    log,
  }),
  store: manifests.store,
  secrets: manifests.secret,
  elector: soleLeader,
  log: (m) => log(`eddy: ${m}`),
  auth: noAuth,
  gateway: { port, host: values.host },
  metrics: { port: metricsPort, host: values.host },
  // Dead-letter sinks of the local stack run on this machine: loopback is theirs to use.
  deadLetterUrls: { allowLoopback: true },
  memoryBudget: gatewayMemoryBudget(),
  sources,
  // Sources' progress (Kinesis checkpoints, schedules' last fires) survives a restart.
  checkpoints: fileCheckpoints(resolve(process.cwd(), '.eddy', 'sources')),
  onListening: (url) => {
    gatewayUrl = url;
    const names = manifests.store.list().map((f) => `${f.metadata.namespace}/${f.metadata.name}`);
    log(
      `eddy: ${names.length} function(s): ${names.join(', ') || 'none yet (fix the files above; edits are picked up)'}`,
    );
    // A function invoked directly is one without triggers, when there is one.
    const direct =
      manifests.store.list().find((f) => (f.spec.triggers ?? []).length === 0) ??
      manifests.store.list()[0];
    if (direct) {
      log(
        `eddy: try  curl -d '{"name":"eddy"}' ${url}/functions/${direct.metadata.namespace}/${direct.metadata.name}`,
      );
    }
    if (embedded) storeReady(embedded, 's3rver');
    else if (minioBinary && s3Port !== undefined && webhookToken) {
      // MinIO reads its webhook target at start: it starts once the gateway has an address.
      minioStarting = startEmbeddedMinio({
        binary: minioBinary,
        port: s3Port,
        host: values.host,
        directory: resolve(process.cwd(), '.eddy', 'minio'),
        accessKeyId: values['s3-access-key'],
        secretAccessKey: values['s3-secret-key'],
        buckets,
        intake: { url: `${url}${s3IntakePath}`, token: webhookToken },
        log: (m) => log(`eddy: s3: ${m}`),
      }).then(
        (store) => {
          embedded = store;
          storeReady(store, `MinIO, ${minioBinary}`);
        },
        (err: unknown) => {
          log(storeFailed(err));
          process.exitCode = 1;
          stop.abort();
        },
      );
    }
  },
});
try {
  await eddy.manager.start(stop.signal);
} catch (err) {
  if (err instanceof PortTaken) log(portAdvice(err));
  process.exitCode = 1;
} finally {
  // Whatever ended the manager ends the rest (the files' watch, the store's start).
  stop.abort();
  await eddy.close();
  await embeddedNats?.stop();
  await minioStarting;
  await embedded?.close();
  if (pending.length > 0) flush();
}
