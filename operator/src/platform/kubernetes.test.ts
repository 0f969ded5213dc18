import type { V1Endpoint, V1EndpointSlice, V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { ReadyReplicas, defaultEndpointUrl, sliceReplicas } from './kubernetes.js';
import { thumbnailPod } from './pod-fixture.js';

const endpoint = (pod: string, ip: string, conditions?: V1Endpoint['conditions']): V1Endpoint => ({
  addresses: [ip],
  ...(conditions ? { conditions } : {}),
  targetRef: { kind: 'Pod', name: pod, namespace: 'photos' },
});

const slice = (
  name: string,
  endpoints: V1Endpoint[],
  ports: V1EndpointSlice['ports'] = [{ name: 'http', port: 8080, protocol: 'TCP' }],
  service = 'thumbnail',
): V1EndpointSlice => ({
  addressType: 'IPv4',
  metadata: {
    name,
    namespace: 'photos',
    labels: { 'kubernetes.io/service-name': service },
  },
  endpoints,
  ports,
});

describe('sliceReplicas', () => {
  it('takes ready endpoints, a missing ready condition meaning ready', () => {
    const s = slice('thumbnail-abc', [
      endpoint('a', '10.244.0.1', { ready: true }),
      endpoint('b', '10.244.0.2'),
      endpoint('c', '10.244.0.3', { ready: false }),
      endpoint('d', '10.244.0.4', { ready: true, terminating: true }),
    ]);
    expect(sliceReplicas(s)).toEqual([
      { id: 'a', url: 'http://10.244.0.1:8080' },
      { id: 'b', url: 'http://10.244.0.2:8080' },
    ]);
  });

  it('uses the port named http, else the first, and the address when no pod is named', () => {
    const ports = [
      { name: 'metrics', port: 9090 },
      { name: 'http', port: 8081 },
    ];
    expect(sliceReplicas(slice('s', [{ addresses: ['10.0.0.9'] }], ports))).toEqual([
      { id: '10.0.0.9', url: 'http://10.0.0.9:8081' },
    ]);
    expect(
      sliceReplicas(slice('s', [endpoint('a', '10.0.0.1')], [{ name: 'other', port: 9000 }])),
    ).toEqual([{ id: 'a', url: 'http://10.0.0.1:9000' }]);
  });

  it('puts IPv6 addresses in brackets, and lets the caller map addresses', () => {
    expect(defaultEndpointUrl('fd00::7', 8080)).toBe('http://[fd00::7]:8080');
    const s = slice('s', [endpoint('a', '10.244.0.1')]);
    expect(sliceReplicas(s, (address, port) => `mapped://${address}/${port}`)).toEqual([
      { id: 'a', url: 'mapped://10.244.0.1/8080' },
    ]);
  });
});

describe('ReadyReplicas', () => {
  const key = 'photos/thumbnail';

  it('merges the slices of a Service, one replica per pod', () => {
    const r = new ReadyReplicas();
    expect(r.update(slice('thumbnail-1', [endpoint('a', '10.244.0.1')]))).toBe(key);
    r.update(slice('thumbnail-2', [endpoint('b', '10.244.0.2'), endpoint('a', '10.244.0.1')]));
    r.update(slice('other-1', [endpoint('z', '10.244.0.9')], undefined, 'other'));
    expect(r.ready(key).map((x) => x.id)).toEqual(['a', 'b']);
    r.delete(slice('thumbnail-1', []));
    expect(r.ready(key).map((x) => x.id)).toEqual(['b', 'a']);
    r.delete(slice('thumbnail-2', []));
    expect(r.ready(key)).toEqual([]);
    expect(r.ready('photos/other').map((x) => x.id)).toEqual(['z']);
  });

  it('ignores slices that belong to no Service', () => {
    const r = new ReadyReplicas();
    const s = slice('loose', [endpoint('a', '10.244.0.1')]);
    delete s.metadata!.labels;
    expect(r.update(s)).toBeUndefined();
  });

  it('keeps an unreachable replica out until a slice update reports it ready again', () => {
    const r = new ReadyReplicas();
    r.update(slice('thumbnail-1', [endpoint('a', '10.244.0.1'), endpoint('b', '10.244.0.2')]));
    expect(r.markUnreachable(key, 'a')).toBe(true);
    expect(r.markUnreachable(key, 'a')).toBe(false);
    expect(r.markUnreachable(key, 'nobody')).toBe(false);
    expect(r.ready(key).map((x) => x.id)).toEqual(['b']);
    // Another slice of the Service says nothing about a.
    r.update(slice('thumbnail-2', [endpoint('c', '10.244.0.3')]));
    expect(r.ready(key).map((x) => x.id)).toEqual(['b', 'c']);
    // Its own slice reports it not ready, then ready again.
    r.update(slice('thumbnail-1', [endpoint('a', '10.244.0.1', { ready: false })]));
    expect(r.ready(key).map((x) => x.id)).toEqual(['c']);
    r.update(slice('thumbnail-1', [endpoint('a', '10.244.0.1', { ready: true })]));
    expect(r.ready(key).map((x) => x.id)).toEqual(['a', 'c']);
  });

  it('takes back a marked replica when its slice is updated with it ready', () => {
    const r = new ReadyReplicas();
    r.update(slice('thumbnail-1', [endpoint('a', '10.244.0.1')]));
    r.markUnreachable(key, 'a');
    expect(r.ready(key)).toEqual([]);
    r.update(slice('thumbnail-1', [endpoint('a', '10.244.0.1', { ready: true })]));
    expect(r.ready(key).map((x) => x.id)).toEqual(['a']);
  });
});

describe('starting pods (probed by the gateway)', () => {
  const key = 'photos/thumbnail';

  it('offers to probe only not-ready, not-terminating endpoints of pods named as the function names its pods', () => {
    const r = new ReadyReplicas();
    r.update(
      slice('thumbnail-abc', [
        endpoint('thumbnail-5f7d-aaaaa', '10.244.0.1', { ready: false }),
        endpoint('thumbnail-5f7d-bbbbb', '10.244.0.2', { ready: true }),
        endpoint('thumbnail-5f7d-ccccc', '10.244.0.3', { ready: false, terminating: true }),
        endpoint('other-5f7d-ddddd', '10.244.0.4', { ready: false }),
        { addresses: ['10.244.0.5'], conditions: { ready: false } },
      ]),
    );
    expect(r.starting(key)).toEqual([
      { id: 'thumbnail-5f7d-aaaaa', url: 'http://10.244.0.1:8080' },
    ]);
  });

  it('makes a starting pod that answered ready, until its slice says otherwise', () => {
    const r = new ReadyReplicas();
    const pod = { id: 'thumbnail-5f7d-aaaaa', url: 'http://10.244.0.1:8080' };
    r.update(slice('thumbnail-abc', [endpoint(pod.id, '10.244.0.1', { ready: false })]));
    expect(r.ready(key)).toEqual([]);

    expect(r.probedReady(key, pod)).toBe(true);
    expect(r.ready(key)).toEqual([pod]);
    expect(r.starting(key)).toEqual([]);

    // The kubelet agrees: the slice's word from now on, and still one replica.
    r.update(slice('thumbnail-abc', [endpoint(pod.id, '10.244.0.1', { ready: true })]));
    expect(r.ready(key)).toEqual([pod]);
    // The kubelet's probe fails later: out, and not probed again as a starting pod.
    r.update(slice('thumbnail-abc', [endpoint(pod.id, '10.244.0.1', { ready: false })]));
    expect(r.ready(key)).toEqual([]);
    expect(r.starting(key)).toEqual([]);
    expect(r.probedReady(key, pod)).toBe(false);
  });

  it('drops a probed pod its slice no longer lists as starting, and refuses one it never listed', () => {
    const r = new ReadyReplicas();
    const pod = { id: 'thumbnail-5f7d-aaaaa', url: 'http://10.244.0.1:8080' };
    r.update(slice('thumbnail-abc', [endpoint(pod.id, '10.244.0.1', { ready: false })]));
    r.probedReady(key, pod);
    r.update(
      slice('thumbnail-abc', [endpoint(pod.id, '10.244.0.1', { ready: false, terminating: true })]),
    );
    expect(r.ready(key)).toEqual([]);
    expect(r.probedReady(key, { id: 'thumbnail-5f7d-zzzzz', url: 'http://10.244.0.9:8080' })).toBe(
      false,
    );
    expect(r.ready(key)).toEqual([]);
  });
});

describe('starting pods whose handler did not load', () => {
  const key = 'photos/thumbnail';
  const failure = { errorType: 'Runtime.UserCodeSyntaxError', errorMessage: 'bad' };

  it('tell their error while no replica is ready and they are starting, and are not probed again', () => {
    const r = new ReadyReplicas();
    const pod = { id: 'thumbnail-5f7d-aaaaa', url: 'http://10.244.0.1:8080' };
    r.update(slice('thumbnail-abc', [endpoint(pod.id, '10.244.0.1', { ready: false })]));
    expect(r.initError(key)).toBeUndefined();
    expect(r.probedInitError(key, pod, failure)).toBe(true);
    expect(r.initError(key)).toEqual(failure);
    expect(r.starting(key)).toEqual([]);
    // Another pod ready (an earlier revision, say): invocations go there.
    r.update(
      slice('thumbnail-abc', [
        endpoint(pod.id, '10.244.0.1', { ready: false }),
        endpoint('thumbnail-4a1b-bbbbb', '10.244.0.2', { ready: true }),
      ]),
    );
    expect(r.initError(key)).toBeUndefined();
    // The failed pod goes: its error goes with it.
    r.update(slice('thumbnail-abc', [endpoint(pod.id, '10.244.0.1', { terminating: true })]));
    expect(r.initError(key)).toBeUndefined();
    expect(
      r.probedInitError(
        key,
        { id: 'thumbnail-5f7d-zzzzz', url: 'http://10.244.0.9:8080' },
        failure,
      ),
    ).toBe(false);
  });
});

describe('starting pods from a watch of the pods', () => {
  const key = 'photos/thumbnail';
  const podNamed = (ready?: boolean): V1Pod =>
    thumbnailPod((p) => {
      p.status!.phase = 'Running';
      if (ready !== undefined)
        p.status!.conditions = [{ type: 'Ready', status: ready ? 'True' : 'False' }];
    });
  const replica = { id: 'thumbnail-5f7d9c-x2x4q', url: 'http://10.244.0.9:8080' };

  it('keeps a probed pod ready when the kubelet says ready before the slice does, and leaves it once not ready again', () => {
    const r = new ReadyReplicas();
    expect(r.updatePod(podNamed())).toBe(key);
    expect(r.starting(key)).toEqual([replica]);
    expect(r.probedReady(key, replica)).toBe(true);
    expect(r.ready(key)).toEqual([replica]);

    r.updatePod(podNamed(true));
    expect(r.ready(key)).toEqual([replica]);

    r.updatePod(podNamed(false));
    expect(r.ready(key)).toEqual([]);
    expect(r.starting(key)).toEqual([]);
  });

  it('drops a deleted pod at once', () => {
    const r = new ReadyReplicas();
    r.updatePod(podNamed());
    r.probedReady(key, replica);
    r.deletePod(podNamed());
    expect(r.ready(key)).toEqual([]);
  });
});
