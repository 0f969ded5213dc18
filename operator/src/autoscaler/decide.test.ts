import { describe, expect, it } from 'vitest';
import {
  Sampler,
  Windows,
  holdWhileMissing,
  scalingOf,
  type Decision,
  type Scaling,
} from './decide.js';
import type { FunctionLoad, LoadReport } from './load.js';

const fn = 'photos/thumbnail';

function scaling(o: Partial<Scaling> = {}): Scaling {
  return { minReplicas: 0, maxReplicas: 10, targetConcurrency: 1, idleSeconds: 60, ...o };
}

/**
 * One function's windows driven tick by tick (2 s), the platform doing at once what was decided.
 * Time is in seconds since the function was first seen.
 */
function simulate(o: { scaling?: Scaling; replicas?: number } = {}) {
  const windows = new Windows(0);
  const spec = o.scaling ?? scaling();
  let replicas = o.replicas ?? 0;
  let t = 0;
  return {
    get replicas() {
      return replicas;
    },
    /** Ticks for `seconds` with the concurrency `load` gives each tick (0 is no activity). */
    run(seconds: number, load: number | ((t: number) => number)): (Decision & { t: number })[] {
      const decisions: (Decision & { t: number })[] = [];
      for (const end = t + seconds; t < end;) {
        t += 2;
        const concurrency = typeof load === 'number' ? load : load(t);
        windows.add({ at: t * 1000, concurrency, active: concurrency > 0 });
        const d = windows.decide(t * 1000, { desired: replicas, ready: replicas }, spec);
        replicas = d.desired;
        decisions.push({ ...d, t });
      }
      return decisions;
    },
  };
}

function load(o: Partial<FunctionLoad>): FunctionLoad {
  return { inFlight: 0, queued: 0, concurrencySeconds: 0, requests: 0, ...o };
}

function gateway(o: Partial<FunctionLoad>): LoadReport {
  return { [fn]: load(o) };
}

describe('scalingOf', () => {
  it("fills in the CRD's defaults, the target from the function's concurrency", () => {
    expect(scalingOf({})).toEqual(scaling());
    expect(scalingOf({ concurrency: 4 }).targetConcurrency).toBe(4);
    expect(scalingOf({ concurrency: 4, scaling: { targetConcurrency: 2 } }).targetConcurrency).toBe(
      2,
    );
  });
});

describe('Sampler', () => {
  it('only sets the baseline on the first read', () => {
    const sampler = new Sampler();
    expect(sampler.sample([gateway({ concurrencySeconds: 10, inFlight: 3 })], 0)).toBeUndefined();
    expect(
      sampler.sample([gateway({ concurrencySeconds: 12, inFlight: 3 })], 2000)?.get(fn),
    ).toEqual({ at: 2000, concurrency: 1, active: true });
  });

  it('averages concurrency over the interval from the growth of the counters of all gateways', () => {
    const sampler = new Sampler();
    sampler.sample(
      [gateway({ concurrencySeconds: 10, requests: 5 }), gateway({ concurrencySeconds: 4 })],
      0,
    );
    const samples = sampler.sample(
      [
        gateway({ concurrencySeconds: 13, requests: 8, inFlight: 2 }),
        gateway({ concurrencySeconds: 5, requests: 1 }),
      ],
      2000,
    );
    expect(samples?.get(fn)).toEqual({ at: 2000, concurrency: 2, active: true });
  });

  it('counts the first invocations of a function a gateway had not seen', () => {
    const sampler = new Sampler();
    sampler.sample([{}], 0);
    expect(
      sampler.sample([gateway({ concurrencySeconds: 1, requests: 1 })], 2000)?.get(fn),
    ).toEqual({ at: 2000, concurrency: 0.5, active: true });
  });

  it('counts a request that came and went between two reads as activity', () => {
    const sampler = new Sampler();
    sampler.sample([gateway({ concurrencySeconds: 7, requests: 3 })], 0);
    expect(
      sampler.sample([gateway({ concurrencySeconds: 7, requests: 3 })], 2000)?.get(fn),
    ).toEqual({ at: 2000, concurrency: 0, active: false });
    // A request of a few milliseconds barely moves the integral, but it arrived.
    const s = sampler.sample([gateway({ concurrencySeconds: 7, requests: 4 })], 4000)?.get(fn);
    expect(s?.active).toBe(true);
  });

  it('a restarted gateway adds nothing for the interval it restarted in, then counts again', () => {
    const sampler = new Sampler();
    sampler.sample([gateway({ concurrencySeconds: 100 }), gateway({ concurrencySeconds: 10 })], 0);
    // The first gateway restarted: its counter fell from 100 to 0.5.
    const restarted = sampler.sample(
      [gateway({ concurrencySeconds: 0.5 }), gateway({ concurrencySeconds: 12 })],
      2000,
    );
    expect(restarted?.get(fn)?.concurrency).toBe(1);
    const after = sampler.sample(
      [gateway({ concurrencySeconds: 2.5 }), gateway({ concurrencySeconds: 14 })],
      4000,
    );
    expect(after?.get(fn)?.concurrency).toBe(2);
  });

  it('a gateway that disappears or appears moves no counters onto the others', () => {
    const sampler = new Sampler();
    const a = 100; // a gateway that has run for a long time
    sampler.sample([gateway({ concurrencySeconds: a }), gateway({ concurrencySeconds: 0 })], 0);
    // The first one is gone: the second, now first in the list, did 2 s at concurrency 0.5.
    const gone = sampler.sample([gateway({ concurrencySeconds: 1 })], 2000);
    expect(gone?.get(fn)?.concurrency).toBe(0.5);
    // It is back (a missed read), listed first: its lifetime is not this interval's work.
    const back = sampler.sample(
      [gateway({ concurrencySeconds: a + 2, inFlight: 1 }), gateway({ concurrencySeconds: 3 })],
      4000,
    );
    expect(back?.get(fn)).toEqual({ at: 4000, concurrency: 1, active: true });
    const both = sampler.sample(
      [gateway({ concurrencySeconds: a + 4 }), gateway({ concurrencySeconds: 5 })],
      6000,
    );
    expect(both?.get(fn)?.concurrency).toBe(2);
  });
});

describe('Windows', () => {
  it('steady load asks for ceil(average concurrency / target)', () => {
    const f = simulate({ scaling: scaling({ targetConcurrency: 2 }), replicas: 3 });
    const last = f.run(120, 5).at(-1);
    expect(last).toMatchObject({ desired: 3, panic: false, reason: 'stable 5.0/2 -> 3' });
  });

  it('stays within minReplicas and maxReplicas', () => {
    const busy = simulate({ scaling: scaling({ maxReplicas: 10 }), replicas: 10 });
    expect(busy.run(120, 15).at(-1)).toMatchObject({
      desired: 10,
      reason: 'stable 15.0/1 -> 10 (max 10)',
    });
    const quiet = simulate({ scaling: scaling({ minReplicas: 2 }), replicas: 2 });
    expect(quiet.run(120, 0.5).at(-1)).toMatchObject({ desired: 2 });
    expect(quiet.run(600, 0).every((d) => d.desired === 2)).toBe(true);
  });

  it('a burst panics and scales up on the tick that sees it', () => {
    const f = simulate({ scaling: scaling({ maxReplicas: 20 }), replicas: 1 });
    f.run(120, 1);
    const [burst] = f.run(2, 30);
    // The stable window alone would ask for 2: (29 x 1 + 30) / 30 samples.
    expect(burst).toMatchObject({ desired: 11, panic: true, reason: 'panic 10.7/1 -> 11' });
  });

  it('does not scale down while panicking, and leaves panic a stable window after the burst', () => {
    const f = simulate({ replicas: 1 });
    f.run(120, 1);
    const burst = f.run(4, 20);
    expect(burst[0]).toMatchObject({ desired: 8, panic: true });
    const after = f.run(180, 1);
    const panicking = after.filter((d) => d.panic);
    expect(panicking.every((d) => d.desired >= 8)).toBe(true);
    // The panic condition last held at the first burst tick (t = 122 s).
    expect(panicking.at(-1)?.t).toBe(180);
    expect(after.find((d) => !d.panic)).toMatchObject({ t: 182 });
    expect(f.replicas).toBe(1);
  });

  it('scales to zero exactly idleSeconds after the last activity, not before', () => {
    const f = simulate({ replicas: 1 });
    f.run(10, (t) => (t === 10 ? 0.1 : 0));
    const decisions = f.run(120, 0);
    expect(decisions.find((d) => d.t === 68)?.desired).toBe(1);
    expect(decisions.find((d) => d.t === 70)).toMatchObject({
      desired: 0,
      reason: 'idle 60 s -> 0',
    });
    expect(decisions.filter((d) => d.t >= 70).every((d) => d.desired === 0)).toBe(true);
  });

  it('honours a short idleSeconds even while the stable window still holds load', () => {
    const f = simulate({ scaling: scaling({ idleSeconds: 10 }), replicas: 3 });
    f.run(30, 3);
    const decisions = f.run(80, 0);
    expect(decisions.find((d) => d.desired === 0)?.t).toBe(40);
    expect(decisions.filter((d) => d.t >= 40).every((d) => d.desired === 0)).toBe(true);
  });

  it('never scales to zero with minReplicas 1', () => {
    const f = simulate({ scaling: scaling({ minReplicas: 1 }), replicas: 1 });
    f.run(10, 0.1);
    expect(f.run(600, 0).every((d) => d.desired === 1)).toBe(true);
  });

  it('keeps one replica for a request between ticks that left no measurable concurrency', () => {
    const sampler = new Sampler();
    const windows = new Windows(0);
    sampler.sample([{}], 0);
    for (let at = 2000; at <= 10_000; at += 2000) {
      // One request of no measurable length, before the read at 2 s; nothing after it.
      const samples = sampler.sample([gateway({ requests: 1 })], at);
      windows.add(samples!.get(fn)!);
      // The gateway activated the function, but the platform may not show it yet.
      const d = windows.decide(at, { desired: 0, ready: 0 }, scaling());
      expect(d.desired).toBe(1);
    }
  });

  it('a new function keeps its first replica for idleSeconds, then goes to zero', () => {
    const f = simulate({ replicas: 1 });
    const decisions = f.run(70, 0);
    expect(decisions.filter((d) => d.t < 60).every((d) => d.desired === 1)).toBe(true);
    expect(decisions.find((d) => d.t === 60)).toMatchObject({ desired: 0 });
  });

  it('does not wake a function at zero that nothing invoked (a new leader sees it first)', () => {
    const f = simulate({ replicas: 0 });
    expect(f.run(120, 0).every((d) => d.desired === 0)).toBe(true);
  });

  it('does not scale down on less than a stable window of history (a new leader)', () => {
    const f = simulate({ scaling: scaling({ idleSeconds: 600 }), replicas: 5 });
    const decisions = f.run(120, 1);
    expect(decisions.filter((d) => d.t < 60).every((d) => d.desired === 5)).toBe(true);
    expect(f.replicas).toBe(1);
  });

  it('scales down only after a stable window below the current count', () => {
    const f = simulate({ replicas: 8 });
    f.run(120, 8);
    const decisions = f.run(180, 1);
    // The load fell at 122 s; the stable window first asked for fewer than 8 at 130 s.
    expect(decisions.find((d) => d.t === 130)?.reason).toBe(
      'stable 6.8/1 -> 7, holding 8 for the scale-down delay',
    );
    expect(decisions.find((d) => d.desired < 8)?.t).toBe(188);
    expect(f.replicas).toBe(1);
  });

  it('does not flap under oscillating load', () => {
    // 60 s at 4, then 20 s with nothing in flight, over and over.
    const oscillating = (t: number) => (t % 80 < 60 ? 4 : 0);
    const f = simulate({ replicas: 4 });
    f.run(120, 4);
    const decisions = f.run(600, oscillating);
    // The stable window alone would go 4 -> 3 -> 4 once per cycle.
    expect(decisions.some((d) => Math.ceil(d.concurrency.stable) === 3)).toBe(true);
    expect(decisions.every((d) => d.desired === 4)).toBe(true);
  });
});

describe('holdWhileMissing', () => {
  const decision = (desired: number): Decision => ({
    desired,
    panic: false,
    reason: `idle 60 s -> ${desired}`,
    concurrency: { stable: 0, panic: 0 },
  });

  it('keeps the replicas a function has instead of scaling it down or to zero', () => {
    const held = holdWhileMissing(decision(0), { desired: 2, ready: 2 });
    expect(held.desired).toBe(2);
    expect(held.reason).toBe("idle 60 s -> 0, holding 2 while a gateway's load report is missing");
  });

  it('lets a scale-up or no change through as decided', () => {
    const up = decision(4);
    expect(holdWhileMissing(up, { desired: 2, ready: 2 })).toBe(up);
    const same = decision(2);
    expect(holdWhileMissing(same, { desired: 2, ready: 1 })).toBe(same);
  });
});
