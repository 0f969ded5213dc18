/**
 * The local stack (`npm start`): the gateway, autoscaler and local platform of a cluster, with
 * Functions from manifest files and their replicas as processes on 127.0.0.1. Wiring only.
 *
 *   node dist/operator/dev.js [--port 8080] <manifest files...>
 */
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { composeEddy } from './compose.js';
import { ManifestSet } from './local/manifests.js';
import { soleLeader } from './manager.js';
import { createLocalPlatform } from './platform/local.js';
import { s3Settings } from './settings.js';
import { fileCheckpoints } from './sources/checkpoints.js';
import { kinesisSource } from './sources/kinesis.js';
import { s3PollSource } from './sources/s3-poll.js';
import { s3Source } from './sources/s3.js';
import { scheduleSource } from './sources/schedule.js';
import type { SourceFactory } from './sources/source.js';

const usage = `usage: node dist/operator/dev.js [--port 8080] [--host 127.0.0.1] <manifest files...>
  Runs the gateway, the autoscaler and each Function's replicas as local processes.
  Files hold Function, Secret and ConfigMap manifests (several documents per file); edits
  are picked up while it runs. Triggers run too (S3 notifications need EDDY_S3_WEBHOOK_TOKEN;
  progress is kept under .eddy/sources). Invoke with:
    curl -d '{"name":"eddy"}' http://127.0.0.1:8080/functions/<namespace>/<name>`;

const { values, positionals } = (() => {
  try {
    return parseArgs({
      allowPositionals: true,
      options: {
        port: { type: 'string', default: '8080' },
        host: { type: 'string', default: '127.0.0.1' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    console.error(`${err instanceof Error ? err.message : String(err)}\n${usage}`);
    process.exit(2);
  }
})();
const port = Number(values.port);
if (
  values.help ||
  positionals.length === 0 ||
  !Number.isInteger(port) ||
  port < 0 ||
  port > 65_535
) {
  console.error(
    values.help || positionals.length === 0
      ? usage
      : `--port ${values.port}: use 0 to 65535\n${usage}`,
  );
  process.exit(values.help ? 0 : 2);
}

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
const manifests = new ManifestSet({
  crdPath: resolve(root, 'crds', 'function.yaml'),
  report: (line) => console.error(line),
});
await manifests.load(positionals);
const stop = new AbortController();
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    log(`eddy: ${signal}: draining and stopping the functions' processes`);
    stop.abort();
  });
}
manifests.watch(stop.signal);
const sources: SourceFactory[] = [scheduleSource(), kinesisSource()];
const s3 = s3Source(
  (({ s3WebhookToken, s3WebhookArn }) => ({
    webhookToken: s3WebhookToken,
    webhookArn: s3WebhookArn,
  }))(s3Settings()),
);
sources.push(s3.factory, s3PollSource());
const { manager } = composeEddy({
  platform: createLocalPlatform({
    store: manifests.store,
    runtimeMain: resolve(root, 'dist', 'runtime', 'main.js'),
    configMaps: manifests.configMap,
    log,
  }),
  store: manifests.store,
  secrets: manifests.secret,
  elector: soleLeader,
  log: (m) => log(`eddy: ${m}`),
  gateway: { port, host: values.host },
  sources,
  // Sources' progress (Kinesis checkpoints, schedules' last fires) survives a restart.
  checkpoints: fileCheckpoints(resolve(process.cwd(), '.eddy', 'sources')),
  onListening: (url) => {
    const names = manifests.store.list().map((f) => `${f.metadata.namespace}/${f.metadata.name}`);
    log(
      `eddy: ${names.length} function(s): ${names.join(', ') || 'none yet (fix the files above; edits are picked up)'}`,
    );
    if (names[0]) log(`eddy: try  curl -d '{"name":"eddy"}' ${url}/functions/${names[0]}`);
  },
});
try {
  await manager.start(stop.signal);
} catch {
  process.exitCode = 1;
} finally {
  if (pending.length > 0) flush();
}
