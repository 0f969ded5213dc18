/** The project's images, built for real from its Dockerfiles on the local base image. */
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { GenericContainer } from 'testcontainers';
import {
  baseImageDir,
  baseImageTag,
  goBinaries,
  goBinaryPath,
  projectRoot,
  versions,
} from './components.js';
import { ensureDockerd, hasImage, importBaseImage } from './docker.js';

// The reaper's image would come from a container registry, which the tests do without; each
// container a suite starts is stopped by that suite.
process.env.TESTCONTAINERS_RYUK_DISABLED ||= 'true';

/** `docker build` of `context` (a target of its Dockerfile, when given) tagged `tag`. */
export async function buildImage(
  context: string,
  tag: string,
  args: Record<string, string>,
  target?: string,
): Promise<void> {
  const started = Date.now();
  const builder = GenericContainer.fromDockerfile(context).withBuildArgs(args);
  if (target) builder.withTarget(target);
  await builder.build(tag, { deleteOnExit: false });
  console.log(`built ${tag} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

/** The base image in the local Docker engine, imported from the provisioned root filesystem. */
async function ensureBaseImage(): Promise<void> {
  await ensureDockerd();
  if (!(await hasImage(baseImageTag))) await importBaseImage(join(baseImageDir, 'rootfs.tar'));
}

/** The runtime images of the runtimes behind the Runtime API, by runtime name. */
export interface RuntimeImages {
  'python3.11': string;
  java17: string;
  provided: string;
}

/** The tags a user's cluster runs (the operator's default `eddy/runtime:{runtime}`). */
export const runtimeImageTags: RuntimeImages = {
  'python3.11': 'eddy/runtime:python3.11',
  java17: 'eddy/runtime:java17',
  provided: 'eddy/runtime:provided',
};

/**
 * The runtime images of the root Dockerfile (targets runtime-python3.11, runtime-java17 and
 * runtime-provided) on the local base image. The builds reach apt, PyPI and Maven Central.
 */
export async function buildRuntimeImages(tags: Partial<RuntimeImages>): Promise<void> {
  await ensureBaseImage();
  for (const [runtime, tag] of Object.entries(tags)) {
    await buildImage(projectRoot, tag, { BASE_IMAGE: baseImageTag }, `runtime-${runtime}`);
  }
}

/**
 * A function image: `from` (a runtime image) with the files of `codeDir` in /var/task, owned by
 * root and readable (and, for a bootstrap, executable) by the runtime's user.
 */
export async function buildFunctionImage(tag: string, from: string, codeDir: string) {
  await writeFile(
    join(codeDir, 'Dockerfile'),
    ['ARG RUNTIME_IMAGE', 'FROM ${RUNTIME_IMAGE}', 'COPY . /var/task/', ''].join('\n'),
  );
  await writeFile(join(codeDir, '.dockerignore'), 'Dockerfile\n.dockerignore\n');
  await buildImage(codeDir, tag, { RUNTIME_IMAGE: from });
}

export interface ProjectImages {
  operator: string;
  runtime: string;
  /** Built FROM the runtime image when given. */
  thumbnail?: string;
}

/**
 * The operator and runtime images (targets of the root Dockerfile) and the thumbnail example's
 * image FROM that runtime image, on the local base image, under the given tags.
 */
export async function buildProjectImages(tags: ProjectImages): Promise<void> {
  await ensureBaseImage();
  await buildImage(projectRoot, tags.runtime, { BASE_IMAGE: baseImageTag }, 'runtime');
  await buildImage(projectRoot, tags.operator, { BASE_IMAGE: baseImageTag }, 'operator');
  if (tags.thumbnail) {
    await buildImage(resolve(projectRoot, 'examples', 'thumbnail'), tags.thumbnail, {
      RUNTIME_IMAGE: tags.runtime,
      NODE_IMAGE: baseImageTag,
    });
  }
}

/** The tag of the NATS image the one-node cluster runs (imported, never pulled). */
export const natsImage = `eddy.local/nats-server:${versions.natsServer}`;

/**
 * A NATS image for the one-node cluster: the harness's nats-server (built from the Go module
 * proxy at the pinned version) on the local base image, with `nats-server` on PATH as in the
 * official image, so the chart's StatefulSet runs it unchanged.
 */
export async function buildNatsImage(tag = natsImage): Promise<void> {
  await ensureBaseImage();
  const context = await mkdtemp(join(tmpdir(), 'eddy-nats-image-'));
  try {
    await copyFile(goBinaryPath(goBinaries.natsServer), join(context, 'nats-server'));
    await writeFile(
      join(context, 'Dockerfile'),
      [
        'ARG BASE_IMAGE',
        'FROM ${BASE_IMAGE}',
        'COPY nats-server /usr/local/bin/nats-server',
        'USER 1000:1000',
        'EXPOSE 4222 6222 8222',
        'ENTRYPOINT ["nats-server"]',
        '',
      ].join('\n'),
    );
    await buildImage(context, tag, { BASE_IMAGE: baseImageTag });
  } finally {
    await rm(context, { recursive: true, force: true });
  }
}
