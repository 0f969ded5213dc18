/**
 * What the test harness runs, at which pinned versions, and where provisioning caches it.
 * One place for versions: `npm run test:setup` builds from here and the suites look here.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
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
  /** The AWS CLI (PyPI `awscli`), for `aws lambda invoke` against the gateway's Invoke API. */
  awscli: '1.46.3',
  /** AWS's Go library for Lambda functions, which the provided runtime's test function uses. */
  awsLambdaGo: '1.55.0',
  /** AWS's Python runtime interface client, in the virtual environment the harness makes. */
  awslambdaric: '4.2.2',
  /** AWS's Java runtime interface client, from Maven Central (test/harness/java/ric/pom.xml). */
  javaRic: '2.10.1',
  /** AWS's Runtime Interface Emulator, at the pseudo-version the Go module proxy serves. */
  rie: '0.0.0-20261030222936-bef5c4ba774d',
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
  /** The provided runtime's test function (test/harness/go/lambda-go/main.go). */
  lambdaGoFunction: {
    name: 'bootstrap',
    recipe: 'lambda-go',
    pkg: 'eddy.dev/harness/lambda-go',
    // Its own source is part of what is cached: a change to main.go builds it again.
    version: `${versions.awsLambdaGo}-${createHash('sha256')
      .update(readFileSync(join(recipesDir, 'lambda-go', 'main.go')))
      .digest('hex')
      .slice(0, 12)}`,
  },
  /** AWS's Lambda Runtime Interface Emulator, which bench:runtimes compares the Runtime API with. */
  rie: {
    name: 'aws-lambda-rie',
    recipe: 'rie',
    pkg: 'github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie',
    version: versions.rie,
  },
} satisfies Record<string, GoBinary>;

/**
 * Debian's python3 (bookworm: 3.11, package python3-venv), which python3.11 functions run on and
 * which makes the harness's virtual environments (moto's, awslambdaric's).
 */
export const systemPython =
  process.env.EDDY_SYSTEM_PYTHON ??
  (existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');
/** A virtual environment of the system python with awslambdaric, made by `test:setup runtimes`. */
export const pythonRicDir = join(cacheRoot, `python3.11-awslambdaric-${versions.awslambdaric}`);
export const pythonRic = join(pythonRicDir, 'bin', 'python');
/** The Java client's jars and what they need, copied by `test:setup java`. */
export const javaRicDir = join(cacheRoot, `java-ric-${versions.javaRic}`);
export const javaRicJar = join(
  javaRicDir,
  `aws-lambda-java-runtime-interface-client-${versions.javaRic}.jar`,
);

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

/** A Python virtual environment of its own beside moto's, holding the AWS CLI, pinned. */
export const awsCliVenv = join(cacheRoot, `awscli-${versions.awscli}`);
export const awsCli = join(awsCliVenv, 'bin', 'aws');

export type ComponentName =
  | 'awscli'
  | 'kube'
  | 'minio'
  | 'nats'
  | 'kinesis'
  | 'moto'
  | 'docker'
  | 'prometheus'
  | 'cluster'
  | 'runtimes'
  | 'java'
  | 'rie';

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
    case 'awscli':
      return need(
        join(awsCliVenv, 'eddy-installed'),
        `AWS CLI ${versions.awscli} virtual environment`,
      );
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
    case 'runtimes':
      return (
        need(goBinaryPath(goBinaries.lambdaGoFunction), 'the Go test function (aws-lambda-go)') ??
        need(pythonRic, 'the python3.11 virtual environment with awslambdaric')
      );
    case 'java':
      return (
        need('/usr/bin/javac', 'a JDK 17 (Debian package openjdk-17-jdk-headless)') ??
        need(javaRicJar, "AWS's Java runtime interface client")
      );
    case 'rie':
      return need(goBinaryPath(goBinaries.rie), "AWS's Runtime Interface Emulator");
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
