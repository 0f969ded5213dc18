/** The Function's status, computed from what was observed. Pure: the caller writes it. */
import type { V1Deployment } from '@kubernetes/client-node';
import { triggerProblems } from '../api/validate.js';
import { triggerStatus, type TriggerState } from '../sources/states.js';
import {
  triggerKind,
  type Condition,
  type ConditionType,
  type EddyFunction,
  type FunctionStatus,
} from '../api/types.js';

export interface Observed {
  /** The function's Deployment as last seen, when it exists. */
  deployment?: V1Deployment;
  /** Why the children could not be applied, when they could not. */
  deployError?: { reason: string; message: string };
  /** What each trigger's source last reported, by trigger name. */
  triggers?: (name: string) => TriggerState | undefined;
}

type NewCondition = Omit<Condition, 'lastTransitionTime' | 'observedGeneration'>;

export function computeStatus(
  fn: EddyFunction,
  observed: Observed,
  url: string,
  now: Date,
): FunctionStatus {
  const generation = fn.metadata.generation ?? 0;
  const previous = new Map((fn.status?.conditions ?? []).map((c) => [c.type, c]));
  const condition = (c: NewCondition): Condition => {
    const before = previous.get(c.type);
    const lastTransitionTime =
      before && before.status === c.status ? before.lastTransitionTime : now.toISOString();
    return { ...c, observedGeneration: generation, lastTransitionTime };
  };

  const deployed: NewCondition = observed.deployError
    ? { type: 'Deployed', status: 'False', ...observed.deployError }
    : {
        type: 'Deployed',
        status: 'True',
        reason: 'Applied',
        message: 'the Deployment, Service and code match the spec',
      };

  const triggers = fn.spec.triggers ?? [];
  const problems = triggerProblems(fn);
  let triggersReady: NewCondition;
  if (problems.size > 0) {
    triggersReady = {
      type: 'TriggersReady',
      status: 'False',
      reason: 'InvalidTrigger',
      message: [...problems].map(([name, p]) => `trigger ${name}: ${p}`).join('; '),
    };
  } else if (triggers.length === 0) {
    triggersReady = {
      type: 'TriggersReady',
      status: 'True',
      reason: 'NoTriggers',
      message: 'no triggers: invoke the function through its URL',
    };
  } else {
    const failing = triggers
      .map((t) => ({ name: t.name, state: observed.triggers?.(t.name) }))
      .filter((t) => t.state && !t.state.ready);
    triggersReady =
      failing.length > 0
        ? {
            type: 'TriggersReady',
            status: 'False',
            reason: failing[0]!.state!.reason ?? 'SourceError',
            message: failing
              .map((t) => `trigger ${t.name}: ${t.state!.message ?? t.state!.reason}`)
              .join('; '),
          }
        : {
            type: 'TriggersReady',
            status: 'True',
            reason: 'Accepted',
            message: `${triggers.length} trigger(s) accepted`,
          };
  }

  const d = observed.deployment;
  const replicas = d?.spec?.replicas ?? d?.status?.replicas ?? 0;
  const readyReplicas = d?.status?.readyReplicas ?? 0;
  let ready: NewCondition;
  if (deployed.status !== 'True') {
    ready = { type: 'Ready', status: 'False', reason: 'NotDeployed', message: deployed.message };
  } else if (triggersReady.status !== 'True') {
    ready = {
      type: 'Ready',
      status: 'False',
      reason: 'TriggersNotReady',
      message: triggersReady.message,
    };
  } else if (readyReplicas > 0) {
    ready = {
      type: 'Ready',
      status: 'True',
      reason: 'Available',
      message: `${readyReplicas} of ${replicas} replica(s) ready`,
    };
  } else {
    // What this generation showed before: a replica of it served (Ready True), or one was
    // started and never became ready (ReplicasNotReady, NeverReady).
    const before = previous.get('Ready');
    const sameGeneration = before?.observedGeneration === generation;
    const served = sameGeneration && before?.status === 'True';
    const failedToStart =
      sameGeneration &&
      before?.status === 'False' &&
      (before.reason === 'ReplicasNotReady' || before.reason === 'NeverReady');
    // The Deployment's own verdict: a replica it could not make (quota, a missing service
    // account), or no progress within its deadline (a crash loop, an image that cannot be pulled).
    const conditions = d?.status?.conditions ?? [];
    const stuck =
      conditions.find((c) => c.type === 'ReplicaFailure' && c.status === 'True') ??
      conditions.find((c) => c.type === 'Progressing' && c.reason === 'ProgressDeadlineExceeded');
    if (d && replicas === 0) {
      ready = failedToStart
        ? {
            type: 'Ready',
            status: 'False',
            reason: 'NeverReady',
            message: `scaled to zero after its replica never became ready: see why in the pods' logs (kubectl logs -n ${fn.metadata.namespace} -l eddy.dev/function=${fn.metadata.name} --previous) and the events; the next invocation tries again`,
          }
        : {
            type: 'Ready',
            status: 'True',
            reason: 'ScaledToZero',
            message: 'scaled to zero: the next invocation starts a replica',
          };
    } else if (served && !stuck) {
      // Starting from zero for an invocation, or replacing a replica: still the function that
      // served, so Ready stays True (every cold start would flip it otherwise).
      ready = {
        type: 'Ready',
        status: 'True',
        reason: 'Activating',
        message: `starting ${replicas} replica(s); none is ready yet`,
      };
    } else {
      const failing = stuck ?? conditions.find((c) => c.status === 'False');
      ready = {
        type: 'Ready',
        status: 'False',
        reason: 'ReplicasNotReady',
        message: `0 of ${replicas} replica(s) ready${failing?.message ? `: ${failing.message}` : ''}`,
      };
    }
  }

  const order: ConditionType[] = ['Ready', 'Deployed', 'TriggersReady'];
  const byType = { Ready: ready, Deployed: deployed, TriggersReady: triggersReady };
  return {
    observedGeneration: generation,
    conditions: order.map((t) => condition(byType[t])),
    replicas,
    readyReplicas,
    url,
    triggers: triggers.map((t) => {
      const problem = problems.get(t.name);
      return problem
        ? { name: t.name, ready: false, reason: 'InvalidTrigger', message: problem }
        : triggerStatus(t.name, observed.triggers?.(t.name));
    }),
    triggerSummary: triggers.map((t) => `${t.name}(${triggerKind(t)})`).join(','),
  };
}
