/**
 * The local stack's S3-compatible store (s3rver), so that the thumbnail story runs on one machine
 * without MinIO: objects in a directory, the demo's key pair, and every upload's S3 event posted
 * to the gateway's intake as MinIO would (with its token, again until taken, several at once).
 *
 * s3rver is loaded only when asked for, from the project's own node_modules.
 */
import type { Server } from 'node:http';
import nodeModule from 'node:module';
import { setTimeout as wait } from 'node:timers/promises';
import { portTakenOr } from '../errors.js';
import { encodeS3Key } from '../sources/s3-events.js';

/** What the local stack's stores (s3rver, MinIO) are started with. */
export interface LocalStoreOptions {
  port: number;
  host: string;
  /** Where objects are kept. */
  directory: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** Made at start when missing. */
  buckets: string[];
  log: (message: string) => void;
}

export interface EmbeddedS3Options extends LocalStoreOptions {
  /** Where every S3 event is posted (the gateway's `/sources/s3`), and the bearer token. */
  intake: () => { url: string; token: string } | undefined;
}

export interface EmbeddedS3 {
  endpoint: string;
  port: number;
  close(): Promise<void>;
}

interface S3rverRecord {
  s3: { object: { key: string } };
  [k: string]: unknown;
}

interface S3rverServer {
  run(): Promise<{ port: number; address: string }>;
  /** With a callback last: listens and returns the server; without: a promise of it (`run`'s way). */
  listen(...args: unknown[]): Server | Promise<Server>;
  close(): Promise<void>;
  on(event: 'event', listener: (e: { Records: S3rverRecord[] }) => void): void;
}

type S3rverClass = new (options: Record<string, unknown>) => S3rverServer;

export async function startEmbeddedS3(o: EmbeddedS3Options): Promise<EmbeddedS3> {
  const load = nodeModule.createRequire(import.meta.url);
  let S3rver: S3rverClass;
  let account: { DUMMY_ACCOUNT: { createKeyPair(id: string, secret: string): void } };
  try {
    S3rver = load('s3rver') as S3rverClass;
    account = load('s3rver/lib/models/account') as typeof account;
  } catch {
    throw new Error(
      'the embedded S3 store (s3rver) is not installed: run npm ci in the project, or point the triggers at an S3-compatible store and leave out --s3-port',
    );
  }
  account.DUMMY_ACCOUNT.createKeyPair(o.accessKeyId, o.secretAccessKey);
  const server = new S3rver({
    port: o.port,
    address: o.host,
    silent: true,
    directory: o.directory,
    configureBuckets: o.buckets.map((name) => ({ name })),
  });
  // s3rver listens without an 'error' listener (a taken port would be an unhandled 'error'
  // event): its listen is given one that rejects the run instead.
  const listen = server.listen.bind(server);
  server.listen = (...args) =>
    new Promise<Server>((resolve, reject) => {
      const failed = (err: Error) => reject(portTakenOr(err, 'the S3 store', o.host, o.port));
      const http = listen(...args, () => {
        http.off('error', failed);
        resolve(http);
      }) as Server;
      http.once('error', failed);
    });
  const address = await server.run();
  const endpoint = `http://${o.host.includes(':') ? `[${o.host}]` : o.host}:${address.port}`;

  // Each event is posted until the gateway takes it. Up to `postsInFlight` at once: the intake
  // answers once its deliveries have ended, so one at a time would run one invocation at a time.
  const queue: string[] = [];
  let inFlight = 0;
  let closed = false;
  let failing = false;
  const postsInFlight = 16;
  async function post(body: string): Promise<void> {
    for (let failures = 0; !closed; failures++) {
      const target = o.intake();
      if (target) {
        try {
          const res = await fetch(target.url, {
            method: 'POST',
            headers: {
              'content-type': 'application/json',
              authorization: `Bearer ${target.token}`,
            },
            body,
          });
          await res.arrayBuffer();
          if (res.ok) {
            failing = false;
            return;
          }
          if (!failing)
            o.log(`the gateway did not take an S3 event (HTTP ${res.status}): posting it again`);
        } catch (err) {
          if (!failing) o.log(`posting an S3 event failed (${String(err)}): posting it again`);
        }
        failing = true;
      }
      await wait(Math.min(5_000, 100 * 2 ** Math.min(failures, 6)));
    }
  }
  function pump(): void {
    while (inFlight < postsInFlight && queue.length > 0 && !closed) {
      const body = queue.shift()!;
      inFlight++;
      void post(body).finally(() => {
        inFlight--;
        pump();
      });
    }
  }
  server.on('event', (e) => {
    // s3rver gives the key as stored; S3 events carry it form-encoded.
    for (const r of e.Records) r.s3.object.key = encodeS3Key(r.s3.object.key);
    queue.push(JSON.stringify(e));
    pump();
  });
  return {
    endpoint,
    port: address.port,
    async close() {
      closed = true;
      const left = queue.length + inFlight;
      if (left > 0) o.log(`${left} S3 event(s) not delivered: the store stops`);
      await server.close();
    },
  };
}
