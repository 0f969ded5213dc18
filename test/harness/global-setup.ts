/** Integration tests run the built entry points (`node dist/...`), so build them first. */
import { projectRoot } from './components.js';
import { run } from './proc.js';

export default async function setup(): Promise<void> {
  await run('npm', ['run', 'build', '--silent'], { cwd: projectRoot });
}
