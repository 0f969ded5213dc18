/** examples/thumbnail/function.yaml as the local stack runs it elsewhere than the repository's root. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { projectRoot } from './components.js';

/** Another store than the example's (its endpoint and key pair). */
export interface ThumbnailStore {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
}

/**
 * The manifest with the code's folder absolute (for a local stack started in a scratch
 * directory). For the local stack's own store (`local`) it names the store as it is,
 * `http://eddy-local-s3`, which the stack maps to whichever port its store has; otherwise it
 * names `store`, with its own key pair, as a cluster user edits it.
 */
export async function thumbnailManifest(store: 'local' | ThumbnailStore): Promise<string> {
  const dir = join(projectRoot, 'examples', 'thumbnail');
  let manifest = await readFile(join(dir, 'function.yaml'), 'utf8');
  if (store !== 'local') {
    if (!manifest.includes('http://eddy-local-s3')) {
      throw new Error('examples/thumbnail/function.yaml no longer names http://eddy-local-s3');
    }
    manifest = manifest
      .replaceAll('http://eddy-local-s3', store.endpoint)
      .replaceAll(/\b(value|accessKeyId): eddy\b(?!secret)/g, `$1: ${store.accessKeyId}`)
      .replaceAll(/\b(value|secretAccessKey): eddysecret\b/g, `$1: ${store.secretAccessKey}`);
  }
  manifest = manifest.replace(
    'eddy.dev/local-code-dir: examples/thumbnail',
    `eddy.dev/local-code-dir: ${dir}`,
  );
  if (!manifest.includes(`eddy.dev/local-code-dir: ${dir}`)) {
    throw new Error('examples/thumbnail/function.yaml no longer has its local-code-dir annotation');
  }
  return manifest;
}
