/**
 * The Secrets a Function may use, read from a real API server under the chart's role: only
 * those labelled eddy.dev/connection: "true"; any other is refused with the command that allows
 * it, for triggers (SecretNotAllowed in their state) and S3 dead letters alike.
 */
import * as k8s from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import type { EddyFunction } from '../../operator/src/api/types.js';
import { createDeadLetterSender } from '../../operator/src/gateway/dead-letter.js';
import { clusterSecrets } from '../../operator/src/secrets.js';
import { resolveConnection, SourceProblem } from '../../operator/src/sources/connection.js';
import { startKube } from '../harness/kube.js';
import { installChart, operatorKubeConfig } from '../harness/operator.js';
import { canRun, useComponent } from '../harness/suite.js';

const ns = 'default';
const pair = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'example-secret-key-0' };

const fn: EddyFunction = {
  apiVersion: 'eddy.dev/v1alpha1',
  kind: 'Function',
  metadata: { name: 'thumbnail', namespace: ns },
  spec: {},
};

describe.skipIf(!canRun('kube'))('Secrets a Function names', () => {
  const kube = useComponent(() => startKube());

  it('hands out only Secrets labelled eddy.dev/connection: "true", and says how to label others', async () => {
    await installChart(kube());
    const core = kube().kubeConfig.makeApiClient(k8s.CoreV1Api);
    await core.createNamespacedSecret({
      namespace: ns,
      body: {
        metadata: { name: 'store-creds', labels: { 'eddy.dev/connection': 'true' } },
        stringData: pair,
      },
    });
    // The namespace's other credentials, not meant for any Function.
    await core.createNamespacedSecret({
      namespace: ns,
      body: { metadata: { name: 'database-creds' }, stringData: pair },
    });
    await core.createNamespacedSecret({
      namespace: ns,
      body: {
        metadata: { name: 'almost', labels: { 'eddy.dev/connection': 'yes' } },
        stringData: pair,
      },
    });
    // Read as the operator reads them: its service account, under the chart's role.
    const secrets = clusterSecrets(await operatorKubeConfig(kube()));

    await expect(secrets(ns, 'store-creds')).resolves.toEqual(pair);
    for (const name of ['database-creds', 'almost']) {
      await expect(secrets(ns, name)).rejects.toThrow(
        `kubectl label secret ${name} -n ${ns} eddy.dev/connection=true`,
      );
    }

    // A trigger naming it: SecretNotAllowed, with the fix, and no key in the message.
    const problem = await resolveConnection(
      secrets,
      fn,
      { endpoint: 'http://store.example:9000', secretRef: { name: 'database-creds' } },
      'trigger uploads (s3.connection)',
    ).catch((err: unknown) => err);
    expect(problem).toBeInstanceOf(SourceProblem);
    expect((problem as SourceProblem).reason).toBe('SecretNotAllowed');
    expect((problem as SourceProblem).message).toContain(
      'kubectl label secret database-creds -n default eddy.dev/connection=true',
    );
    expect((problem as SourceProblem).message).not.toContain(pair.secretAccessKey);
    await expect(
      resolveConnection(
        secrets,
        fn,
        { secretRef: { name: 'store-creds' } },
        'trigger uploads (s3.connection)',
      ),
    ).resolves.toMatchObject({ credentials: pair });

    // An S3 dead letter naming it fails before anything is sent.
    const sender = createDeadLetterSender({ secrets });
    const dead: EddyFunction = {
      ...fn,
      spec: {
        deadLetter: {
          s3: {
            bucket: 'failed',
            connection: { endpoint: 'http://127.0.0.1:1', secretRef: { name: 'database-creds' } },
          },
        },
      },
    };
    await expect(
      sender.send(dead, {
        event: {
          id: 'evt-1',
          type: 'dev.eddy.invoke',
          source: '/eddy/gateway',
          time: new Date().toISOString(),
          body: Buffer.from('{}'),
          headers: {},
        },
        error: { errorType: 'Error', errorMessage: 'failed' },
        attempts: 1,
        condition: 'RetriesExhausted',
        firstAttemptAt: new Date().toISOString(),
        lastAttemptAt: new Date().toISOString(),
      }),
    ).rejects.toThrow('is not labelled eddy.dev/connection: "true"');
    sender.close();
  });
});
