/** `npm run dashboard`: writes charts/eddy/dashboards/eddy.json from dashboards/eddy.ts. */
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, relative } from 'node:path';
import { dashboardFile, dashboardJson } from './eddy.js';

await mkdir(dirname(dashboardFile), { recursive: true });
await writeFile(dashboardFile, await dashboardJson());
console.log(`wrote ${relative(process.cwd(), dashboardFile)}`);
