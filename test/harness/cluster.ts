/**
 * A real one-node Kubernetes cluster for tests: the control plane of kube.ts (etcd and
 * kube-apiserver) plus kube-controller-manager, kube-scheduler, a kubelet on Debian's containerd
 * and runc, kube-proxy, and Debian's CNI plugins on a bridge made here. Nothing is pulled: the
 * pause image is compiled from the Kubernetes module and every image comes from the local Docker
 * engine (`docker save | ctr images import`).
 *
 * Addresses: the bridge `eddy0` holds 10.244.0.1, which is the node's IP, the API server's
 * address (pods reach it through the `kubernetes` Service) and the host as pods see it (how
 * function pods reach a MinIO on the host). Pods get 10.244.0.0/24; Services 10.96.0.0/24,
 * routed onto the bridge so ClusterIP traffic never leaves it. Nothing else is routed.
 *
 * The cluster writes its state under one directory (`/tmp/eddy-cluster-*`), and a record of it
 * in the cache, so the next start tears down what a crashed run left: processes, containers,
 * mounts, iptables chains (KUBE-*, CNI-*), the bridge and the kubelet's fixed paths.
 */
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import {
  mkdir,
  mkdtemp,
  readFile,
  rename,
  rm,
  writeFile,
  readdir,
  readlink,
} from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import { cacheRoot, goBinaries, goBinaryPath, pauseBinary, pauseImage } from './components.js';
import { dockerCli, ensureDockerd, hasImage } from './docker.js';
import { issue, kubeconfigYaml, startKube, type Kube } from './kube.js';
import { freePorts } from './ports.js';
import { run, startProcess, tail, waitUntilReady, type ManagedProcess } from './proc.js';
import { startProgress } from './progress.js';

export const bridgeName = 'eddy0';
export const nodeIp = '10.244.0.1';
export const podCidr = '10.244.0.0/24';
export const serviceCidr = '10.96.0.0/24';
export const nodeName = 'eddy-node';

/** What a running (or crashed) cluster left on the machine, for the next start to remove. */
const stateFile = join(cacheRoot, 'cluster-state.json');
/** Fixed paths the kubelet writes whatever its root directory. */
const kubeletFixedPaths = ['/var/lib/kubelet', '/var/lib/cni'];

interface ClusterRecord {
  dir: string;
  sysctls: Record<string, string>;
  createdPaths: string[];
  createdCgroups?: string[];
}

export interface Cluster {
  kube: Kube;
  kubeConfig: k8s.KubeConfig;
  kubeconfigPath: string;
  dir: string;
  processes: ManagedProcess[];
  /** Runs the harness's kubectl against the cluster as the admin; resolves with its output. */
  kubectl(args: string[], options?: { timeoutMs?: number }): Promise<string>;
  stop(): Promise<void>;
}

const sysctlPaths = {
  forward: '/proc/sys/net/ipv4/ip_forward',
  bridgeNf: '/proc/sys/net/bridge/bridge-nf-call-iptables',
};
/** Kernel settings the kubelet sets to its own defaults at start: restored at teardown. */
const kubeletSysctls = [
  '/proc/sys/vm/overcommit_memory',
  '/proc/sys/vm/panic_on_oom',
  '/proc/sys/kernel/panic',
  '/proc/sys/kernel/panic_on_oops',
  '/proc/sys/kernel/keys/root_maxkeys',
  '/proc/sys/kernel/keys/root_maxbytes',
];
/** cgroup v1 controllers' kubepods hierarchies, and cgroup v2's, that the kubelet makes. */
const kubepodsCgroups = () =>
  existsSync('/sys/fs/cgroup/cgroup.controllers')
    ? ['/sys/fs/cgroup/kubepods']
    : readdirSync('/sys/fs/cgroup').map((c) => join('/sys/fs/cgroup', c, 'kubepods'));
/** Where the cluster's directories are made: the record's `dir` must be one. */
const clusterDirPattern = /^\/tmp\/eddy-cluster-[A-Za-z0-9]{6}$/;
/** Chains of the cluster's own making; the filter table's input guard is EDDY-INPUT. */
const chainPrefixes = ['KUBE-', 'CNI-', 'EDDY-'];

async function sh(script: string, timeoutMs = 60_000): Promise<string> {
  return run('bash', ['-o', 'pipefail', '-c', script], { timeoutMs });
}

async function quiet(script: string): Promise<void> {
  try {
    await sh(script);
  } catch {
    // Teardown goes on: each step removes what it can.
  }
}

/** Chains whose names start with one of `prefixes`, in IPv4 and IPv6 tables, as `family table chain`. */
async function chainsNamed(prefixes: string[]): Promise<string[]> {
  const found: string[] = [];
  for (const family of ['iptables', 'ip6tables']) {
    for (const table of ['filter', 'nat', 'mangle']) {
      const saved = await run(`${family}-save`, ['-t', table]).catch(() => '');
      for (const l of saved.split('\n')) {
        if (prefixes.some((prefix) => l.startsWith(`:${prefix}`)))
          found.push(`${family} ${table} ${l.slice(1).split(' ')[0]}`);
      }
    }
  }
  return found;
}

/** Removes the rules that jump to chains named `prefix*`, then those chains, in every table. */
async function removeChains(prefix: string): Promise<void> {
  for (const family of ['iptables', 'ip6tables'])
    for (const table of ['filter', 'nat', 'mangle']) {
      let saved: string;
      try {
        saved = await run(`${family}-save`, ['-t', table]);
      } catch {
        continue;
      }
      const lines = saved.split('\n');
      const chains = lines
        .filter((l) => l.startsWith(`:${prefix}`))
        .map((l) => l.slice(1).split(' ')[0]!);
      if (chains.length === 0) continue;
      // Rules in built-in chains (and in other tools' chains) that jump to ours go first.
      for (const l of lines) {
        const m = /^-A (\S+) (.*)$/.exec(l);
        if (!m || m[1]!.startsWith(prefix)) continue;
        if (!new RegExp(`-j ${prefix}`).test(m[2]!)) continue;
        await quiet(`${family} -t ${table} -D ${m[1]} ${m[2]}`);
      }
      for (const c of chains) await quiet(`${family} -t ${table} -F ${c}`);
      for (const c of chains) await quiet(`${family} -t ${table} -X ${c}`);
    }
}

/** Mount points at or under `dir`, deepest first. */
function mountsUnder(dir: string): string[] {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4])
    .filter((m): m is string => !!m && (m === dir || m.startsWith(`${dir}/`)))
    // mountinfo escapes spaces and the like as octal; the cluster's paths have none.
    .sort((a, b) => b.length - a.length);
  return [...new Set(mounts)];
}

/** Processes whose command line mentions `dir` (the cluster's daemons and containerd's shims). */
async function processesUsing(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.includes(dir)) pids.push(Number(entry));
    } catch {
      // gone already
    }
  }
  return pids;
}

/** Ends every container while containerd still answers: their shims and mounts go with them. */
async function removeContainers(socket: string): Promise<void> {
  if (!existsSync(socket)) return;
  const ctr = `ctr --address ${socket} -n k8s.io`;
  await quiet(
    `for t in $(${ctr} tasks ls -q); do ${ctr} tasks kill -s SIGKILL $t; done; sleep 0.5; ` +
      `for t in $(${ctr} tasks ls -q); do ${ctr} tasks delete -f $t; done; ` +
      `for c in $(${ctr} containers ls -q); do ${ctr} containers delete $c; done`,
  );
}

/** Removes everything a cluster recorded in `record` left on the machine. */
async function teardown(record: ClusterRecord): Promise<void> {
  const { dir } = record;
  if (!clusterDirPattern.test(dir)) {
    throw new Error(
      `${stateFile} names ${JSON.stringify(dir)}, not a cluster directory (/tmp/eddy-cluster-*): delete that file, then remove what it left by hand`,
    );
  }
  await removeContainers(join(dir, 'containerd.sock'));
  // With containerd gone (a killed run), runc still knows the containers under its root here:
  // their processes outlive the shims otherwise.
  for (const ns of existsSync(join(dir, 'runc')) ? readdirSync(join(dir, 'runc')) : []) {
    const root = join(dir, 'runc', ns);
    await quiet(
      `for c in $(runc --root '${root}' list -q); do runc --root '${root}' delete --force "$c"; done`,
    );
  }
  for (const pid of await processesUsing(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited meanwhile
    }
  }
  await sleep(200);
  for (const m of mountsUnder(dir)) await quiet(`umount -l '${m}'`);
  for (const p of record.createdPaths)
    for (const m of mountsUnder(p)) await quiet(`umount -l '${m}'`);
  const proxy = goBinaryPath(goBinaries.kubeProxy);
  if (existsSync(proxy)) await quiet(`'${proxy}' --cleanup`);
  for (const prefix of chainPrefixes) await removeChains(prefix);
  await quiet(`ip link del ${bridgeName}`);
  // The pods' cgroups, children first, where the run made the hierarchy.
  for (const cg of record.createdCgroups ?? []) {
    await quiet(`[ -d '${cg}' ] && find '${cg}' -depth -type d -exec rmdir {} +`);
  }
  for (const [path, value] of Object.entries(record.sysctls)) {
    await writeFile(path, value).catch(() => undefined);
  }
  // The kubelet links container logs here, pointing into its pod log directory.
  try {
    for (const f of await readdir('/var/log/containers')) {
      const link = join('/var/log/containers', f);
      if ((await readlink(link).catch(() => '')).startsWith(dir)) await rm(link, { force: true });
    }
  } catch {
    // no such directory
  }
  for (const p of record.createdPaths) await rm(p, { recursive: true, force: true });
  await rm(dir, { recursive: true, force: true });
  await rm(stateFile, { force: true });
}

/** Tears down what an earlier run left, when it did not get to do so itself. */
export async function removeLeftovers(): Promise<void> {
  if (existsSync(stateFile)) {
    let record: ClusterRecord;
    try {
      record = JSON.parse(await readFile(stateFile, 'utf8')) as ClusterRecord;
    } catch (err) {
      throw new Error(
        `${stateFile} cannot be read (${err instanceof Error ? err.message : String(err)}): delete it, then remove /tmp/eddy-cluster-* and the bridge ${bridgeName} by hand`,
      );
    }
    console.log(`removing a cluster an earlier run left in ${record.dir}`);
    await teardown(record);
  }
  // A bridge without a record is ours all the same (nothing else names one eddy0).
  await quiet(`ip link show ${bridgeName} >/dev/null 2>&1 && ip link del ${bridgeName}`);
}

/**
 * Refuses to start where another Kubernetes or CNI network is active, or where the cluster's
 * networks are in use: the teardown removes chains by name and the bridge takes the routes.
 */
async function checkHostIsFree(): Promise<void> {
  const chains = await chainsNamed(chainPrefixes);
  if (chains.length > 0) {
    throw new Error(
      `iptables chains of another Kubernetes or CNI network are present (${chains.slice(0, 3).join('; ')}${chains.length > 3 ? ', ...' : ''}): stop it, or run the cluster tests on a machine without one`,
    );
  }
  const routes = (await run('ip', ['-4', 'route', 'show']))
    .split('\n')
    .filter((l) => /^(10\.244\.|10\.96\.)/.test(l));
  if (routes.length > 0) {
    throw new Error(
      `the cluster's networks ${podCidr} and ${serviceCidr} are in use here (route ${routes[0]}): free them, or run the cluster tests on another machine`,
    );
  }
}

/** The pause image in the local Docker engine, from the compiled binary, unless present. */
async function ensurePauseImage(dir: string): Promise<void> {
  if (await hasImage(pauseImage)) return;
  const context = join(dir, 'pause-image');
  await mkdir(context, { recursive: true });
  await run('cp', [pauseBinary, join(context, 'pause')]);
  await writeFile(
    join(context, 'Dockerfile'),
    'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n',
  );
  await run(dockerCli, ['build', '-q', '-t', pauseImage, context], { timeoutMs: 120_000 });
}

const containerdConfig = (dir: string, socket: string) => `version = 2
root = "${dir}/containerd/root"
state = "${dir}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "${socket}"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "${dir}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${pauseImage}"
  # Root here lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj below the runtime's own,
  # which the kubelet asks for, so every sandbox would fail without this.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
        Root = "${dir}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${dir}/cni/net.d"
    max_conf_num = 1
`;

const cniConfig = (dir: string) =>
  JSON.stringify(
    {
      cniVersion: '0.4.0',
      name: 'eddy',
      plugins: [
        {
          type: 'bridge',
          bridge: bridgeName,
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: {
            type: 'host-local',
            dataDir: join(dir, 'cni', 'ipam'),
            ranges: [[{ subnet: podCidr, gateway: nodeIp }]],
            // Pods route only to the bridge's networks; nothing beyond the machine.
            routes: [{ dst: podCidr }, { dst: serviceCidr }],
          },
        },
        // dockerd's FORWARD policy is DROP; this lets the pods' own traffic through.
        { type: 'firewall', backend: 'iptables' },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    },
    null,
    2,
  );

const kubeletConfig = (
  dir: string,
  pki: string,
  socket: string,
  port: number,
  healthzPort: number,
) => `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${nodeIp}
port: ${port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${healthzPort}
tlsCertFile: ${pki}/kubelet.crt
tlsPrivateKeyFile: ${pki}/kubelet.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${pki}/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://${socket}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
podCIDR: ${podCidr}
podLogsDir: ${dir}/pod-logs
volumePluginDir: ${dir}/volume-plugins
resolvConf: /etc/resolv.conf
rotateCertificates: false
serializeImagePulls: false
registerNode: true
maxPods: 60
# Tests load the node a little and briefly: evict only when the machine is nearly full, and never
# collect images (they are imported, not pulled back).
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# The node's status as the tests wait on it: reported promptly.
nodeStatusUpdateFrequency: 2s
syncFrequency: 5s
fileCheckFrequency: 5s
`;

const kubeProxyConfig = (
  dir: string,
  healthzPort: number,
  metricsPort: number,
) => `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: ${dir}/kube-proxy.kubeconfig}
hostnameOverride: ${nodeName}
clusterCIDR: ${podCidr}
bindAddress: ${nodeIp}
healthzBindAddress: 127.0.0.1:${healthzPort}
metricsBindAddress: 127.0.0.1:${metricsPort}
# NodePorts only on the bridge's address: nothing is opened on the machine's other interfaces.
nodePortAddresses: ["${nodeIp}/32"]
# The machine's conntrack settings stay as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {syncPeriod: 30s, minSyncPeriod: 0s}
oomScoreAdj: 0
`;

/** A client certificate signed by the run's CA, as a kubeconfig for `server`. */
async function identity(kube: Kube, name: string, subject: string, path: string): Promise<void> {
  await issue(
    kube.pki,
    name,
    subject,
    'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n',
  );
  const [cert, key] = await Promise.all(
    [`${name}.crt`, `${name}.key`].map((f) => readFile(join(kube.pki, f), 'utf8')),
  );
  await writeFile(path, kubeconfigYaml(kube.server, kube.caPem, cert!, key!), { mode: 0o600 });
}

async function nodeReady(kc: k8s.KubeConfig): Promise<boolean> {
  const core = kc.makeApiClient(k8s.CoreV1Api);
  try {
    const node = await core.readNode({ name: nodeName });
    return !!node.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
  } catch {
    return false;
  }
}

/**
 * Starts the cluster and waits until the node is Ready and the default namespace can run pods
 * (its service account and root CA ConfigMap exist). `images` are copied from Docker first.
 */
export async function startCluster(options: { images?: string[] } = {}): Promise<Cluster> {
  const progress = startProgress('one-node cluster');
  await removeLeftovers();
  await checkHostIsFree();
  await mkdir(cacheRoot, { recursive: true });
  const dir = await mkdtemp('/tmp/eddy-cluster-');
  const record: ClusterRecord = { dir, sysctls: {}, createdPaths: [], createdCgroups: [] };
  for (const p of kubeletFixedPaths) if (!existsSync(p)) record.createdPaths.push(p);
  for (const cg of kubepodsCgroups()) if (!existsSync(cg)) record.createdCgroups!.push(cg);
  for (const path of [...Object.values(sysctlPaths), ...kubeletSysctls]) {
    if (existsSync(path)) record.sysctls[path] = (await readFile(path, 'utf8')).trim();
  }
  // Written whole or not at all: a run killed meanwhile leaves no half a record.
  await writeFile(`${stateFile}.partial`, JSON.stringify(record));
  await rename(`${stateFile}.partial`, stateFile);
  const socket = join(dir, 'containerd.sock');
  const processes: ManagedProcess[] = [];
  let kube: Kube | undefined;
  const stop = async () => {
    for (const p of [...processes].reverse()) {
      if (p.name !== 'containerd') await p.stop(5_000);
    }
    await removeContainers(socket);
    for (const p of processes) if (p.name === 'containerd') await p.stop(5_000);
    await kube?.stop();
    await teardown(record);
  };
  try {
    // The network: a bridge holding the node's address; Services routed onto it.
    progress.update(`bridge ${bridgeName} ${nodeIp}`);
    await sh(
      `ip link add ${bridgeName} type bridge && ip addr add ${nodeIp}/24 dev ${bridgeName} && ` +
        `ip link set ${bridgeName} up && ip route add ${serviceCidr} dev ${bridgeName}`,
    );
    await writeFile(sysctlPaths.forward, '1');
    if (existsSync(sysctlPaths.bridgeNf)) await writeFile(sysctlPaths.bridgeNf, '1');
    // The bridge's addresses answer only on the bridge and to this machine itself, whatever
    // other interface a packet for them arrives on.
    await sh(
      [
        'iptables -N EDDY-INPUT',
        'iptables -A EDDY-INPUT -i lo -j RETURN',
        `iptables -A EDDY-INPUT -i ${bridgeName} -j RETURN`,
        `iptables -A EDDY-INPUT -d ${podCidr} -j DROP`,
        `iptables -A EDDY-INPUT -d ${serviceCidr} -j DROP`,
        'iptables -I INPUT -j EDDY-INPUT',
      ].join(' && '),
    );

    progress.update('control plane');
    kube = await startKube({
      address: nodeIp,
      serviceCidr,
      parentDir: dir,
      extraSans: ['IP:10.96.0.1', 'DNS:kubernetes', 'DNS:kubernetes.default'],
      extraArgs: (pki) => [
        `--kubelet-client-certificate=${join(pki, 'apiserver-kubelet.crt')}`,
        `--kubelet-client-key=${join(pki, 'apiserver-kubelet.key')}`,
        `--kubelet-certificate-authority=${join(pki, 'ca.crt')}`,
        '--kubelet-preferred-address-types=InternalIP',
        '--allow-privileged=true',
        // The node's kubelet is authorized as a node (its own pods, Secrets they mount), and
        // may only change its own Node object.
        '--authorization-mode=Node,RBAC',
        '--enable-admission-plugins=NodeRestriction',
      ],
      preStart: async (pki) => {
        await issue(
          pki,
          'apiserver-kubelet',
          '/O=system:masters/CN=kube-apiserver-kubelet-client',
          'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n',
        );
      },
    });
    const pki = kube.pki;
    await issue(
      pki,
      'kubelet',
      `/CN=${nodeName}`,
      `subjectAltName=IP:${nodeIp},DNS:${nodeName}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n`,
    );
    await identity(
      kube,
      'node',
      `/O=system:nodes/CN=system:node:${nodeName}`,
      join(dir, 'kubelet.kubeconfig'),
    );
    await identity(
      kube,
      'controller-manager',
      '/CN=system:kube-controller-manager',
      join(dir, 'controller-manager.kubeconfig'),
    );
    await identity(
      kube,
      'scheduler',
      '/CN=system:kube-scheduler',
      join(dir, 'scheduler.kubeconfig'),
    );
    await identity(kube, 'kube-proxy', '/CN=system:kube-proxy', join(dir, 'kube-proxy.kubeconfig'));

    /** Starts one of the node's processes, its log in the run's directory. */
    const launch = (name: string, command: string, args: string[]) => {
      const p = startProcess(name, command, args, join(dir, `${name}.log`));
      processes.push(p);
      return p;
    };
    /** A control-plane component's flags to talk to the API server as itself. */
    const clientFlags = (kubeconfig: string) =>
      ['kubeconfig', 'authentication-kubeconfig', 'authorization-kubeconfig'].map(
        (flag) => `--${flag}=${join(dir, kubeconfig)}`,
      );

    progress.update('containerd');
    await mkdir(join(dir, 'cni', 'net.d'), { recursive: true });
    await writeFile(join(dir, 'cni', 'net.d', '10-eddy.conflist'), cniConfig(dir));
    await writeFile(join(dir, 'containerd.toml'), containerdConfig(dir, socket));
    const containerd = launch('containerd', '/usr/bin/containerd', [
      '--config',
      join(dir, 'containerd.toml'),
    ]);
    await waitUntilReady(
      containerd,
      async () => {
        await run('ctr', ['--address', socket, 'version'], { timeoutMs: 5_000 });
        return true;
      },
      30_000,
      200,
    );

    await ensureDockerd();
    await ensurePauseImage(dir);
    const images = [pauseImage, ...(options.images ?? [])];
    progress.update(`importing ${images.join(', ')}`);
    // One archive: layers the images share (the base image's) travel once.
    await sh(
      `'${dockerCli}' save ${images.map((t) => `'${t}'`).join(' ')} | ctr --address '${socket}' -n k8s.io images import -`,
      300_000,
    );

    progress.update('node');
    const [kubeletPort, kubeletHealthz, cmPort, schedPort, proxyHealthz, proxyMetrics] =
      (await freePorts(6)) as [number, number, number, number, number, number];
    await writeFile(
      join(dir, 'kubelet.yaml'),
      kubeletConfig(dir, pki, socket, kubeletPort, kubeletHealthz),
    );
    const kubelet = launch('kubelet', goBinaryPath(goBinaries.kubelet), [
      `--config=${join(dir, 'kubelet.yaml')}`,
      `--kubeconfig=${join(dir, 'kubelet.kubeconfig')}`,
      `--root-dir=${join(dir, 'kubelet')}`,
      `--cert-dir=${join(dir, 'kubelet-pki')}`,
      `--hostname-override=${nodeName}`,
      `--node-ip=${nodeIp}`,
      '--v=1',
    ]);
    const controllerManager = launch(
      'kube-controller-manager',
      goBinaryPath(goBinaries.kubeControllerManager),
      [
        ...clientFlags('controller-manager.kubeconfig'),
        '--bind-address=127.0.0.1',
        `--secure-port=${cmPort}`,
        '--leader-elect=false',
        '--use-service-account-credentials=true',
        `--root-ca-file=${join(pki, 'ca.crt')}`,
        `--service-account-private-key-file=${join(pki, 'sa.key')}`,
        `--service-cluster-ip-range=${serviceCidr}`,
        '--controllers=deployment-controller,replicaset-controller,statefulset-controller,' +
          'endpointslice-controller,garbage-collector-controller,namespace-controller,' +
          'serviceaccount-controller,' +
          'serviceaccount-token-controller,root-ca-certificate-publisher-controller,' +
          'pod-garbage-collector-controller,node-lifecycle-controller',
      ],
    );
    launch('kube-scheduler', goBinaryPath(goBinaries.kubeScheduler), [
      ...clientFlags('scheduler.kubeconfig'),
      '--bind-address=127.0.0.1',
      `--secure-port=${schedPort}`,
      '--leader-elect=false',
    ]);
    await writeFile(join(dir, 'kube-proxy.yaml'), kubeProxyConfig(dir, proxyHealthz, proxyMetrics));
    launch('kube-proxy', goBinaryPath(goBinaries.kubeProxy), [
      `--config=${join(dir, 'kube-proxy.yaml')}`,
    ]);

    const nodeStarted = Date.now();
    await waitUntilReady(kubelet, () => nodeReady(kube!.kubeConfig), 120_000, 250);
    const core = kube.kubeConfig.makeApiClient(k8s.CoreV1Api);
    await waitUntilReady(
      controllerManager,
      async () => {
        await core.readNamespacedServiceAccount({ namespace: 'default', name: 'default' });
        await core.readNamespacedConfigMap({ namespace: 'default', name: 'kube-root-ca.crt' });
        return true;
      },
      60_000,
      250,
    );
    progress.done(
      `node ${nodeName} Ready ${((Date.now() - nodeStarted) / 1000).toFixed(1)} s after its processes started`,
    );
    const kubeconfigPath = kube.kubeconfigPath;
    return {
      kube,
      kubeConfig: kube.kubeConfig,
      kubeconfigPath,
      dir,
      processes: [...kube.processes, ...processes],
      kubectl: (args, opts = {}) =>
        run(goBinaryPath(goBinaries.kubectl), args, {
          env: { ...process.env, KUBECONFIG: kubeconfigPath },
          timeoutMs: opts.timeoutMs ?? 60_000,
        }),
      stop,
    };
  } catch (err) {
    progress.fail(err instanceof Error ? err.message : String(err));
    for (const p of processes) {
      process.stderr.write(`\n----- ${p.name} log (tail) -----\n${tail(p.log(), 30)}\n`);
    }
    await stop();
    throw err;
  }
}
