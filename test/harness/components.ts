/**
 * What the test harness runs, at which pinned versions, and where provisioning caches it.
 * One place for versions: `npm run test:setup` builds from here and the suites look here.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const projectRoot = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const recipesDir = join(projectRoot, 'test', 'harness', 'go');

/** Root of the per-version caches. Override with EDDY_CACHE_DIR. */
export const cacheRoot = process.env.EDDY_CACHE_DIR ?? join(homedir(), '.cache', 'eddy');

export const versions = {
  kubernetes: '1.34.4',
  etcd: '3.6.16',
  minio: '0.0.0-20260212201848-7aac2a2c5b7c',
  helm: '3.21.4',
  natsServer: '2.15.3',
  nodeImage: '22',
  /** Node and npm placed in the local base image, from the npm registry. */
  node: '22.23.3',
  npm: '10.9.9',
  /** moto's server (PyPI `moto[server]`), for DynamoDB and DynamoDB Streams. */
  moto: '5.2.5',
} as const;

export interface GoBinary {
  name: string;
  /** Folder under test/harness/go holding the go.mod that pins it. */
  recipe: string;
  pkg: string;
  version: string;
}

/** A command of the Kubernetes module, built from the one recipe that pins them all. */
const kubernetesCommand = (name: string): GoBinary => ({
  name,
  recipe: 'kubernetes',
  pkg: `k8s.io/kubernetes/cmd/${name}`,
  version: versions.kubernetes,
});

export const goBinaries = {
  kubeApiserver: kubernetesCommand('kube-apiserver'),
  kubelet: kubernetesCommand('kubelet'),
  kubeControllerManager: kubernetesCommand('kube-controller-manager'),
  kubeScheduler: kubernetesCommand('kube-scheduler'),
  kubeProxy: kubernetesCommand('kube-proxy'),
  kubectl: kubernetesCommand('kubectl'),
  etcd: { name: 'etcd', recipe: 'etcd', pkg: 'go.etcd.io/etcd/server/v3', version: versions.etcd },
  minio: {
    name: 'minio',
    recipe: 'minio',
    pkg: 'github.com/minio/minio',
    version: versions.minio,
  },
  helm: { name: 'helm', recipe: 'helm', pkg: 'helm.sh/helm/v3/cmd/helm', version: versions.helm },
  natsServer: {
    name: 'nats-server',
    recipe: 'nats',
    pkg: 'github.com/nats-io/nats-server/v2',
    version: versions.natsServer,
  },
} satisfies Record<string, GoBinary>;

/** The one-node cluster's Kubernetes binaries beyond the control plane's. */
export const nodeBinaries: GoBinary[] = [
  goBinaries.kubelet,
  goBinaries.kubeControllerManager,
  goBinaries.kubeScheduler,
  goBinaries.kubeProxy,
  goBinaries.kubectl,
];

/** The node's parts that come from Debian's packages, by package. */
export const nodePackages = {
  containerd: '/usr/bin/containerd',
  runc: '/usr/sbin/runc',
  'containernetworking-plugins': '/usr/lib/cni/bridge',
  conntrack: '/usr/sbin/conntrack',
  iptables: '/usr/sbin/iptables',
  gcc: '/usr/bin/gcc',
  'libc6-dev': '/usr/lib/x86_64-linux-gnu/libc.a',
} as const;

/** The pause container, compiled from the Kubernetes module's build/pause/linux/pause.c. */
export const pauseBinary = join(cacheRoot, `pause-${versions.kubernetes}`, 'pause');
/** Its image's name in the node's containerd (imported, never pulled). */
export const pauseImage = `eddy.local/pause:${versions.kubernetes}`;

export function goBinaryPath(b: GoBinary): string {
  return join(cacheRoot, `${b.name}-${b.version}`, b.name);
}

/** The tag the project's Dockerfile names; the harness builds a local image under it. */
export const baseImageTag = `node:${versions.nodeImage}-bookworm-slim`;
/** Where the base image keeps the host's extra certificate authorities, if the host has any. */
export const hostCaPath = 'usr/local/share/eddy-host-ca.crt';
/** Present beside the cached root filesystem when it holds the host's authorities. */
export const hostCaMarker = 'host-ca.crt';
export const baseImageDir = join(cacheRoot, `base-image-bookworm-node${versions.node}`);

export const prometheusBinary = process.env.EDDY_PROMETHEUS ?? '/usr/bin/prometheus';
export const promtoolBinary = process.env.EDDY_PROMTOOL ?? '/usr/bin/promtool';

/** A Python virtual environment of its own holding moto's server, pinned. */
export const motoVenv = join(cacheRoot, `moto-${versions.moto}`);
export const motoPython = join(motoVenv, 'bin', 'python');
/** The Python that makes the environment: Debian's (package python3-venv) when there is one. */
export const systemPython = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

export type ComponentName =
  'kube' | 'minio' | 'nats' | 'kinesis' | 'moto' | 'docker' | 'prometheus' | 'cluster';

/**
 * Why a component cannot run here, or undefined when it can. Cheap checks only (files on disk),
 * so suites can decide at load time; the Docker image is checked when its suite starts.
 */
export function missingReason(c: ComponentName): string | undefined {
  const need = (path: string, what: string) => (existsSync(path) ? undefined : `${what} (${path})`);
  switch (c) {
    case 'kube':
      return (
        need(goBinaryPath(goBinaries.kubeApiserver), 'kube-apiserver binary') ??
        need(goBinaryPath(goBinaries.etcd), 'etcd binary') ??
        need(goBinaryPath(goBinaries.helm), 'helm binary')
      );
    case 'minio':
      return need(goBinaryPath(goBinaries.minio), 'minio binary');
    case 'nats':
      return need(goBinaryPath(goBinaries.natsServer), 'nats-server binary');
    case 'kinesis':
      return need(join(projectRoot, 'node_modules', 'kinesalite'), 'kinesalite package');
    case 'moto':
      // Written last by the provision step, so a half-made environment does not count.
      return need(join(motoVenv, 'eddy-installed'), `moto ${versions.moto} virtual environment`);
    case 'docker':
      return (
        need('/usr/sbin/dockerd', 'dockerd (Debian package docker.io)') ??
        need(join(baseImageDir, 'rootfs.tar'), 'local base image')
      );
    case 'prometheus':
      return need(prometheusBinary, 'prometheus (Debian package prometheus)');
    case 'cluster': {
      if (process.getuid?.() !== 0) return 'root (the node sets up a bridge, iptables and cgroups)';
      for (const b of nodeBinaries) {
        const reason = need(goBinaryPath(b), `${b.name} binary`);
        if (reason) return reason;
      }
      for (const [pkg, path] of Object.entries(nodePackages)) {
        const reason = need(path, `Debian package ${pkg}`);
        if (reason) return reason;
      }
      return (
        need(pauseBinary, 'pause binary') ??
        missingReason('kube') ??
        missingReason('docker') ??
        missingReason('minio')
      );
    }
  }
}
