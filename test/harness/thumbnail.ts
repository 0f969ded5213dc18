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
 * The manifest as it is, but with the S3 store on `s3Port` of 127.0.0.1, or `store` with its own
 * key pair, and the code's folder absolute (for a local stack started in a scratch directory).
 */
export async function thumbnailManifest(store: number | ThumbnailStore): Promise<string> {
  const dir = join(projectRoot, 'examples', 'thumbnail');
  let manifest = await readFile(join(dir, 'function.yaml'), 'utf8');
  if (typeof store === 'number') {
    manifest = manifest.replaceAll('127.0.0.1:9000', `127.0.0.1:${store}`);
  } else {
    manifest = manifest
      .replaceAll('http://127.0.0.1:9000', store.endpoint)
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
