/**
 * The autoscaler's decisions, as pure functions of what the gateways counted and of a clock the
 * caller passes in (milliseconds): gateway counters become one sample per function per tick
 * (`Sampler`), and each function's samples become a replica count (`Windows`). The rules follow
 * Knative's KPA: a stable window, a panic window for bursts, a scale-down delay, scale to zero
 * after an idle period.
 */
import type { FunctionSpec } from '../api/types.js';
import type { FunctionKey, ReplicaCounts } from '../platform/platform.js';
import type { LoadReport } from './load.js';

/** Desired replicas follow the average concurrency over this window; scale-down waits this long. */
export const stableWindowMs = 60_000;
/** A burst seen over this window scales up without waiting for the stable window. */
export const panicWindowMs = 6_000;
/** Panic starts when the panic window wants this many times the ready replicas. */
export const panicThreshold = 2;

/** What the gateways saw of one function over one interval, ending at `at` (ms). */
export interface Sample {
  at: number;
  /** Average of in-flight plus queued invocations over the interval, summed over gateways. */
  concurrency: number;
  /** Anything arrived, ran or waited during the interval, or is in flight or queued at its end. */
  active: boolean;
}

/** A Function's `spec.scaling` with the defaults filled in. */
export interface Scaling {
  minReplicas: number;
  maxReplicas: number;
  targetConcurrency: number;
  idleSeconds: number;
}

/** The defaults of crds/function.yaml; targetConcurrency defaults to the function's concurrency. */
export function scalingOf(spec: FunctionSpec): Scaling {
  const s = spec.scaling ?? {};
  const target = s.targetConcurrency ?? spec.concurrency ?? 1;
  return {
    minReplicas: s.minReplicas ?? 0,
    maxReplicas: s.maxReplicas ?? 10,
    // The CRD allows no target below 1; a hand-made object must not divide by zero either.
    targetConcurrency: target > 0 ? target : 1,
    idleSeconds: s.idleSeconds ?? 60,
  };
}

/**
 * Turns successive reads of the gateways' cumulative counters into one sample per function per
 * read: the average concurrency over the interval between two reads is the growth of
 * `concurrencySeconds` divided by the seconds between them.
 */
export class Sampler {
  private last: { reports: LoadReport[]; at: number } | undefined;

  /**
   * The samples for the interval since the previous read, by function; functions that no gateway
   * reports are absent. Undefined for the first read, which only sets the baseline, and for a
   * read that is not later than the previous one.
   *
   * A gateway that restarted (its counters went down) or that was not there at the previous read
   * adds nothing to this interval's concurrency and requests: we cannot tell its new counters
   * from its whole lifetime's (a gateway missing from one read and back in the next), and
   * inventing a burst would panic the function up to maxReplicas, while losing one interval of
   * one gateway costs one sample out of a window. Its in-flight and queued work still counts as
   * activity, and its counters are the baseline of the next interval.
   */
  sample(reports: LoadReport[], at: number): Map<FunctionKey, Sample> | undefined {
    const previous = this.last;
    if (previous && at <= previous.at) return undefined;
    // Kept as a copy: an in-process source may hand out the very objects its gateway updates.
    this.last = { reports: reports.map((r) => copyReport(r)), at };
    if (!previous) return undefined;

    const seconds = (at - previous.at) / 1000;
    const before = pairGateways(previous.reports, reports);
    const sums = new Map<
      FunctionKey,
      { concurrencySeconds: number; requests: number; now: number }
    >();
    reports.forEach((report, i) => {
      const then = before[i];
      for (const [key, load] of Object.entries(report)) {
        let sum = sums.get(key);
        if (!sum) sums.set(key, (sum = { concurrencySeconds: 0, requests: 0, now: 0 }));
        sum.now += load.inFlight + load.queued;
        if (!then) continue;
        // A gateway that first saw the function during the interval started its counters at 0.
        const was = then[key];
        sum.concurrencySeconds += load.concurrencySeconds - (was?.concurrencySeconds ?? 0);
        sum.requests += load.requests - (was?.requests ?? 0);
      }
    });

    const samples = new Map<FunctionKey, Sample>();
    for (const [key, sum] of sums) {
      const concurrency = sum.concurrencySeconds / seconds;
      samples.set(key, {
        at,
        concurrency,
        active: sum.requests > 0 || sum.now > 0 || concurrency > 0,
      });
    }
    return samples;
  }
}

/**
 * Which previous report each current report continues (undefined: a new or restarted gateway).
 * Reports carry no gateway identity, and a gateway that disappears shifts the others' positions,
 * so a report continues one whose counters it has all reached or passed; among such pairs the
 * smallest growth wins (a gateway does a few seconds of work per interval, not another's
 * lifetime), then the same position.
 */
function pairGateways(previous: LoadReport[], current: LoadReport[]): (LoadReport | undefined)[] {
  const pairs: { c: number; p: number; growth: number }[] = [];
  current.forEach((now, c) =>
    previous.forEach((then, p) => {
      const growth = growthSince(then, now);
      if (growth !== undefined) pairs.push({ c, p, growth });
    }),
  );
  pairs.sort((a, b) => a.growth - b.growth || Math.abs(a.c - a.p) - Math.abs(b.c - b.p));
  const paired: (LoadReport | undefined)[] = current.map(() => undefined);
  const taken = new Set<number>();
  for (const { c, p } of pairs) {
    if (paired[c] || taken.has(p)) continue;
    paired[c] = previous[p];
    taken.add(p);
  }
  return paired;
}

function copyReport(report: LoadReport): LoadReport {
  return Object.fromEntries(Object.entries(report).map(([key, load]) => [key, { ...load }]));
}

/** How much the counters grew from `then` to `now`, or undefined if any went down. */
function growthSince(then: LoadReport, now: LoadReport): number | undefined {
  let growth = 0;
  for (const [key, load] of Object.entries(now)) {
    const was = then[key] ?? { concurrencySeconds: 0, requests: 0 };
    if (load.concurrencySeconds < was.concurrencySeconds || load.requests < was.requests) {
      return undefined;
    }
    growth += load.concurrencySeconds - was.concurrencySeconds + load.requests - was.requests;
  }
  // Functions only in `then` were deleted and forgotten by the gateway: no evidence either way.
  return growth;
}

/** What `Windows.decide` wants for a function now. */
export interface Decision {
  desired: number;
  panic: boolean;
  /** Why, for a log line: "stable 3.2/1 -> 4", "idle 60 s -> 0". */
  reason: string;
  /** Average concurrency over the stable and the panic window. */
  concurrency: { stable: number; panic: number };
}

/**
 * One function's samples over the stable window, and the state that outlives a tick: when it was
 * last active, when it last panicked, what the last stable window recommended.
 */
export class Windows {
  private samples: Sample[] = [];
  private recommendations: { at: number; replicas: number }[] = [];
  private lastActiveAt: number | undefined;
  private lastPanicAt: number | undefined;

  /** `firstSeen` starts the idle clock: a new function keeps its first replica for idleSeconds. */
  constructor(private readonly firstSeen: number) {}

  add(sample: Sample): void {
    this.samples.push(sample);
    if (sample.active) this.lastActiveAt = Math.max(this.lastActiveAt ?? sample.at, sample.at);
  }

  /**
   * The replicas the function should have at `now`, given what the platform has (`current`):
   *
   * - ceil(stable-window average / target), bounded by min and max (max wins if they cross);
   * - panic when the panic-window average reaches 2 x target x ready replicas (at least one);
   *   while panicking, never less than now or than the panic window asks for; panic ends after
   *   a stable window without the panic condition;
   * - zero once nothing arrived, ran or waited for idleSeconds (minReplicas 0, not panicking);
   *   until then at least one if the function was active or has a replica;
   * - scale-down delay (Knative's): a scale-down goes only to the highest recommendation of the
   *   last stable window, so load that oscillates within the window holds its peak instead of
   *   flapping. Until the windows have seen one full stable window (a new function, a new
   *   leader), what runs now counts as a recommendation: no scale-down on partial history.
   */
  decide(now: number, current: ReplicaCounts, scaling: Scaling): Decision {
    this.forget(now);
    const { minReplicas, maxReplicas, targetConcurrency: target, idleSeconds } = scaling;
    const concurrency = {
      stable: this.average(now, stableWindowMs),
      panic: this.average(now, panicWindowMs),
    };
    const bound = (n: number) => Math.min(maxReplicas, Math.max(minReplicas, n));

    if (concurrency.panic >= panicThreshold * target * Math.max(1, current.ready)) {
      this.lastPanicAt = now;
    } else if (this.lastPanicAt !== undefined && now - this.lastPanicAt >= stableWindowMs) {
      this.lastPanicAt = undefined;
    }
    const panic = this.lastPanicAt !== undefined;

    const quietMs = now - (this.lastActiveAt ?? this.firstSeen);
    const idle = quietMs > 0 && quietMs >= idleSeconds * 1000;
    if (idle && minReplicas === 0 && !panic) {
      this.recommendations.push({ at: now, replicas: 0 });
      return { desired: 0, panic, reason: `idle ${seconds(quietMs)} s -> 0`, concurrency };
    }

    const wanted = Math.ceil(concurrency.stable / target);
    const keepOne = !idle && (this.lastActiveAt !== undefined || current.desired > 0) ? 1 : 0;
    const recommended = bound(Math.max(wanted, keepOne));
    this.recommendations.push({ at: now, replicas: recommended });
    const limits = (n: number, unbounded: number) =>
      n < unbounded ? ` (max ${maxReplicas})` : n > unbounded ? ` (min ${minReplicas})` : '';

    if (panic) {
      const wants = Math.max(current.desired, Math.ceil(concurrency.panic / target), recommended);
      const desired = bound(wants);
      const reason = `panic ${concurrency.panic.toFixed(1)}/${target} -> ${desired}`;
      return { desired, panic, reason: reason + limits(desired, wants), concurrency };
    }

    let reason = `stable ${concurrency.stable.toFixed(1)}/${target} -> ${recommended}`;
    if (wanted < keepOne && recommended === keepOne) {
      // "stable 0.0/1 -> 1" needs saying why: the function ran recently or is new.
      reason += ` (idle ${seconds(quietMs)}/${idleSeconds} s)`;
    } else reason += limits(recommended, Math.max(wanted, keepOne));
    if (recommended >= current.desired) return { desired: recommended, panic, reason, concurrency };

    const partial = now - this.firstSeen < stableWindowMs;
    const peak = Math.max(
      ...this.recommendations.map((r) => r.replicas),
      partial ? current.desired : 0,
    );
    const desired = bound(Math.min(current.desired, peak));
    if (desired !== recommended) reason += `, holding ${desired} for the scale-down delay`;
    return { desired, panic, reason, concurrency };
  }

  private forget(now: number): void {
    const since = now - stableWindowMs;
    this.samples = this.samples.filter((s) => s.at > since);
    this.recommendations = this.recommendations.filter((r) => r.at > since);
  }

  /** Samples are evenly spaced (one per tick), so their plain mean is the window's average. */
  private average(now: number, windowMs: number): number {
    const inWindow = this.samples.filter((s) => s.at > now - windowMs && s.at <= now);
    if (inWindow.length === 0) return 0;
    return inWindow.reduce((sum, s) => sum + s.concurrency, 0) / inWindow.length;
  }
}

function seconds(ms: number): number {
  return Math.round(ms / 1000);
}

/**
 * A decision made while some gateway's load report is missing: what is missing may be all of a
 * function's load, so the decision may raise replicas but never lower them (no scale-down, no
 * scale to zero) until every gateway reports again.
 */
export function holdWhileMissing(decision: Decision, current: ReplicaCounts): Decision {
  if (decision.desired >= current.desired) return decision;
  return {
    ...decision,
    desired: current.desired,
    reason: `${decision.reason}, holding ${current.desired} while a gateway's load report is missing`,
  };
}

/**
 * A decision while a gateway holds replicas a burst asked for (`held`, the most any gateway
 * reports): never below them, bounded by maxReplicas, so they are not taken away before they
 * have served. Everything above is the autoscaler's as before.
 */
export function holdForBurst(decision: Decision, held: number, scaling: Scaling): Decision {
  const floor = Math.min(held, scaling.maxReplicas);
  if (decision.desired >= floor) return decision;
  return {
    ...decision,
    desired: floor,
    reason: `${decision.reason}, holding ${floor} a burst asked for until they have served`,
  };
}

/** The most replicas any gateway holds for a burst, by function. */
export function burstHolds(reports: LoadReport[]): Map<FunctionKey, number> {
  const held = new Map<FunctionKey, number>();
  for (const report of reports) {
    for (const [key, load] of Object.entries(report)) {
      const n = load.burstReplicas;
      if (typeof n === 'number' && n > (held.get(key) ?? 0)) held.set(key, n);
    }
  }
  return held;
}
