import { describe, expect, it } from 'vitest';
import {
  CreateStreamCommand,
  GetRecordsCommand,
  GetShardIteratorCommand,
  KinesisClient,
  PutRecordCommand,
  waitUntilStreamExists,
} from '@aws-sdk/client-kinesis';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { startKinesis } from '../harness/kinesis.js';
import { canRun, useComponent } from '../harness/suite.js';

describe.skipIf(!canRun('kinesis'))('kinesalite', () => {
  const kinesis = useComponent(() => startKinesis());

  it('puts and gets a record', async () => {
    const k = kinesis();
    const client = new KinesisClient({
      endpoint: k.endpoint,
      region: k.region,
      credentials: { accessKeyId: k.accessKeyId, secretAccessKey: k.secretAccessKey },
      // The Kinesis client defaults to HTTP/2; kinesalite speaks HTTP/1.1.
      requestHandler: new NodeHttpHandler(),
    });
    await client.send(new CreateStreamCommand({ StreamName: 'smoke', ShardCount: 1 }));
    await waitUntilStreamExists({ client, minDelay: 1, maxWaitTime: 20 }, { StreamName: 'smoke' });
    const put = await client.send(
      new PutRecordCommand({
        StreamName: 'smoke',
        PartitionKey: 'k',
        Data: Buffer.from('hello eddy'),
      }),
    );
    const it = await client.send(
      new GetShardIteratorCommand({
        StreamName: 'smoke',
        ShardId: put.ShardId!,
        ShardIteratorType: 'TRIM_HORIZON',
      }),
    );
    const got = await client.send(new GetRecordsCommand({ ShardIterator: it.ShardIterator! }));
    expect(got.Records?.map((r) => Buffer.from(r.Data!).toString())).toEqual(['hello eddy']);
    expect(got.Records?.[0]?.SequenceNumber).toBe(put.SequenceNumber);
    client.destroy();
  });
});
