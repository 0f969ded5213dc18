/**
 * S3-compatible buckets in `poll` mode, for stores that cannot push notifications: the leader
 * lists each such bucket (ListObjectsV2, under the trigger's prefix) every few seconds and emits
 * `ObjectCreated:Put` for objects it has not seen.
 *
 * Progress is bounded, since a checkpoint is one ConfigMap (at most 1 MiB): a high-water mark of
 * LastModified, below which everything counts as seen, and short hashes of the objects seen in
 * the late-arrival window just under it (an upload that started earlier can be listed later).
 * A restart resumes from the checkpoint: objects uploaded meanwhile are delivered once, those
 * delivered before are not. The first listing of a new trigger only marks what is there already.
 * Each poll lists the whole prefix, so its cost grows with the number of objects under it.
 */
import { createHash } from 'node:crypto';
import { ListObjectsV2Command, type S3Client, type _Object } from '@aws-sdk/client-s3';
import { checkpointName } from './checkpoints.js';
import type { EddyFunction, S3Trigger } from '../api/types.js';
import { describeError } from '../errors.js';
import type { Runnable } from '../manager.js';
import {
  classifyError,
  problemBackoffMs,
  resolveConnection,
  s3ClientFor,
  SourceProblem,
  type ResolvedConnection,
} from './connection.js';
import {
  defaultS3Events,
  encodeS3Key,
  eventMatches,
  s3CloudEvent,
  type S3Record,
} from './s3-events.js';
import type { SourceContext, SourceFactory } from './source.js';

export interface S3PollOptions {
  /** Between two listings of a bucket. Default 10 s. */
  intervalMs?: number;
  /** How late an object may be listed after a later one and still be delivered. Default 5 min. */
  lateArrivalMs?: number;
  /** Objects delivered at once per trigger. Default 16. */
  concurrency?: number;
}

/** The most hashes a checkpoint keeps (about 20 bytes each: well under 1 MiB). */
const maxRecent = 40_000;

interface Progress {
  /** Milliseconds since the epoch: every object last modified at or before it counts as seen. */
  watermark: number;
  /** Objects seen above `watermark - lateArrivalMs`: hash -> LastModified (ms). */
  recent: Map<string, number>;
}

function objectHash(o: _Object): string {
  return createHash('sha256')
    .update(`${o.Key}\n${o.ETag ?? ''}\n${o.LastModified?.getTime() ?? 0}`)
    .digest('base64url')
    .slice(0, 12);
}

export function encodeProgress(p: Progress, spec: string): Record<string, string> {
  return {
    spec,
    watermark: new Date(p.watermark).toISOString(),
    recent: [...p.recent].map(([h, t]) => `${h}:${Math.floor(t / 1000)}`).join(','),
  };
}

/** The progress kept for this trigger; none when it was kept for another bucket or prefix. */
export function decodeProgress(data: Record<string, string>, spec: string): Progress | undefined {
  if (data.spec !== undefined && data.spec !== spec) return undefined;
  const watermark = Date.parse(data.watermark ?? '');
  if (Number.isNaN(watermark)) return undefined;
  const recent = new Map<string, number>();
  for (const item of (data.recent ?? '').split(',')) {
    const [h, t] = item.split(':');
    if (h && t) recent.set(h, Number(t) * 1000);
  }
  return { watermark, recent };
}

/** What a listing means given the progress so far: the objects to deliver, oldest first. */
export function unseen(objects: readonly _Object[], p: Progress, lateArrivalMs: number): _Object[] {
  const floor = p.watermark - lateArrivalMs;
  return objects
    .filter((o) => {
      const t = o.LastModified?.getTime() ?? 0;
      return t > floor && !p.recent.has(objectHash(o));
    })
    .sort(
      (a, b) =>
        (a.LastModified?.getTime() ?? 0) - (b.LastModified?.getTime() ?? 0) ||
        (a.Key ?? '').localeCompare(b.Key ?? ''),
    );
}

/** Marks an object seen. The watermark moves only in {@link advance}. */
export function markSeen(p: Progress, o: _Object): void {
  p.recent.set(objectHash(o), o.LastModified?.getTime() ?? 0);
}

/**
 * Moves the watermark up to the newest object seen, but never past an object still pending
 * (being delivered, or left for the next poll): everything at or below the watermark counts as
 * seen, so passing one would lose it once it fell out of the late-arrival window.
 */
export function advance(p: Progress, pending: readonly _Object[]): void {
  let top = p.watermark;
  for (const t of p.recent.values()) if (t > top) top = t;
  for (const o of pending) {
    if (p.recent.has(objectHash(o))) continue;
    top = Math.min(top, (o.LastModified?.getTime() ?? 0) - 1);
  }
  if (top > p.watermark) p.watermark = top;
}

/** Forgets hashes that fell below the late-arrival window, and keeps within the bound. */
export function prune(p: Progress, lateArrivalMs: number): void {
  const floor = p.watermark - lateArrivalMs;
  for (const [h, seen] of p.recent) if (seen <= floor) p.recent.delete(h);
  // Past the bound, the oldest go: such an object may be delivered again, never skipped.
  if (p.recent.size > maxRecent) {
    const oldest = [...p.recent].sort((a, b) => a[1] - b[1]).slice(0, p.recent.size - maxRecent);
    for (const [h] of oldest) p.recent.delete(h);
  }
}

/** The S3 record a listed object stands for: as AWS would have sent for its upload. */
export function pollRecord(o: _Object, t: S3Trigger, trigger: string, region: string): S3Record {
  return {
    eventVersion: '2.1',
    eventSource: 'aws:s3',
    awsRegion: region,
    eventTime: (o.LastModified ?? new Date()).toISOString(),
    eventName: 'ObjectCreated:Put',
    userIdentity: { principalId: 'eddy-poll' },
    requestParameters: { sourceIPAddress: '' },
    responseElements: {},
    s3: {
      s3SchemaVersion: '1.0',
      configurationId: trigger,
      bucket: { name: t.bucket, arn: `arn:aws:s3:::${t.bucket}` },
      object: {
        key: encodeS3Key(o.Key ?? ''),
        size: o.Size ?? 0,
        eTag: (o.ETag ?? '').replace(/"/g, ''),
        sequencer: (o.LastModified?.getTime() ?? 0).toString(16).toUpperCase(),
      },
    },
  };
}

const fnKey = (fn: EddyFunction) => `${fn.metadata.namespace}/${fn.metadata.name}`;

export function s3PollSource(o: S3PollOptions = {}): SourceFactory {
  const intervalMs = o.intervalMs ?? 10_000;
  const lateArrivalMs = o.lateArrivalMs ?? 5 * 60_000;
  const concurrency = o.concurrency ?? 16;

  return (ctx: SourceContext): Runnable[] => [
    {
      name: 's3-poll',
      leaderOnly: true,
      async run(signal) {
        const loops = new Map<
          string,
          { spec: string; stop: AbortController; done: Promise<void> }
        >();
        const sync = () => {
          const wanted = new Map<string, { fn: EddyFunction; name: string; t: S3Trigger }>();
          for (const fn of ctx.store.list()) {
            if (fn.metadata.deletionTimestamp) continue;
            for (const t of fn.spec.triggers ?? []) {
              if (t.s3?.mode === 'poll')
                wanted.set(`${fnKey(fn)}/${t.name}`, { fn, name: t.name, t: t.s3 });
            }
          }
          for (const [key, loop] of loops) {
            const w = wanted.get(key);
            if (w && JSON.stringify(w.t) === loop.spec) continue;
            loop.stop.abort();
            loops.delete(key);
            if (!w) {
              const [ns, name, trigger] = key.split('/') as [string, string, string];
              ctx.states.delete(`${ns}/${name}`, trigger);
              // The trigger was removed from a Function that stays: its progress goes too, once
              // the loop has made its last save.
              void loop.done.then(() => {
                const stays = ctx.store.get(ns, name);
                if (
                  stays &&
                  !stays.spec.triggers?.some((x) => x.name === trigger && x.s3?.mode === 'poll')
                )
                  return ctx.checkpoints.remove(stays, trigger).catch(() => undefined);
              });
            }
          }
          for (const [key, w] of wanted) {
            if (loops.has(key)) continue;
            const stop = new AbortController();
            const both = AbortSignal.any([signal, stop.signal]);
            loops.set(key, {
              spec: JSON.stringify(w.t),
              stop,
              done: pollLoop(ctx, w.fn, w.name, w.t, both),
            });
          }
        };
        const unsubscribe = ctx.store.onChange(sync);
        sync();
        await new Promise<void>((resolve) => {
          if (signal.aborted) resolve();
          else signal.addEventListener('abort', () => resolve(), { once: true });
        });
        unsubscribe();
        await Promise.all([...loops.values()].map((l) => l.done));
      },
    },
  ];

  async function pollLoop(
    ctx: SourceContext,
    initial: EddyFunction,
    trigger: string,
    t: S3Trigger,
    signal: AbortSignal,
  ): Promise<void> {
    const key = fnKey(initial);
    const where = `bucket ${t.bucket}${t.connection.endpoint ? ` at ${t.connection.endpoint}` : ''}`;
    if (!eventMatches(t.events ?? defaultS3Events, 'ObjectCreated:Put')) {
      ctx.states.set(key, trigger, {
        ready: false,
        reason: 'SourceError',
        message: `mode poll only sees created objects (s3:ObjectCreated:Put): add it to events, or use mode notifications`,
      });
      return;
    }
    let client: S3Client | undefined;
    let fingerprint = '';
    // Progress kept for another bucket, prefix or store is not this trigger's.
    const spec = JSON.stringify([t.connection.endpoint ?? '', t.bucket, t.filter ?? {}]);
    const checkpoint = async <T>(io: () => Promise<T>): Promise<T> => {
      try {
        return await io();
      } catch (err) {
        throw new SourceProblem(
          'SourceError',
          `the trigger's progress (ConfigMap ${checkpointName(initial, trigger)}) could not be read or written: ${describeError(err)}`,
        );
      }
    };
    let progress: Progress | undefined;
    let failures = 0;
    try {
      while (!signal.aborted) {
        const fn = ctx.store.get(initial.metadata.namespace, initial.metadata.name) ?? initial;
        try {
          const conn: ResolvedConnection = await resolveConnection(
            ctx.secrets,
            fn,
            t.connection,
            `trigger ${trigger} (s3.connection)`,
          );
          const fp = JSON.stringify(conn);
          if (!client || fp !== fingerprint) {
            client?.destroy();
            client = s3ClientFor(conn);
            fingerprint = fp;
          }
          progress ??= decodeProgress(
            await checkpoint(() => ctx.checkpoints.load(fn, trigger)),
            spec,
          );
          const objects = await list(
            client,
            t,
            signal,
            progress ? progress.watermark - lateArrivalMs : -Infinity,
          );
          ctx.states.set(key, trigger, { ready: true });
          failures = 0;
          if (!progress) {
            // A new trigger: what is there already was not created since it started.
            progress = { watermark: 0, recent: new Map() };
            for (const obj of objects) markSeen(progress, obj);
            advance(progress, []);
            prune(progress, lateArrivalMs);
            if (progress.watermark === 0) progress.watermark = Date.now();
            const first = progress;
            await checkpoint(() => ctx.checkpoints.save(fn, trigger, encodeProgress(first, spec)));
            ctx.log(
              `${where}: trigger ${key}/${trigger} polls from now on (${objects.length} object(s) there already)`,
            );
          } else {
            await deliverUnseen(ctx, fn, trigger, t, conn.region, objects, progress, spec, signal);
          }
        } catch (err) {
          if (signal.aborted) break;
          failures++;
          const p =
            err instanceof SourceProblem ? err : classifyError(err, where, 'BucketNotFound');
          ctx.states.set(key, trigger, { ready: false, reason: p.reason, message: p.message });
          if (failures === 1) ctx.log(`trigger ${key}/${trigger}: ${p.message}`);
        }
        await sleep(failures > 0 ? problemBackoffMs(failures, intervalMs) : intervalMs, signal);
      }
    } finally {
      client?.destroy();
    }
  }

  async function deliverUnseen(
    ctx: SourceContext,
    fn: EddyFunction,
    trigger: string,
    t: S3Trigger,
    region: string,
    objects: _Object[],
    progress: Progress,
    spec: string,
    signal: AbortSignal,
  ): Promise<void> {
    const todo = unseen(objects, progress, lateArrivalMs);
    if (todo.length === 0) return;
    let next = 0;
    let lastSave = Date.now();
    let interrupted = false;
    const save = () => {
      advance(progress, todo);
      prune(progress, lateArrivalMs);
      return ctx.checkpoints.save(fn, trigger, encodeProgress(progress, spec));
    };
    await Promise.all(
      Array.from({ length: Math.min(concurrency, todo.length) }, async () => {
        while (next < todo.length && !interrupted && !signal.aborted) {
          const obj = todo[next++]!;
          const out = await ctx.sink.deliver(
            fn,
            s3CloudEvent(pollRecord(obj, t, trigger, region), trigger),
            signal,
          );
          if (out.outcome === 'interrupted') {
            interrupted = true;
            return;
          }
          if (out.outcome === 'dropped' && fn.spec.deadLetter) {
            // The dead letter failed: left unseen, so that the next poll tries again.
            ctx.log(`trigger ${fnKey(fn)}/${trigger}: ${obj.Key} is delivered again next poll`);
            continue;
          }
          markSeen(progress, obj);
          if (Date.now() - lastSave >= 1_000) {
            lastSave = Date.now();
            await save().catch((err: unknown) =>
              ctx.log(
                `trigger ${fnKey(fn)}/${trigger}: saving progress failed: ${describeError(err)}`,
              ),
            );
          }
        }
      }),
    );
    await save();
  }
}

/** The longest one page of a bucket's listing may take, its body read to the end. */
export const listPageTimeoutMs = 30_000;

/**
 * The objects under the trigger's prefix with its suffix, last modified after `floor`. Each page
 * has `pageTimeoutMs` to arrive in full: a store that answers the headers and stalls in the body
 * fails the poll, which is tried again, instead of stopping the trigger for good.
 */
export async function list(
  client: S3Client,
  t: S3Trigger,
  signal: AbortSignal,
  floor: number,
  pageTimeoutMs = listPageTimeoutMs,
): Promise<_Object[]> {
  const out: _Object[] = [];
  let token: string | undefined;
  const suffix = t.filter?.suffix ?? '';
  do {
    const deadline = AbortSignal.timeout(pageTimeoutMs);
    const page = await client
      .send(
        new ListObjectsV2Command({
          Bucket: t.bucket,
          ...(t.filter?.prefix ? { Prefix: t.filter.prefix } : {}),
          ...(token ? { ContinuationToken: token } : {}),
        }),
        { abortSignal: AbortSignal.any([signal, deadline]) },
      )
      .catch((err: unknown) => {
        if (deadline.aborted && !signal.aborted)
          throw new Error(
            `ListObjectsV2 of bucket ${t.bucket} gave no complete answer within ${pageTimeoutMs / 1000} s`,
          );
        throw err;
      });
    for (const o of page.Contents ?? []) {
      // Only what can still be unseen is kept: memory follows the window, not the bucket.
      if (o.Key?.endsWith(suffix) && (o.LastModified?.getTime() ?? 0) > floor) out.push(o);
    }
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return out;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
