/** The in-cluster operator: `node dist/operator/main.js`. */
import { KubeConfig } from '@kubernetes/client-node';
import { runOperator } from './operator.js';
import { loadSettings } from './settings.js';

const settings = loadSettings();
const kc = new KubeConfig();
// In a pod: the service account; elsewhere: KUBECONFIG or ~/.kube/config.
kc.loadFromDefault();
const stop = new AbortController();
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.on(signal, () => {
    console.log(`eddy-operator: ${signal}: handing over the lease and stopping`);
    stop.abort();
  });
}
console.log(
  `eddy-operator ${settings.identity} starting (lease ${settings.namespace}/eddy-operator)`,
);
await runOperator({ kc, settings }, stop.signal);
console.log('eddy-operator: stopped');
