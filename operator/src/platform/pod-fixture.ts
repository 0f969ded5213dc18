/** For tests: a pod as the Deployment of Function photos/thumbnail makes it. */
import type { V1Pod } from '@kubernetes/client-node';

/** Starting (Pending, with an address, no conditions yet), then as `change` makes it. */
export function thumbnailPod(change: (p: V1Pod) => void = () => undefined): V1Pod {
  const p: V1Pod = {
    metadata: {
      name: 'thumbnail-5f7d9c-x2x4q',
      namespace: 'photos',
      labels: {
        'eddy.dev/function': 'thumbnail',
        'app.kubernetes.io/managed-by': 'eddy-operator',
        'pod-template-hash': '5f7d9c',
      },
      ownerReferences: [
        {
          apiVersion: 'apps/v1',
          kind: 'ReplicaSet',
          name: 'thumbnail-5f7d9c',
          uid: 'rs-1',
          controller: true,
        },
      ],
    },
    status: { phase: 'Pending', podIP: '10.244.0.9', conditions: [] },
  };
  change(p);
  return p;
}
