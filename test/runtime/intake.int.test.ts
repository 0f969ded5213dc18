import { CloudEvent, HTTP } from 'cloudevents';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRuntime, waitForReadyz, type Runtime } from '../harness/runtime.js';

/** A handler that shows what it was given. */
const mirror = `
export const handler = async (event, context) => ({
  event: Buffer.isBuffer(event) ? { buffer: event.toString('base64') } : event,
  context: {
    awsRequestId: context.awsRequestId,
    functionName: context.functionName,
    functionVersion: context.functionVersion,
    invokedFunctionArn: context.invokedFunctionArn,
    memoryLimitInMB: context.memoryLimitInMB,
    logGroupName: context.logGroupName,
    logStreamName: context.logStreamName,
    remaining: context.getRemainingTimeInMillis(),
    callbackWaitsForEmptyEventLoop: context.callbackWaitsForEmptyEventLoop,
    cloudEvent: context.cloudEvent && { ...context.cloudEvent, data: undefined },
  },
  env: Object.fromEntries(Object.entries(process.env).filter(([k]) => /^(AWS_|LAMBDA_|_HANDLER$|TZ$)/.test(k))),
  timeZone: Intl.DateTimeFormat().resolvedOptions().timeZone,
});`;

/** Written the way AWS's S3 examples are. */
const lambdaS3Handler = `
exports.handler = async (event) => {
  const bucket = event.Records[0].s3.bucket.name;
  const key = decodeURIComponent(event.Records[0].s3.object.key.replace(/\\+/g, ' '));
  return { bucket, key, records: event.Records.length, eventName: event.Records[0].eventName };
};`;

type Mirror = {
  event: unknown;
  context: Record<string, unknown> & { cloudEvent?: Record<string, unknown> };
};

async function post(url: string, headers: Record<string, string>, body: string | Buffer) {
  const res = await fetch(url, { method: 'POST', headers, body });
  const text = await res.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = text;
  }
  return { status: res.status, headers: res.headers, body: json as Record<string, unknown> };
}

/** The SDK's verdict on a request, as the reference: true when it parses and validates. */
function sdkAccepts(headers: Record<string, string>, body: string): boolean {
  try {
    const lower = Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
    const parsed = HTTP.toEvent({ headers: lower, body });
    // toEvent returns CloudEvent instances, typed as the plain interface.
    const events = (Array.isArray(parsed) ? parsed : [parsed]) as unknown as CloudEvent<unknown>[];
    for (const e of events) e.validate();
    return true;
  } catch {
    return false;
  }
}

describe('runtime: event intake', () => {
  let rt: Runtime;
  let s3: Runtime;
  beforeAll(async () => {
    rt = await startRuntime(
      { 'index.mjs': mirror },
      { EDDY_MEMORY_MB: '256', EDDY_TIMEOUT_MS: '5000' },
    );
    s3 = await startRuntime({ 'index.cjs': lambdaS3Handler });
    await waitForReadyz(rt.url, 200);
    await waitForReadyz(s3.url, 200);
  });
  afterAll(async () => {
    await rt?.stop();
    await s3?.stop();
  });

  it('takes a binary-mode CloudEvent and hands the handler its data', async () => {
    const ce = new CloudEvent({
      type: 'com.example.order',
      source: '/shop',
      subject: 'o-1',
      data: { id: 7 },
      shopregion: 'eu',
    });
    const message = HTTP.binary(ce);
    const { status, body } = await post(
      rt.url,
      message.headers as Record<string, string>,
      message.body as string,
    );
    expect(status).toBe(200);
    const m = body as unknown as Mirror;
    expect(m.event).toEqual({ id: 7 });
    expect(m.context.cloudEvent).toMatchObject({
      id: ce.id,
      type: 'com.example.order',
      source: '/shop',
      subject: 'o-1',
      specversion: '1.0',
      time: ce.time,
      shopregion: 'eu',
    });
  });

  it('takes a structured-mode CloudEvent', async () => {
    const ce = new CloudEvent({ type: 'com.example.order', source: '/shop', data: { id: 8 } });
    const message = HTTP.structured(ce);
    const { status, body } = await post(
      rt.url,
      message.headers as Record<string, string>,
      message.body as string,
    );
    expect(status).toBe(200);
    expect((body as unknown as Mirror).event).toEqual({ id: 8 });
    expect((body as unknown as Mirror).context.cloudEvent).toMatchObject({
      id: ce.id,
      type: 'com.example.order',
    });
  });

  it('takes structured mode with data_base64 as bytes', async () => {
    const { status, body } = await post(
      rt.url,
      { 'content-type': 'application/cloudevents+json' },
      JSON.stringify({
        specversion: '1.0',
        id: '1',
        source: '/s',
        type: 't',
        data_base64: Buffer.from('hi').toString('base64'),
      }),
    );
    expect(status).toBe(200);
    expect((body as unknown as Mirror).event).toEqual({
      buffer: Buffer.from('hi').toString('base64'),
    });
  });

  it('treats a request without CloudEvents markers as a direct invocation with a JSON body', async () => {
    // What `curl -d '{"x":1}' URL` sends.
    const { status, body } = await post(
      rt.url,
      { 'content-type': 'application/x-www-form-urlencoded' },
      '{"x":1}',
    );
    expect(status).toBe(200);
    expect((body as unknown as Mirror).event).toEqual({ x: 1 });
    expect((body as unknown as Mirror).context.cloudEvent).toMatchObject({
      type: 'dev.eddy.invoke',
      specversion: '1.0',
    });
  });

  it('refuses a direct invocation whose body is not JSON, saying so', async () => {
    const { status, body } = await post(rt.url, {}, 'x=1');
    expect(status).toBe(400);
    expect(body).toMatchObject({ errorType: 'InvalidEvent' });
    expect(String(body.errorMessage)).toMatch(/body of a direct invocation must be JSON/);
  });

  it('gives text data as a string and other binary data as a Buffer', async () => {
    const base = { 'ce-specversion': '1.0', 'ce-id': '1', 'ce-source': '/s', 'ce-type': 't' };
    const text = await post(rt.url, { ...base, 'content-type': 'text/plain' }, 'hello');
    expect((text.body as unknown as Mirror).event).toBe('hello');
    const bytes = Buffer.from([0, 1, 2, 250]);
    const bin = await post(rt.url, { ...base, 'content-type': 'application/octet-stream' }, bytes);
    expect((bin.body as unknown as Mirror).event).toEqual({ buffer: bytes.toString('base64') });
  });

  it('fills the Lambda context', async () => {
    const requestId = 'req-from-gateway-42';
    const { status, headers, body } = await post(rt.url, { 'x-eddy-request-id': requestId }, '{}');
    expect(status).toBe(200);
    expect(headers.get('x-eddy-request-id')).toBe(requestId);
    const c = (body as unknown as Mirror).context;
    expect(c).toMatchObject({
      awsRequestId: requestId,
      functionName: 'hello',
      functionVersion: '$LATEST',
      invokedFunctionArn: 'arn:aws:lambda:us-east-1:tests:function:hello',
      memoryLimitInMB: '256',
      logGroupName: '/eddy/tests/hello',
      callbackWaitsForEmptyEventLoop: true,
    });
    expect(c.logStreamName).toMatch(/^\d{4}\/\d{2}\/\d{2}\/\[\$LATEST\]\S+$/);
    // Lambda's variables, as its Node.js runtime sets them, for libraries that look for them.
    const env = (body as unknown as { env: Record<string, string> }).env;
    expect(env).toMatchObject({
      _HANDLER: 'index.handler',
      AWS_EXECUTION_ENV: 'AWS_Lambda_nodejs22.x',
      AWS_LAMBDA_FUNCTION_NAME: 'hello',
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '256',
      AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
      AWS_REGION: 'us-east-1',
      AWS_DEFAULT_REGION: 'us-east-1',
      AWS_LAMBDA_LOG_GROUP_NAME: '/eddy/tests/hello',
      AWS_LAMBDA_LOG_STREAM_NAME: c.logStreamName,
      AWS_LAMBDA_INITIALIZATION_TYPE: 'on-demand',
      TZ: ':UTC',
    });
    expect(env.LAMBDA_TASK_ROOT).toBeTruthy();
    expect((body as unknown as { timeZone: string }).timeZone).toBe('UTC');
    expect(c.remaining).toBeGreaterThan(4000);
    expect(c.remaining).toBeLessThanOrEqual(5000);
  });

  it('makes up a unique request id when none is given', async () => {
    const a = await post(rt.url, {}, '{}');
    const b = await post(rt.url, {}, '{}');
    const idA = a.headers.get('x-eddy-request-id');
    expect(idA).toMatch(/^[0-9a-f-]{36}$/);
    expect(idA).not.toBe(b.headers.get('x-eddy-request-id'));
    expect((a.body as unknown as Mirror).context.awsRequestId).toBe(idA);
  });

  it("hands com.amazonaws.s3.* events to the handler as Lambda's S3 event", async () => {
    const record = {
      eventVersion: '2.1',
      eventSource: 'aws:s3',
      awsRegion: 'us-east-1',
      eventTime: '2024-05-01T12:00:00.000Z',
      eventName: 'ObjectCreated:Put',
      s3: {
        s3SchemaVersion: '1.0',
        bucket: { name: 'photos', arn: 'arn:aws:s3:::photos' },
        object: { key: 'holiday/my+summer+photo%281%29.jpg', size: 1024, eTag: 'abc' },
      },
    };
    const ce = new CloudEvent({
      type: 'com.amazonaws.s3.ObjectCreated:Put',
      source: 'aws:s3.us-east-1.photos',
      subject: 'holiday/my summer photo(1).jpg',
      data: record,
    });
    const message = HTTP.binary(ce);
    const { status, body } = await post(
      s3.url,
      message.headers as Record<string, string>,
      message.body as string,
    );
    expect(status).toBe(200);
    expect(body).toEqual({
      bucket: 'photos',
      key: 'holiday/my summer photo(1).jpg',
      records: 1,
      eventName: 'ObjectCreated:Put',
    });

    const seen = await post(
      rt.url,
      message.headers as Record<string, string>,
      message.body as string,
    );
    expect((seen.body as unknown as Mirror).event).toEqual({ Records: [record] });
  });

  const valid = {
    'ce-specversion': '1.0',
    'ce-id': 'a1',
    'ce-source': '/s',
    'ce-type': 't',
    'content-type': 'application/json',
  };
  const without = (name: string) =>
    Object.fromEntries(Object.entries(valid).filter(([k]) => k !== name));
  const structured = (event: Record<string, unknown>) =>
    [{ 'content-type': 'application/cloudevents+json' }, JSON.stringify(event)] as const;
  // The SDK is the reference for what a valid event is; where its parser is lenient (it makes
  // up a specversion, takes 0.2, replaces a bad time with "now"), the runtime follows the spec.
  const malformed: Array<
    [string, Record<string, string>, string, RegExp, 'sdk refuses' | 'sdk lenient']
  > = [
    [
      'no id',
      without('ce-id'),
      '{}',
      /missing required attribute 'id' \(header ce-id\)/,
      'sdk refuses',
    ],
    [
      'no source',
      without('ce-source'),
      '{}',
      /missing required attribute 'source' \(header ce-source\)/,
      'sdk refuses',
    ],
    [
      'no type',
      without('ce-type'),
      '{}',
      /missing required attribute 'type' \(header ce-type\)/,
      'sdk refuses',
    ],
    [
      'an empty id',
      { ...valid, 'ce-id': '' },
      '{}',
      /attribute 'id' \(header ce-id\) must not be empty/,
      'sdk refuses',
    ],
    [
      'structured without type',
      ...structured({ specversion: '1.0', id: '1', source: '/s' }),
      /missing required attribute 'type'/,
      'sdk refuses',
    ],
    [
      'no specversion',
      without('ce-specversion'),
      '{}',
      /missing required attribute 'specversion'/,
      'sdk lenient',
    ],
    [
      'specversion 0.2',
      { ...valid, 'ce-specversion': '0.2' },
      '{}',
      /specversion.*"0\.2"; only 1\.0 is supported/,
      'sdk lenient',
    ],
    [
      'a time that is not RFC 3339',
      { ...valid, 'ce-time': 'yesterday' },
      '{}',
      /attribute 'time' .* RFC 3339/,
      'sdk lenient',
    ],
    [
      'a date the calendar does not have',
      { ...valid, 'ce-time': '2024-02-30T00:00:00Z' },
      '{}',
      /attribute 'time' \(header ce-time\) is "2024-02-30T00:00:00Z", not an RFC 3339 timestamp/,
      'sdk lenient',
    ],
    [
      'structured with a bad time',
      ...structured({ specversion: '1.0', id: '1', source: '/s', type: 't', time: '2024-13-99' }),
      /attribute 'time'/,
      'sdk lenient',
    ],
  ];

  it.each(malformed)(
    'answers 400 naming the attribute for %s',
    async (_n, headers, body, message, sdk) => {
      expect(sdkAccepts(headers, body)).toBe(sdk === 'sdk lenient');
      const res = await post(rt.url, headers, body);
      expect(res.status).toBe(400);
      expect(res.body.errorType).toBe('InvalidEvent');
      expect(String(res.body.errorMessage)).toMatch(message);
    },
  );

  it('accepts what the SDK accepts, extensions included', async () => {
    const headers = {
      ...valid,
      'ce-time': '2024-05-01T12:00:00.5+02:00',
      'ce-traceparent': '00-abc-01',
      'ce-subject': 'x',
    };
    expect(sdkAccepts(headers, '{"a":1}')).toBe(true);
    const res = await post(rt.url, headers, '{"a":1}');
    expect(res.status).toBe(200);
    expect((res.body as unknown as Mirror).context.cloudEvent).toMatchObject({
      traceparent: '00-abc-01',
      subject: 'x',
    });
  });

  it('refuses JSON data that is not JSON', async () => {
    const res = await post(rt.url, valid, '{not json');
    expect(res.status).toBe(400);
    expect(String(res.body.errorMessage)).toMatch(
      /data is not valid JSON although datacontenttype is application\/json/,
    );
  });

  it('answers 415 to batched mode', async () => {
    const res = await post(rt.url, { 'content-type': 'application/cloudevents-batch+json' }, '[]');
    expect(res.status).toBe(415);
    expect(String(res.body.errorMessage)).toMatch(
      /batched CloudEvents .* are not supported: send one event per request/,
    );
  });

  it('answers 413 to bodies over 6 MB and still serves the next request', async () => {
    const big = Buffer.alloc(6 * 1024 * 1024 + 1, 0x20);
    const res = await post(rt.url, { 'content-type': 'application/json' }, big);
    expect(res.status).toBe(413);
    expect(String(res.body.errorMessage)).toMatch(/larger than 6291456 bytes/);
    // The same runtime, whose one invocation slot the refused request held while it was read.
    const next = await post(rt.url, { 'content-type': 'application/json' }, '{"after":"413"}');
    expect(next.status).toBe(200);
    expect((next.body as unknown as Mirror).event).toEqual({ after: '413' });
    const atLimit = Buffer.concat([
      Buffer.from('"'),
      Buffer.alloc(6 * 1024 * 1024 - 2, 0x61),
      Buffer.from('"'),
    ]);
    // Exactly 6 MB is taken (the S3 handler then finds no Records in a string: not a 413).
    const ok = await post(s3.url, {}, atLimit);
    expect(ok.status).not.toBe(413);
  });
});
