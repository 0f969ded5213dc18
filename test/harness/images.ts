/** The project's images, built for real from its Dockerfiles on the local base image. */
import { join, resolve } from 'node:path';
import { GenericContainer } from 'testcontainers';
import { baseImageDir, baseImageTag, projectRoot } from './components.js';
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

export interface ProjectImages {
  operator: string;
  runtime: string;
  thumbnail: string;
}

/**
 * The operator and runtime images (targets of the root Dockerfile) and the thumbnail example's
 * image FROM that runtime image, on the local base image, under the given tags.
 */
export async function buildProjectImages(tags: ProjectImages): Promise<void> {
  await ensureDockerd();
  if (!(await hasImage(baseImageTag))) await importBaseImage(join(baseImageDir, 'rootfs.tar'));
  await buildImage(projectRoot, tags.runtime, { BASE_IMAGE: baseImageTag }, 'runtime');
  await buildImage(projectRoot, tags.operator, { BASE_IMAGE: baseImageTag }, 'operator');
  await buildImage(resolve(projectRoot, 'examples', 'thumbnail'), tags.thumbnail, {
    RUNTIME_IMAGE: tags.runtime,
    NODE_IMAGE: baseImageTag,
  });
}
