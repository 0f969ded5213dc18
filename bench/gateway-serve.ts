/**
 * The gateway's process in `npm run bench:gateway`: the gateway, the autoscaler and the local
 * platform composed as `npm start` composes them, serving the Functions of a JSON file. The bench
 * bundles this file with esbuild as `npm run build` bundles the operator, so that what it
 * measures is the code that ships (not the same code through a TypeScript loader, whose helpers
 * cost the gateway a few percent of its CPU).
 *
 *   node <bundle> <functions.json> <runtime main> <log file>
 */
import { createWriteStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import * as k8s from '@kubernetes/client-node';
import type { EddyFunction } from '../operator/src/api/types.js';
import { noAuth, type Authorizer } from '../operator/src/auth/authorizer.js';
import { kubernetesAuthorizer } from '../operator/src/auth/kubernetes.js';
import { composeEddy } from '../operator/src/compose.js';
import { withConnectionReuse } from '../operator/src/connection-reuse.js';
import { MemoryFunctionStore } from '../operator/src/functions.js';
import { soleLeader } from '../operator/src/manager.js';
import { createLocalPlatform } from '../operator/src/platform/local.js';

async function serve(functionsFile: string, runtimeMain: string, logFile: string): Promise<void> {
  const store = new MemoryFunctionStore();
  for (const fn of JSON.parse(await readFile(functionsFile, 'utf8')) as EddyFunction[]) {
    store.set(fn);
  }
  const out = createWriteStream(logFile, { flags: 'a' });
  // Three lines per invocation from every replica: too many to keep, nothing to learn from.
  const perInvocation = /^\[[^\]]+\] (START|END|REPORT) RequestId/;
  const log = (line: string) => {
    if (!perInvocation.test(line)) out.write(`${line}\n`);
  };
  const stopping = new AbortController();
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => stopping.abort());
  }
  // The bench holds stdin open: when it ends, the bench is gone, however it went.
  process.stdin.once('end', () => stopping.abort());
  process.stdin.resume();
  // With a kubeconfig, callers that send a bearer token are checked as in a cluster (TokenReview,
  // SubjectAccessReview, cached); callers without one are not, so that one gateway and one
  // replica serve both figures.
  let auth: Authorizer = noAuth;
  const kubeconfig = process.env.BENCH_KUBECONFIG;
  if (kubeconfig) {
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(kubeconfig);
    const kubernetes = kubernetesAuthorizer({ kc: withConnectionReuse(kc), log });
    auth = {
      mode: 'kubernetes',
      authenticate: (h) =>
        h.authorization === undefined ? noAuth.authenticate(h) : kubernetes.authenticate(h),
    };
  }
  const eddy = composeEddy({
    platform: createLocalPlatform({ store, runtimeMain, log }),
    store,
    secrets: async (ns, name) => {
      throw new Error(`no Secret ${ns}/${name} in the bench`);
    },
    elector: soleLeader,
    log: (m) => log(`eddy: ${m}`),
    auth,
    gateway: {
      port: 0,
      host: '127.0.0.1',
      // The burst section's "before": scale-up past the first replica by the autoscaler alone.
      burstScaleUp: process.env.BENCH_BURST_SCALE_UP !== 'off',
    },
    metrics: { port: 0, host: '127.0.0.1' },
    onMetricsListening: (url) => process.stdout.write(`metrics on ${url}\n`),
    onListening: (url) => process.stdout.write(`gateway listening on ${url}\n`),
    // The queue section's second gateway keeps its events in NATS JetStream.
    ...(process.env.BENCH_NATS_URL ? { jetstream: { servers: [process.env.BENCH_NATS_URL] } } : {}),
  });
  let code = 0;
  try {
    await eddy.manager.start(stopping.signal);
    await eddy.close();
  } catch {
    code = 1;
  }
  await new Promise<void>((resolve) => out.end(resolve));
  process.exit(code);
}

const [functionsFile, runtimeMain, logFile] = process.argv.slice(2);
if (!functionsFile || !runtimeMain || !logFile) {
  console.error('usage: gateway-serve <functions.json> <runtime main> <log file>');
  process.exit(2);
}
await serve(functionsFile, runtimeMain, logFile);
