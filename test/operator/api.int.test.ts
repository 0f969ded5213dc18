import https from 'node:https';
import * as k8s from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { startKube } from '../harness/kube.js';
import { canRun, useComponent } from '../harness/suite.js';

/** GET a path of the API server with the kubeconfig's credentials; the body as text. */
async function rawGet(
  kc: k8s.KubeConfig,
  path: string,
  headers: Record<string, string> = {},
): Promise<string> {
  const opts: https.RequestOptions = { headers };
  await kc.applyToHTTPSOptions(opts);
  const url = new URL(path, kc.getCurrentCluster()!.server);
  return new Promise((resolve, reject) => {
    https
      .get(url, opts, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () =>
          res.statusCode === 200 ? resolve(body) : reject(new Error(`${res.statusCode} ${body}`)),
        );
      })
      .on('error', reject);
  });
}

const group = 'eddy.dev';
const version = 'v1alpha1';
const plural = 'functions';

type Manifest = { metadata: { name: string }; spec: Record<string, unknown> };

const inline = { code: { inline: 'export const handler = async () => 1;' } };
const connection = { endpoint: 'http://minio:9000', secretRef: { name: 'creds' } };

async function create(
  kc: k8s.KubeConfig,
  namespace: string,
  m: Manifest,
): Promise<Record<string, unknown>> {
  const api = kc.makeApiClient(k8s.CustomObjectsApi);
  return (await api.createNamespacedCustomObject({
    group,
    version,
    namespace,
    plural,
    body: { apiVersion: `${group}/${version}`, kind: 'Function', ...m },
  })) as Record<string, unknown>;
}

async function rejection(kc: k8s.KubeConfig, m: Manifest): Promise<string> {
  try {
    await create(kc, 'default', m);
  } catch (err) {
    if (err instanceof k8s.ApiException) {
      expect(err.code).toBe(422);
      return String((JSON.parse(String(err.body)) as { message: string }).message);
    }
    throw err;
  }
  throw new Error(`${m.metadata.name} was accepted`);
}

describe.skipIf(!canRun('kube'))('Function API (CRD) on a real API server', () => {
  const kube = useComponent(() => startKube());

  it('accepts a minimal Function and fills in the defaults', async () => {
    const created = await create(kube().kubeConfig, 'default', {
      metadata: { name: 'minimal' },
      spec: { ...inline },
    });
    expect(created.spec).toEqual({
      ...inline,
      runtime: 'nodejs22',
      handler: 'index.handler',
      memory: '128Mi',
      ephemeralStorage: '512Mi',
      timeoutSeconds: 3,
      concurrency: 1,
      scaling: { minReplicas: 0, maxReplicas: 10, idleSeconds: 60, activationTimeoutSeconds: 120 },
      retry: { maxAttempts: 2, maxEventAgeSeconds: 21600 },
    });
  });

  it('accepts every kind of trigger and defaults their fields', async () => {
    const created = await create(kube().kubeConfig, 'default', {
      metadata: { name: 'everything' },
      spec: {
        image: 'registry.example.com/thumbnail:1.0',
        memory: '1769Mi',
        cpu: '500m',
        deadLetter: { url: 'http://sink.default.svc/dead' },
        env: [{ name: 'DEST', value: 'x' }],
        envFrom: [{ secretRef: { name: 's' } }],
        serviceAccountName: 'thumbnail',
        triggers: [
          { name: 'uploads', s3: { bucket: 'photos', filter: { suffix: '.jpg' }, connection } },
          { name: 'clicks', kinesis: { stream: 'clicks', connection } },
          {
            name: 'nightly',
            schedule: {
              expression: 'cron(0 3 * * ? *)',
              timezone: 'Europe/Berlin',
              payload: { mode: 'full' },
            },
          },
          { name: 'often', schedule: { expression: 'rate(5 minutes)' } },
          { name: 'unix', schedule: { expression: '*/10 * * * *' } },
        ],
      },
    });
    const triggers = (created.spec as { triggers: Array<Record<string, Record<string, unknown>>> })
      .triggers;
    expect(triggers[0]!.s3).toMatchObject({
      events: ['s3:ObjectCreated:*'],
      mode: 'notifications',
    });
    expect(triggers[0]!.s3!.connection).toMatchObject({
      region: 'us-east-1',
      forcePathStyle: true,
      secretRef: {
        name: 'creds',
        accessKeyIdKey: 'accessKeyId',
        secretAccessKeyKey: 'secretAccessKey',
      },
    });
    expect(triggers[1]!.kinesis).toMatchObject({
      startingPosition: 'TRIM_HORIZON',
      batchSize: 100,
      maxBatchingWindowSeconds: 0,
      bisectOnError: false,
      maxRetryAttempts: -1,
      maxRecordAgeSeconds: -1,
      reportBatchItemFailures: false,
    });
    expect(triggers[2]!.schedule).toMatchObject({
      timezone: 'Europe/Berlin',
      startingDeadlineSeconds: 300,
      payload: { mode: 'full' },
    });
  });

  const base = (name: string, spec: Record<string, unknown>): Manifest => ({
    metadata: { name },
    spec: { ...inline, ...spec },
  });
  const invalid: Array<[string, Manifest, RegExp]> = [
    [
      'memory 64Mi',
      base('mem-low', { memory: '64Mi' }),
      /spec\.memory: Invalid value: .*memory must be from 128Mi to 10Gi, such as 512Mi/,
    ],
    ['memory 20Gi', base('mem-high', { memory: '20Gi' }), /memory must be from 128Mi to 10Gi/],
    [
      'memory that is no quantity',
      base('mem-word', { memory: 'lots' }),
      /spec\.memory: Invalid value: "lots"/,
    ],
    [
      'timeout 0',
      base('timeout-zero', { timeoutSeconds: 0 }),
      /spec\.timeoutSeconds: Invalid value: 0: spec\.timeoutSeconds in body should be greater than or equal to 1/,
    ],
    [
      'timeout 1000',
      base('timeout-long', { timeoutSeconds: 1000 }),
      /spec\.timeoutSeconds: Invalid value: 1000: spec\.timeoutSeconds in body should be less than or equal to 900/,
    ],
    [
      'both image and code',
      base('both', { image: 'x:1' }),
      /set exactly one of spec\.image .* or spec\.code/,
    ],
    [
      'neither image nor code',
      { metadata: { name: 'neither' }, spec: { memory: '256Mi' } },
      /set exactly one of spec\.image .* or spec\.code/,
    ],
    [
      'code with inline and configMap',
      {
        metadata: { name: 'code-both' },
        spec: { code: { inline: 'x', configMap: { name: 'c' } } },
      },
      /spec\.code takes exactly one of inline or configMap/,
    ],
    [
      'duplicate trigger names',
      base('dup', {
        triggers: [
          { name: 'a', schedule: { expression: 'rate(1 minute)' } },
          { name: 'a', schedule: { expression: 'rate(2 minutes)' } },
        ],
      }),
      /trigger names must be unique within a Function/,
    ],
    [
      'a trigger with two kinds',
      base('two-kinds', {
        triggers: [
          {
            name: 'a',
            schedule: { expression: 'rate(1 minute)' },
            s3: { bucket: 'photos', connection },
          },
        ],
      }),
      /a trigger takes exactly one of s3, kinesis, dynamodb or schedule/,
    ],
    [
      'a filter pattern that is not a JSON object',
      base('filter-text', {
        triggers: [
          {
            name: 'a',
            kinesis: {
              stream: 's',
              connection,
              filterCriteria: { filters: [{ pattern: 'eventName = INSERT' }] },
            },
          },
        ],
      }),
      /a filter pattern is a JSON object, such as \{"eventName": \["INSERT"\]\}/,
    ],
    [
      'a dynamodb trigger naming both a stream and a table',
      base('ddb-both', {
        triggers: [
          {
            name: 'a',
            dynamodb: {
              streamArn:
                'arn:aws:dynamodb:us-east-1:000000000000:table/orders/stream/2026-12-01T00:00:00.000',
              table: 'orders',
              connection,
            },
          },
        ],
      }),
      /set exactly one of streamArn or table/,
    ],
    [
      'a trigger with no kind',
      base('no-kind', { triggers: [{ name: 'a' }] }),
      /a trigger takes exactly one of s3, kinesis, dynamodb or schedule/,
    ],
    [
      'a malformed cron',
      base('bad-cron', { triggers: [{ name: 'a', schedule: { expression: 'cron(0 3 * *)' } }] }),
      /expression must be rate\(<n> minute\(s\)\|hour\(s\)\|day\(s\)\), an EventBridge cron\(\.\.\.\) with six fields/,
    ],
    [
      'a rate of zero',
      base('bad-rate', { triggers: [{ name: 'a', schedule: { expression: 'rate(0 minutes)' } }] }),
      /expression must be rate/,
    ],
    [
      'min > max replicas',
      base('min-max', { scaling: { minReplicas: 5, maxReplicas: 2 } }),
      /scaling\.minReplicas must not exceed scaling\.maxReplicas/,
    ],
    [
      'an unknown runtime',
      base('runtime', { runtime: 'nodejs18' }),
      /spec\.runtime: Unsupported value: "nodejs18": supported values: "nodejs20", "nodejs22", "nodejs24"/,
    ],
    [
      'negative concurrency',
      base('concurrency', { concurrency: -1 }),
      /spec\.concurrency: Invalid value: -1: spec\.concurrency in body should be greater than or equal to 1/,
    ],
    [
      'AT_TIMESTAMP without a timestamp',
      base('kinesis-at', {
        triggers: [
          { name: 'a', kinesis: { stream: 's', startingPosition: 'AT_TIMESTAMP', connection } },
        ],
      }),
      /startingPosition AT_TIMESTAMP needs startingTimestamp/,
    ],
    [
      'a dead letter with url and s3',
      base('dlq', { deadLetter: { url: 'http://x', s3: { bucket: 'dead', connection } } }),
      /deadLetter takes exactly one of url or s3/,
    ],
    [
      'ephemeral storage over 10Gi',
      base('tmp', { ephemeralStorage: '11Gi' }),
      /ephemeralStorage must be from 1Mi to 10Gi/,
    ],
    [
      'a name that cannot name a Service',
      base('a.b', {}),
      /a Function's name must be a DNS label of at most 58 characters/,
    ],
  ];

  it.each(invalid)(
    'rejects %s with a message that says what to fix',
    async (_what, manifest, message) => {
      expect(await rejection(kube().kubeConfig, manifest)).toMatch(message);
    },
  );

  it('gives kubectl get fn the columns READY, REPLICAS, MEMORY, TRIGGERS, AGE and (wide) URL', async () => {
    const table = JSON.parse(
      await rawGet(kube().kubeConfig, '/apis/eddy.dev/v1alpha1/namespaces/default/functions', {
        accept: 'application/json;as=Table;v=v1;g=meta.k8s.io',
      }),
    ) as {
      columnDefinitions: Array<{ name: string; priority: number }>;
      rows: Array<{ cells: unknown[] }>;
    };
    expect(table.columnDefinitions.map((c) => [c.name, c.priority])).toEqual([
      ['Name', 0],
      ['Ready', 0],
      ['Replicas', 0],
      ['Memory', 0],
      ['Triggers', 0],
      ['Age', 0],
      ['URL', 1],
    ]);
    const everything = table.rows.find((r) => r.cells[0] === 'everything');
    expect(everything?.cells[3]).toBe('1769Mi');
  });

  it('describes every field, so kubectl explain teaches the API', async () => {
    const kc = kube().kubeConfig;
    const api = kc.makeApiClient(k8s.ApiextensionsV1Api);
    const crd = await api.readCustomResourceDefinition({ name: 'functions.eddy.dev' });
    const missing: string[] = [];
    const walk = (schema: k8s.V1JSONSchemaProps, path: string) => {
      for (const [name, prop] of Object.entries(schema.properties ?? {})) {
        const p = `${path}.${name}`;
        if (p !== '.metadata' && !prop.description) missing.push(p);
        walk(prop, p);
      }
      if (schema.items && !Array.isArray(schema.items))
        walk(schema.items as k8s.V1JSONSchemaProps, `${path}[]`);
    };
    walk(crd.spec.versions[0]!.schema!.openAPIV3Schema!, '');
    expect(missing).toEqual([]);
    // The published OpenAPI document, which kubectl explain reads, carries them too.
    const doc = JSON.parse(await rawGet(kc, '/openapi/v3/apis/eddy.dev/v1alpha1')) as {
      components: {
        schemas: Record<string, { properties?: Record<string, k8s.V1JSONSchemaProps> }>;
      };
    };
    const fn = doc.components.schemas['dev.eddy.v1alpha1.Function']!;
    expect(fn.properties!.spec!.properties!.triggers!.description).toBe(
      'Event sources bound to the function.',
    );
  });
});
