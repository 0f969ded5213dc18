/**
 * moto's server, an AWS-compatible server, on 127.0.0.1 for the DynamoDB source's tests: DynamoDB
 * and DynamoDB Streams (ListStreams, DescribeStream, GetShardIterator, GetRecords). Runs from the
 * virtual environment `npm run test:setup moto` makes.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { motoPython, projectRoot } from './components.js';
import { launchInDir, type ManagedProcess } from './proc.js';

export interface Moto {
  endpoint: string;
  region: string;
  /** moto accepts any signed request; these are what clients sign with. */
  accessKeyId: string;
  secretAccessKey: string;
  processes: ManagedProcess[];
  stop(): Promise<void>;
}

export async function startMoto(): Promise<Moto> {
  const dir = await mkdtemp(join(tmpdir(), 'eddy-moto-'));
  let port = 0;
  const { proc, stop } = await launchInDir(
    dir,
    'moto',
    motoPython,
    ['-u', join(projectRoot, 'test', 'harness', 'moto-server.py')],
    {},
    async (p) => {
      const match = /listening on port (\d+)/.exec(p.log());
      if (match) port = Number(match[1]);
      return port > 0;
    },
    60_000,
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
