import type { _Object } from '@aws-sdk/client-s3';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { s3ClientFor } from './connection.js';
import {
  advance,
  decodeProgress,
  encodeProgress,
  list,
  markSeen,
  pollRecord,
  prune,
  unseen,
} from './s3-poll.js';

const at = (key: string, seconds: number): _Object => ({
  Key: key,
  ETag: `"${key}"`,
  Size: 1,
  LastModified: new Date(seconds * 1000),
});
const late = 300_000;

describe('poll progress', () => {
  it('delivers only what it has not seen, oldest first, and survives a round trip', () => {
    const p = { watermark: 1_000_000, recent: new Map<string, number>() };
    const a = at('a', 1000);
    markSeen(p, a);
    advance(p, []);
    const listing = [at('c', 1002), a, at('b', 1001), at('old', 500)];
    expect(unseen(listing, p, late).map((o) => o.Key)).toEqual(['b', 'c']);
    const back = decodeProgress(encodeProgress(p, 'spec'), 'spec')!;
    expect(unseen(listing, back, late).map((o) => o.Key)).toEqual(['b', 'c']);
  });

  it('takes an object listed late, after a newer one, while within the window', () => {
    const p = { watermark: 0, recent: new Map<string, number>() };
    markSeen(p, at('new', 2000));
    advance(p, []);
    expect(unseen([at('slow', 1900), at('new', 2000)], p, late).map((o) => o.Key)).toEqual([
      'slow',
    ]);
  });

  it('delivers an object uploaded again under the same key', () => {
    const p = { watermark: 0, recent: new Map<string, number>() };
    markSeen(p, at('k', 1000));
    expect(unseen([at('k', 1010)], p, late).map((o) => o.Key)).toEqual(['k']);
  });

  it('stays bounded: hashes below the window are forgotten', () => {
    const p = { watermark: 0, recent: new Map<string, number>() };
    for (let i = 0; i < 1000; i++) markSeen(p, at(`k${i}`, i));
    advance(p, []);
    prune(p, 10_000);
    expect(p.recent.size).toBe(10);
    expect(unseen([at('k5', 5)], p, 10_000)).toEqual([]);
  });

  it('has no progress without a watermark, or kept for another bucket or prefix', () => {
    expect(decodeProgress({}, 'spec')).toBeUndefined();
    const p = { watermark: 5, recent: new Map<string, number>() };
    expect(decodeProgress(encodeProgress(p, 'old'), 'new')).toBeUndefined();
  });

  it('never moves the watermark past an object still pending', () => {
    const p = { watermark: 0, recent: new Map<string, number>() };
    const slow = at('slow', 1000);
    const later = at('later', 2000);
    markSeen(p, later);
    advance(p, [slow, later]);
    expect(p.watermark).toBe(999_999);
    prune(p, 1);
    // Far past the window, the pending object is still unseen, and delivered when its turn comes.
    expect(unseen([slow, later], p, 1).map((o) => o.Key)).toEqual(['slow']);
    markSeen(p, slow);
    advance(p, [slow, later]);
    expect(p.watermark).toBe(2_000_000);
  });
});

describe('poll records', () => {
  it("look like AWS's for an upload", () => {
    const r = pollRecord(
      at('holiday photos/a.jpg', 1000),
      { bucket: 'p', connection: {} },
      'up',
      'eu-west-1',
    );
    expect(r).toMatchObject({
      eventSource: 'aws:s3',
      awsRegion: 'eu-west-1',
      eventName: 'ObjectCreated:Put',
      eventTime: '1970-01-01T00:16:40.000Z',
      s3: {
        bucket: { name: 'p' },
        object: { key: 'holiday+photos/a.jpg', size: 1, eTag: 'holiday photos/a.jpg' },
      },
    });
  });
});

describe('listing a bucket', () => {
  it('gives up on a page whose body stalls, saying which bucket', async () => {
    // Answers the headers and the start of a listing, then nothing more.
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/xml', 'content-length': 10_000 });
      res.write('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult>');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = s3ClientFor({
      endpoint: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: 'a', secretAccessKey: 'b' },
    });
    try {
      const started = Date.now();
      await expect(
        list(
          client,
          { bucket: 'photos', connection: {} },
          new AbortController().signal,
          -Infinity,
          300,
        ),
      ).rejects.toThrow('ListObjectsV2 of bucket photos gave no complete answer within 0.3 s');
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      client.destroy();
      server.closeAllConnections();
      server.close();
    }
  });
});
