/**
 * Who may invoke, against a real API server: the gateway authenticates bearer tokens with a
 * TokenReview and authorises with a SubjectAccessReview under the chart's RBAC (the operator's
 * service account, the ClusterRole eddy-invoker). Callers are service accounts with tokens
 * from the TokenRequest API. The authorizer talks to the API server through a counting proxy,
 * so a test can see which calls cost an API request, and runs on a clock the test moves, so
 * cache expiry is exact rather than timed.
 */
import * as k8s from '@kubernetes/client-node';
import { createServer, type Server } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { kubernetesAuthorizer } from '../../operator/src/auth/kubernetes.js';
import { startKube, serviceAccountKubeConfig } from '../harness/kube.js';
import { gatewayAccount, installChart, operatorKubeConfig } from '../harness/operator.js';
import { canRun, useComponent } from '../harness/suite.js';
import { inlineFunction, namespace, quiet, startStack, type Stack } from './stack.js';

const other = 'auth-other';

/** A plain-HTTP proxy to the API server that counts the requests it forwards, by path. */
async function countingProxy(
  server: string,
  ca: string,
): Promise<{ url: string; counts: Map<string, number>; close(): Promise<void> }> {
  const counts = new Map<string, number>();
  const proxy: Server = createServer((req, res) => {
    const path = req.url ?? '/';
    counts.set(path, (counts.get(path) ?? 0) + 1);
    const upstream = httpsRequest(
      new URL(path, server),
      { method: req.method, headers: req.headers, ca, signal: AbortSignal.timeout(10_000) },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
  const { port } = proxy.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    counts,
    close: () =>
      new Promise<void>((r) => {
        proxy.closeAllConnections();
        proxy.close(() => r());
      }),
  };
}

const tokenReviews = '/apis/authentication.k8s.io/v1/tokenreviews';
const accessReviews = '/apis/authorization.k8s.io/v1/subjectaccessreviews';

describe.skipIf(!canRun('kube'))('who may invoke (tokens and RBAC)', () => {
  const kube = useComponent(() => startKube());
  let stack: Stack;
  let proxy: Awaited<ReturnType<typeof countingProxy>>;
  let rbac: k8s.RbacAuthorizationV1Api;
  let now = 1_000_000;
  const authLogs: string[] = [];
  const tokens = {} as Record<'nobody' | 'all' | 'one' | 'reader', string>;
  const requests = () =>
    (proxy.counts.get(tokenReviews) ?? 0) + (proxy.counts.get(accessReviews) ?? 0);

  const tokenOf = async (ns: string, name: string) => {
    const kc = await serviceAccountKubeConfig(kube(), ns, name);
    return kc.getCurrentUser()!.token!;
  };
  const call = (
    token: string | undefined,
    path: string,
    init: RequestInit = { method: 'POST', body: '{}' },
  ) =>
    fetch(`${stack.url}${path}`, {
      ...init,
      headers: {
        'content-type': 'application/json',
        ...(token !== undefined ? { authorization: `Bearer ${token}` } : {}),
      },
    });
  const invoke = (token: string | undefined, name: string, ns = namespace) =>
    call(token, `/functions/${ns}/${name}`);
  const listed = async (token: string) => {
    const res = await call(token, '/functions', { method: 'GET' });
    expect(res.status).toBe(200);
    const { functions } = (await res.json()) as {
      functions: Array<{ namespace: string; name: string }>;
    };
    return functions.map((f) => `${f.namespace}/${f.name}`).sort();
  };
  const role = (ns: string, name: string, rules: k8s.V1PolicyRule[]) =>
    rbac.createNamespacedRole({ namespace: ns, body: { metadata: { name }, rules } });
  const bind = (ns: string, name: string, roleRef: k8s.V1RoleRef, account: string) =>
    rbac.createNamespacedRoleBinding({
      namespace: ns,
      body: {
        metadata: { name },
        roleRef,
        subjects: [{ kind: 'ServiceAccount', name: account, namespace }],
      },
    });
  const invoker = {
    apiGroup: 'rbac.authorization.k8s.io',
    kind: 'ClusterRole',
    name: 'eddy-invoker',
  };
  const roleRef = (name: string) => ({ apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name });

  beforeAll(async () => {
    const admin = kube().kubeConfig;
    await installChart(kube());
    const core = admin.makeApiClient(k8s.CoreV1Api);
    for (const ns of [namespace, other])
      await core.createNamespace({ body: { metadata: { name: ns } } });
    rbac = admin.makeApiClient(k8s.RbacAuthorizationV1Api);
    // The gateway asks as the chart's gateway service account, through the counting proxy.
    const operator = await operatorKubeConfig(kube(), gatewayAccount);
    proxy = await countingProxy(kube().server, kube().caPem);
    const viaProxy = new k8s.KubeConfig();
    viaProxy.loadFromOptions({
      // Plain HTTP on loopback: the client takes a token over it only with skipTLSVerify.
      clusters: [{ name: 'proxy', server: proxy.url, skipTLSVerify: true }],
      users: [{ name: 'operator', token: operator.getCurrentUser()!.token! }],
      contexts: [{ name: 'proxy', cluster: 'proxy', user: 'operator' }],
      currentContext: 'proxy',
    });
    const code = 'export const handler = async (e) => ({ ok: true });';
    stack = await startStack(
      [
        // Kept up, so that no test waits for a replica to start on a busy machine.
        inlineFunction('hello', code, quiet({ scaling: { minReplicas: 1 } })),
        inlineFunction('secret', code, quiet({ scaling: { minReplicas: 1 } })),
        {
          ...inlineFunction('ledger', code, quiet()),
          metadata: { name: 'ledger', namespace: other, generation: 1, uid: 'uid-ledger' },
        },
      ],
      {
        auth: kubernetesAuthorizer({ kc: viaProxy, log: (m) => authLogs.push(m), now: () => now }),
      },
    );
    // Callers: nobody (no grant), all (eddy-invoker in the namespace), one (a Role naming
    // hello only, invoke and get), reader (get on every function in the namespace).
    for (const name of ['nobody', 'all', 'one', 'reader'] as const)
      tokens[name] = await tokenOf(namespace, name);
    await bind(namespace, 'all-invokes', invoker, 'all');
    await role(namespace, 'hello-only', [
      {
        apiGroups: ['eddy.dev'],
        resources: ['functions'],
        verbs: ['invoke', 'get'],
        resourceNames: ['hello'],
      },
    ]);
    await bind(namespace, 'one-hello', roleRef('hello-only'), 'one');
    await role(namespace, 'read-functions', [
      { apiGroups: ['eddy.dev'], resources: ['functions'], verbs: ['get'] },
    ]);
    await bind(namespace, 'reader-reads', roleRef('read-functions'), 'reader');
  }, 120_000);

  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') {
      process.stderr.write(
        `--- authorizer\n${authLogs.join('\n')}\n--- stack\n${stack?.logs.join('\n')}\n`,
      );
    }
  });

  afterAll(async () => {
    await stack?.stop();
    await proxy?.close();
  });

  it('answers 401 with WWW-Authenticate: Bearer without a token and with a bad one', async () => {
    for (const token of [undefined, 'not-a-token']) {
      for (const res of [
        await invoke(token, 'hello'),
        await call(token, `/functions/${namespace}/hello/async`),
        await call(token, '/functions', { method: 'GET' }),
      ]) {
        expect(res.status).toBe(401);
        expect(res.headers.get('www-authenticate')).toBe('Bearer');
        const body = (await res.json()) as { errorType: string; errorMessage: string };
        expect(body.errorType).toBe('UnauthorizedException');
        expect(body.errorMessage).toMatch(/kubectl create token/);
      }
    }
    // Health and readiness stay open.
    expect((await call(undefined, '/healthz', { method: 'GET' })).status).toBe(200);
    expect((await call(undefined, '/readyz', { method: 'GET' })).status).toBe(200);
  });

  it('answers 403 naming the verb, resource and namespace a known caller lacks', async () => {
    const res = await invoke(tokens.nobody, 'hello');
    expect(res.status).toBe(403);
    const body = (await res.json()) as { errorType: string; errorMessage: string };
    expect(body.errorType).toBe('AccessDeniedException');
    expect(body.errorMessage).toContain(`system:serviceaccount:${namespace}:nobody may not invoke`);
    expect(body.errorMessage).toContain(
      `verb invoke on resource functions (group eddy.dev) in namespace ${namespace}`,
    );
    expect(body.errorMessage).toContain('eddy-invoker');
    expect((await call(tokens.nobody, `/functions/${namespace}/hello/async`)).status).toBe(403);
  });

  it('invokes with the ClusterRole eddy-invoker bound in the namespace, and only there', async () => {
    expect((await invoke(tokens.all, 'hello')).status).toBe(200);
    expect((await invoke(tokens.all, 'secret')).status).toBe(200);
    expect((await call(tokens.all, `/functions/${namespace}/hello/async`)).status).toBe(202);
    expect((await invoke(tokens.all, 'ledger', other)).status).toBe(403);
  });

  it('grants one function and not another with a Role naming it in resourceNames', async () => {
    const res = await invoke(tokens.one, 'hello');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ ok: true });
    expect((await invoke(tokens.one, 'secret')).status).toBe(403);
  });

  it('lists only the functions the caller may get', async () => {
    expect(await listed(tokens.nobody)).toEqual([]);
    expect(await listed(tokens.one)).toEqual([`${namespace}/hello`]);
    expect(await listed(tokens.reader)).toEqual([`${namespace}/hello`, `${namespace}/secret`]);
    // The operator's own token, as the autoscaler reads every gateway's load: everything.
    const operator = (await operatorKubeConfig(kube())).getCurrentUser()!.token!;
    expect(await listed(operator)).toEqual([
      `${other}/ledger`,
      `${namespace}/hello`,
      `${namespace}/secret`,
    ]);
  });

  it('answers 404 naming only the functions the caller may get', async () => {
    // all may invoke anything in the namespace but get nothing: the 404 names no function.
    let res = await invoke(tokens.all, 'missing');
    expect(res.status).toBe(404);
    let message = ((await res.json()) as { errorMessage: string }).errorMessage;
    expect(message).not.toMatch(/hello|secret/);
    // A caller who may invoke the whole namespace and get hello sees hello only.
    await bind(namespace, 'one-invokes', invoker, 'one');
    res = await invoke(tokens.one, 'missing');
    expect(res.status).toBe(404);
    message = ((await res.json()) as { errorMessage: string }).errorMessage;
    expect(message).toContain('hello');
    expect(message).not.toContain('secret');
    // A caller who may not invoke it learns nothing of whether it exists: 403 either way.
    expect((await invoke(tokens.nobody, 'missing')).status).toBe(403);
  });

  it('costs no API request for a warm caller; identical misses at once share one', async () => {
    expect((await invoke(tokens.reader, 'hello')).status).toBe(403);
    await bind(namespace, 'reader-invokes', invoker, 'reader');
    // Still denied from the cache (a deny is kept up to 5 s)...
    expect((await invoke(tokens.reader, 'hello')).status).toBe(403);
    // ...and allowed once it has expired.
    now += 5_000;
    expect((await invoke(tokens.reader, 'hello')).status).toBe(200);
    // Warm: invocations cost no API request...
    const before = requests();
    for (let i = 0; i < 5; i++) expect((await invoke(tokens.reader, 'hello')).status).toBe(200);
    expect(requests()).toBe(before);
    // ...nor do listings, once one has asked its questions.
    expect(await listed(tokens.reader)).toHaveLength(2);
    const listedOnce = requests();
    expect(await listed(tokens.reader)).toHaveLength(2);
    for (let i = 0; i < 5; i++) expect((await invoke(tokens.reader, 'hello')).status).toBe(200);
    expect(requests()).toBe(listedOnce);

    // A new caller, ten invocations at once: one TokenReview and one SubjectAccessReview.
    const fresh = await tokenOf(namespace, 'fresh');
    await bind(namespace, 'fresh-invokes', invoker, 'fresh');
    const reviews = proxy.counts.get(tokenReviews) ?? 0;
    const access = proxy.counts.get(accessReviews) ?? 0;
    const answers = await Promise.all(Array.from({ length: 10 }, () => invoke(fresh, 'hello')));
    expect(answers.map((r) => r.status)).toEqual(Array(10).fill(200));
    expect(proxy.counts.get(tokenReviews)! - reviews).toBe(1);
    expect(proxy.counts.get(accessReviews)! - access).toBe(1);
  });

  it('takes only tokens meant for its own audiences when it has some', async () => {
    const operator = await operatorKubeConfig(kube(), gatewayAccount);
    const auth = kubernetesAuthorizer({
      kc: operator,
      log: () => undefined,
      audiences: ['eddy-gateway'],
    });
    const core = kube().kubeConfig.makeApiClient(k8s.CoreV1Api);
    const meant = await core.createNamespacedServiceAccountToken({
      namespace,
      name: 'all',
      body: { spec: { audiences: ['eddy-gateway'], expirationSeconds: 600 } },
    });
    const caller = await auth.authenticate({ authorization: `Bearer ${meant.status!.token}` });
    expect(caller.identity.username).toBe(`system:serviceaccount:${namespace}:all`);
    expect(await caller.may({ verb: 'invoke', namespace, name: 'hello' })).toBe(true);
    // A token for the API server itself is refused, and the message says how to get one.
    const err = await auth
      .authenticate({ authorization: `Bearer ${tokens.all}` })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({ status: 401, errorType: 'UnauthorizedException' });
    expect((err as Error).message).toContain('--audience eddy-gateway');
  });

  it('stops allowing a revoked grant within 30 s, and not before the cache says so', async () => {
    const token = await tokenOf(namespace, 'revoked');
    await bind(namespace, 'revoked-invokes', invoker, 'revoked');
    expect((await invoke(token, 'hello')).status).toBe(200);
    await rbac.deleteNamespacedRoleBinding({ namespace, name: 'revoked-invokes' });
    const asked = requests();
    now += 29_999;
    expect((await invoke(token, 'hello')).status).toBe(200);
    expect(requests()).toBe(asked);
    now += 1;
    const res = await invoke(token, 'hello');
    expect(res.status).toBe(403);
    expect(requests()).toBeGreaterThan(asked);
  });
});

describe('who may invoke, when the API server does not answer', () => {
  /** An API server that takes requests and never answers them, counting them. */
  const silent = async () => {
    let requests = 0;
    const server = createServer(() => void requests++);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as AddressInfo;
    return {
      url: `http://127.0.0.1:${port}`,
      requests: () => requests,
      close: () =>
        new Promise<void>((r) => {
          server.closeAllConnections();
          server.close(() => r());
        }),
    };
  };
  const kubeConfigFor = (server: string) => {
    const kc = new k8s.KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'c', server, skipTLSVerify: true }],
      users: [{ name: 'u', token: 'operator-token' }],
      contexts: [{ name: 'c', cluster: 'c', user: 'u' }],
      currentContext: 'c',
    });
    return kc;
  };

  it('refuses with 503 EddyAuthUnavailable once the review passes its deadline, and asks again next time', async () => {
    const api = await silent();
    const logs: string[] = [];
    try {
      const auth = kubernetesAuthorizer({
        kc: kubeConfigFor(api.url),
        log: (m) => logs.push(m),
        timeoutMs: 200,
      });
      for (const attempt of [1, 2]) {
        const err = await auth
          .authenticate({ authorization: 'Bearer some-token' })
          .catch((e: unknown) => e);
        expect(err).toMatchObject({ status: 503, errorType: 'EddyAuthUnavailable' });
        expect((err as { retryAfterSeconds: number }).retryAfterSeconds).toBe(1);
        expect((err as Error).message).toMatch(
          /\(TokenReview: no answer within 200 ms\); try again$/,
        );
        // A failure is not an answer: nothing is kept, the next caller asks again.
        expect(api.requests()).toBe(attempt);
      }
      expect(logs.join('\n')).not.toContain('some-token');
    } finally {
      await api.close();
    }
  });
});
