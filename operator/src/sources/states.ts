/**
 * What each trigger's source last found: ready or not and why, and a schedule's fire times.
 * Sources (on the leader) set it; the reconciler reads it into the Function's status and is told
 * to look again when it changes. Nothing here is persisted: a new leader's sources report anew.
 */
import type { TriggerStatus } from '../api/types.js';

/** Why a trigger does not deliver, as the trigger's status and TriggersReady name it. */
export type TriggerProblem =
  | 'BucketNotFound'
  | 'StreamNotFound'
  | 'AccessDenied'
  | 'EndpointUnreachable'
  | 'SecretNotFound'
  | 'SecretNotAllowed'
  | 'InvalidExpression'
  | 'InvalidTrigger'
  | 'SourceError';

export interface TriggerState {
  ready: boolean;
  /** With `ready: false`: which problem. */
  reason?: TriggerProblem;
  message?: string;
  lastScheduleTime?: string;
  nextScheduleTime?: string;
}

/** `namespace/name` of a Function. */
export type FunctionKey = string;

export class TriggerStates {
  private readonly byFunction = new Map<FunctionKey, Map<string, TriggerState>>();
  private readonly listeners = new Set<(fn: FunctionKey) => void>();

  /** Records a trigger's state; listeners hear of it only when it differs from the last one. */
  set(fn: FunctionKey, trigger: string, state: TriggerState): void {
    let triggers = this.byFunction.get(fn);
    if (!triggers) this.byFunction.set(fn, (triggers = new Map<string, TriggerState>()));
    const before = triggers.get(trigger);
    if (before && sameState(before, state)) return;
    triggers.set(trigger, { ...state });
    for (const l of this.listeners) l(fn);
  }

  /** Merges `patch` into the trigger's state (a schedule's times, say). */
  update(fn: FunctionKey, trigger: string, patch: Partial<TriggerState>): void {
    const before = this.byFunction.get(fn)?.get(trigger) ?? { ready: true };
    this.set(fn, trigger, { ...before, ...patch });
  }

  get(fn: FunctionKey, trigger: string): TriggerState | undefined {
    return this.byFunction.get(fn)?.get(trigger);
  }

  /** Forgets a trigger (it was removed) or, without `trigger`, a Function. */
  delete(fn: FunctionKey, trigger?: string): void {
    const triggers = this.byFunction.get(fn);
    if (!triggers) return;
    if (trigger === undefined) this.byFunction.delete(fn);
    else if (triggers.delete(trigger) && triggers.size === 0) this.byFunction.delete(fn);
    else return;
    for (const l of this.listeners) l(fn);
  }

  /** Called with the Function's key whenever one of its triggers' states changes. */
  onChange(listener: (fn: FunctionKey) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}

function sameState(a: TriggerState, b: TriggerState): boolean {
  return (
    a.ready === b.ready &&
    a.reason === b.reason &&
    a.message === b.message &&
    a.lastScheduleTime === b.lastScheduleTime &&
    a.nextScheduleTime === b.nextScheduleTime
  );
}

/** The status entry of a trigger, from what its source reported (nothing yet: ready). */
export function triggerStatus(name: string, state: TriggerState | undefined): TriggerStatus {
  if (!state) return { name, ready: true };
  const status: TriggerStatus = { name, ready: state.ready };
  if (!state.ready && state.reason) status.reason = state.reason;
  if (state.message) status.message = state.message;
  if (state.lastScheduleTime) status.lastScheduleTime = state.lastScheduleTime;
  if (state.nextScheduleTime) status.nextScheduleTime = state.nextScheduleTime;
  return status;
}
