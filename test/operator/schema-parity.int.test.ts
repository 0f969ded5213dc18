/**
 * The local stack checks Function manifests with operator/src/api/schema.ts, which claims the
 * CRD's rules. Here each manifest goes to both that check and a real API server (a dry-run create
 * with strict field validation, as `kubectl apply` sends it), and the two must agree: accepted or
 * rejected, the same defaulted spec, and problems on the same fields.
 */
import { readFileSync } from 'node:fs';
import * as k8s from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { checkFunction, loadFunctionSchema } from '../../operator/src/api/schema.js';
import { apiVersion, group, kind, plural, version } from '../../operator/src/api/types.js';
import { startKube } from '../harness/kube.js';
import { canRun, useComponent } from '../harness/suite.js';

type Manifest = Record<string, unknown>;

const thumbnail = (
  spec: Record<string, unknown> = {},
  metadata: Record<string, unknown> = {},
): Manifest => ({
  apiVersion,
  kind,
  metadata: { name: 'thumbnail', namespace: 'default', ...metadata },
  spec: { image: 'x:1', ...spec },
});
const trigger = (t: Record<string, unknown>) => thumbnail({ triggers: [t] });
const kinesis = (k: Record<string, unknown>) =>
  trigger({ name: 'k', kinesis: { stream: 's', connection: {}, ...k } });
const dynamodb = (d: Record<string, unknown>) =>
  trigger({ name: 'd', dynamodb: { connection: {}, ...d } });
const streamArn =
  'arn:aws:dynamodb:us-east-1:000000000000:table/orders/stream/2026-12-01T00:00:00.000';
const filters = (...patterns: string[]) => ({
  filterCriteria: { filters: patterns.map((pattern) => ({ pattern })) },
});
const s3 = (s: Record<string, unknown>) =>
  trigger({ name: 'a', s3: { bucket: 'abc', connection: {}, ...s } });
const everyMinute = { expression: 'rate(1 minute)' };
const { spec: _spec, ...specless } = thumbnail();

const cases: Array<[string, Manifest]> = [
  ['valid', thumbnail()],
  ['memory pattern', thumbnail({ memory: 'lots' })],
  ['runtime enum', thumbnail({ runtime: 'python3' })],
  ['min>max', thumbnail({ scaling: { minReplicas: 5, maxReplicas: 2 } })],
  ['scaling {}', thumbnail({ scaling: {} })],
  ['scaling min 3', thumbnail({ scaling: { minReplicas: 3 } })],
  [
    'deadLetter both',
    thumbnail({ deadLetter: { url: 'http://a', s3: { bucket: 'abc', connection: {} } } }),
  ],
  [
    'deadLetter s3',
    thumbnail({ deadLetter: { s3: { bucket: 'abc', connection: { secretRef: { name: 'x' } } } } }),
  ],
  [
    'two kinds',
    trigger({ name: 'a', s3: { bucket: 'abc', connection: {} }, schedule: everyMinute }),
  ],
  ['no kind', trigger({ name: 'a' })],
  ['unknown field', thumbnail({ memroy: '1Gi' })],
  ['memory null', thumbnail({ memory: null })],
  ['memory 10Gi', thumbnail({ memory: '10Gi' })],
  ['memory 10241Mi', thumbnail({ memory: '10241Mi' })],
  ['memory 0.5Gi', thumbnail({ memory: '0.5Gi' })],
  ['memory 134217728', thumbnail({ memory: '134217728' })],
  ['memory 134217727', thumbnail({ memory: '134217727' })],
  ['memory 1e9', thumbnail({ memory: '1e9' })],
  ['memory 128M', thumbnail({ memory: '128M' })],
  ['memory 512', thumbnail({ memory: 512 })],
  ['cpu 500m', thumbnail({ cpu: '500m' })],
  ['cpu 17', thumbnail({ cpu: '17' })],
  ['cpu 9m', thumbnail({ cpu: '9m' })],
  ['cpu 1.5', thumbnail({ cpu: '1.5' })],
  ['cpu 1..5', thumbnail({ cpu: '1..5' })],
  ['name ending in -', thumbnail({}, { name: 'thumb-' })],
  ['name 60', thumbnail({}, { name: 'a'.repeat(60) })],
  ['name dotted', thumbnail({}, { name: 'a.b' })],
  [
    'dup trigger names',
    thumbnail({
      triggers: [
        { name: 'a', schedule: everyMinute },
        { name: 'a', schedule: { expression: 'rate(2 minutes)' } },
      ],
    }),
  ],
  ['AT_TIMESTAMP', kinesis({ startingPosition: 'AT_TIMESTAMP' })],
  [
    'AT_TIMESTAMP ok',
    kinesis({ startingPosition: 'AT_TIMESTAMP', startingTimestamp: '2024-01-01T00:00:00Z' }),
  ],
  ['bad timestamp', kinesis({ startingPosition: 'AT_TIMESTAMP', startingTimestamp: 'yesterday' })],
  ['maxRecordAge 30', kinesis({ maxRecordAgeSeconds: 30 })],
  ['dynamodb by arn', dynamodb({ streamArn })],
  ['dynamodb by table', dynamodb({ table: 'orders', startingPosition: 'LATEST' })],
  ['dynamodb both', dynamodb({ streamArn, table: 'orders' })],
  ['dynamodb neither', dynamodb({})],
  ['dynamodb bad arn', dynamodb({ streamArn: 'orders' })],
  ['dynamodb AT_TIMESTAMP', dynamodb({ table: 'orders', startingPosition: 'AT_TIMESTAMP' })],
  ['dynamodb batch 10001', dynamodb({ table: 'orders', batchSize: 10_001 })],
  ['filter ok', dynamodb({ table: 'orders', ...filters('{"eventName": ["INSERT"]}') })],
  ['filter not an object', kinesis(filters('data.kind = order'))],
  ['filter six', kinesis(filters(...Array<string>(6).fill('{"data": {"a": ["b"]}}')))],
  ['filter without pattern', kinesis({ filterCriteria: { filters: [{}] } })],
  [
    'env valueFrom',
    thumbnail({ env: [{ name: 'A', valueFrom: { secretKeyRef: { name: 's', key: 'k' } } }] }),
  ],
  [
    'payload',
    trigger({
      name: 'n',
      schedule: { expression: '0 3 * * *', payload: { a: 1, b: [1, { c: null }] } },
    }),
  ],
  ['env PORT', thumbnail({ env: [{ name: 'PORT', value: '9000' }] })],
  [
    'env NODE_OPTIONS valueFrom',
    thumbnail({
      env: [{ name: 'NODE_OPTIONS', valueFrom: { secretKeyRef: { name: 's', key: 'k' } } }],
    }),
  ],
  [
    'env NODE_OPTIONS',
    thumbnail({ env: [{ name: 'NODE_OPTIONS', value: '--enable-source-maps' }] }),
  ],
  [
    'env twice',
    thumbnail({
      env: [
        { name: 'A', value: '1' },
        { name: 'A', value: '2' },
      ],
    }),
  ],
  ['input', trigger({ name: 'n', schedule: { ...everyMinute, input: { task: 'cleanup' } } })],
  [
    'payload and input',
    trigger({ name: 'n', schedule: { ...everyMinute, payload: { a: 1 }, input: { b: 2 } } }),
  ],
  ['bad expr', trigger({ name: 'n', schedule: { expression: 'every day' } })],
  ['timeout 1.5', thumbnail({ timeoutSeconds: 1.5 })],
  ['timeout 1000', thumbnail({ timeoutSeconds: 1000 })],
  ['status', { ...thumbnail(), status: { replicas: 3 } }],
  ['code both', thumbnail({ code: { inline: 'x', configMap: { name: 'c' } } })],
  ['image and code', thumbnail({ code: { inline: 'x' } })],
  ['code only', { ...thumbnail(), spec: { code: { configMap: { name: 'c' } } } }],
  ['s3 events empty', s3({ events: [] })],
  ['s3 events null', s3({ events: null })],
  ['s3 bad event', s3({ events: ['ObjectCreated:*'] })],
  ['handler', thumbnail({ handler: 'index' })],
  ['labels', thumbnail({}, { labels: { 'app.kubernetes.io/name': 'x', bad: 'has space' } })],
  ['metadata unknown', thumbnail({}, { foo: 'x' })],
  ['trigger name bad', trigger({ name: 'Up', schedule: everyMinute })],
  ['no spec', specless],
  ['spec null', { ...thumbnail(), spec: null }],
];

/** What one side made of a manifest, comparable across sides: the spec, or the fields at fault. */
type Verdict = { accepted: unknown } | { rejected: string[] };

interface Answer {
  verdict: Verdict;
  /** Everything it said, for a person reading a failure. */
  said: string;
}

const uniqueSorted = (xs: string[]) => [...new Set(xs)].sort();

// The API server's sign that it skipped CEL rules because of schema errors (type, enum,
// required); the local check evaluates them anyway, so it may name more fields then.
const rulesNotChecked = 'some validation rules were not checked';

async function askServer(
  kc: k8s.KubeConfig,
  manifest: Manifest,
): Promise<Answer & { unchecked: boolean }> {
  const api = kc.makeApiClient(k8s.CustomObjectsApi);
  try {
    const created = (await api.createNamespacedCustomObject({
      group,
      version,
      namespace: 'default',
      plural,
      body: structuredClone(manifest),
      dryRun: 'All',
      fieldValidation: 'Strict',
    })) as { spec?: unknown };
    return {
      verdict: { accepted: created.spec },
      said: JSON.stringify(created.spec),
      unchecked: false,
    };
  } catch (err) {
    if (!(err instanceof k8s.ApiException) || (err.code !== 400 && err.code !== 422)) throw err;
    const status = JSON.parse(String(err.body)) as k8s.V1Status;
    const causes = status.details?.causes ?? [];
    const fields = causes
      .filter((c) => !c.message?.includes(rulesNotChecked))
      // Rules on the root are reported at <nil>; the local check gives them no field.
      .map((c) => (c.field === '<nil>' ? '' : (c.field ?? '')));
    // Strict field validation fails while decoding (400): only the message names the fields.
    for (const m of (status.message ?? '').matchAll(/unknown field "([^"]+)"/g)) fields.push(m[1]!);
    return {
      verdict: { rejected: uniqueSorted(fields) },
      said: `${err.code} ${status.message}`,
      unchecked: causes.some((c) => c.message?.includes(rulesNotChecked)),
    };
  }
}

// `spec.triggers[0].kinesis: ...`; a problem that starts with no path is about the whole object.
const leadingPath = /^[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*|\[[^\]]*\])*(?=: )/;

function fieldOf(problem: string): string {
  const path = leadingPath.exec(problem)?.[0] ?? '';
  // ObjectMeta validation names the map for a bad label or annotation; the local check names
  // the key, which helps more.
  return path.replace(/^(metadata\.(?:labels|annotations))\[.*\]$/, '$1');
}

function askLocal(schema: ReturnType<typeof loadFunctionSchema>, manifest: Manifest): Answer {
  const result = checkFunction(schema, manifest);
  if ('fn' in result) {
    return { verdict: { accepted: result.fn.spec }, said: JSON.stringify(result.fn.spec) };
  }
  return {
    verdict: { rejected: uniqueSorted(result.problems.map(fieldOf)) },
    said: result.problems.join('\n  '),
  };
}

describe.skipIf(!canRun('kube'))('the local Function check agrees with a real API server', () => {
  const kube = useComponent(() => startKube());
  const schema = loadFunctionSchema(
    readFileSync(new URL('../../crds/function.yaml', import.meta.url), 'utf8'),
  );

  it.each(cases)('%s', async (_name, manifest) => {
    const server = await askServer(kube().kubeConfig, manifest);
    const local = askLocal(schema, manifest);
    const expected =
      server.unchecked && 'rejected' in server.verdict
        ? { rejected: expect.arrayContaining(server.verdict.rejected) as unknown }
        : server.verdict;
    expect(
      local.verdict,
      `the API server said:\n  ${server.said}\nthe local check said:\n  ${local.said}\n`,
    ).toStrictEqual(expected);
  });
});
