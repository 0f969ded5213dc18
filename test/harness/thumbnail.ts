/** examples/thumbnail/function.yaml as the local stack runs it elsewhere than the repository's root. */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { projectRoot } from './components.js';

/**
 * The manifest as it is, but with the S3 store on `s3Port` and the code's folder absolute (for a
 * local stack started in a scratch directory).
 */
export async function thumbnailManifest(s3Port: number): Promise<string> {
  const dir = join(projectRoot, 'examples', 'thumbnail');
  const manifest = (await readFile(join(dir, 'function.yaml'), 'utf8'))
    .replaceAll('127.0.0.1:9000', `127.0.0.1:${s3Port}`)
    .replace('eddy.dev/local-code-dir: examples/thumbnail', `eddy.dev/local-code-dir: ${dir}`);
  if (!manifest.includes(`eddy.dev/local-code-dir: ${dir}`)) {
    throw new Error('examples/thumbnail/function.yaml no longer has its local-code-dir annotation');
  }
  return manifest;
}
