/**
 * @kubernetes/client-node 1.x makes a new https.Agent for every API call, so no connection is
 * ever reused: each request pays a TLS handshake, and thousands of them leave the process large
 * (measured: 1,000 Functions took the operator's peak RSS to about 380 MB). This gives a
 * KubeConfig one keep-alive agent for all its calls and watches.
 */
import type { Agent, AgentOptions } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';

type AgentFactory = { createAgent(cluster: unknown, options: AgentOptions): Agent };

const patched = new WeakSet<KubeConfig>();

export function withConnectionReuse(kc: KubeConfig): KubeConfig {
  if (patched.has(kc)) return kc;
  patched.add(kc);
  // createAgent is private in the typings; its options depend only on the kubeconfig's cluster
  // and user, which do not change for the life of this object.
  const target = kc as unknown as AgentFactory;
  const original = target.createAgent.bind(kc);
  let agent: Agent | undefined;
  target.createAgent = (cluster, options) =>
    (agent ??= original(cluster, { ...options, keepAlive: true }));
  return kc;
}
