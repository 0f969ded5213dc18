/** The in-cluster operator: `node dist/operator/main.js`. Wiring only. */
import { KubeConfig } from '@kubernetes/client-node';
import { noAuth } from './auth/authorizer.js';
import { kubernetesAuthorizer } from './auth/kubernetes.js';
import { clusterInvokeCredentials } from './auth/invoke-credentials.js';
import { gatewayPeersLoad } from './autoscaler/peers.js';
import { LazyClusterCaches } from './caches.js';
import { clusterDrainMs, composeEddy } from './compose.js';
import { neverLeader } from './manager.js';
import { withConnectionReuse } from './connection-reuse.js';
import { clusterElector, controllerRunnable } from './operator.js';
import { withRequestDeadlines } from './request-deadlines.js';
import { createKubernetesPlatform } from './platform/kubernetes.js';
import { clusterSecrets } from './secrets.js';
import {
  gatewayAuthSetting,
  gatewayTokenAudiences,
  loadSettings,
  queueSettings,
  roleSetting,
} from './settings.js';
import { configMapCheckpoints } from './sources/checkpoints.js';
import { dynamodbSource } from './sources/dynamodb.js';
import { kinesisSource } from './sources/kinesis.js';
import { s3PollSource } from './sources/s3-poll.js';
import { s3Source } from './sources/s3.js';
import { scheduleSource } from './sources/schedule.js';
import type { SourceFactory } from './sources/source.js';
import { TriggerStates } from './sources/states.js';

const log = (m: string) => console.log(`eddy-operator: ${m}`);
// A setting that is wrong stops the operator with one line that says what to set.
const [settings, authMode, audiences, role, jetstream] = (() => {
  try {
    return [
      loadSettings(),
      gatewayAuthSetting(),
      gatewayTokenAudiences(),
      roleSetting(),
      queueSettings(),
    ] as const;
  } catch (err) {
    log(err instanceof Error ? err.message : String(err));
    process.exit(1);
  }
})();
const kc = new KubeConfig();
// In a pod: the service account; elsewhere: KUBECONFIG or ~/.kube/config.
kc.loadFromDefault();
if (
  kc.getCurrentContext() === 'loaded-context' &&
  kc.getCurrentCluster()?.server === 'http://localhost:8080'
) {
  // What the client falls back to when it found no kubeconfig and no service account.
  log(
    'no cluster to talk to: not in a pod, and no kubeconfig (set KUBECONFIG, or run `npm start` for the local stack)',
  );
  process.exit(1);
}
withRequestDeadlines(withConnectionReuse(kc), settings.apiTimeoutMs);
if (authMode === 'none') {
  log(
    'EDDY_GATEWAY_AUTH=none: invocations are not authenticated; anyone who reaches the gateway may invoke and list every function',
  );
}
const stop = new AbortController();
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    log(`${signal}: draining, handing over the lease and stopping`);
    stop.abort();
  });
}
log(
  role === 'gateway'
    ? `${settings.identity} starting as a gateway (invoke API, intakes, the queue's consumers)`
    : `${settings.identity} starting${role === 'controller' ? ' as the controller' : ''} (lease ${settings.namespace}/eddy-operator)`,
);
if (!jetstream && role !== 'controller') {
  log(
    "no event queue (EDDY_NATS_URL): accepted asynchronous events wait in this process's memory, and a process that stops loses those not yet delivered",
  );
}
const caches = new LazyClusterCaches(kc, log, role !== 'gateway');
const states = new TriggerStates();
const sources: SourceFactory[] = [scheduleSource(), kinesisSource(), dynamodbSource()];
const s3 = s3Source({ stores: settings.s3Stores ?? [], webhookArn: settings.s3WebhookArn });
sources.push(s3.factory, s3PollSource());
const peers = gatewayPeersLoad({
  kc,
  namespace: settings.namespace,
  service: settings.gatewayService,
  log,
});
// Access keys for Lambda's Invoke API (SigV4): Secrets in the release's namespace, followed
// where invocations are taken.
const invokeCredentials =
  authMode !== 'none' && role !== 'controller'
    ? clusterInvokeCredentials(kc, settings.namespace, log)
    : undefined;
const eddy = composeEddy({
  role,
  ...(jetstream ? { jetstream } : {}),
  name: settings.identity,
  platform: createKubernetesPlatform({
    kc,
    log,
    deployments: caches.deployments,
    // The chart lets the gateway's account watch function pods, not the controller's.
    watchPods: role === 'gateway',
  }),
  store: caches.store,
  secrets: clusterSecrets(kc),
  elector: role === 'gateway' ? neverLeader : clusterElector(kc, settings, log),
  log,
  auth:
    authMode === 'none'
      ? noAuth
      : kubernetesAuthorizer({
          kc,
          log,
          audiences,
          ...(invokeCredentials ? { invokeCredentials } : {}),
        }),
  gateway: { port: settings.gatewayPort },
  metrics: { port: settings.metricsPort },
  memoryBudget: settings.gatewayMemoryBudget,
  drainDelayMs: 5_000,
  // A gateway Deployment's replica: its pod's grace period covers the longest drain. The
  // controller's own invocations (Kinesis batches) are replayed from its checkpoint by the next
  // leader, and one process doing both (no EDDY_ROLE) has no such grace period: the default.
  ...(role === 'gateway' ? { drainMs: clusterDrainMs } : {}),
  startCaches: (signal) => caches.start(signal),
  // The gateways' load; the controller adds its own (it invokes Kinesis batches itself).
  load: (gateway) =>
    role === 'controller'
      ? async (signal) => {
          const read = await peers(signal);
          return Array.isArray(read)
            ? [gateway.load(), ...read]
            : { ...read, reports: [gateway.load(), ...read.reports] };
        }
      : peers,
  runnables: [
    controllerRunnable({ kc, caches, settings, log, states, cleaners: [s3.cleaner] }),
    ...(invokeCredentials
      ? [
          {
            name: 'invoke-credentials',
            leaderOnly: false,
            run: (s: AbortSignal) => invokeCredentials.run(s),
          },
        ]
      : []),
  ],
  sources,
  states,
  checkpoints: configMapCheckpoints(kc),
});
try {
  await eddy.manager.start(stop.signal);
  await eddy.close();
  log('stopped');
} catch {
  // The manager has logged what failed; a new pod starts clean.
  process.exitCode = 1;
}
