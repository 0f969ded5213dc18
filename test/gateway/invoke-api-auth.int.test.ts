/**
 * Lambda's Invoke API against a real API server: AWS SDK callers sign with SigV4, with access
 * keys kept in Secrets labelled eddy.dev/invoke-credentials in the release's namespace, which the
 * gateway lists and watches as the chart's gateway account. Each key acts as the ServiceAccount
 * its Secret names, and RBAC (a SubjectAccessReview, the chart's ClusterRole eddy-invoker)
 * decides, as for that account's bearer token, which keeps working on this API too.
 */
import { InvokeCommand, LambdaClient, type LambdaClientConfig } from '@aws-sdk/client-lambda';
import * as k8s from '@kubernetes/client-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  clusterInvokeCredentials,
  invokeCredentialsLabel,
} from '../../operator/src/auth/invoke-credentials.js';
import { kubernetesAuthorizer } from '../../operator/src/auth/kubernetes.js';
import { serviceAccountKubeConfig, startKube } from '../harness/kube.js';
import {
  gatewayAccount,
  installChart,
  operatorKubeConfig,
  releaseNamespace,
} from '../harness/operator.js';
import { postHeadersOnly } from '../harness/headers-only.js';
import { canRun, useComponent } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';
import { inlineFunction, namespace, quiet, startStack, type Stack } from './stack.js';
import { payload, refused } from './lambda-client.js';

const other = 'invoke-other';
const code =
  'export const handler = async (event, context) => ({ event, id: context.awsRequestId });';

describe.skipIf(!canRun('kube'))('Lambda Invoke API with SigV4 and RBAC', () => {
  const kube = useComponent(() => startKube());
  let stack: Stack;
  let core: k8s.CoreV1Api;
  const following = new AbortController();
  let followed: Promise<void> | undefined;
  const logs: string[] = [];
  const clients: LambdaClient[] = [];
  const client = (accessKeyId: string, secretAccessKey: string, more: LambdaClientConfig = {}) => {
    const c = new LambdaClient({
      endpoint: stack.url,
      region: 'eu-west-1',
      credentials: { accessKeyId, secretAccessKey },
      maxAttempts: 1,
      ...more,
    });
    clients.push(c);
    return c;
  };
  const keySecret = (name: string, accessKeyId: string, account: string) =>
    core.createNamespacedSecret({
      namespace: releaseNamespace,
      body: {
        metadata: { name, labels: { [invokeCredentialsLabel]: 'true' } },
        stringData: {
          accessKeyId,
          secretAccessKey: `${accessKeyId}-secret`,
          serviceAccount: account,
        },
      },
    });

  beforeAll(async () => {
    const admin = kube().kubeConfig;
    await installChart(kube());
    core = admin.makeApiClient(k8s.CoreV1Api);
    for (const ns of [namespace, other]) {
      await core.createNamespace({ body: { metadata: { name: ns } } });
    }
    const rbac = admin.makeApiClient(k8s.RbacAuthorizationV1Api);
    await rbac.createNamespacedRoleBinding({
      namespace,
      body: {
        metadata: { name: 'ci-invokes' },
        roleRef: {
          apiGroup: 'rbac.authorization.k8s.io',
          kind: 'ClusterRole',
          name: 'eddy-invoker',
        },
        subjects: [{ kind: 'ServiceAccount', name: 'ci', namespace }],
      },
    });
    await keySecret('ci-key', 'AKIDCI', `${namespace}/ci`);
    await keySecret('nobody-key', 'AKIDNOBODY', `${namespace}/nobody`);
    // A Secret without the label is no key, whatever it holds.
    await core.createNamespacedSecret({
      namespace: releaseNamespace,
      body: {
        metadata: { name: 'unlabelled' },
        stringData: {
          accessKeyId: 'AKIDUNLABELLED',
          secretAccessKey: 'AKIDUNLABELLED-secret',
          serviceAccount: `${namespace}/ci`,
        },
      },
    });
    // As the chart's gateway account: it may list and watch Secrets in its namespace only.
    const gatewayKc = await operatorKubeConfig(kube(), gatewayAccount);
    const credentials = clusterInvokeCredentials(gatewayKc, releaseNamespace, (m) => logs.push(m));
    followed = credentials.run(following.signal);
    const fn = (name: string, ns = namespace) => ({
      ...inlineFunction(name, code, quiet({ scaling: { minReplicas: 1 } })),
      metadata: { name, namespace: ns, generation: 1, uid: `uid-${ns}-${name}` },
    });
    stack = await startStack([fn('hello'), fn('ledger', other)], {
      auth: kubernetesAuthorizer({
        kc: gatewayKc,
        log: (m) => logs.push(m),
        invokeCredentials: credentials,
      }),
    });
  }, 120_000);

  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') {
      process.stderr.write(
        `--- gateway\n${logs.join('\n')}\n--- stack\n${stack?.logs.join('\n')}\n`,
      );
    }
  });

  afterAll(async () => {
    for (const c of clients) c.destroy();
    await stack?.stop();
    following.abort();
    await followed;
  });

  it('invokes as the ServiceAccount a key acts as, by name in its namespace or by ARN', async () => {
    const ci = client('AKIDCI', 'AKIDCI-secret');
    const out = await ci.send(
      new InvokeCommand({ FunctionName: 'hello', Payload: payload({ a: 1 }) }),
    );
    expect(out.StatusCode).toBe(200);
    expect(JSON.parse(Buffer.from(out.Payload!).toString())).toMatchObject({ event: { a: 1 } });
    const byArn = await ci.send(
      new InvokeCommand({
        FunctionName: `arn:aws:lambda:eu-west-1:${namespace}:function:hello`,
        LogType: 'Tail',
        Payload: payload({ b: 2 }),
      }),
    );
    expect(byArn.StatusCode).toBe(200);
    expect(Buffer.from(byArn.LogResult!, 'base64').toString()).toMatch(/^START RequestId: /);
    const event = await ci.send(
      new InvokeCommand({ FunctionName: 'hello', InvocationType: 'Event', Payload: payload({}) }),
    );
    expect(event.StatusCode).toBe(202);
    const dry = await ci.send(
      new InvokeCommand({ FunctionName: 'hello', InvocationType: 'DryRun', Payload: payload({}) }),
    );
    expect(dry.StatusCode).toBe(204);
  });

  it('refuses what RBAC does not grant, with 403 AccessDeniedException, whether or not it exists', async () => {
    const nobody = client('AKIDNOBODY', 'AKIDNOBODY-secret');
    for (const FunctionName of ['hello', 'missing']) {
      const e = await refused(
        nobody.send(new InvokeCommand({ FunctionName, Payload: payload({}) })),
      );
      expect(e.name).toBe('AccessDeniedException');
      expect(e.$metadata.httpStatusCode).toBe(403);
      expect(e.message).toContain(`system:serviceaccount:${namespace}:nobody may not invoke`);
    }
    // ci may invoke its own namespace's functions, not another's.
    const ci = client('AKIDCI', 'AKIDCI-secret');
    const e = await refused(
      ci.send(
        new InvokeCommand({ FunctionName: `${other}:function:ledger`, Payload: payload({}) }),
      ),
    );
    expect(e.name).toBe('AccessDeniedException');
    // And a missing function it may invoke: 404.
    const missing = await refused(
      ci.send(new InvokeCommand({ FunctionName: 'missing', Payload: payload({}) })),
    );
    expect(missing.name).toBe('ResourceNotFoundException');
    expect(missing.message).toMatch(
      new RegExp(`^Function not found: arn:aws:lambda:eu-west-1:${namespace}:function:missing`),
    );
  });

  it("answers an unknown key, a wrong secret and a skewed clock with Lambda's 403s", async () => {
    const unknown = await refused(
      client('AKIDUNKNOWN', 'x').send(
        new InvokeCommand({ FunctionName: 'hello', Payload: payload({}) }),
      ),
    );
    expect(unknown.name).toBe('UnrecognizedClientException');
    expect(unknown.$metadata.httpStatusCode).toBe(403);
    expect(unknown.message).toMatch(/^The security token included in the request is invalid/);
    const unlabelled = await refused(
      client('AKIDUNLABELLED', 'AKIDUNLABELLED-secret').send(
        new InvokeCommand({ FunctionName: 'hello', Payload: payload({}) }),
      ),
    );
    expect(unlabelled.name).toBe('UnrecognizedClientException');
    const wrong = await refused(
      client('AKIDCI', 'not-the-secret').send(
        new InvokeCommand({ FunctionName: 'hello', Payload: payload({}) }),
      ),
    );
    expect(wrong.name).toBe('InvalidSignatureException');
    expect(wrong.$metadata.httpStatusCode).toBe(403);
    expect(wrong.message).toMatch(/^The request signature we calculated does not match/);
    // The client's clock ten minutes behind: its signature has expired.
    const skewed = await refused(
      client('AKIDCI', 'AKIDCI-secret', { systemClockOffset: -10 * 60_000 }).send(
        new InvokeCommand({ FunctionName: 'hello', Payload: payload({}) }),
      ),
    );
    expect(skewed.name).toBe('InvalidSignatureException');
    expect(skewed.message).toMatch(/^Signature expired: \d{8}T\d{6}Z is now earlier than /);
  });

  it('refuses a signature with an unknown key before its body arrives', async () => {
    // Declares a 6 MB body and sends none: the headers alone decide, and the budget is not held.
    const amzDate = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+/, '');
    const answer = await postHeadersOnly(
      stack.url,
      '/2015-03-31/functions/hello/invocations',
      {
        'content-length': 6_000_000,
        'x-amz-date': amzDate,
        authorization: `AWS4-HMAC-SHA256 Credential=AKIDUNKNOWN/${amzDate.slice(0, 8)}/eu-west-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=${'0'.repeat(64)}`,
      },
      10_000,
    );
    expect(answer.status).toBe(403);
    const refusal = JSON.parse(answer.body) as { Type: string; message: string };
    expect(refusal.Type).toBe('User');
    expect(refusal.message).toMatch(/^The security token included in the request is invalid/);
  });

  it('answers an unsigned call with 403 MissingAuthenticationTokenException, and takes a bearer token', async () => {
    const url = `${stack.url}/2015-03-31/functions/hello/invocations`;
    const unsigned = await fetch(url, { method: 'POST', body: '{}' });
    expect(unsigned.status).toBe(403);
    expect(unsigned.headers.get('x-amzn-errortype')).toBe('MissingAuthenticationTokenException');
    expect(unsigned.headers.get('x-amzn-requestid')).toBeTruthy();
    expect(((await unsigned.json()) as { Type: string }).Type).toBe('User');
    // The ServiceAccount's own token: the name is in its namespace.
    const token = (await serviceAccountKubeConfig(kube(), namespace, 'ci')).getCurrentUser()!
      .token!;
    const withToken = await fetch(url, {
      method: 'POST',
      body: '{"c":3}',
      headers: { authorization: `Bearer ${token}` },
    });
    expect(withToken.status).toBe(200);
    expect(withToken.headers.get('x-amz-executed-version')).toBe('$LATEST');
    expect(((await withToken.json()) as { event: unknown }).event).toEqual({ c: 3 });
    const badToken = await fetch(url, {
      method: 'POST',
      body: '{}',
      headers: { authorization: 'Bearer not-a-token' },
    });
    expect(badToken.status).toBe(403);
    expect(badToken.headers.get('x-amzn-errortype')).toBe('UnrecognizedClientException');
  });

  it('follows the Secrets: a new key works once written, a deleted one stops', async () => {
    const late = client('AKIDLATE', 'AKIDLATE-secret');
    const call = () =>
      late.send(new InvokeCommand({ FunctionName: 'hello', Payload: payload({}) }));
    expect((await refused(call())).name).toBe('UnrecognizedClientException');
    await keySecret('late-key', 'AKIDLATE', `${namespace}/ci`);
    await waitFor('the new key to be taken', async () =>
      (await call().catch(() => undefined))?.StatusCode === 200 ? true : undefined,
    );
    await core.deleteNamespacedSecret({ namespace: releaseNamespace, name: 'late-key' });
    await waitFor('the deleted key to be refused', async () =>
      (await refused(call()).catch(() => undefined))?.name === 'UnrecognizedClientException'
        ? true
        : undefined,
    );
  });
});
