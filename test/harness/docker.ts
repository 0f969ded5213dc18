/** The Docker engine for image tests: Debian's dockerd, started here when it is not running. */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  baseImageDir,
  baseImageTag,
  cacheRoot,
  hostCaMarker,
  hostCaPath,
  versions,
} from './components.js';
import { run } from './proc.js';

/** Debian's client matches Debian's engine; a newer client elsewhere on PATH also works. */
export const dockerCli = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
export const dockerdLog = join(cacheRoot, 'dockerd.log');
/** Written when the harness starts dockerd, so CI can stop the daemon it started. */
export const dockerdPidFile = join(cacheRoot, 'dockerd.pid');

export async function dockerRunning(): Promise<boolean> {
  try {
    await run(dockerCli, ['info', '--format', '{{.ServerVersion}}'], { timeoutMs: 10_000 });
    return true;
  } catch {
    return false;
  }
}

/**
 * Starts dockerd in the background (it outlives this process, as a system daemon would) unless
 * one already answers, and waits up to 60 s for it.
 */
export async function ensureDockerd(): Promise<void> {
  if (await dockerRunning()) return;
  mkdirSync(cacheRoot, { recursive: true });
  const log = openSync(dockerdLog, 'a');
  const child = spawn('dockerd', [], { detached: true, stdio: ['ignore', log, log] });
  let failed: string | undefined;
  child.on('error', (err) => (failed = err.message));
  child.on('exit', (code) => (failed = `exited with code ${code}`));
  child.unref();
  if (child.pid) writeFileSync(dockerdPidFile, String(child.pid));
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (failed) throw new Error(`dockerd ${failed}; see ${dockerdLog}`);
    if (await dockerRunning()) return;
    await sleep(250);
  }
  throw new Error(`dockerd did not answer within 60 s; see ${dockerdLog}`);
}

/** Label that says which provisioned root filesystem an image was imported from. */
const provenanceLabel = 'dev.eddy.harness.rootfs';
const provenance = basename(baseImageDir);

/** True when `tag` exists and, for the base image, was imported from the current root filesystem. */
export async function hasImage(tag: string): Promise<boolean> {
  try {
    const label = await run(dockerCli, [
      'image',
      'inspect',
      '--format',
      `{{index .Config.Labels "${provenanceLabel}"}}`,
      tag,
    ]);
    return tag !== baseImageTag || label.trim() === provenance;
  } catch {
    return false;
  }
}

/** Imports the provisioned root filesystem under the tag the project's Dockerfile names. */
export async function importBaseImage(rootfsTar: string): Promise<void> {
  const caEnv = existsSync(join(dirname(rootfsTar), hostCaMarker))
    ? ['--change', `ENV NODE_EXTRA_CA_CERTS=/${hostCaPath}`]
    : [];
  await run(dockerCli, [
    'import',
    ...caEnv,
    '--change',
    'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    '--change',
    `ENV NODE_VERSION=${versions.node}`,
    '--change',
    'CMD ["node"]',
    '--change',
    `LABEL ${provenanceLabel}=${provenance}`,
    rootfsTar,
    baseImageTag,
  ]);
}
