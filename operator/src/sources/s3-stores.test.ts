import { describe, expect, it } from 'vitest';
import { s3Settings } from '../settings.js';
import { namesStore, normaliseEndpoint, s3Stores, storeByToken } from './s3-stores.js';

describe('S3 stores', () => {
  it('normalises endpoints: scheme and host in lower case, the port written, no trailing slash', () => {
    expect(normaliseEndpoint('HTTP://MinIO.minio.svc:9000/')).toBe('http://minio.minio.svc:9000');
    expect(normaliseEndpoint('http://minio.minio.svc')).toBe('http://minio.minio.svc:80');
    expect(normaliseEndpoint('https://s3.example.com/')).toBe('https://s3.example.com:443');
    expect(normaliseEndpoint('https://s3.example.com:443')).toBe('https://s3.example.com:443');
    expect(normaliseEndpoint('http://user:pw@store:9000/base//')).toBe('http://store:9000/base');
    expect(normaliseEndpoint('ftp://store')).toBeUndefined();
    expect(normaliseEndpoint('not a url')).toBeUndefined();
    expect(normaliseEndpoint(undefined)).toBeUndefined();
  });

  it('tells the store by its token, and matches triggers only on its endpoints', () => {
    const stores = s3Stores(
      [
        { endpoint: 'http://minio-a:9000', token: 'token-a' },
        { endpoints: ['http://minio-b:9000', 'http://minio-b.store.svc:9000'], token: 'token-b' },
      ],
      'stores',
    );
    const b = storeByToken(stores, 'token-b');
    expect(b?.endpoints).toEqual(['http://minio-b:9000', 'http://minio-b.store.svc:9000']);
    expect(storeByToken(stores, 'token-c')).toBeUndefined();
    expect(storeByToken(stores, '')).toBeUndefined();
    expect(namesStore(b!, 'http://MINIO-B.store.svc:9000/')).toBe(true);
    expect(namesStore(b!, 'http://minio-a:9000')).toBe(false);
    expect(namesStore(b!, undefined)).toBe(false);
  });

  it('refuses stores without an endpoint or token, and two stores with one token', () => {
    expect(() => s3Stores([{ token: 't' }], 'EDDY_S3_STORES')).toThrow(
      /EDDY_S3_STORES\[0\] has no endpoint/,
    );
    expect(() => s3Stores([{ endpoint: 'http://a:1', token: ' ' }], 'x')).toThrow(/no token/);
    expect(() => s3Stores([{ endpoint: 'minio:9000', token: 't' }], 'x')).toThrow(
      /not an http\(s\) URL/,
    );
    expect(() =>
      s3Stores(
        [
          { endpoint: 'http://a:1', token: 't' },
          { endpoint: 'http://b:1', token: 't' },
        ],
        'x',
      ),
    ).toThrow(/its own token/);
  });

  it('reads stores from the environment, and refuses a token without an endpoint', () => {
    expect(s3Settings({}).s3Stores).toEqual([]);
    expect(() => s3Settings({ EDDY_S3_WEBHOOK_TOKEN: 'secret' })).toThrow(
      /EDDY_S3_WEBHOOK_ENDPOINT is not: set it/,
    );
    expect(
      s3Settings({
        EDDY_S3_WEBHOOK_TOKEN: 'secret',
        EDDY_S3_WEBHOOK_ENDPOINT: 'http://minio.minio.svc:9000/',
      }).s3Stores,
    ).toEqual([{ endpoints: ['http://minio.minio.svc:9000'], token: 'secret' }]);
    expect(
      s3Settings({
        EDDY_S3_STORES: JSON.stringify([
          { endpoint: 'http://a:9000', tokenEnv: 'TOKEN_A' },
          { endpoint: 'http://b:9000', token: 'tb' },
        ]),
        TOKEN_A: 'ta',
      }).s3Stores,
    ).toEqual([
      { endpoints: ['http://a:9000'], token: 'ta' },
      { endpoints: ['http://b:9000'], token: 'tb' },
    ]);
    expect(() =>
      s3Settings({ EDDY_S3_STORES: '[{"endpoint": "http://a:1", "tokenEnv": "MISSING"}]' }),
    ).toThrow(/MISSING is empty/);
    expect(() => s3Settings({ EDDY_S3_STORES: '{' })).toThrow(/not JSON/);
    // The local stack's store: its endpoints, and a token made up when none is set.
    const local = s3Settings({}, { endpoints: ['http://127.0.0.1:9000'] });
    expect(local.s3Stores[0]!.token).toBe(local.s3WebhookToken);
    expect(local.s3WebhookToken).toMatch(/^[0-9a-f]{48}$/);
  });
});
