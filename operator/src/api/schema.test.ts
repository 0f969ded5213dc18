import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { checkFunction, loadFunctionSchema } from './schema.js';
import type { EddyFunction } from './types.js';

const crdText = readFileSync(new URL('../../../crds/function.yaml', import.meta.url), 'utf8');
const schema = loadFunctionSchema(crdText);

function manifest(spec: Record<string, unknown> = {}, metadata: Record<string, unknown> = {}) {
  return {
    apiVersion: 'eddy.dev/v1alpha1',
    kind: 'Function',
    metadata: { name: 'thumbnail', namespace: 'photos', ...metadata },
    spec: { image: 'registry.example.com/thumbnail:1.0', ...spec },
  };
}

function accepted(obj: unknown): EddyFunction {
  const result = checkFunction(schema, obj);
  if ('problems' in result) throw new Error(`rejected:\n${result.problems.join('\n')}`);
  return result.fn;
}

function problems(obj: unknown): string[] {
  const result = checkFunction(schema, obj);
  if ('fn' in result) throw new Error(`accepted: ${JSON.stringify(result.fn)}`);
  return result.problems;
}

const connection = { endpoint: 'http://minio:9000', secretRef: { name: 'minio-creds' } };

/** A CRD around `openAPIV3Schema`, as YAML (JSON is YAML). */
function crdWith(openAPIV3Schema: unknown): string {
  return JSON.stringify({
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    spec: { versions: [{ name: 'v1alpha1', schema: { openAPIV3Schema } }] },
  });
}

describe('checkFunction with crds/function.yaml', () => {
  it('applies the CRD defaults, also inside defaulted objects and list items', () => {
    const fn = accepted(
      manifest({
        triggers: [
          { name: 'uploads', s3: { bucket: 'photos', connection } },
          { name: 'clicks', kinesis: { stream: 'clicks', connection } },
          { name: 'nightly', schedule: { expression: 'cron(0 3 * * ? *)' } },
        ],
      }),
    );
    expect(fn.spec).toMatchObject({
      runtime: 'nodejs22',
      handler: 'index.handler',
      memory: '128Mi',
      ephemeralStorage: '512Mi',
      timeoutSeconds: 3,
      concurrency: 1,
      scaling: { minReplicas: 0, maxReplicas: 10, idleSeconds: 60 },
      retry: { maxAttempts: 2, maxEventAgeSeconds: 21600 },
    });
    const [s3, kinesis, schedule] = fn.spec.triggers!;
    expect(s3!.s3).toMatchObject({
      events: ['s3:ObjectCreated:*'],
      mode: 'notifications',
      connection: {
        region: 'us-east-1',
        forcePathStyle: true,
        secretRef: {
          name: 'minio-creds',
          accessKeyIdKey: 'accessKeyId',
          secretAccessKeyKey: 'secretAccessKey',
        },
      },
    });
    expect(kinesis!.kinesis).toMatchObject({
      startingPosition: 'TRIM_HORIZON',
      batchSize: 100,
      maxRetryAttempts: -1,
      maxRecordAgeSeconds: -1,
    });
    expect(schedule!.schedule).toMatchObject({ timezone: 'UTC', startingDeadlineSeconds: 300 });
  });

  it('keeps what the manifest sets, and defaults a field given as null', () => {
    const fn = accepted(
      manifest({ memory: null, timeoutSeconds: 30, scaling: { minReplicas: 2 } }),
    );
    expect(fn.spec.memory).toBe('128Mi');
    expect(fn.spec.timeoutSeconds).toBe(30);
    expect(fn.spec.scaling).toMatchObject({ minReplicas: 2, maxReplicas: 10 });
  });

  it('puts a Function without a namespace in default and ignores its status', () => {
    const obj = { ...manifest(), metadata: { name: 'thumbnail' }, status: { replicas: 3 } };
    const fn = accepted(obj);
    expect(fn.metadata.namespace).toBe('default');
    expect(fn.status).toBeUndefined();
    expect(obj.metadata).toEqual({ name: 'thumbnail' });
  });

  it('rejects a memory that is not a quantity, naming the field and the pattern', () => {
    expect(problems(manifest({ memory: 'lots' }))).toContainEqual(
      expect.stringMatching(/^spec\.memory: Invalid value: "lots": must match \^\(/),
    );
  });

  it('checks memory against 128Mi..10Gi exactly, with the CEL rule and its message', () => {
    const message = 'spec.memory: memory must be from 128Mi to 10Gi, such as 512Mi';
    expect(problems(manifest({ memory: '64Mi' }))).toEqual([message]);
    expect(problems(manifest({ memory: '10241Mi' }))).toEqual([message]);
    expect(problems(manifest({ memory: '134217727' }))).toEqual([message]);
    for (const memory of ['128Mi', '134217728', '0.5Gi', '10Gi', '1e9']) {
      expect(accepted(manifest({ memory })).spec.memory).toBe(memory);
    }
  });

  it("takes Java's Class::method handler for java17 only", () => {
    const accepted = (spec: Record<string, unknown>) =>
      'fn' in checkFunction(schema, manifest(spec));
    expect(accepted({ runtime: 'java17', handler: 'example.Hello::handleRequest' })).toBe(true);
    expect(accepted({ runtime: 'python3.11', handler: 'app.handler' })).toBe(true);
    expect(
      problems(manifest({ runtime: 'nodejs22', handler: 'example.Hello::handleRequest' })),
    ).toEqual([
      "spec: a handler of the form package.Class::method is Java's; with another runtime use file.export (Node.js) or module.function (Python)",
    ]);
  });

  it('takes inline code for every runtime but java17', () => {
    const inline = (runtime: string) =>
      manifest({ runtime, image: undefined, code: { inline: 'x' } });
    for (const runtime of ['nodejs20', 'nodejs22', 'nodejs24', 'python3.11', 'provided']) {
      expect(accepted(inline(runtime)).spec.code).toEqual({ inline: 'x' });
    }
    expect(problems(inline('java17'))).toEqual([
      'spec: java17 takes no inline code (Java is compiled first); build an image FROM eddy/runtime:java17 with the classes or jar in /var/task (spec.image)',
    ]);
  });

  it('rejects an unknown runtime, listing the supported ones', () => {
    expect(problems(manifest({ runtime: 'ruby3.3' }))).toEqual([
      'spec.runtime: Unsupported value: "ruby3.3": supported values: "nodejs20", "nodejs22", "nodejs24", "python3.11", "java17", "provided"',
    ]);
  });

  it('rejects minReplicas above maxReplicas (a CEL rule), also against the default maximum', () => {
    const message = 'spec.scaling: scaling.minReplicas must not exceed scaling.maxReplicas';
    expect(problems(manifest({ scaling: { minReplicas: 5, maxReplicas: 2 } }))).toEqual([message]);
    expect(problems(manifest({ scaling: { minReplicas: 11 } }))).toEqual([message]);
  });

  it('rejects a dead-letter destination with both url and s3 (a CEL rule)', () => {
    const deadLetter = { url: 'http://sink/dead', s3: { bucket: 'dead', connection } };
    expect(problems(manifest({ deadLetter }))).toEqual([
      'spec.deadLetter: deadLetter takes exactly one of url or s3',
    ]);
  });

  it('rejects a trigger that sets two kinds', () => {
    const trigger = {
      name: 'uploads',
      s3: { bucket: 'photos', connection },
      schedule: { expression: 'rate(5 minutes)' },
    };
    expect(problems(manifest({ triggers: [trigger] }))).toEqual([
      'spec.triggers[0]: a trigger takes exactly one of s3, kinesis, dynamodb or schedule',
    ]);
  });

  it('refuses env names Eddy sets, NODE_OPTIONS from valueFrom, and a name twice', () => {
    expect(problems(manifest({ env: [{ name: 'PORT', value: '9000' }] }))).toEqual([
      'spec.env[0]: EDDY_HANDLER, EDDY_CODE_DIR, EDDY_FUNCTION_NAME, EDDY_FUNCTION_NAMESPACE, EDDY_MEMORY_MB, EDDY_TIMEOUT_MS, EDDY_CONCURRENCY, EDDY_RUNTIME, PORT and HOST are set by Eddy from the Function (handler, memory, timeoutSeconds, concurrency, runtime); remove the variable from env and set the field',
    ]);
    expect(
      problems(
        manifest({
          env: [{ name: 'NODE_OPTIONS', valueFrom: { secretKeyRef: { name: 's', key: 'k' } } }],
        }),
      ),
    ).toEqual([
      'spec.env[0]: NODE_OPTIONS takes a value, which Eddy adds to the heap flags it sets; valueFrom cannot be joined to them',
    ]);
    expect(
      problems(
        manifest({
          env: [
            { name: 'A', value: '1' },
            { name: 'A', value: '2' },
          ],
        }),
      ),
    ).toEqual(['spec.env[1]: Duplicate value: {"name":"A"}']);
    accepted(
      manifest({
        env: [
          { name: 'NODE_OPTIONS', value: '--enable-source-maps' },
          { name: 'EDDY_LOG_FORMAT', value: 'json' },
        ],
      }),
    );
  });

  it("takes a schedule's payload or its input, not both", () => {
    const schedule = (extra: Record<string, unknown>) =>
      manifest({
        triggers: [{ name: 'nightly', schedule: { expression: 'rate(1 day)', ...extra } }],
      });
    expect(
      accepted(schedule({ input: { task: 'cleanup' } })).spec.triggers![0]!.schedule,
    ).toMatchObject({ input: { task: 'cleanup' } });
    accepted(schedule({ payload: { mode: 'full' } }));
    expect(problems(schedule({ payload: { mode: 'full' }, input: { task: 'cleanup' } }))).toEqual([
      "spec.triggers[0].schedule: set payload (the Scheduled Event's detail) or input (the whole event), not both",
    ]);
  });

  it('compares integers as CEL ints: maxRecordAgeSeconds is -1 or at least 60', () => {
    const kinesis = (maxRecordAgeSeconds: number) =>
      manifest({
        triggers: [{ name: 'k', kinesis: { stream: 's', connection, maxRecordAgeSeconds } }],
      });
    expect(problems(kinesis(30))).toEqual([
      'spec.triggers[0].kinesis: maxRecordAgeSeconds is -1 (as long as the stream keeps records) or 60 to 604800',
    ]);
    accepted(kinesis(-1));
    accepted(kinesis(60));
  });

  it('checks filterCriteria: a JSON object by CEL, the rule syntax by validate.ts', () => {
    const kinesis = (...patterns: string[]) =>
      manifest({
        triggers: [
          {
            name: 'k',
            kinesis: {
              stream: 's',
              connection,
              filterCriteria: { filters: patterns.map((pattern) => ({ pattern })) },
            },
          },
        ],
      });
    accepted(
      kinesis('{"data": {"kind": ["order"]}}', '{"data": {"amount": [{"numeric": [">", 100]}]}}'),
    );
    expect(problems(kinesis('eventName = INSERT'))).toEqual([
      'spec.triggers[0].kinesis.filterCriteria.filters[0]: a filter pattern is a JSON object, such as {"eventName": ["INSERT"]}',
    ]);
    expect(problems(kinesis('{"data": {"kind": "order"}}'))).toEqual([
      'spec.triggers[0] (k): filterCriteria.filters[0].pattern is invalid: at data.kind: "order" must be in a list (["order"]) or be an object of nested fields',
    ]);
    expect(problems(kinesis(...Array<string>(6).fill('{"data": {"a": ["b"]}}')))[0]).toMatch(
      /^spec\.triggers\[0\]\.kinesis\.filterCriteria\.filters: .*5/,
    );
  });

  it('takes a dynamodb trigger by stream ARN or table, with the defaults of a stream trigger', () => {
    const dynamodb = (spec: Record<string, unknown>) =>
      manifest({ triggers: [{ name: 'orders', dynamodb: { connection, ...spec } }] });
    const arn =
      'arn:aws:dynamodb:us-east-1:000000000000:table/orders/stream/2026-12-01T00:00:00.000';
    const fn = accepted(
      dynamodb({
        streamArn: arn,
        filterCriteria: {
          filters: [
            {
              pattern:
                '{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"amount": {"N": [{"numeric": [">", 100]}]}}}}',
            },
          ],
        },
      }),
    );
    expect(fn.spec.triggers![0]!.dynamodb).toMatchObject({
      streamArn: arn,
      startingPosition: 'TRIM_HORIZON',
      batchSize: 100,
      maxRetryAttempts: -1,
      maxRecordAgeSeconds: -1,
      bisectOnError: false,
      reportBatchItemFailures: false,
    });
    accepted(dynamodb({ table: 'orders', startingPosition: 'LATEST' }));
    expect(problems(dynamodb({ connection }))).toEqual([
      'spec.triggers[0].dynamodb: set exactly one of streamArn or table',
    ]);
    expect(problems(dynamodb({ table: 'orders', startingPosition: 'AT_TIMESTAMP' }))[0]).toMatch(
      /^spec\.triggers\[0\]\.dynamodb\.startingPosition: Unsupported value: "AT_TIMESTAMP"/,
    );
    expect(problems(dynamodb({ streamArn: 'orders' }))[0]).toMatch(
      /^spec\.triggers\[0\]\.dynamodb\.streamArn: /,
    );
    expect(
      problems(
        dynamodb({
          table: 'orders',
          filterCriteria: { filters: [{ pattern: '{"Keys": ["a"]}' }] },
        }),
      ),
    ).toEqual([
      'spec.triggers[0] (orders): filterCriteria.filters[0].pattern: dynamodb records are filtered on eventID, eventName, eventVersion, eventSource, awsRegion, dynamodb, eventSourceARN, userIdentity, not "Keys"',
    ]);
  });

  it('rejects a schedule in an unknown time zone (validate.ts)', () => {
    const trigger = {
      name: 'nightly',
      schedule: { expression: 'cron(0 3 * * ? *)', timezone: 'Mars/Olympus' },
    };
    expect(problems(manifest({ triggers: [trigger] }))).toEqual([
      'spec.triggers[0] (nightly): time zone "Mars/Olympus" is unknown: use an IANA name such as Europe/Berlin or UTC',
    ]);
  });

  it('reports an unknown field, as strict field validation does, rather than dropping it', () => {
    expect(problems(manifest({ memroy: '1Gi' }))).toEqual([
      expect.stringMatching(
        /^spec\.memroy: unknown field: remove it or correct its spelling; spec takes runtime, image, .*memory/,
      ),
    ]);
  });

  it('requires apiVersion eddy.dev/v1alpha1, kind Function and a DNS-1123 name', () => {
    const obj = { ...manifest(), apiVersion: 'eddy.dev/v1', kind: 'Fn', metadata: {} };
    expect(problems(obj)).toEqual([
      'apiVersion: Invalid value: "eddy.dev/v1": use eddy.dev/v1alpha1',
      'kind: Invalid value: "Fn": use Function',
      'metadata.name: Required value: give the Function a name, such as thumbnail',
    ]);
    expect(problems(manifest({}, { name: 'Thumb_nail' }))[0]).toMatch(
      /^metadata\.name: Invalid value: "Thumb_nail": use lowercase letters/,
    );
    // Valid for the API server, but the CRD's rule wants a DNS label that fits Service names.
    expect(problems(manifest({}, { name: 'a'.repeat(59) }))).toEqual([
      expect.stringMatching(/^a Function's name must be a DNS label of at most 58 characters/),
    ]);
  });

  it('reports every problem of a manifest at once', () => {
    const found = problems(manifest({ memory: 'lots', runtime: 'ruby3.3', timeoutSeconds: '30s' }));
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(/^spec\.memory: /),
        expect.stringMatching(/^spec\.runtime: /),
        expect.stringMatching(
          /^spec\.timeoutSeconds: Invalid value: "30s": must be of type integer/,
        ),
      ]),
    );
  });
});

describe('loadFunctionSchema', () => {
  it('compiles every CEL rule in crds/function.yaml', () => {
    const found: string[] = [];
    const collect = (node: unknown): void => {
      if (Array.isArray(node)) node.forEach(collect);
      else if (typeof node === 'object' && node !== null) {
        for (const [key, value] of Object.entries(node)) {
          if (key === 'x-kubernetes-validations') {
            for (const r of value as Array<{ rule: string }>) found.push(r.rule);
          }
          collect(value);
        }
      }
    };
    // The rules as the file spells them, aliases (&id001) expanded as YAML defines.
    collect(parse(crdText, { maxAliasCount: -1 }));
    expect(found.length).toBeGreaterThan(10);
    expect(schema.rules.map((r) => r.rule).sort()).toEqual([...found].sort());
  });

  it('passes Functions that between them reach every rule of the CRD', () => {
    const reaching = [
      manifest(
        {
          image: undefined,
          code: { inline: 'export const handler = async () => "ok";' },
          memory: '512Mi',
          cpu: '500m',
          ephemeralStorage: '1Gi',
          env: [{ name: 'NODE_OPTIONS', value: '--enable-source-maps' }],
          scaling: { minReplicas: 1, maxReplicas: 3 },
          deadLetter: { url: 'http://sink.photos.svc/dead' },
          triggers: [
            { name: 'uploads', s3: { bucket: 'photos', connection } },
            {
              name: 'clicks',
              kinesis: {
                stream: 'clicks',
                startingPosition: 'AT_TIMESTAMP',
                startingTimestamp: '2024-05-01T12:00:00Z',
                maxRecordAgeSeconds: 3600,
                filterCriteria: { filters: [{ pattern: '{"data": {"kind": ["click"]}}' }] },
                connection,
              },
            },
            { name: 'nightly', schedule: { expression: '0 3 * * *', timezone: 'Europe/Berlin' } },
          ],
        },
        { name: 'thumbnail' },
      ),
      manifest({
        runtime: 'java17',
        handler: 'example.Orders::handleRequest',
        deadLetter: { s3: { bucket: 'dead', connection } },
        triggers: [
          {
            name: 'orders',
            dynamodb: {
              table: 'orders',
              maxRecordAgeSeconds: 60,
              filterCriteria: { filters: [{ pattern: '{"eventName": ["INSERT"]}' }] },
              connection,
            },
          },
        ],
      }),
    ];
    for (const fn of reaching) accepted(fn);

    // Every rule, one at a time, made to fail with a message of its own: a rule is reached when
    // some manifest above is then refused with that message. Aliased schemas (&id001) are copied
    // apart, so that each place a rule applies counts on its own.
    const crd = JSON.parse(JSON.stringify(parse(crdText, { maxAliasCount: -1 }))) as unknown;
    const places: Array<{ path: string; entry: Record<string, unknown> }> = [];
    const walk = (node: unknown, path: string): void => {
      if (Array.isArray(node)) node.forEach((n, i) => walk(n, `${path}[${i}]`));
      else if (typeof node === 'object' && node !== null) {
        for (const [key, value] of Object.entries(node)) {
          if (key === 'x-kubernetes-validations') {
            for (const entry of value as Array<Record<string, unknown>>)
              places.push({
                path: `${path.replace(/\.properties/g, '')}: ${String(entry.rule)}`,
                entry,
              });
          }
          walk(value, `${path}.${key}`);
        }
      }
    };
    walk(crd, '');
    expect(places.length).toBeGreaterThanOrEqual(schema.rules.length);
    const unreached = places.filter(({ entry }, i) => {
      const original = { ...entry };
      const message = `rule ${i} made to fail`;
      Object.assign(entry, { rule: 'false', message });
      delete entry.messageExpression;
      try {
        const failing = loadFunctionSchema(JSON.stringify(crd));
        return !reaching.some((fn) => {
          const result = checkFunction(failing, fn);
          return 'problems' in result && result.problems.some((p) => p.endsWith(message));
        });
      } finally {
        for (const key of Object.keys(entry)) delete entry[key];
        Object.assign(entry, original);
      }
    });
    expect(unreached.map((p) => p.path)).toEqual([]);
  });

  it('refuses a CRD whose rule the CEL library cannot compile, naming the field', () => {
    const crd = (rule: string) =>
      crdWith({
        type: 'object',
        properties: {
          spec: {
            type: 'object',
            properties: { image: { type: 'string' } },
            'x-kubernetes-validations': [{ rule }],
          },
        },
      });
    expect(() => loadFunctionSchema(crd('self.image.size() >'))).toThrow(/^spec: the CEL rule/);
    expect(() => loadFunctionSchema(crd('self.image.frobnicate()'))).toThrow(/frobnicate/);
    expect(() => loadFunctionSchema(crd('self.image.size()'))).toThrow(/returns int, not bool/);
  });

  it('refuses a CRD with a keyword or format it does not implement', () => {
    const crd = (field: Record<string, unknown>) =>
      crdWith({
        type: 'object',
        properties: { spec: { type: 'object', properties: { x: field } } },
      });
    expect(() => loadFunctionSchema(crd({ type: 'string', format: 'uuid' }))).toThrow(
      /spec\.x: format "uuid" is not supported/,
    );
    expect(() =>
      loadFunctionSchema(crd({ type: 'object', 'x-kubernetes-embedded-resource': true })),
    ).toThrow(/spec\.x: schema keyword "x-kubernetes-embedded-resource" is not supported/);
  });

  it('follows the API server on nullable, int-or-string, unknown fields, list types and rule options', () => {
    const custom = loadFunctionSchema(
      crdWith({
        type: 'object',
        properties: {
          spec: {
            type: 'object',
            properties: {
              note: { type: 'string', nullable: true, default: 'n/a' },
              port: { 'x-kubernetes-int-or-string': true },
              extra: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true },
              tags: { type: 'array', items: { type: 'string' }, 'x-kubernetes-list-type': 'set' },
              limits: {
                type: 'object',
                properties: { low: { type: 'integer' }, high: { type: 'integer' } },
                'x-kubernetes-validations': [
                  {
                    rule: 'self.low <= self.high',
                    messageExpression: "'low ' + string(self.low) + ' is above high'",
                    fieldPath: '.low',
                  },
                ],
              },
            },
          },
        },
      }),
    );
    const check = (spec: Record<string, unknown>) =>
      checkFunction(custom, { ...manifest(), spec: { ...spec } });
    const ok = check({ note: null, port: 'http', extra: { any: { thing: [1] } } });
    expect(ok).toEqual({
      fn: expect.objectContaining({
        spec: { note: null, port: 'http', extra: { any: { thing: [1] } } },
      }) as unknown,
    });
    expect(check({ port: 8080 })).toHaveProperty('fn');
    expect(check({ port: true, tags: ['a', 'b', 'a'], limits: { low: 5, high: 2 } })).toEqual({
      problems: [
        'spec.port: Invalid value: true: must be of type integer or string',
        'spec.tags[2]: Duplicate value: "a"',
        'spec.limits.low: low 5 is above high',
      ],
    });
  });
});
