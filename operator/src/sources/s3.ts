/**
 * S3-compatible buckets in `notifications` mode: the store (MinIO, AWS) posts bucket
 * notifications to the gateway, which delivers each record to every trigger it matches.
 *
 * - The intake, `POST /sources/s3`, runs in every gateway. The token a post carries tells which
 *   registered store sent it; its records go only to triggers whose connection names that store
 *   and whose own credentials can read the bucket there. It answers 2xx only once every matched
 *   function has succeeded or dead-lettered the event, so a store with a persistent queue (MinIO's
 *   queue_dir) keeps what the gateway could not finish and posts it again.
 * - The leader writes each bucket's notification configuration: one entry of its own (id
 *   `eddy`) covering the events and key filters of every trigger on the bucket whose credentials
 *   can read it, next to whatever other tools put there, which it keeps. When the last trigger on
 *   a bucket goes, so does the entry; on Function deletion the finalizer waits for that (the
 *   cleaner).
 */
import type { IncomingMessage } from 'node:http';
import {
  GetBucketNotificationConfigurationCommand,
  HeadBucketCommand,
  PutBucketNotificationConfigurationCommand,
  type S3Client,
  type NotificationConfiguration,
  type QueueConfiguration,
} from '@aws-sdk/client-s3';
import type { EddyFunction, S3Trigger } from '../api/types.js';
import type { Cleaner } from '../controller/reconciler.js';
import { describeError } from '../errors.js';
import type { DeliveryOutcome } from '../gateway/delivery.js';
import { gatewayError, type GatewayError } from '../gateway/errors.js';
import type { Runnable } from '../manager.js';
import {
  classifyError,
  connectionFingerprint,
  problemBackoffMs,
  resolveConnection,
  s3ClientFor,
  SourceProblem,
  type ResolvedConnection,
} from './connection.js';
import {
  defaultS3Events,
  InvalidS3Body,
  parseNotification,
  recordMatches,
  s3CloudEvent,
} from './s3-events.js';
import { namesStore, normaliseEndpoint, storeByToken, type S3Store } from './s3-stores.js';
import type { SourceContext, SourceFactory } from './source.js';

export const s3IntakePath = '/sources/s3';
/** The id of Eddy's own entry in a bucket's notification configuration. */
export const notificationId = 'eddy';
/** MinIO's name for a webhook target configured as MINIO_NOTIFY_WEBHOOK_*_EDDY. */
export const defaultWebhookArn = 'arn:minio:sqs::EDDY:webhook';

export interface S3SourceOptions {
  /**
   * The stores that may post, each known by its token and endpoints; with none the intake
   * refuses every post.
   */
  stores: readonly S3Store[];
  /** The ARN of the store's webhook target that posts to the intake. Default {@link defaultWebhookArn}. */
  webhookArn?: string;
  /** The region records without one are given. Default us-east-1. */
  defaultRegion?: string;
  /** How often the leader checks every bucket's configuration, changed or not. Default 60 s. */
  resyncMs?: number;
  /** Longest wait for one call to a store (HeadBucket, the notification configuration). Default 10 s. */
  callTimeoutMs?: number;
  /** S3 events one gateway delivers at once; past it, 429 and the store posts again. */
  intakeLimit?: number;
  /**
   * Stores that post every bucket's events without a notification configuration (the local
   * stack's embedded store), by endpoint: their buckets are left as they are.
   */
  postsEverything?: (endpoint: string | undefined) => boolean;
}

export interface S3Source {
  factory: SourceFactory;
  /** Removes a deleted Function's part of its buckets' configurations (the finalizer's work). */
  cleaner: Cleaner;
}

interface Bound {
  fn: EddyFunction;
  trigger: string;
  s3: S3Trigger;
}

const fnKey = (fn: EddyFunction) => `${fn.metadata.namespace}/${fn.metadata.name}`;
const pushes = (t: S3Trigger) => (t.mode ?? 'notifications') === 'notifications';

/** Every trigger bound to a bucket by notifications, by store and bucket. */
function bucketGroups(fns: readonly EddyFunction[], skip?: EddyFunction): Map<string, Bound[]> {
  const groups = new Map<string, Bound[]>();
  for (const fn of fns) {
    if (fn.metadata.deletionTimestamp) continue;
    if (skip && fnKey(skip) === fnKey(fn)) continue;
    for (const t of fn.spec.triggers ?? []) {
      if (!t.s3 || !pushes(t.s3)) continue;
      const key = groupKey(t.s3);
      let g = groups.get(key);
      if (!g) groups.set(key, (g = []));
      g.push({ fn, trigger: t.name, s3: t.s3 });
    }
  }
  for (const g of groups.values()) {
    g.sort((a, b) => `${fnKey(a.fn)}/${a.trigger}`.localeCompare(`${fnKey(b.fn)}/${b.trigger}`));
  }
  return groups;
}

function groupKey(t: S3Trigger): string {
  const e = t.connection.endpoint;
  return JSON.stringify([normaliseEndpoint(e) ?? e ?? '', t.bucket]);
}

function commonPrefix(values: string[]): string {
  let p = values[0] ?? '';
  for (const v of values) while (!v.startsWith(p)) p = p.slice(0, -1);
  return p;
}

function commonSuffix(values: string[]): string {
  let s = values[0] ?? '';
  for (const v of values) while (!v.endsWith(s)) s = s.slice(1);
  return s;
}

/**
 * Eddy's entry for a bucket: every event any trigger wants, and the key filter they all share
 * (the gateway matches each record against each trigger exactly).
 */
export function desiredEntry(triggers: readonly S3Trigger[], arn: string): QueueConfiguration {
  const all = [...new Set(triggers.flatMap((t) => t.events ?? defaultS3Events))].sort();
  // s3:ObjectCreated:* covers s3:ObjectCreated:Put: stores refuse overlapping entries.
  const events = all.filter(
    (e) => !all.some((w) => w !== e && w.endsWith(':*') && e.startsWith(w.slice(0, -1))),
  );
  const prefix = commonPrefix(triggers.map((t) => t.filter?.prefix ?? ''));
  const suffix = commonSuffix(triggers.map((t) => t.filter?.suffix ?? ''));
  const rules = [
    ...(prefix ? [{ Name: 'prefix' as const, Value: prefix }] : []),
    ...(suffix ? [{ Name: 'suffix' as const, Value: suffix }] : []),
  ];
  return {
    Id: notificationId,
    QueueArn: arn,
    Events: events as QueueConfiguration['Events'],
    ...(rules.length > 0 ? { Filter: { Key: { FilterRules: rules } } } : {}),
  };
}

/** The configuration with Eddy's entry set to `entry` (or removed); others' entries kept. */
export function withEntry(
  current: NotificationConfiguration,
  entry: QueueConfiguration | undefined,
): NotificationConfiguration {
  const others = (current.QueueConfigurations ?? []).filter((q) => q.Id !== notificationId);
  const next: NotificationConfiguration = {
    ...(current.TopicConfigurations?.length
      ? { TopicConfigurations: current.TopicConfigurations }
      : {}),
    ...(current.LambdaFunctionConfigurations?.length
      ? { LambdaFunctionConfigurations: current.LambdaFunctionConfigurations }
      : {}),
    ...(current.EventBridgeConfiguration
      ? { EventBridgeConfiguration: current.EventBridgeConfiguration }
      : {}),
  };
  const queues = entry ? [...others, entry] : others;
  if (queues.length > 0) next.QueueConfigurations = queues;
  return next;
}

/**
 * Whether the store already holds the entry Eddy wants. An ARN without a region
 * (`arn:minio:sqs::EDDY:webhook`, the chart's) names the same target as the one the store reads
 * it back as (MinIO fills in its own region: `arn:minio:sqs:us-east-1:EDDY:webhook`); taken as
 * different, the entry was written again at every resync, and MinIO drops the events of an
 * upload that arrives while it swaps a bucket's rules.
 */
export function sameEntry(
  a: QueueConfiguration | undefined,
  b: QueueConfiguration | undefined,
): boolean {
  if (!a || !b) return a === b;
  const arn = (q: QueueConfiguration) => String(q.QueueArn).split(':');
  const [arnA, arnB] = [arn(a), arn(b)];
  const sameArn =
    arnA.length === arnB.length &&
    arnA.every((part, i) => part === arnB[i] || (i === 3 && (part === '' || arnB[i] === '')));
  const norm = (q: QueueConfiguration) => ({
    events: [...(q.Events ?? [])].sort(),
    rules: (q.Filter?.Key?.FilterRules ?? [])
      .map((r) => `${String(r.Name).toLowerCase()}=${r.Value}`)
      .sort(),
  });
  return sameArn && JSON.stringify(norm(a)) === JSON.stringify(norm(b));
}

/** Whether the store refused a request as invalid (an event type it does not support, say). */
function refusedByStore(err: unknown): boolean {
  const e = err as { $metadata?: { httpStatusCode?: number } };
  return e?.$metadata?.httpStatusCode === 400;
}

const unauthorised = (): GatewayError =>
  gatewayError('Unauthorized', `${s3IntakePath} takes posts only from a registered store`);

export function s3Source(o: S3SourceOptions): S3Source {
  const callTimeoutMs = o.callTimeoutMs ?? 10_000;
  let ctx: SourceContext | undefined;
  const defaultRegion = o.defaultRegion ?? 'us-east-1';
  const arn = o.webhookArn ?? defaultWebhookArn;
  const clients = new Map<string, { fingerprint: string; client: S3Client }>();
  /** Buckets whose configuration holds Eddy's entry, as far as this process knows. */
  const written = new Map<string, Bound>();
  const locks = new Map<string, Promise<void>>();
  /** Triggers whose state this source has set. */
  const reported = new Set<string>();
  /** Triggers whose event types a store refused, by bucket, trigger and events: why. */
  const refusedTriggers = new Map<string, SourceProblem>();

  function clientFor(c: ResolvedConnection): S3Client {
    const fingerprint = connectionFingerprint(c);
    const cached = clients.get(fingerprint);
    if (cached) return cached.client;
    // A rotated key pair leaves its old client behind: the oldest go past a bound.
    if (clients.size >= 64) {
      const [oldest] = clients.keys();
      clients.get(oldest!)?.client.destroy();
      clients.delete(oldest!);
    }
    const client = s3ClientFor(c);
    clients.set(fingerprint, { fingerprint, client });
    return client;
  }

  /** One bucket's work at a time, whoever asks (the runnable, the cleaner). */
  function serialised(key: string, work: () => Promise<void>): Promise<void> {
    const before = locks.get(key) ?? Promise.resolve();
    const next = before.then(work, work);
    const settled = next.catch(() => undefined);
    locks.set(key, settled);
    void settled.then(() => {
      if (locks.get(key) === settled) locks.delete(key);
    });
    return next;
  }

  const where = (b: Bound) =>
    `bucket ${b.s3.bucket}${b.s3.connection.endpoint ? ` at ${b.s3.connection.endpoint}` : ''}`;

  /**
   * Makes one bucket's configuration hold Eddy's entry for `group` (none when empty: the entry
   * goes, using `former`'s credentials). Only triggers whose own credentials read the bucket
   * (HeadBucket) have a say in the entry, and it is written with such credentials, so a trigger
   * that names another namespace's bucket on the same store cannot change its entry; each
   * trigger's state says whether its own connection works. When the store refuses the entry (an
   * event type it does not support), the triggers are added one at a time and the entry keeps
   * those the store accepts; the refused ones say so. Rejects when nothing could be written.
   */
  async function syncBucket(
    key: string,
    former?: Bound,
    skip?: EddyFunction,
    /** Leadership: once it ends, no call is made or finished (another replica writes now). */
    leading?: AbortSignal,
  ): Promise<void> {
    const c = ctx!;
    const bounded = () =>
      leading
        ? AbortSignal.any([leading, AbortSignal.timeout(callTimeoutMs)])
        : AbortSignal.timeout(callTimeoutMs);
    // Read when its turn comes, not when it was asked for: a sync queued behind a cleanup must
    // not put back what the cleanup removed.
    const group = bucketGroups(c.store.list(), skip).get(key) ?? [];
    const report = (b: Bound, p?: SourceProblem) => {
      // A round cut short by the end of leadership says nothing: the new leader's round will.
      if (leading?.aborted) return;
      reported.add(JSON.stringify([fnKey(b.fn), b.trigger]));
      c.states.set(
        fnKey(b.fn),
        b.trigger,
        p ? { ready: false, reason: p.reason, message: p.message } : { ready: true },
      );
    };
    // The triggers by credentials, in order; those whose Secret cannot be read say so.
    const byCredentials = new Map<string, { conn: ResolvedConnection; triggers: Bound[] }>();
    let firstProblem: SourceProblem | undefined;
    const failed = (triggers: Bound[], p: SourceProblem) => {
      firstProblem ??= p;
      for (const b of triggers) if (group.includes(b)) report(b, p);
    };
    for (const b of group.length > 0 ? group : former ? [former] : []) {
      try {
        const conn = await resolveConnection(
          c.secrets,
          b.fn,
          b.s3.connection,
          `trigger ${b.trigger} (s3.connection)`,
        );
        const fp = connectionFingerprint(conn);
        const entry = byCredentials.get(fp);
        if (entry) entry.triggers.push(b);
        else byCredentials.set(fp, { conn, triggers: [b] });
      } catch (err) {
        failed(
          [b],
          err instanceof SourceProblem ? err : classifyError(err, where(b), 'BucketNotFound'),
        );
      }
    }
    // Only credentials that read the bucket count.
    const readers: Array<{ client: S3Client; triggers: Bound[] }> = [];
    for (const { conn, triggers } of byCredentials.values()) {
      const client = clientFor(conn);
      try {
        await client.send(new HeadBucketCommand({ Bucket: triggers[0]!.s3.bucket }), {
          abortSignal: bounded(),
        });
        readers.push({ client, triggers });
      } catch (err) {
        failed(triggers, classifyError(err, where(triggers[0]!), 'BucketNotFound'));
      }
    }
    const writer = readers[0];
    if (!writer) {
      if (firstProblem) throw firstProblem;
      return;
    }
    const by = writer.triggers[0]!;
    const members = readers.flatMap((r) => r.triggers).filter((b) => group.includes(b));
    const put = async (triggers: Bound[]) => {
      const entry =
        triggers.length > 0
          ? desiredEntry(
              triggers.map((b) => b.s3),
              arn,
            )
          : undefined;
      const current = await writer.client.send(
        new GetBucketNotificationConfigurationCommand({ Bucket: by.s3.bucket }),
        { abortSignal: bounded() },
      );
      const ours = current.QueueConfigurations?.find((q) => q.Id === notificationId);
      if (sameEntry(ours, entry)) return;
      await writer.client.send(
        new PutBucketNotificationConfigurationCommand({
          Bucket: by.s3.bucket,
          NotificationConfiguration: withEntry(current, entry),
        }),
        { abortSignal: bounded() },
      );
      c.log(
        entry
          ? `${where(by)}: notifications of ${entry.Events!.join(', ')} now go to ${arn} for ${triggers.length} trigger(s)`
          : `${where(by)}: removed its notification entry (no trigger left)`,
      );
    };
    // Triggers the store refused before, with the same events, stay out without asking again:
    // each resync would otherwise narrow the entry while it tries them one at a time.
    const refusal = (b: Bound) =>
      JSON.stringify([key, fnKey(b.fn), b.trigger, b.s3.events ?? defaultS3Events]);
    let accepted = members.filter((b) => {
      const known = refusedTriggers.get(refusal(b));
      if (known) report(b, known);
      return !known;
    });
    try {
      try {
        await put(accepted);
      } catch (err) {
        if (!refusedByStore(err) || accepted.length === 0) throw err;
        // One trigger's event type must not keep the others' out: add them one at a time.
        const candidates = accepted;
        accepted = [];
        for (const b of candidates) {
          try {
            await put([...accepted, b]);
            accepted.push(b);
          } catch (e) {
            if (!refusedByStore(e)) throw e;
            const p = new SourceProblem(
              'InvalidTrigger',
              `trigger ${b.trigger}: the store refuses a notification for events ${(b.s3.events ?? defaultS3Events).join(', ')} on ${where(b)} (${describeError(e)}): use event types it supports`,
            );
            if (refusedTriggers.size >= 10_000) refusedTriggers.clear();
            refusedTriggers.set(refusal(b), p);
            report(b, p);
          }
        }
        if (accepted.length === 0) await put([]);
      }
    } catch (err) {
      failed(members, classifyError(err, where(by), 'BucketNotFound'));
      throw firstProblem!;
    }
    for (const b of accepted) report(b);
    if (accepted.length > 0) written.set(key, by);
    else written.delete(key);
  }

  /** Brings every bucket in line with the Functions, while `leading`; returns the failures. */
  async function syncAll(leading: AbortSignal): Promise<number> {
    const c = ctx!;
    const groups = bucketGroups(c.store.list());
    let failures = 0;
    const work: Array<Promise<void>> = [];
    for (const [key, group] of groups) {
      if (o.postsEverything?.(group[0]!.s3.connection.endpoint)) {
        for (const b of group) {
          reported.add(JSON.stringify([fnKey(b.fn), b.trigger]));
          c.states.set(fnKey(b.fn), b.trigger, { ready: true });
        }
        continue;
      }
      work.push(
        serialised(key, () => syncBucket(key, group[0], undefined, leading)).catch(
          () => void failures++,
        ),
      );
    }
    for (const [key, former] of written) {
      if (groups.has(key)) continue;
      work.push(
        serialised(key, () => syncBucket(key, former, undefined, leading)).catch((err: unknown) => {
          failures++;
          c.log(
            `removing the notification entry of ${where(former)} failed: ${describeError(err)}`,
          );
        }),
      );
    }
    await Promise.all(work);
    // Triggers that went (or changed mode) leave no state behind.
    const current = new Set(
      [...groups.values()].flat().map((b) => JSON.stringify([fnKey(b.fn), b.trigger])),
    );
    for (const r of reported) {
      if (current.has(r)) continue;
      reported.delete(r);
      const [fn, trigger] = JSON.parse(r) as [string, string];
      c.states.delete(fn, trigger);
    }
    return failures;
  }

  const cleaner: Cleaner = Object.assign(
    async (fn: EddyFunction) => {
      const c = ctx!;
      const mine = (fn.spec.triggers ?? []).filter((t) => t.s3 && pushes(t.s3));
      for (const t of mine) {
        const key = groupKey(t.s3!);
        await serialised(key, () =>
          syncBucket(key, { fn, trigger: t.name, s3: t.s3! }, fn).catch((err: unknown) => {
            // A bucket that is gone holds no entry to remove.
            if (err instanceof SourceProblem && err.reason === 'BucketNotFound') return;
            throw err;
          }),
        );
      }
      for (const t of mine) c.states.delete(fnKey(fn), t.name);
    },
    { needed: (fn: EddyFunction) => (fn.spec.triggers ?? []).some((t) => t.s3 && pushes(t.s3)) },
  );

  /** The store each authorised post came from. */
  const senders = new WeakMap<IncomingMessage, S3Store>();

  /** Refuses a post without a registered store's token, before its body is read. */
  function authorize(req: IncomingMessage): void {
    if (o.stores.length === 0) {
      throw gatewayError(
        'Unauthorized',
        `${s3IntakePath} is closed: no store is registered; set EDDY_S3_WEBHOOK_TOKEN and EDDY_S3_WEBHOOK_ENDPOINT (or EDDY_S3_STORES) on the gateway and give the store the same token`,
      );
    }
    const given = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1] ?? '';
    const store = storeByToken(o.stores, given);
    if (!store) {
      throw gatewayError(
        'Unauthorized',
        `${s3IntakePath} needs "Authorization: Bearer <token>" with the token of a registered store (EDDY_S3_WEBHOOK_TOKEN or EDDY_S3_STORES)`,
      );
    }
    senders.set(req, store);
  }

  /**
   * Whether a trigger's own credentials read its bucket (HeadBucket), remembered for a minute
   * (ten seconds when not; checks under way are shared): a Function receives a bucket's events
   * only if its Secret can read the bucket on the store that sent them.
   */
  const access = new Map<string, { verdict: Promise<boolean>; until: number }>();
  function allowed(b: Bound): Promise<boolean> {
    const c = ctx!;
    const key = JSON.stringify([fnKey(b.fn), b.trigger, b.s3.bucket, b.s3.connection]);
    const known = access.get(key);
    if (known && known.until > Date.now()) return known.verdict;
    const verdict = (async () => {
      try {
        const conn = await resolveConnection(
          c.secrets,
          b.fn,
          b.s3.connection,
          `trigger ${b.trigger}`,
        );
        await clientFor(conn).send(new HeadBucketCommand({ Bucket: b.s3.bucket }), {
          abortSignal: AbortSignal.timeout(callTimeoutMs),
        });
        return true;
      } catch (err) {
        const p = classifyError(err, where(b), 'BucketNotFound');
        c.log(
          `trigger ${fnKey(b.fn)}/${b.trigger} does not get ${b.s3.bucket}'s events: ${p.message}`,
        );
        return false;
      }
    })();
    if (access.size >= 10_000) access.clear();
    // Until it is known, the check is shared; then it is kept a minute, or ten seconds if denied.
    const entry = { verdict, until: Infinity };
    access.set(key, entry);
    void verdict.then((ok) => {
      entry.until = Date.now() + (ok ? 60_000 : 10_000);
    });
    return verdict;
  }

  /** Deliveries under way, by function, trigger and event: a post repeated joins them. */
  const inFlight = new Map<string, Promise<DeliveryOutcome>>();
  const intakeLimit = o.intakeLimit ?? 1_000;

  async function intake(req: IncomingMessage, raw: Buffer) {
    const c = ctx!;
    const store = senders.get(req);
    if (!store) throw unauthorised();
    let records;
    try {
      records = parseNotification(JSON.parse(raw.toString('utf8')), defaultRegion);
    } catch (err) {
      const why =
        err instanceof InvalidS3Body ? err.message : `the body is not JSON: ${describeError(err)}`;
      throw gatewayError('InvalidEvent', `${why}; nothing was delivered`);
    }
    const matched: Array<{ b: Bound; record: (typeof records)[number] }> = [];
    for (const r of records) {
      for (const fn of c.store.list()) {
        if (fn.metadata.deletionTimestamp) continue;
        for (const t of fn.spec.triggers ?? []) {
          if (!t.s3 || !pushes(t.s3) || !recordMatches(t.s3, r)) continue;
          // A record is about the sending store's bucket: other stores' triggers never see it.
          if (!namesStore(store, t.s3.connection.endpoint)) continue;
          matched.push({ b: { fn, trigger: t.name, s3: t.s3 }, record: r });
        }
      }
    }
    const verdicts = await Promise.all(matched.map((m) => allowed(m.b)));
    const events = matched
      .filter((_, i) => verdicts[i])
      .map(({ b, record }) => ({ fn: b.fn, event: s3CloudEvent(record, b.trigger) }));
    if (c.queue.kind !== 'memory') {
      // Durable: the store hears 2xx once every event is queued, not once delivered, so a slow
      // function holds up no other. A refusal (the queue unreachable or full) fails the post:
      // the store posts again and what was queued already is kept once (same message ids).
      const queued = await Promise.all(events.map(({ fn, event }) => c.queue.enqueue(fn, event)));
      const duplicates = queued.filter((q) => q.duplicate).length;
      return {
        status: 200,
        body: { records: records.length, queued: queued.length - duplicates, duplicates },
      };
    }
    // In this process's memory nothing else keeps the events: the post is answered once they
    // are delivered, and a post repeated meanwhile joins the deliveries under way.
    const deliveries: Array<{ fn: EddyFunction; done: Promise<DeliveryOutcome> }> = [];
    for (const { fn, event } of events) {
      const key = `${fnKey(fn)}/${event.trigger}/${event.id}`;
      let done = inFlight.get(key);
      if (!done) {
        if (inFlight.size >= intakeLimit) {
          throw gatewayError(
            'Throttled',
            `this gateway is delivering ${inFlight.size} S3 events already; post the notification again`,
            1,
          );
        }
        done = c.queue
          .enqueue(fn, event)
          .then(({ delivered }) => delivered!)
          .finally(() => inFlight.delete(key));
        inFlight.set(key, done);
      }
      deliveries.push({ fn, done });
    }
    const settled = await Promise.allSettled(deliveries.map((d) => d.done));
    const refused = settled.find((r) => r.status === 'rejected');
    if (refused) throw refused.reason;
    const outcomes = settled.map((r) => (r as PromiseFulfilledResult<DeliveryOutcome>).value);
    // Final: succeeded, dead-lettered, or dropped because the Function keeps no dead letter (as
    // Lambda drops it). Anything else stays with the store, which posts it again.
    const unfinished = outcomes.filter(
      (out, i) =>
        out.outcome === 'interrupted' ||
        (out.outcome === 'dropped' && deliveries[i]!.fn.spec.deadLetter !== undefined),
    ).length;
    if (unfinished > 0) {
      throw gatewayError(
        'DeliveryIncomplete',
        `${unfinished} of ${outcomes.length} deliveries did not finish (the gateway is stopping, or a dead letter failed); post the notification again`,
        1,
      );
    }
    return {
      status: 200,
      body: {
        records: records.length,
        deliveries: outcomes.length,
        outcomes: outcomes.reduce<Record<string, number>>((acc, out) => {
          acc[out.outcome] = (acc[out.outcome] ?? 0) + 1;
          return acc;
        }, {}),
      },
    };
  }

  const factory: SourceFactory = (context) => {
    ctx = context;
    context.route(s3IntakePath, intake, authorize);
    const writer: Runnable = {
      name: 's3-notifications',
      leaderOnly: true,
      async run(signal) {
        const resyncMs = o.resyncMs ?? 60_000;
        let wake: (() => void) | undefined;
        let dirty = true;
        // Only a change to what the buckets should hold wakes the writer (not a status update).
        const shape = () =>
          JSON.stringify(
            [...bucketGroups(context.store.list())].map(([k, g]) => [
              k,
              g.map((b) => [fnKey(b.fn), b.trigger, b.s3]),
            ]),
          );
        let last = '';
        const unsubscribe = context.store.onChange(() => {
          const now = shape();
          if (now === last) return;
          last = now;
          dirty = true;
          wake?.();
        });
        signal.addEventListener('abort', () => wake?.(), { once: true });
        let failedRounds = 0;
        try {
          while (!signal.aborted) {
            dirty = false;
            last = shape();
            const failures = await syncAll(signal);
            failedRounds = failures > 0 ? failedRounds + 1 : 0;
            const delay = failures > 0 ? problemBackoffMs(failedRounds) : resyncMs;
            if (dirty || signal.aborted) continue;
            await new Promise<void>((resolve) => {
              const timer = setTimeout(resolve, delay);
              wake = () => {
                clearTimeout(timer);
                resolve();
              };
            });
            wake = undefined;
          }
        } finally {
          // The clients stay: every gateway's intake uses them too.
          unsubscribe();
        }
      },
    };
    return [writer];
  };

  return { factory, cleaner };
}
