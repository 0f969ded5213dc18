/** kinesalite, a Kinesis-compatible server, on 127.0.0.1 for the Kinesis source's tests. */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectRoot } from './components.js';
import { launchInDir, type ManagedProcess } from './proc.js';

export interface Kinesis {
  endpoint: string;
  region: string;
  /** kinesalite accepts any signed request; these are what clients sign with. */
  accessKeyId: string;
  secretAccessKey: string;
  processes: ManagedProcess[];
  stop(): Promise<void>;
}

export async function startKinesis(): Promise<Kinesis> {
  const dir = await mkdtemp(join(tmpdir(), 'eddy-kinesis-'));
  let port = 0;
  const { proc, stop } = await launchInDir(
    dir,
    'kinesalite',
    process.execPath,
    [join(projectRoot, 'test', 'harness', 'kinesalite-server.cjs')],
    {},
    async (p) => {
      const match = /listening on port (\d+)/.exec(p.log());
      if (match) port = Number(match[1]);
      return port > 0;
    },
    30_000,
    100,
  );
  return {
    endpoint: `http://127.0.0.1:${port}`,
    region: 'us-east-1',
    accessKeyId: 'eddy-test',
    secretAccessKey: 'eddy-test',
    processes: [proc],
    stop,
  };
}
