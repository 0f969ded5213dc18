/**
 * Bursts: when the work a function holds in this gateway (in flight plus waiting) is more than
 * its ready and starting replicas can take, the gateway asks the platform at once for the
 * replicas the work needs, bounded by maxReplicas, as it does from zero, instead of waiting for
 * the autoscaler's next tick. The autoscaler still decides every scale-down; until the replicas
 * a burst asked for have served (or the burst is over), the gateway's load report holds them
 * (`burstReplicas`), and the autoscaler keeps at least that many.
 */
import type { EddyFunction } from '../api/types.js';
import { describeError } from '../errors.js';
import { keyOf, type FunctionKey, type Platform } from '../platform/platform.js';

/** The longest one scale-up call may take before it counts as failed. */
const askTimeoutMs = 15_000;
/** After a failed call, the next one waits this long (the API server busy, say). */
const retryAfterMs = 1_000;

export interface BurstOptions {
  platform: Pick<Platform, 'activate' | 'counts'>;
  /** The invocations a function holds in this gateway now: in flight plus waiting. */
  workOf: (key: FunctionKey) => number;
  log: (message: string) => void;
  now: () => number;
}

/** The settings of a function a burst needs. */
export interface BurstSettings {
  concurrency: number;
  maxReplicas: number;
  /** How long a burst's replicas are held at most, if some never serve. */
  activationTimeoutMs: number;
}

interface Hold {
  /** The replicas asked for. */
  replicas: number;
  /** Until when the hold lasts at most, even if some replica never served. */
  until: number;
  /** The replicas that answered an invocation since. */
  served: Set<string>;
}

interface State {
  /** A call under way asks for this many. */
  asking: number;
  /** The work grew while a call was under way: look again once it ends. */
  again: { fn: EddyFunction; s: BurstSettings } | undefined;
  retryAt: number;
  hold: Hold | undefined;
}

/** How many replicas `work` invocations need at `concurrency` each, bounded by maxReplicas. */
export function replicasFor(work: number, concurrency: number, maxReplicas: number): number {
  return Math.min(maxReplicas, Math.ceil(work / Math.max(1, concurrency)));
}

export class Bursts {
  private readonly states = new Map<FunctionKey, State>();

  constructor(private readonly o: BurstOptions) {}

  /**
   * Work for `fn` arrived or waits: asks for the replicas it needs when that is more than the
   * function has or is starting. One call at a time per function; at zero with work for one
   * replica, activation alone asks.
   */
  demand(fn: EddyFunction, s: BurstSettings): void {
    const key = keyOf(fn);
    const work = this.o.workOf(key);
    const need = replicasFor(work, s.concurrency, s.maxReplicas);
    if (need <= 1) return;
    let st = this.states.get(key);
    const have = Math.max(this.o.platform.counts(key).desired, st?.asking ?? 0);
    if (need <= have) return;
    if (!st) {
      st = { asking: 0, again: undefined, retryAt: 0, hold: undefined };
      this.states.set(key, st);
    }
    if (st.asking > 0) {
      st.again = { fn, s };
      return;
    }
    const now = this.o.now();
    if (now < st.retryAt) return;
    st.asking = need;
    // Held from the moment it is asked for: the autoscaler may read the load report meanwhile.
    st.hold = {
      replicas: Math.max(need, st.hold?.replicas ?? 0),
      until: now + s.activationTimeoutMs,
      served: st.hold?.served ?? new Set(),
    };
    this.o.log(`${key}: ${work} invocations need ${need} replicas; asking for them now`);
    const state = st;
    void this.ask(fn, need).then((ok) => {
      state.asking = 0;
      if (!ok) state.retryAt = this.o.now() + retryAfterMs;
      const again = state.again;
      state.again = undefined;
      if (again && ok && this.states.get(key) === state) this.demand(again.fn, again.s);
    });
  }

  /** A replica answered an invocation of the function. */
  served(key: FunctionKey, replicaId: string): void {
    const hold = this.states.get(key)?.hold;
    if (!hold) return;
    hold.served.add(replicaId);
    if (hold.served.size >= hold.replicas) this.release(key);
  }

  /** Nothing of the function is in flight or waits here any more: the burst is over. */
  settled(key: FunctionKey): void {
    this.release(key);
  }

  /** The replicas a burst asked for that the autoscaler must keep now, if any. */
  held(key: FunctionKey): number | undefined {
    const st = this.states.get(key);
    const hold = st?.hold;
    if (!st || !hold) return undefined;
    if (this.o.now() >= hold.until) {
      this.release(key);
      return undefined;
    }
    return hold.replicas;
  }

  /** The function was deleted. */
  forget(key: FunctionKey): void {
    this.states.delete(key);
  }

  private release(key: FunctionKey): void {
    const st = this.states.get(key);
    if (!st) return;
    st.hold = undefined;
    if (st.asking === 0 && st.retryAt <= this.o.now()) this.states.delete(key);
  }

  private async ask(fn: EddyFunction, replicas: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.o.platform.activate(fn, replicas),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`the platform did not answer within ${askTimeoutMs} ms`)),
            askTimeoutMs,
          );
        }),
      ]);
      return true;
    } catch (err) {
      this.o.log(
        `${keyOf(fn)}: asking for ${replicas} replicas failed: ${describeError(err)}; the autoscaler or the next burst asks again`,
      );
      return false;
    } finally {
      clearTimeout(timer);
    }
  }
}
