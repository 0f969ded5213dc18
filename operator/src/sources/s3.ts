/**
 * S3-compatible buckets in `notifications` mode: the store (MinIO, AWS) posts bucket
 * notifications to the gateway, which delivers each record to every trigger it matches.
 *
 * - The intake, `POST /sources/s3`, runs in every gateway. It answers 2xx only once every matched
 *   function has succeeded or dead-lettered the event, so a store with a persistent queue (MinIO's
 *   queue_dir) keeps what the gateway could not finish and posts it again.
 * - The leader writes each bucket's notification configuration: one entry of its own (id
 *   `eddy`) covering the events and key filters of every trigger on the bucket, next to whatever
 *   other tools put there, which it keeps. When the last trigger on a bucket goes, so does the
 *   entry; on Function deletion the finalizer waits for that (the cleaner).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
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
import { gatewayError } from '../gateway/errors.js';
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
import type { SourceContext, SourceFactory } from './source.js';

export const s3IntakePath = '/sources/s3';
/** The id of Eddy's own entry in a bucket's notification configuration. */
export const notificationId = 'eddy';
/** MinIO's name for a webhook target configured as MINIO_NOTIFY_WEBHOOK_*_EDDY. */
export const defaultWebhookArn = 'arn:minio:sqs::EDDY:webhook';

export interface S3SourceOptions {
  /** The bearer token the store sends; without one the intake refuses every post. */
  webhookToken?: string;
  /** The ARN of the store's webhook target that posts to the intake. Default {@link defaultWebhookArn}. */
  webhookArn?: string;
  /** The region records without one are given. Default us-east-1. */
  defaultRegion?: string;
  /** How often the leader checks every bucket's configuration, changed or not. Default 60 s. */
  resyncMs?: number;
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
  return JSON.stringify([t.connection.endpoint ?? '', t.bucket]);
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

function sameEntry(a: QueueConfiguration | undefined, b: QueueConfiguration | undefined): boolean {
  const norm = (q: QueueConfiguration | undefined) =>
    q && {
      arn: q.QueueArn,
      events: [...(q.Events ?? [])].sort(),
      rules: (q.Filter?.Key?.FilterRules ?? [])
        .map((r) => `${String(r.Name).toLowerCase()}=${r.Value}`)
        .sort(),
    };
  return JSON.stringify(norm(a)) === JSON.stringify(norm(b));
}

/** Constant time whatever the lengths: both sides are hashed first. */
function tokenMatches(given: string, expected: string): boolean {
  const h = (v: string) => createHash('sha256').update(v).digest();
  return timingSafeEqual(h(given), h(expected));
}

export function s3Source(o: S3SourceOptions): S3Source {
  let ctx: SourceContext | undefined;
  const defaultRegion = o.defaultRegion ?? 'us-east-1';
  const arn = o.webhookArn ?? defaultWebhookArn;
  const clients = new Map<string, { fingerprint: string; client: S3Client }>();
  /** Buckets whose configuration holds Eddy's entry, as far as this process knows. */
  const written = new Map<string, Bound>();
  const locks = new Map<string, Promise<void>>();
  /** Triggers whose state this source has set. */
  const reported = new Set<string>();

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
   * goes, using `former`'s credentials). Triggers with other credentials for the same bucket are
   * checked with a read, so each trigger's state says whether its own connection works. Rejects
   * when the configuration could not be written.
   */
  async function syncBucket(key: string, former?: Bound, skip?: EddyFunction): Promise<void> {
    const c = ctx!;
    // Read when its turn comes, not when it was asked for: a sync queued behind a cleanup must
    // not put back what the cleanup removed.
    const group = bucketGroups(c.store.list(), skip).get(key) ?? [];
    const report = (b: Bound, p?: SourceProblem) => {
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
        const p =
          err instanceof SourceProblem ? err : classifyError(err, where(b), 'BucketNotFound');
        firstProblem ??= p;
        if (group.includes(b)) report(b, p);
      }
    }
    const entry =
      group.length > 0
        ? desiredEntry(
            group.map((b) => b.s3),
            arn,
          )
        : undefined;
    let writtenBy: Bound | undefined;
    for (const { conn, triggers } of byCredentials.values()) {
      const by = triggers[0]!;
      const client = clientFor(conn);
      try {
        const current = await client.send(
          new GetBucketNotificationConfigurationCommand({ Bucket: by.s3.bucket }),
        );
        if (!writtenBy) {
          const ours = current.QueueConfigurations?.find((q) => q.Id === notificationId);
          if (!sameEntry(ours, entry)) {
            await client.send(
              new PutBucketNotificationConfigurationCommand({
                Bucket: by.s3.bucket,
                NotificationConfiguration: withEntry(current, entry),
              }),
            );
            c.log(
              entry
                ? `${where(by)}: notifications of ${entry.Events!.join(', ')} now go to ${arn} for ${group.length} trigger(s)`
                : `${where(by)}: removed its notification entry (no trigger left)`,
            );
          }
          writtenBy = by;
        }
        for (const b of triggers) if (group.includes(b)) report(b);
      } catch (err) {
        const p = classifyError(err, where(by), 'BucketNotFound');
        firstProblem ??= p;
        for (const b of triggers) if (group.includes(b)) report(b, p);
      }
    }
    if (!writtenBy) {
      if (firstProblem) throw firstProblem;
      return;
    }
    if (entry) written.set(key, writtenBy);
    else written.delete(key);
  }

  /** Brings every bucket in line with the Functions; returns the failures. */
  async function syncAll(): Promise<number> {
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
      work.push(serialised(key, () => syncBucket(key, group[0])).catch(() => void failures++));
    }
    for (const [key, former] of written) {
      if (groups.has(key)) continue;
      work.push(
        serialised(key, () => syncBucket(key, former)).catch((err: unknown) => {
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

  /** Refuses a post without the token, before its body is read. */
  function authorize(req: IncomingMessage): void {
    if (!o.webhookToken) {
      throw gatewayError(
        'Unauthorized',
        `${s3IntakePath} is closed: no webhook token is configured; set EDDY_S3_WEBHOOK_TOKEN on the gateway and give the store the same token`,
      );
    }
    const given = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1] ?? '';
    if (!tokenMatches(given, o.webhookToken)) {
      throw gatewayError(
        'Unauthorized',
        `${s3IntakePath} needs "Authorization: Bearer <token>" with the token set in EDDY_S3_WEBHOOK_TOKEN`,
      );
    }
  }

  /**
   * Whether a trigger's own credentials reach its bucket (HeadBucket), remembered for a minute
   * (ten seconds when not): a Function receives a bucket's events only if its Secret can read
   * the bucket. Matching is by bucket name, so this also keeps a trigger on a same-named bucket
   * of another store, which its connection cannot reach, from receiving this store's events.
   */
  const access = new Map<string, { allowed: boolean; until: number }>();
  async function allowed(b: Bound): Promise<boolean> {
    const c = ctx!;
    const key = JSON.stringify([fnKey(b.fn), b.trigger, b.s3.bucket, b.s3.connection]);
    const known = access.get(key);
    if (known && known.until > Date.now()) return known.allowed;
    let verdict = true;
    try {
      const conn = await resolveConnection(
        c.secrets,
        b.fn,
        b.s3.connection,
        `trigger ${b.trigger}`,
      );
      await clientFor(conn).send(new HeadBucketCommand({ Bucket: b.s3.bucket }));
    } catch (err) {
      verdict = false;
      const p = classifyError(err, where(b), 'BucketNotFound');
      c.log(
        `trigger ${fnKey(b.fn)}/${b.trigger} does not get ${b.s3.bucket}'s events: ${p.message}`,
      );
    }
    if (access.size >= 10_000) access.clear();
    access.set(key, { allowed: verdict, until: Date.now() + (verdict ? 60_000 : 10_000) });
    return verdict;
  }

  /** Deliveries under way, by function, trigger and event: a post repeated joins them. */
  const inFlight = new Map<string, Promise<DeliveryOutcome>>();
  const intakeLimit = o.intakeLimit ?? 1_000;

  async function intake(_req: IncomingMessage, raw: Buffer) {
    const c = ctx!;
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
          matched.push({ b: { fn, trigger: t.name, s3: t.s3 }, record: r });
        }
      }
    }
    const verdicts = await Promise.all(matched.map((m) => allowed(m.b)));
    const deliveries: Array<{ fn: EddyFunction; done: Promise<DeliveryOutcome> }> = [];
    for (const [i, { b, record }] of matched.entries()) {
      if (!verdicts[i]) continue;
      const event = s3CloudEvent(record, b.trigger);
      const key = `${fnKey(b.fn)}/${b.trigger}/${event.id}`;
      let done = inFlight.get(key);
      if (!done) {
        if (inFlight.size >= intakeLimit) {
          throw gatewayError(
            'Throttled',
            `this gateway is delivering ${inFlight.size} S3 events already; post the notification again`,
            1,
          );
        }
        done = c.sink.deliver(b.fn, event).finally(() => inFlight.delete(key));
        inFlight.set(key, done);
      }
      deliveries.push({ fn: b.fn, done });
    }
    const outcomes = await Promise.all(deliveries.map((d) => d.done));
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
            const failures = await syncAll();
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
