/**
 * A real control plane for tests: etcd + kube-apiserver on 127.0.0.1 with free ports, secure
 * serving under a CA made for the run, an admin kubeconfig, service-account tokens, and the
 * project's CRDs installed.
 */
import { mkdtemp, readFile, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import { request } from 'node:https';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import { goBinaries, goBinaryPath, projectRoot } from './components.js';
import { freePorts } from './ports.js';
import { run, startProcess, waitUntilReady, type ManagedProcess } from './proc.js';

export interface Kube {
  /** The audit log, when started with `audit: true`. */
  auditLog?: string;
  /** Stops the API server and starts it again on the same port and etcd (clients see it go away). */
  restartApiServer(): Promise<void>;
  /** Path of a kubeconfig for the admin identity (group system:masters). */
  kubeconfigPath: string;
  kubeConfig: k8s.KubeConfig;
  server: string;
  caPem: string;
  /** The run's CA (ca.crt, ca.key), service-account key (sa.key) and issued certificates. */
  pki: string;
  processes: ManagedProcess[];
  dir: string;
  stop(): Promise<void>;
}

const serviceAccountIssuer = 'https://kubernetes.default.svc';

async function openssl(dir: string, args: string[]): Promise<void> {
  await run('openssl', args, { cwd: dir });
}

export async function issue(
  dir: string,
  name: string,
  subject: string,
  extensions: string,
): Promise<void> {
  await openssl(dir, [
    'ecparam',
    '-name',
    'prime256v1',
    '-genkey',
    '-noout',
    '-out',
    `${name}.key`,
  ]);
  await openssl(dir, [
    'req',
    '-new',
    '-key',
    `${name}.key`,
    '-subj',
    subject,
    '-out',
    `${name}.csr`,
  ]);
  await writeFile(join(dir, `${name}.ext`), extensions);
  await openssl(dir, [
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    'ca.crt',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-days',
    '7',
    '-extfile',
    `${name}.ext`,
    '-out',
    `${name}.crt`,
  ]);
}

/** The CA, serving cert, admin client cert and service-account signing key for one run. */
async function makeCertificates(dir: string, extraSans: string[]): Promise<void> {
  await openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key']);
  await openssl(dir, [
    'req',
    '-x509',
    '-new',
    '-key',
    'ca.key',
    '-subj',
    '/CN=eddy-test-ca',
    '-days',
    '7',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
    '-out',
    'ca.crt',
  ]);
  await issue(
    dir,
    'apiserver',
    '/CN=kube-apiserver',
    `subjectAltName=${['IP:127.0.0.1', 'DNS:localhost', 'DNS:kubernetes.default.svc', ...extraSans].join(',')}\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n`,
  );
  await issue(
    dir,
    'admin',
    '/O=system:masters/CN=eddy-admin',
    'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n',
  );
  await openssl(dir, ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'sa.key']);
}

/** A GET with a 2 s timeout; with `tls`, over HTTPS with a client certificate. */
function get(
  url: string,
  tls?: { ca: string; cert: string; key: string },
): Promise<{ status: number; body: string }> {
  const send = tls ? request : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(url, { ...tls, timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

export function kubeconfigYaml(
  server: string,
  caPem: string,
  certPem: string,
  keyPem: string,
): string {
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: eddy-test',
    '  cluster:',
    `    server: ${server}`,
    `    certificate-authority-data: ${b64(caPem)}`,
    'users:',
    '- name: eddy-admin',
    '  user:',
    `    client-certificate-data: ${b64(certPem)}`,
    `    client-key-data: ${b64(keyPem)}`,
    'contexts:',
    '- name: eddy-test',
    '  context: {cluster: eddy-test, user: eddy-admin}',
    'current-context: eddy-test',
    '',
  ].join('\n');
}

/** Creates every CustomResourceDefinition in crds/ and waits until each is Established. */
export async function installCrds(
  kc: k8s.KubeConfig,
  crdDir = join(projectRoot, 'crds'),
): Promise<string[]> {
  const api = kc.makeApiClient(k8s.ApiextensionsV1Api);
  const names: string[] = [];
  for (const file of (await readdir(crdDir)).filter((f) => /\.ya?ml$/.test(f)).sort()) {
    for (const doc of k8s.loadAllYaml(await readFile(join(crdDir, file), 'utf8'))) {
      const crd = doc as k8s.V1CustomResourceDefinition;
      if (crd?.kind !== 'CustomResourceDefinition') continue;
      await api.createCustomResourceDefinition({ body: crd });
      names.push(crd.metadata!.name!);
    }
  }
  const deadline = Date.now() + 30_000;
  for (const name of names) {
    for (;;) {
      const crd = await api.readCustomResourceDefinition({ name });
      const established = crd.status?.conditions?.some(
        (c) => c.type === 'Established' && c.status === 'True',
      );
      if (established) break;
      if (Date.now() > deadline) throw new Error(`CRD ${name} was not Established within 30 s`);
      await sleep(100);
    }
  }
  return names;
}

/**
 * A KubeConfig that authenticates as a service account through a token from the TokenRequest
 * API, so a test runs code under exactly the RBAC that account is granted. The account is
 * created when it does not exist.
 */
export async function serviceAccountKubeConfig(
  kube: Kube,
  namespace: string,
  name: string,
): Promise<k8s.KubeConfig> {
  const core = kube.kubeConfig.makeApiClient(k8s.CoreV1Api);
  try {
    await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name } } });
  } catch (err) {
    if (!(err instanceof k8s.ApiException && err.code === 409)) throw err;
  }
  const request = await core.createNamespacedServiceAccountToken({
    namespace,
    name,
    body: { spec: { audiences: [serviceAccountIssuer], expirationSeconds: 3600 } },
  });
  const token = request.status?.token;
  if (!token) throw new Error(`no token issued for service account ${namespace}/${name}`);
  const kc = new k8s.KubeConfig();
  kc.loadFromOptions({
    clusters: [
      {
        name: 'eddy-test',
        server: kube.server,
        caData: Buffer.from(kube.caPem).toString('base64'),
      },
    ],
    users: [{ name: `${namespace}-${name}`, token }],
    contexts: [{ name: 'sa', cluster: 'eddy-test', user: `${namespace}-${name}` }],
    currentContext: 'sa',
  });
  return kc;
}

/** One line of the API server's audit log (Metadata level). */
export interface AuditEvent {
  verb: string;
  requestURI?: string;
  user: { username: string };
  objectRef?: { resource?: string; subresource?: string; namespace?: string; name?: string };
  responseStatus?: { code?: number };
  stage: string;
}

export interface KubeOptions {
  installCrds?: boolean;
  audit?: boolean;
  /**
   * The address the API server listens on and advertises (the `kubernetes` Service's endpoint);
   * 127.0.0.1 unless a node's pods must reach it.
   */
  address?: string;
  /** Service ClusterIP range. */
  serviceCidr?: string;
  /** More subjectAltName entries for the serving certificate (`IP:...`, `DNS:...`). */
  extraSans?: string[];
  /** More kube-apiserver flags; `pki` is the directory with the run's CA and keys. */
  extraArgs?: (pki: string) => string[];
  /** Parent of the run's directory (default: the system's temp dir). */
  parentDir?: string;
  /** Runs once the run's certificates exist, before the API server starts (to issue more). */
  preStart?: (pki: string) => Promise<void>;
}

export async function startKube(options: KubeOptions = {}): Promise<Kube> {
  const dir = await mkdtemp(join(options.parentDir ?? tmpdir(), 'eddy-kube-'));
  const address = options.address ?? '127.0.0.1';
  const processes: ManagedProcess[] = [];
  const stop = async () => {
    for (const p of [...processes].reverse()) await p.stop();
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const pki = join(dir, 'pki');
    await mkdir(pki);
    await makeCertificates(pki, [
      ...(address === '127.0.0.1' ? [] : [`IP:${address}`]),
      ...(options.extraSans ?? []),
    ]);
    await options.preStart?.(pki);
    const [etcdClient, etcdPeer, securePort] = (await freePorts(3)) as [number, number, number];

    const etcdUrl = `http://127.0.0.1:${etcdClient}`;
    const peerUrl = `http://127.0.0.1:${etcdPeer}`;
    const etcd = startProcess(
      'etcd',
      goBinaryPath(goBinaries.etcd),
      [
        '--name',
        'eddy-test',
        '--data-dir',
        join(dir, 'etcd'),
        '--listen-client-urls',
        etcdUrl,
        '--advertise-client-urls',
        etcdUrl,
        '--listen-peer-urls',
        peerUrl,
        '--initial-advertise-peer-urls',
        peerUrl,
        '--initial-cluster',
        `eddy-test=${peerUrl}`,
        // Test data is thrown away; skipping fsync keeps the disk from being the bottleneck.
        '--unsafe-no-fsync',
      ],
      join(dir, 'etcd.log'),
    );
    processes.push(etcd);
    await waitUntilReady(
      etcd,
      async () => (await get(`${etcdUrl}/health`)).body.includes('"health":"true"'),
      30_000,
    );

    const auditArgs: string[] = [];
    if (options.audit) {
      // Every request once, when its response is complete: enough to count who asked for what.
      await writeFile(
        join(dir, 'audit-policy.yaml'),
        'apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived, ResponseStarted, Panic]\nrules:\n- level: Metadata\n',
      );
      auditArgs.push(
        `--audit-policy-file=${join(dir, 'audit-policy.yaml')}`,
        `--audit-log-path=${join(dir, 'audit.log')}`,
        '--audit-log-mode=blocking',
        '--audit-log-maxsize=0',
      );
    }
    let apiserverArgs = [
      ...auditArgs,
      `--etcd-servers=${etcdUrl}`,
      `--bind-address=${address}`,
      `--advertise-address=${address}`,
      `--secure-port=${securePort}`,
      `--cert-dir=${join(dir, 'certs')}`,
      `--tls-cert-file=${join(pki, 'apiserver.crt')}`,
      `--tls-private-key-file=${join(pki, 'apiserver.key')}`,
      `--client-ca-file=${join(pki, 'ca.crt')}`,
      '--authorization-mode=RBAC',
      `--service-account-issuer=${serviceAccountIssuer}`,
      `--service-account-key-file=${join(pki, 'sa.key')}`,
      `--service-account-signing-key-file=${join(pki, 'sa.key')}`,
      `--api-audiences=${serviceAccountIssuer}`,
      // Without a node, addresses are only bookkept (nothing routes to them): room for thousands
      // of Services.
      `--service-cluster-ip-range=${options.serviceCidr ?? '10.96.0.0/16'}`,
      '--profiling=false',
    ];
    // An extra flag replaces the default of the same name (repeated list flags would add up).
    const extra = options.extraArgs?.(pki) ?? [];
    const flagName = (a: string) => a.split('=')[0];
    const overridden = new Set(extra.map(flagName));
    apiserverArgs = [...apiserverArgs.filter((a) => !overridden.has(flagName(a))), ...extra];
    const server = `https://${address}:${securePort}`;
    const [caPem, certPem, keyPem] = (await Promise.all(
      ['ca.crt', 'admin.crt', 'admin.key'].map((f) => readFile(join(pki, f), 'utf8')),
    )) as [string, string, string];
    const startApiServer = async () => {
      const apiserver = startProcess(
        'kube-apiserver',
        goBinaryPath(goBinaries.kubeApiserver),
        apiserverArgs,
        join(dir, 'kube-apiserver.log'),
      );
      processes.push(apiserver);
      await waitUntilReady(
        apiserver,
        async () =>
          (await get(`${server}/readyz`, { ca: caPem, cert: certPem, key: keyPem })).status === 200,
        90_000,
        250,
      );
      return apiserver;
    };
    let apiserver = await startApiServer();
    const restartApiServer = async () => {
      await apiserver.stop();
      processes.splice(processes.indexOf(apiserver), 1);
      apiserver = await startApiServer();
    };

    const kubeconfigPath = join(dir, 'kubeconfig');
    await writeFile(kubeconfigPath, kubeconfigYaml(server, caPem, certPem, keyPem), {
      mode: 0o600,
    });
    const kubeConfig = new k8s.KubeConfig();
    kubeConfig.loadFromFile(kubeconfigPath);
    if (options.installCrds !== false) await installCrds(kubeConfig);
    const auditLog = options.audit ? join(dir, 'audit.log') : undefined;
    return {
      kubeconfigPath,
      kubeConfig,
      server,
      caPem,
      pki,
      processes,
      dir,
      stop,
      auditLog,
      restartApiServer,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
