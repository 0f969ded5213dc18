import { describe, expect, it } from 'vitest';
import type { _Record as StreamRecord } from '@aws-sdk/client-dynamodb-streams';
import { dynamodbKind, lambdaDynamoDBRecord, onFailureEvent } from './dynamodb.js';
import { EventFilter } from './event-filter.js';
import type { StreamOrigin } from './kinesis-batch.js';

const origin: StreamOrigin = {
  shardId: 'shardId-00000001541626099285-f35f62ef',
  streamArn:
    'arn:aws:dynamodb:us-east-1:123456789012:table/ExampleTableWithStream/stream/2015-06-27T00:48:05.899',
  region: 'us-east-1',
  identity: 'system:serviceaccount:shop:orders',
};

/** The MODIFY record of AWS SAM CLI's sample event (`sam local generate-event dynamodb update`), as GetRecords returns it. */
const modify: StreamRecord = {
  eventID: 'c81e728d9d4c2f636f067f89cc14862c',
  eventName: 'MODIFY',
  eventVersion: '1.1',
  eventSource: 'aws:dynamodb',
  awsRegion: 'us-east-1',
  dynamodb: {
    Keys: { Id: { N: '101' } },
    NewImage: { Message: { S: 'This item has changed' }, Id: { N: '101' } },
    OldImage: { Message: { S: 'New item!' }, Id: { N: '101' } },
    ApproximateCreationDateTime: new Date(1428537600_000),
    SequenceNumber: '4421584500000000017450439092',
    SizeBytes: 59,
    StreamViewType: 'NEW_AND_OLD_IMAGES',
  },
};

/** The same record in the sample event the handler gets. */
const sample = {
  eventID: 'c81e728d9d4c2f636f067f89cc14862c',
  eventName: 'MODIFY',
  eventVersion: '1.1',
  eventSource: 'aws:dynamodb',
  awsRegion: 'us-east-1',
  dynamodb: {
    Keys: { Id: { N: '101' } },
    NewImage: { Message: { S: 'This item has changed' }, Id: { N: '101' } },
    OldImage: { Message: { S: 'New item!' }, Id: { N: '101' } },
    ApproximateCreationDateTime: 1428537600,
    SequenceNumber: '4421584500000000017450439092',
    SizeBytes: 59,
    StreamViewType: 'NEW_AND_OLD_IMAGES',
  },
  eventSourceARN:
    'arn:aws:dynamodb:us-east-1:123456789012:table/ExampleTableWithStream/stream/2015-06-27T00:48:05.899',
};

describe("Lambda's DynamoDB event", () => {
  it("shapes a record as AWS SAM CLI's sample event has it, keys in its order", () => {
    const record = lambdaDynamoDBRecord(modify, origin);
    expect(record).toEqual(sample);
    expect(JSON.stringify(record)).toBe(JSON.stringify(sample));
  });

  it('writes binary attributes as base64 and nested ones through, and leaves out absent images', () => {
    const record = lambdaDynamoDBRecord(
      {
        eventName: 'REMOVE',
        dynamodb: {
          Keys: { Id: { B: Buffer.from('key') } },
          OldImage: {
            Tags: { BS: [Buffer.from('a'), Buffer.from('b')] },
            Meta: {
              M: { Blob: { B: Buffer.from('x') }, On: { BOOL: true }, None: { NULL: true } },
            },
            List: { L: [{ N: '1' }, { SS: ['a', 'b'] }] },
          },
          SequenceNumber: '1',
          SizeBytes: 10,
          StreamViewType: 'OLD_IMAGE',
        },
      },
      origin,
    ) as { dynamodb: Record<string, unknown> };
    expect(record.dynamodb.NewImage).toBeUndefined();
    expect(record.dynamodb.Keys).toEqual({ Id: { B: 'a2V5' } });
    expect(record.dynamodb.OldImage).toEqual({
      Tags: { BS: ['YQ==', 'Yg=='] },
      Meta: { M: { Blob: { B: 'eA==' }, On: { BOOL: true }, None: { NULL: true } } },
      List: { L: [{ N: '1' }, { SS: ['a', 'b'] }] },
    });
  });

  it('filters on the record the handler would get, numbers included', () => {
    const filter = new EventFilter(
      [
        '{"eventName": ["MODIFY"], "dynamodb": {"NewImage": {"Id": {"N": [{"numeric": [">", 100]}]}}}}',
      ],
      dynamodbKind.matchOptions,
    );
    expect(filter.matches(lambdaDynamoDBRecord(modify, origin))).toBe(true);
    expect(filter.matches(lambdaDynamoDBRecord({ ...modify, eventName: 'INSERT' }, origin))).toBe(
      false,
    );
  });

  it("dead-letters a batch as Lambda's on-failure record: the shard and sequence range, not the data", () => {
    const shaped = (seq: string, at: number) => ({
      sequenceNumber: seq,
      arrivedAt: at,
      json: '{"secret":"data"}',
      bytes: 17,
    });
    const event = onFailureEvent(
      [shaped('100', 1_000), shaped('101', 2_000), shaped('102', 3_000)],
      origin,
      'orders',
    );
    expect(event.type).toBe('dev.eddy.dynamodb.batch');
    expect(event.id).toBe(`${origin.shardId}:100:3`);
    expect(JSON.parse(event.body.toString())).toEqual({
      DDBStreamBatchInfo: {
        shardId: origin.shardId,
        startSequenceNumber: '100',
        endSequenceNumber: '102',
        approximateArrivalOfFirstRecord: '1970-01-01T00:00:01.000Z',
        approximateArrivalOfLastRecord: '1970-01-01T00:00:03.000Z',
        batchSize: 3,
        streamArn: origin.streamArn,
      },
    });
    expect(event.body.toString()).not.toContain('secret');
  });
});
