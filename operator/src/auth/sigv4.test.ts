import { describe, expect, it } from 'vitest';
import { GatewayError } from '../gateway/errors.js';
import { authenticateSigned, credentialOf, staticInvokeCredentials } from './invoke-credentials.js';
import {
  amzDate,
  parseAuthorization,
  sameSignature,
  signature,
  skewRefusal,
  stringToSign,
  type SignedRequest,
} from './sigv4.js';

const secretAccessKey = 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY';

/** Signs `req` as an AWS client does (the signer here is the one under test, checked below). */
function sign(
  req: Omit<SignedRequest, 'headers'> & { headers: Record<string, string> },
  o: { keyId?: string; secret?: string; service?: string; region?: string; time: number },
): SignedRequest {
  const date = amzDate(o.time);
  const headers = { ...req.headers, 'x-amz-date': date };
  const names = Object.keys(headers).sort();
  const auth = {
    accessKeyId: o.keyId ?? 'AKIDEXAMPLE',
    date: date.slice(0, 8),
    region: o.region ?? 'us-east-1',
    service: o.service ?? 'lambda',
    signedHeaders: names,
    signature: '',
  };
  const signed = { ...req, headers };
  const sig = signature(o.secret ?? secretAccessKey, auth, stringToSign(signed, auth));
  return {
    ...signed,
    headers: {
      ...headers,
      authorization: `AWS4-HMAC-SHA256 Credential=${auth.accessKeyId}/${auth.date}/${auth.region}/${auth.service}/aws4_request, SignedHeaders=${names.join(';')}, Signature=${sig}`,
    },
  };
}

const credentials = staticInvokeCredentials('eddy-system', [
  {
    accessKeyId: 'AKIDEXAMPLE',
    secretAccessKey,
    namespace: 'photos',
    serviceAccount: 'ci',
    secret: 'eddy-system/ci-key',
  },
]);
const now = Date.UTC(2026, 11, 7, 4, 30, 0);
const invoke = (
  body = '{"x":1}',
): Omit<SignedRequest, 'headers'> & {
  headers: Record<string, string>;
} => ({
  method: 'POST',
  url: '/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3Aphotos%3Afunction%3Ahello/invocations?Qualifier=%24LATEST',
  headers: { host: '127.0.0.1:8080', 'content-type': 'application/json' },
  body: Buffer.from(body),
});

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof GatewayError) return `${err.status} ${err.errorType}: ${err.message}`;
    throw err;
  }
  return 'accepted';
}

describe('SigV4', () => {
  it("reproduces AWS's own test vector (get-vanilla)", () => {
    const req: SignedRequest = {
      method: 'GET',
      url: '/',
      headers: { host: 'example.amazonaws.com', 'x-amz-date': '20150830T123600Z' },
      body: Buffer.alloc(0),
    };
    const auth = parseAuthorization(
      'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31',
    );
    if (typeof auth === 'string') throw new Error(auth);
    expect(signature(secretAccessKey, auth, stringToSign(req, auth))).toBe(auth.signature);
  });

  it('takes a signed request as the ServiceAccount its key acts as', async () => {
    const signed = sign(invoke(), { time: now - 60_000 });
    const who = await authenticateSigned(credentials, signed, now);
    expect(who.identity.username).toBe('system:serviceaccount:photos:ci');
    expect(who.identity.groups).toContain('system:serviceaccounts:photos');
  });

  it("refuses, in Lambda's terms, what it cannot take", async () => {
    const unsigned = { ...invoke(), headers: invoke().headers };
    expect(await refusal(authenticateSigned(credentials, unsigned, now))).toMatch(
      /^403 MissingAuthenticationTokenException: Missing Authentication Token/,
    );
    expect(
      await refusal(
        authenticateSigned(credentials, sign(invoke(), { time: now, keyId: 'AKIDOTHER' }), now),
      ),
    ).toMatch(
      /^403 UnrecognizedClientException: The security token included in the request is invalid/,
    );
    expect(
      await refusal(
        authenticateSigned(credentials, sign(invoke(), { time: now, secret: 'wrong' }), now),
      ),
    ).toMatch(/^403 InvalidSignatureException: The request signature we calculated does not match/);
    // Signed for another service.
    expect(
      await refusal(
        authenticateSigned(credentials, sign(invoke(), { time: now, service: 's3' }), now),
      ),
    ).toMatch(
      /^403 InvalidSignatureException: Credential should be scoped to correct service: 'lambda'/,
    );
    // A body changed after signing.
    const signed = sign(invoke(), { time: now });
    expect(
      await refusal(
        authenticateSigned(credentials, { ...signed, body: Buffer.from('{"x":2}') }, now),
      ),
    ).toMatch(/^403 InvalidSignatureException/);
    // A path changed after signing.
    expect(
      await refusal(
        authenticateSigned(
          credentials,
          { ...signed, url: signed.url.replace('hello', 'other') },
          now,
        ),
      ),
    ).toMatch(/^403 InvalidSignatureException/);
  });

  it('refuses a time more than 5 minutes off, as AWS words it', async () => {
    const old = sign(invoke(), { time: now - 5 * 60_000 - 1_000 });
    expect(await refusal(authenticateSigned(credentials, old, now))).toBe(
      "403 InvalidSignatureException: Signature expired: 20261207T042459Z is now earlier than 20261207T042500Z (20261207T043000Z - 5 min.): set the client's clock right",
    );
    const ahead = sign(invoke(), { time: now + 6 * 60_000 });
    expect(await refusal(authenticateSigned(credentials, ahead, now))).toMatch(
      /^403 InvalidSignatureException: Signature not yet current: 20261207T043600Z is still later than 20261207T043500Z/,
    );
    // Just within: taken.
    expect(skewRefusal(now - 5 * 60_000, now)).toBeUndefined();
  });

  it('compares signatures of any length without throwing', () => {
    expect(sameSignature('ab', 'ab')).toBe(true);
    expect(sameSignature('ab', 'abc')).toBe(false);
    expect(sameSignature('ab', 'ac')).toBe(false);
  });
});

describe('invoke credentials Secrets', () => {
  const secret = (data: Record<string, string>) => ({
    metadata: { namespace: 'eddy-system', name: 'ci-key' },
    data: Object.fromEntries(
      Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')]),
    ),
  });

  it('reads the key, its secret and the ServiceAccount as namespace/name', () => {
    expect(
      credentialOf(
        secret({ accessKeyId: 'AKID', secretAccessKey: 's', serviceAccount: 'photos/ci' }),
      ),
    ).toEqual({
      accessKeyId: 'AKID',
      secretAccessKey: 's',
      namespace: 'photos',
      serviceAccount: 'ci',
      secret: 'eddy-system/ci-key',
    });
  });

  it('says what a Secret lacks', () => {
    expect(credentialOf(secret({ accessKeyId: 'AKID', secretAccessKey: 's' }))).toMatch(
      /eddy-system\/ci-key needs the keys accessKeyId, secretAccessKey, serviceAccount/,
    );
    expect(
      credentialOf(secret({ accessKeyId: 'AKID', secretAccessKey: 's', serviceAccount: 'ci' })),
    ).toMatch(/write it as namespace\/name/);
  });
});
