/**
 * The runtimes behind Lambda's Runtime API on a real one-node cluster (test/harness/cluster.ts):
 * `helm install` Eddy, then a Python function and a Java function whose code comes from a
 * ConfigMap and whose image is the operator's own choice (`eddy/runtime:python3.11`,
 * `eddy/runtime:java17`), and a Go function built with aws-lambda-go as `provided` in an image
 * FROM `eddy/runtime:provided`, each run by AWS's client in a pod and invoked through the
 * in-cluster gateway: the event echoed with its context, an exception's errorType and message,
 * a timeout after which a new process answers.
 *
 * One cluster for the whole file, without NATS (synchronous invocations only): the tests run in
 * order and build on each other.
 */
import { writeFile } from 'node:fs/promises';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type Cluster } from '../harness/cluster.js';
import { goBinaries, goBinaryPath, projectRoot } from '../harness/components.js';
import {
  buildFunctionImage,
  buildProjectImages,
  buildRuntimeImages,
  runtimeImageTags,
} from '../harness/images.js';
import { run, tail } from '../harness/proc.js';
import { canRun } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';
import {
  echoEvents,
  errorTypes,
  functionCode,
  handlers,
  type ApiRuntime,
} from '../images/functions.js';

const until = (what: string, probe: () => Promise<boolean>, timeoutMs: number) =>
  waitFor(what, async () => ((await probe()) ? true : undefined), timeoutMs);

const images = { operator: 'eddy/operator:0.1.0', runtime: 'eddy/runtime:nodejs22' };
/** The Go function's image, FROM eddy/runtime:provided with the bootstrap in /var/task. */
const goImage = 'eddy-test/lambda-go:1';
const release = 'eddy';
const system = 'eddy-system';

/**
 * Each function: its name, and what its Function's spec adds to the runtime and handler. After a
 * timeout the next invocation's deadline also covers the new process's start, so the timeouts
 * leave room for a start on a loaded machine: a quarter of a core and 5 s for Python, half a
 * core and 10 s for a JVM (512Mi's own share would be 0.29).
 */
const functions: Record<ApiRuntime, { name: string; spec: string }> = {
  'python3.11': {
    name: 'py',
    spec: 'memory: 256Mi\n  cpu: 250m\n  timeoutSeconds: 5\n  code: {configMap: {name: py-code}}',
  },
  java17: {
    name: 'java',
    spec: 'memory: 512Mi\n  cpu: 500m\n  timeoutSeconds: 10\n  code: {configMap: {name: java-code}}',
  },
  provided: { name: 'go', spec: `memory: 128Mi\n  timeoutSeconds: 3\n  image: ${goImage}` },
};
const runtimes = Object.keys(functions) as ApiRuntime[];

interface Answer {
  status: number;
  body: Record<string, unknown>;
  text: string;
}

describe.skipIf(!canRun('cluster', 'runtimes', 'java'))('runtimes on a one-node cluster', () => {
  let cluster: Cluster;
  let core: k8s.CoreV1Api;
  let apps: k8s.AppsV1Api;
  let token = '';
  let gateway = '';
  const started = Date.now();

  const kubectl = (...args: string[]) => cluster.kubectl(args);

  /** A POST through the gateway with the caller's token; no answer at all is status 0. */
  async function invoke(name: string, event: unknown): Promise<Answer> {
    try {
      const res = await fetch(`${gateway}/functions/default/${name}`, {
        method: 'POST',
        body: JSON.stringify(event),
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        signal: AbortSignal.timeout(60_000),
      });
      const text = await res.text();
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(text) as Record<string, unknown>;
      } catch {
        // not JSON: the text says what it is
      }
      return { status: res.status, body, text };
    } catch (err) {
      return { status: 0, body: {}, text: String(err) };
    }
  }

  beforeAll(async () => {
    await buildProjectImages(images);
    await buildRuntimeImages(runtimeImageTags);
    const goCode = await functionCode('provided');
    try {
      await buildFunctionImage(goImage, runtimeImageTags.provided, goCode);
    } finally {
      await rm(goCode, { recursive: true, force: true });
    }
    const built = Date.now();
    cluster = await startCluster({
      images: [images.operator, ...runtimes.map((r) => runtimeImageTags[r]), goImage],
    });
    console.log(
      `runtimes cluster: images built in ${((built - started) / 1000).toFixed(0)} s, cluster up with them in ${((Date.now() - built) / 1000).toFixed(0)} s`,
    );
    core = cluster.kubeConfig.makeApiClient(k8s.CoreV1Api);
    apps = cluster.kubeConfig.makeApiClient(k8s.AppsV1Api);

    // The code of the Python and Java functions, as ConfigMaps (the class files as binaryData).
    for (const runtime of ['python3.11', 'java17'] as const) {
      const code = await functionCode(runtime);
      try {
        await kubectl(
          'create',
          'configmap',
          `${functions[runtime].name}-code`,
          '-n',
          'default',
          `--from-file=${code}`,
        );
      } finally {
        await rm(code, { recursive: true, force: true });
      }
    }
  }, 1_500_000);

  afterEach(async (ctx) => {
    if (ctx.task.result?.state !== 'fail' || !cluster) return;
    for (const args of [
      ['get', 'pods', '-A', '-o', 'wide'],
      ['describe', 'pods', '-n', 'default'],
      ['logs', '-n', 'default', '-l', 'eddy.dev/function', '--tail=60', '--prefix'],
      ['logs', '-n', system, '-l', 'app.kubernetes.io/component=gateway', '--tail=60', '--prefix'],
      ['logs', '-n', system, '-l', 'app.kubernetes.io/component=controller', '--tail=40'],
    ]) {
      const out = await kubectl(...args).catch((err: Error) => err.message);
      process.stderr.write(`\n----- kubectl ${args.join(' ')} -----\n${tail(out, 120)}\n`);
    }
  });

  afterAll(async () => {
    await cluster?.stop();
    console.log(`runtimes cluster suite: ${((Date.now() - started) / 1000).toFixed(0)} s in all`);
  });

  it('helm install, then a Function of each runtime: its pod runs the runtime image the operator chose', async () => {
    await run(
      goBinaryPath(goBinaries.helm),
      [
        'install',
        release,
        join(projectRoot, 'charts', 'eddy'),
        '--namespace',
        system,
        '--create-namespace',
        // One replica of each: this suite needs no failover.
        '--set',
        'operator.replicas=1',
        '--set',
        'gateway.replicas=1',
        '--set',
        'gateway.pdb.enabled=false',
        '--wait',
        '--timeout',
        '4m',
        '--kubeconfig',
        cluster.kubeconfigPath,
      ],
      { timeoutMs: 300_000 },
    );
    await kubectl('create', 'serviceaccount', 'caller', '-n', 'default');
    await kubectl(
      'create',
      'rolebinding',
      'caller-invokes',
      '-n',
      'default',
      '--clusterrole',
      'eddy-invoker',
      '--serviceaccount',
      'default:caller',
    );
    token = (await kubectl('create', 'token', 'caller', '-n', 'default')).trim();
    const service = await core.readNamespacedService({
      namespace: system,
      name: `${release}-gateway`,
    });
    gateway = `http://${service.spec!.clusterIP!}:8080`;

    const manifest = runtimes
      .map(
        (runtime) => `apiVersion: eddy.dev/v1alpha1
kind: Function
metadata: {name: ${functions[runtime].name}, namespace: default}
spec:
  runtime: ${runtime}
  handler: ${handlers[runtime]}
  scaling: {minReplicas: 1, maxReplicas: 1}
  ${functions[runtime].spec}
`,
      )
      .join('---\n');
    const file = join(cluster.dir, 'runtimes.yaml');
    await writeFile(file, manifest);
    const applied = Date.now();
    await kubectl('apply', '-f', file);
    const ready: Record<string, number> = {};
    await until(
      'a ready pod of each Function',
      async () => {
        for (const runtime of runtimes) {
          const { name } = functions[runtime];
          if (ready[name]) continue;
          const d = await apps
            .readNamespacedDeployment({ namespace: 'default', name })
            .catch(() => undefined);
          if ((d?.status?.readyReplicas ?? 0) >= 1) ready[name] = Date.now() - applied;
        }
        return Object.keys(ready).length === runtimes.length;
      },
      240_000,
    );
    console.log(
      `kubectl apply -> pod Ready: ${Object.entries(ready)
        .map(([n, ms]) => `${n} ${ms} ms`)
        .join(', ')}`,
    );
    for (const runtime of runtimes) {
      const pods = await core.listNamespacedPod({
        namespace: 'default',
        labelSelector: `eddy.dev/function=${functions[runtime].name}`,
      });
      expect(pods.items[0]?.spec?.containers[0]?.image).toBe(
        runtime === 'provided' ? goImage : runtimeImageTags[runtime],
      );
    }
  }, 600_000);

  it('the event echoed with its context, by each runtime through the gateway', async () => {
    await Promise.all(
      runtimes.map(async (runtime) => {
        const { name } = functions[runtime];
        const answers: Answer[] = [];
        for (const event of echoEvents(runtime, { order: 7, items: ['a', 'b'] })) {
          let answer: Answer | undefined;
          // A Service just wired may refuse for a moment: only "no answer" is tried again.
          await until(
            `an answer from ${name}`,
            async () => (answer = await invoke(name, event)).status !== 0,
            30_000,
          );
          answers.push(answer!);
        }
        for (const a of answers) expect(a.status, `${name}: ${a.text}`).toBe(200);
        const merged = Object.assign({}, ...answers.map((a) => a.body)) as Record<string, unknown>;
        expect(merged, name).toMatchObject({
          echo: { order: 7, items: ['a', 'b'] },
          functionName: name,
        });
        expect(Number(merged.memoryLimitInMB)).toBe(
          { 'python3.11': 256, java17: 512, provided: 128 }[runtime],
        );
        expect(Number(merged.remainingMs)).toBeGreaterThan(0);
        if (runtime !== 'provided') expect(merged.runtime).toBe(`AWS_Lambda_${runtime}`);
      }),
    );
  }, 180_000);

  it("an exception: the handler's own errorType and message", async () => {
    await Promise.all(
      runtimes.map(async (runtime) => {
        const { name } = functions[runtime];
        const a = await invoke(name, { action: 'error', message: `no order 7 in ${name}` });
        expect(a.status, `${name}: ${a.text}`).toBe(500);
        expect(a.body).toMatchObject({
          errorType: errorTypes[runtime],
          errorMessage: `no order 7 in ${name}`,
        });
      }),
    );
  }, 120_000);

  it('a timeout: 504 Sandbox.Timedout, and a new process answers the next invocation', async () => {
    await Promise.all(
      runtimes.map(async (runtime) => {
        const { name } = functions[runtime];
        const late = await invoke(name, { action: 'sleep', sleepMs: 60_000 });
        expect(late.status, `${name}: ${late.text}`).toBe(504);
        expect(late.body).toMatchObject({ errorType: 'Sandbox.Timedout' });
        expect(String(late.body.errorMessage)).toMatch(/Task timed out after \d+\.00 seconds/);
        const next = await invoke(name, { action: 'sleep', sleepMs: 1 });
        expect(next.status, `${name}: ${next.text}`).toBe(200);
        expect(next.body).toMatchObject({ slept: 1 });
      }),
    );
  }, 180_000);

  it("inline code: a python3.11 Function's index.py and a provided Function's executable bootstrap, from the operator's ConfigMap", async () => {
    // As AWS's custom runtime tutorial writes it: #!/bin/sh (bash, as on Lambda) and curl.
    const bootstrap = `#!/bin/sh
set -euo pipefail
API="http://\${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation"
while true; do
  HEADERS="$(mktemp)"
  EVENT=$(curl -sS -D "$HEADERS" "$API/next")
  ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  curl -sS -o /dev/null -d "{\\"inline\\":\\"provided\\",\\"handler\\":\\"$_HANDLER\\",\\"event\\":$EVENT}" "$API/$ID/response"
done
`;
    const python = [
      'def handler(event, context):',
      '    return {"inline": "python3.11", "functionName": context.function_name, "event": event}',
      '',
    ].join('\n');
    const fn = (name: string, runtime: string, inline: string) => ({
      apiVersion: 'eddy.dev/v1alpha1',
      kind: 'Function',
      metadata: { name, namespace: 'default' },
      spec: { runtime, handler: 'index.handler', memory: '128Mi', code: { inline } },
    });
    const file = join(cluster.dir, 'inline.json');
    await writeFile(
      file,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [fn('py-inline', 'python3.11', python), fn('sh-inline', 'provided', bootstrap)],
      }),
    );
    await kubectl('apply', '-f', file);
    const answers = await Promise.all(
      ['py-inline', 'sh-inline'].map(async (name) => {
        let answer: Answer | undefined;
        // From zero: the gateway activates the Function; only "no answer" is tried again.
        await until(
          `an answer from ${name}`,
          async () => (answer = await invoke(name, { order: 8 })).status !== 0,
          120_000,
        );
        return answer!;
      }),
    );
    expect(answers[0]!.status, answers[0]!.text).toBe(200);
    expect(answers[0]!.body).toEqual({
      inline: 'python3.11',
      functionName: 'py-inline',
      event: { order: 8 },
    });
    expect(answers[1]!.status, answers[1]!.text).toBe(200);
    expect(answers[1]!.body).toEqual({
      inline: 'provided',
      handler: 'index.handler',
      event: { order: 8 },
    });
  }, 180_000);
});
