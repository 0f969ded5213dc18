/** Integration tests run the built entry points (`node dist/...`), so build them first. */
import { projectRoot } from './components.js';
import { run } from './proc.js';

export default async function setup(): Promise<void> {
  for (const part of ['runtime', 'operator']) {
    await run(
      process.execPath,
      [`${projectRoot}/node_modules/typescript/bin/tsc`, '-p', `${part}/tsconfig.json`],
      {
        cwd: projectRoot,
      },
    );
  }
}
