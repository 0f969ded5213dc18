/**
 * Where a local replica's code comes from: inline code and ConfigMap code are written to disk
 * (one directory per content, so a replica never sees files change under it), a Function
 * annotated with `eddy.dev/local-code-dir` runs from that directory as it is, and an image
 * alone cannot run as a local process.
 */
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, statSync } from 'node:fs';
import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { EddyFunction } from '../api/types.js';
import { CannotRun, keyOf } from './platform.js';

/** Runs a Function from a directory of this machine (an image-based Function's code, locally). */
export const localCodeDirAnnotation = 'eddy.dev/local-code-dir';

/** Reads a ConfigMap's data in a namespace, or undefined when there is no such ConfigMap. */
export type ConfigMapReader = (
  namespace: string,
  name: string,
) => Record<string, string> | undefined;

export type CodeSource =
  /** Run from this directory as it is. */
  | { kind: 'dir'; dir: string }
  /** Write these files (name -> content) and run from there; `hash` names their content. */
  | { kind: 'files'; files: Record<string, string>; hash: string };

function contentHash(files: Record<string, string>): string {
  const h = createHash('sha256');
  for (const name of Object.keys(files).sort()) h.update(`${name}\0${files[name]}\0`);
  return h.digest('hex').slice(0, 16);
}

/**
 * The code a local replica of `fn` runs. Throws an Error a user can act on when the Function
 * cannot run locally: only an image, a missing ConfigMap or directory.
 */
export function codeSource(fn: EddyFunction, configMaps?: ConfigMapReader): CodeSource {
  const key = keyOf(fn);
  // The annotation wins: it is the local stack's explicit answer to "where is this code here".
  const annotated = fn.metadata.annotations?.[localCodeDirAnnotation];
  if (annotated !== undefined && annotated !== '') {
    const dir = resolve(annotated);
    if (!existsSync(dir) || !statSync(dir).isDirectory()) {
      throw new CannotRun(
        `Function ${key} cannot run locally: its annotation ${localCodeDirAnnotation} names ${dir}, which is not a directory`,
      );
    }
    return { kind: 'dir', dir };
  }
  const code = fn.spec.code;
  if (code?.inline !== undefined) {
    const files = { 'index.mjs': code.inline };
    return { kind: 'files', files, hash: contentHash(files) };
  }
  if (code?.configMap?.name) {
    const name = code.configMap.name;
    const data = configMaps?.(fn.metadata.namespace, name);
    if (!data) {
      throw new CannotRun(
        `Function ${key} cannot run locally: its code is in ConfigMap ${fn.metadata.namespace}/${name}, which the local stack does not have`,
      );
    }
    for (const file of Object.keys(data)) {
      // ConfigMap keys are file names; never let one climb out of the code directory.
      if (file === '' || file === '.' || file === '..' || /[/\\]/.test(file)) {
        throw new CannotRun(
          `Function ${key} cannot run locally: ConfigMap ${fn.metadata.namespace}/${name} has a key ${JSON.stringify(file)} that is not a file name`,
        );
      }
    }
    return { kind: 'files', files: { ...data }, hash: contentHash(data) };
  }
  const what = fn.spec.image ? `only an image (${fn.spec.image})` : 'no code';
  throw new CannotRun(
    `Function ${key} cannot run locally: it names ${what}; set the annotation ${localCodeDirAnnotation} to the directory holding its code, or use spec.code.inline or spec.code.configMap`,
  );
}

/**
 * Writes `files` into `<functionDir>/<hash>` unless it is there already, and returns that
 * directory. The files go to a temporary directory renamed into place, so a directory that
 * exists is complete. Callers serialise calls for the same `functionDir`.
 */
export async function writeCode(
  functionDir: string,
  source: Extract<CodeSource, { kind: 'files' }>,
): Promise<string> {
  const dir = join(functionDir, source.hash);
  if (existsSync(dir)) return dir;
  const tmp = join(functionDir, `.tmp-${randomUUID()}`);
  await mkdir(tmp, { recursive: true });
  try {
    for (const [name, content] of Object.entries(source.files)) {
      await writeFile(join(tmp, name), content);
    }
    await rename(tmp, dir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
  return dir;
}

/** Removes the code directories under `functionDir` other than those in `keep`. */
export async function removeCodeExcept(functionDir: string, keep: Set<string>): Promise<void> {
  let entries: string[];
  try {
    entries = await readdir(functionDir);
  } catch {
    return;
  }
  for (const entry of entries) {
    const dir = join(functionDir, entry);
    if (!keep.has(dir)) await rm(dir, { recursive: true, force: true });
  }
}
