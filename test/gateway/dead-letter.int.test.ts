/**
 * Dead letters reaching real destinations: a real HTTP server for `deadLetter.url` and a real
 * MinIO for `deadLetter.s3`, fed by the real delivery loop.
 */
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CloudEvent, HTTP } from 'cloudevents';
import {
  CreateBucketCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import type { EddyFunction, FunctionSpec } from '../../operator/src/api/types.js';
import type { SecretReader } from '../../operator/src/functions.js';
import { KinesisClient, ListStreamsCommand } from '@aws-sdk/client-kinesis';
import {
  checkedHttpHandler,
  createDeadLetterSender,
  deadLetterTarget,
  type DeadLetterDocument,
  type DeadLetterUrlOptions,
} from '../../operator/src/gateway/dead-letter.js';
import {
  createDelivery,
  type AttemptResult,
  type DeadLetterRecord,
  type DeliveryEvent,
} from '../../operator/src/gateway/delivery.js';
import {
  classifyError,
  resolveConnection,
  s3ClientFor,
  SourceProblem,
  streamClientConfig,
} from '../../operator/src/sources/connection.js';
import { requestIdPattern } from '../../runtime/src/contract/index.js';
import { s3Client, startMinio } from '../harness/minio.js';
import { waitFor } from '../harness/wait.js';
import { inlineFunction, namespace, startStack, type Stack } from './stack.js';
import { canRun, useComponent } from '../harness/suite.js';

function fn(spec: FunctionSpec): EddyFunction {
  return {
    apiVersion: 'eddy.dev/v1alpha1',
    kind: 'Function',
    metadata: { name: 'thumbnail', namespace: 'photos' },
    spec,
  };
}

const s3Record = { eventName: 'ObjectCreated:Put', s3: { object: { key: 'holiday/beach.jpg' } } };

const event = (over: Partial<DeliveryEvent> = {}): DeliveryEvent => ({
  id: 'evt-42',
  type: 'com.amazonaws.s3.ObjectCreated:Put',
  source: 'aws:s3.us-east-1.photos',
  time: '2025-03-01T12:00:00.000Z',
  body: Buffer.from(JSON.stringify(s3Record)),
  headers: {
    'content-type': 'application/json',
    'ce-subject': 'holiday/beach.jpg',
  },
  trigger: 'uploads',
  ...over,
});

const record = (over: Partial<DeadLetterRecord> = {}): DeadLetterRecord => ({
  event: event(),
  error: { errorType: 'Error', errorMessage: 'sharp: unsupported image format' },
  attempts: 3,
  condition: 'RetriesExhausted',
  firstAttemptAt: '2025-03-01T12:00:00.100Z',
  lastAttemptAt: '2025-03-01T12:00:03.200Z',
  ...over,
});

/** A time young enough for retries (the default maxEventAgeSeconds is 6 hours). */
const fresh = new Date().toISOString();

/** What either destination receives for the thumbnail event that failed twice. */
const expectedDocument = () => ({
  originalEvent: {
    specversion: '1.0',
    id: 'evt-42',
    type: 'com.amazonaws.s3.ObjectCreated:Put',
    source: 'aws:s3.us-east-1.photos',
    time: fresh,
    subject: 'holiday/beach.jpg',
    datacontenttype: 'application/json',
    data: s3Record,
  },
  error: { errorType: 'Error', errorMessage: 'sharp: unsupported image format' },
  attempts: 2,
  condition: 'RetriesExhausted',
  firstAttemptAt: expect.any(String) as unknown,
  lastAttemptAt: expect.any(String) as unknown,
  function: { namespace: 'photos', name: 'thumbnail' },
  trigger: 'uploads',
});

const failing = async (): Promise<AttemptResult> => ({
  ok: false,
  status: 500,
  error: { errorType: 'Error', errorMessage: 'sharp: unsupported image format' },
  retryable: true,
});

/** The sinks here run on 127.0.0.1, which only the local stack may reach. */
const local: DeadLetterUrlOptions = { allowLoopback: true };

/** A dead letter's name: the event's id and 16 hex digits of its own. */
const named = (id: string) => new RegExp(`^${id}\\.[0-9a-f]{16}$`);

const noSecrets: SecretReader = async (ns, name) => {
  throw new Error(`Secret ${ns}/${name} not found`);
};

/** A delivery loop with short real waits, sending through `sender`. */
const fastDelivery = (deadLetter: ReturnType<typeof createDeadLetterSender>, logs: string[]) =>
  createDelivery({ deadLetter, baseDelayMs: 5, maxDelayMs: 20, log: (m) => logs.push(m) });

interface Received {
  method?: string;
  url?: string;
  headers: IncomingHttpHeaders;
  body: string;
}

describe('dead letter to a URL', () => {
  const received: Received[] = [];
  /** Statuses the sink answers with, in turn; then 202. `hang` never answers. */
  let answers: Array<number | 'hang'> = [];
  let sink: Server;
  let sinkUrl = '';
  beforeAll(async () => {
    sink = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        received.push({ method: req.method, url: req.url, headers: req.headers, body });
        const answer = answers.shift() ?? 202;
        if (answer === 'hang') return;
        res.statusCode = answer;
        if (answer >= 300 && answer < 400) res.setHeader('location', '/elsewhere');
        res.end(answer >= 300 ? 'sink is full' : '');
      });
    });
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
    sinkUrl = `http://127.0.0.1:${(sink.address() as AddressInfo).port}/dead`;
  });
  afterAll(async () => {
    sink.closeAllConnections();
    await new Promise((resolve) => sink.close(resolve));
  });
  beforeEach(() => {
    received.length = 0;
    answers = [];
  });

  it('receives a structured CloudEvent with the original event, the last error and the attempts', async () => {
    const logs: string[] = [];
    const sender = createDeadLetterSender({ secrets: noSecrets, urls: local });
    const out = await fastDelivery(sender, logs).deliver({
      fn: fn({ retry: { maxAttempts: 1 }, deadLetter: { url: `${sinkUrl}?token=s3cr3t` } }),
      event: event({ time: fresh }),
      attempt: failing,
      signal: new AbortController().signal,
    });
    expect(out).toMatchObject({ outcome: 'dead-lettered', attempts: 2 });
    expect(received).toHaveLength(1);
    const got = received[0]!;
    expect(got.method).toBe('POST');
    expect(got.url).toBe('/dead?token=s3cr3t');
    expect(got.headers['content-type']).toBe('application/cloudevents+json');

    // Whatever reads it with the CloudEvents SDK gets a valid event.
    const parsed = HTTP.toEvent({ headers: got.headers, body: got.body }) as CloudEvent<unknown>;
    expect(parsed.validate()).toBe(true);
    const ce = JSON.parse(got.body) as Record<string, unknown>;
    expect(ce.id).toMatch(/^evt-42\.[0-9a-f]{16}-dlq$/);
    expect(ce).toMatchObject({
      specversion: '1.0',
      type: 'dev.eddy.dead-letter',
      source: '/eddy/functions/photos/thumbnail',
      subject: 'evt-42',
      datacontenttype: 'application/json',
    });
    expect(Date.now() - Date.parse(ce.time as string)).toBeLessThan(10_000);
    const data = ce.data as Record<string, unknown>;
    expect(data).toEqual(expectedDocument());
    expect(Date.parse(data.lastAttemptAt as string)).toBeGreaterThanOrEqual(
      Date.parse(data.firstAttemptAt as string),
    );
  });

  it('carries a body that is not JSON as data_base64', async () => {
    const sender = createDeadLetterSender({ secrets: noSecrets, urls: local });
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    await sender.send(
      fn({ deadLetter: { url: sinkUrl } }),
      record({ event: event({ body: png, headers: { 'content-type': 'image/png' } }) }),
    );
    const { originalEvent } = (JSON.parse(received[0]!.body) as { data: DeadLetterDocument }).data;
    expect(originalEvent).toMatchObject({ datacontenttype: 'image/png' });
    expect(originalEvent).not.toHaveProperty('data');
    expect(Buffer.from(originalEvent.data_base64!, 'base64')).toEqual(png);
  });

  it('fails naming the URL (without its query) and the status when the sink refuses', async () => {
    answers = [500];
    const sender = createDeadLetterSender({ secrets: noSecrets, urls: local });
    const sending = sender.send(fn({ deadLetter: { url: `${sinkUrl}?token=s3cr3t` } }), record());
    await expect(sending).rejects.toThrow(
      `dead letter ${sinkUrl} answered HTTP 500: it must accept`,
    );
    await expect(sending).rejects.not.toThrow(/s3cr3t/);
    // The sink's answer is its own business: it is not repeated in messages and logs.
    await expect(sending).rejects.not.toThrow(/sink is full/);
  });

  it('fails on a redirect rather than following it and losing the event', async () => {
    answers = [302];
    const sender = createDeadLetterSender({ secrets: noSecrets, urls: local });
    await expect(sender.send(fn({ deadLetter: { url: sinkUrl } }), record())).rejects.toThrow(
      `dead letter ${sinkUrl} answered HTTP 302`,
    );
    expect(received.map((r) => `${r.method} ${r.url}`)).toEqual(['POST /dead']);
  });

  it('is sent again until the sink takes it, and the delivery ends dead-lettered', async () => {
    answers = [503, 503];
    const logs: string[] = [];
    const sender = createDeadLetterSender({ secrets: noSecrets, urls: local });
    const out = await fastDelivery(sender, logs).deliver({
      fn: fn({ retry: { maxAttempts: 0 }, deadLetter: { url: sinkUrl } }),
      event: event(),
      attempt: failing,
      signal: new AbortController().signal,
    });
    expect(out).toMatchObject({ outcome: 'dead-lettered', deadLetterSends: 3 });
    expect(received).toHaveLength(3);
    // Every send is the same event, so the sink can deduplicate.
    const ids = new Set(received.map((r) => (JSON.parse(r.body) as { id: string }).id));
    expect(ids.size).toBe(1);
    expect([...ids][0]).toMatch(/^evt-42\.[0-9a-f]{16}-dlq$/);
    expect(logs.filter((l) => l.includes('answered HTTP 503'))).toHaveLength(2);
  });

  it('fails naming the URL and the cause when nothing listens there', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(closed.address() as AddressInfo).port}/dead`;
    await new Promise((resolve) => closed.close(resolve));
    const sender = createDeadLetterSender({ secrets: noSecrets, urls: local });
    await expect(sender.send(fn({ deadLetter: { url } }), record())).rejects.toThrow(
      new RegExp(`dead letter ${url} unreachable: .*ECONNREFUSED`),
    );
  });

  it('gives up on a sink that does not answer within the timeout', async () => {
    answers = ['hang'];
    const sender = createDeadLetterSender({ secrets: noSecrets, timeoutMs: 300, urls: local });
    const started = Date.now();
    await expect(sender.send(fn({ deadLetter: { url: sinkUrl } }), record())).rejects.toThrow(
      `dead letter ${sinkUrl}: no answer within 0.3 s`,
    );
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("two events with one caller's id get a dead letter each, not one overwriting the other", async () => {
    const sender = createDeadLetterSender({ secrets: noSecrets, urls: local });
    const f = fn({ deadLetter: { url: sinkUrl } });
    // Two accepted invocations whose callers both sent x-eddy-request-id: same-id.
    await sender.send(f, record({ event: event({ id: 'same-id' }) }));
    await sender.send(f, record({ event: event({ id: 'same-id' }) }));
    const ids = received.map((r) => (JSON.parse(r.body) as { id: string }).id);
    expect(ids).toHaveLength(2);
    expect(new Set(ids).size).toBe(2);
  });

  it('never sends to loopback, link-local or metadata addresses, or the API server, in a cluster', async () => {
    const cluster = createDeadLetterSender({ secrets: noSecrets });
    await expect(cluster.send(fn({ deadLetter: { url: sinkUrl } }), record())).rejects.toThrow(
      /dead letter http:\/\/127\.0\.0\.1:\d+\/dead is refused: 127\.0\.0\.1 is a loopback address/,
    );
    expect(received).toEqual([]);
    const refused = async (url: string, o: DeadLetterUrlOptions = {}) =>
      deadLetterTarget(url, o).then(
        () => 'allowed',
        (err: Error) => err.message,
      );
    expect(await refused('http://169.254.169.254/latest/meta-data/')).toMatch(
      /169\.254\.169\.254 is a link-local address, where cloud metadata services answer/,
    );
    expect(await refused('http://[fd00:ec2::254]/latest')).toMatch(
      /link-local address, where cloud metadata/,
    );
    expect(await refused('http://[fe80::1]/')).toMatch(/link-local/);
    expect(await refused('http://[::1]:8080/')).toMatch(/loopback/);
    expect(await refused('http://[::ffff:127.0.0.1]/')).toMatch(/loopback/);
    expect(await refused('http://0.0.0.0:8080/')).toMatch(/unspecified/);
    expect(await refused('https://kubernetes.default.svc/api')).toMatch(/names the API server/);
    expect(await refused('https://kubernetes.default.svc.cluster.local./api')).toMatch(
      /API server/,
    );
    expect(await refused('https://10.96.0.1:443/api', { apiServerHost: '10.96.0.1' })).toMatch(
      /10\.96\.0\.1 is the API server's Service address/,
    );
    expect(await refused('file:///etc/passwd')).toMatch(/scheme is file/);
    // A name is checked by every address it resolves to.
    const resolvesTo =
      (...addresses: string[]): DeadLetterUrlOptions['lookup'] =>
      async () =>
        addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
    expect(
      await refused('http://sink.example/dead', {
        lookup: resolvesTo('203.0.113.7', '169.254.169.254'),
      }),
    ).toMatch(/sink\.example \(169\.254\.169\.254\) is a link-local address/);
    expect(await refused('http://sink.example/dead', { lookup: resolvesTo('203.0.113.7') })).toBe(
      'allowed',
    );
  });

  it('refuses store endpoints at metadata addresses or the API server, for triggers and S3 dead letters, before reading the Secret', async () => {
    let reads = 0;
    const secrets: SecretReader = async () => {
      reads++;
      return { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'example-secret-key-0' };
    };
    const f = fn({});
    const problem = async (endpoint: string) =>
      resolveConnection(
        secrets,
        f,
        { endpoint, secretRef: { name: 'store-creds' } },
        'trigger uploads (s3.connection)',
      ).then(
        () => undefined,
        (err: unknown) => err as SourceProblem,
      );
    const metadata = await problem('http://169.254.169.254/');
    expect(metadata).toBeInstanceOf(SourceProblem);
    expect(metadata!.reason).toBe('InvalidTrigger');
    expect(metadata!.message).toMatch(
      /^trigger uploads \(s3\.connection\): endpoint http:\/\/169\.254\.169\.254\/ is refused: 169\.254\.169\.254 is a link-local address.*correct connection\.endpoint/,
    );
    expect((await problem('https://kubernetes.default.svc:443'))!.message).toMatch(/API server/);
    expect(reads).toBe(0);
    // The local stack's stores, and the operator's own pod, are on loopback: allowed.
    expect(await problem('http://127.0.0.1:9000')).toBeUndefined();
    expect(reads).toBe(1);

    const sender = createDeadLetterSender({ secrets });
    await expect(
      sender.send(
        fn({
          deadLetter: {
            s3: {
              bucket: 'failed',
              connection: {
                endpoint: 'http://[fd00:ec2::254]',
                secretRef: { name: 'store-creds' },
              },
            },
          },
        }),
        record(),
      ),
    ).rejects.toThrow(
      /endpoint http:\/\/\[fd00:ec2::254\]\/ is refused: .*correct spec\.deadLetter\.s3\.connection\.endpoint/,
    );
    expect(reads).toBe(1);
    sender.close();
  });

  it('sends to the address it checked, whatever the name resolves to afterwards', async () => {
    // The resolver answers the sink's address once, then the metadata address (a rebinding):
    // the request goes where the check was made, and nothing asks the resolver again.
    let lookups = 0;
    const port = (sink.address() as AddressInfo).port;
    const sender = createDeadLetterSender({
      secrets: noSecrets,
      urls: {
        allowLoopback: true,
        lookup: async () => [
          lookups++ === 0
            ? { address: '127.0.0.1', family: 4 }
            : { address: '169.254.169.254', family: 4 },
        ],
      },
    });
    await sender.send(
      fn({ deadLetter: { url: `http://sink.rebinding.example:${port}/dead` } }),
      record(),
    );
    expect(lookups).toBe(1);
    expect(received).toHaveLength(1);
    expect(received[0]!.headers.host).toBe(`sink.rebinding.example:${port}`);
  });
});

describe("store and stream clients' connections", () => {
  it('check every address a name resolves to, at each connection', async () => {
    // A store that closes each connection, so that each request connects (and resolves) anew.
    let requests = 0;
    const store = createServer((_req, res) => {
      requests++;
      res.writeHead(200, { 'content-type': 'application/xml', connection: 'close' });
      res.end('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult></ListBucketResult>');
    });
    await new Promise<void>((resolve) => store.listen(0, '127.0.0.1', resolve));
    const port = (store.address() as AddressInfo).port;
    let lookups = 0;
    const client = new S3Client({
      endpoint: `http://store.rebinding.example:${port}`,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: 'a', secretAccessKey: 'b' },
      maxAttempts: 1,
      requestHandler: checkedHttpHandler({
        allowLoopback: true,
        lookup: async () => [
          lookups++ === 0
            ? { address: '127.0.0.1', family: 4 }
            : { address: '169.254.169.254', family: 4 },
        ],
      }),
    });
    try {
      await client.send(new ListObjectsV2Command({ Bucket: 'photos' }));
      expect(requests).toBe(1);
      await expect(client.send(new ListObjectsV2Command({ Bucket: 'photos' }))).rejects.toThrow(
        'store.rebinding.example is refused: it resolves to 169.254.169.254, a link-local address, where cloud metadata services answer',
      );
      expect(lookups).toBe(2);
      expect(requests).toBe(1);
    } finally {
      client.destroy();
      store.close();
    }
  });

  it("are made with that check for triggers' stores and streams", async () => {
    const conn = {
      endpoint: 'http://kubernetes.default.svc:9000',
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: 'a', secretAccessKey: 'b' },
    };
    const s3 = s3ClientFor(conn);
    const kinesis = new KinesisClient({ ...streamClientConfig(conn), maxAttempts: 1 });
    try {
      await expect(
        s3.send(new ListObjectsV2Command({ Bucket: 'photos' }), {
          abortSignal: AbortSignal.timeout(10_000),
        }),
      ).rejects.toThrow("kubernetes.default.svc is refused: it names the API server's Service");
      const refused = await s3
        .send(new ListObjectsV2Command({ Bucket: 'photos' }))
        .catch((err: unknown) => classifyError(err, 'bucket photos', 'BucketNotFound'));
      expect(refused).toMatchObject({ reason: 'InvalidTrigger' });
      expect((refused as SourceProblem).message).toMatch(
        /^bucket photos: .*kubernetes\.default\.svc is refused: it names the API server's Service.*correct connection\.endpoint$/,
      );
      await expect(
        kinesis.send(new ListStreamsCommand({}), { abortSignal: AbortSignal.timeout(10_000) }),
      ).rejects.toThrow("kubernetes.default.svc is refused: it names the API server's Service");
    } finally {
      s3.destroy();
      kinesis.destroy();
    }
  });
});

describe.skipIf(!canRun('minio'))('dead letter to S3 (MinIO)', () => {
  const minio = useComponent(() => startMinio());
  const bucket = 'dead-letters';
  let admin: S3Client;
  let secrets: Map<string, Record<string, string>>;
  const secretReader: SecretReader = async (ns, name) => {
    const s = secrets.get(`${ns}/${name}`);
    if (!s) throw new Error(`Secret ${ns}/${name} not found`);
    return s;
  };
  const s3Fn = (over: { bucket?: string; secretRef?: Record<string, string> } = {}) => {
    const m = minio();
    return fn({
      retry: { maxAttempts: 1 },
      deadLetter: {
        s3: {
          bucket: over.bucket ?? bucket,
          prefix: 'failed/',
          connection: {
            endpoint: m.endpoint,
            secretRef: { name: 'minio-creds', ...over.secretRef },
          },
        },
      },
    });
  };
  const read = async (key: string) => {
    const got = await admin.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return {
      contentType: got.ContentType,
      json: JSON.parse(await got.Body!.transformToString()) as unknown,
    };
  };

  const keys = async (prefix: string) =>
    (await admin.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }))).Contents?.map(
      (o) => o.Key!,
    ) ?? [];

  beforeAll(async () => {
    admin = s3Client(minio());
    await admin.send(new CreateBucketCommand({ Bucket: bucket }));
  });
  afterAll(() => admin?.destroy());
  beforeEach(() => {
    const m = minio();
    secrets = new Map([
      ['photos/minio-creds', { accessKeyId: m.accessKeyId, secretAccessKey: m.secretAccessKey }],
    ]);
  });

  it('writes the dead letter as a JSON object under the prefix, dated by the event', async () => {
    const sender = createDeadLetterSender({ secrets: secretReader });
    const out = await fastDelivery(sender, []).deliver({
      fn: s3Fn(),
      event: event({ time: fresh }),
      attempt: failing,
      signal: new AbortController().signal,
    });
    sender.close();
    expect(out).toMatchObject({ outcome: 'dead-lettered', attempts: 2 });
    const day = fresh.slice(0, 10).replaceAll('-', '/');
    const [key] = await keys(`failed/photos/thumbnail/${day}/`);
    expect(
      key!
        .split('/')
        .pop()!
        .replace(/\.json$/, ''),
    ).toMatch(named('evt-42'));
    const { contentType, json } = await read(key!);
    expect(contentType).toBe('application/json');
    expect(json).toEqual(expectedDocument());
  });

  it('reads the keys the secretRef names', async () => {
    const m = minio();
    secrets.set('photos/minio-creds', { user: m.accessKeyId, password: m.secretAccessKey });
    const sender = createDeadLetterSender({ secrets: secretReader });
    await sender.send(
      s3Fn({ secretRef: { accessKeyIdKey: 'user', secretAccessKeyKey: 'password' } }),
      record({ event: event({ id: 'evt-keys' }) }),
    );
    sender.close();
    const [key] = await keys('failed/photos/thumbnail/2025/03/01/evt-keys.');
    expect((await read(key!)).json).toMatchObject({
      originalEvent: { id: 'evt-keys' },
      attempts: 3,
    });
  });

  it('reuses one client per connection until the Secret changes', async () => {
    const made: S3Client[] = [];
    const sender = createDeadLetterSender({
      secrets: secretReader,
      s3ClientFor: (config) => {
        const c = new S3Client(config);
        made.push(c);
        return c;
      },
    });
    const f = s3Fn();
    await sender.send(f, record({ event: event({ id: 'evt-a' }) }));
    await sender.send(f, record({ event: event({ id: 'evt-b' }) }));
    expect(made).toHaveLength(1);
    // A rotated key pair that the server does not know: a new client, refused.
    secrets.set('photos/minio-creds', {
      accessKeyId: 'rotated',
      secretAccessKey: 'rotated-secret',
    });
    await expect(sender.send(f, record({ event: event({ id: 'evt-c' }) }))).rejects.toThrow(
      /refused .*check the access key pair in Secret photos\/minio-creds/,
    );
    expect(made).toHaveLength(2);
    sender.close();
  });

  it('names the bucket and the fix when the bucket does not exist', async () => {
    const sender = createDeadLetterSender({ secrets: secretReader });
    await expect(sender.send(s3Fn({ bucket: 'no-such-bucket' }), record())).rejects.toThrow(
      /dead letter s3:\/\/no-such-bucket\/failed\/photos\/thumbnail\/2025\/03\/01\/evt-42\.[0-9a-f]{16}\.json: the bucket does not exist .*create it/,
    );
    sender.close();
  });

  it('names the Secret when it is missing or lacks a key', async () => {
    const sender = createDeadLetterSender({ secrets: secretReader });
    secrets.clear();
    await expect(sender.send(s3Fn(), record())).rejects.toThrow(
      /s3:\/\/dead-letters\/.*: Secret photos\/minio-creds not found/,
    );
    secrets.set('photos/minio-creds', { accessKeyId: 'x' });
    await expect(sender.send(s3Fn(), record())).rejects.toThrow(
      'Secret photos/minio-creds has no key "secretAccessKey"',
    );
    sender.close();
  });
});

describe('dead letters of asynchronous invocations through the gateway', () => {
  it("keeps one dead letter per accepted invocation when callers reuse a request id, and replaces ids not in the runtime's format", async () => {
    const received: Array<{ id: string; subject: string }> = [];
    const sink = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        received.push(JSON.parse(body) as { id: string; subject: string });
        res.statusCode = 202;
        res.end();
      });
    });
    await new Promise<void>((resolve) => sink.listen(0, '127.0.0.1', resolve));
    const port = (sink.address() as AddressInfo).port;
    let stack: Stack | undefined;
    try {
      stack = await startStack(
        [
          inlineFunction(
            'failing',
            `export const handler = async () => { throw new Error('no'); };`,
            {
              retry: { maxAttempts: 0 },
              deadLetter: { url: `http://127.0.0.1:${port}/dead` },
            },
          ),
        ],
        { retryBaseDelayMs: 10 },
      );
      const invoke = async (id: string) => {
        const res = await fetch(`${stack!.url}/functions/${namespace}/failing/async`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-eddy-request-id': id },
          body: '{}',
        });
        expect(res.status).toBe(202);
        return ((await res.json()) as { requestId: string }).requestId;
      };
      // Two callers choose the same id: each invocation keeps its own dead letter.
      expect(await invoke('same-id')).toBe('same-id');
      expect(await invoke('same-id')).toBe('same-id');
      // Ids the runtime would not take are replaced by the gateway's own, as the runtime would.
      for (const bad of ['a b', 'x'.repeat(129), 'über']) {
        const given = await invoke(bad);
        expect(given).not.toBe(bad);
        expect(given).toMatch(/^[0-9a-f-]{36}$/);
        expect(requestIdPattern.test(bad)).toBe(false);
      }
      await waitFor(
        'five dead letters',
        async () => (received.length >= 5 ? true : undefined),
        30_000,
      );
      expect(new Set(received.map((r) => r.id)).size).toBe(5);
      expect(received.filter((r) => r.subject === 'same-id')).toHaveLength(2);
    } finally {
      await stack?.stop();
      sink.closeAllConnections();
      await new Promise((resolve) => sink.close(resolve));
    }
  });
});
