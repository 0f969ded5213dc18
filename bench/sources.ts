/**
 * `npm run bench:sources`: the event sources, each beside a baseline measured in the same run.
 *   1. S3: upload-to-handler-start latency through MinIO notifications (warm), against MinIO
 *      posting to a bare receiver;
 *   2. Kinesis: records/s through a no-op function, against raw GetRecords from the same
 *      kinesalite;
 *   3. DynamoDB Streams: records/s through a no-op function, against raw GetRecords from the
 *      same moto server;
 *   4. schedules: 1,000 triggers due in the same second, the p99 lag of their fires, against
 *      1,000 plain timers due at the same instant;
 * Prints the CPU model: ratios differ from one machine to another.
 */
import { machine } from './machine.js';
import { benchDynamoDB } from './sources/dynamodb.js';
import { benchKinesis } from './sources/kinesis.js';
import { benchS3 } from './sources/s3.js';
import { benchSchedule } from './sources/schedule.js';

// The AWS SDK warns on every client that Node 20 support ends; the project targets Node 20.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const began = performance.now();
const say = (line: string) =>
  console.log(`[${((performance.now() - began) / 1000).toFixed(1)} s] ${line}`);

const parts: Array<[string, (say: (line: string) => void) => Promise<string[]>]> = [
  ['S3', benchS3],
  ['Kinesis', () => benchKinesis()],
  ['DynamoDB', () => benchDynamoDB()],
  ['schedules', () => benchSchedule()],
];

const results: string[] = [];
let failed = false;
for (const [name, run] of parts) {
  try {
    results.push(...(await run(say)));
  } catch (err) {
    failed = true;
    results.push(
      `${name}: failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
    );
  }
}
console.log(`\nbench:sources on ${machine()}`);
for (const line of results) console.log(line);
process.exit(failed ? 1 : 0);
