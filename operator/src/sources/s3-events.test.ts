import { describe, expect, it } from 'vitest';
import {
  decodeS3Key,
  encodeS3Key,
  eventMatches,
  InvalidS3Body,
  parseNotification,
  recordMatches,
  s3CloudEvent,
} from './s3-events.js';
import { desiredEntry, sameEntry, withEntry } from './s3.js';

const minioBody = {
  EventName: 's3:ObjectCreated:Put',
  Key: 'photos/holiday photos/beach.jpg',
  Records: [
    {
      eventVersion: '2.0',
      eventSource: 'minio:s3',
      awsRegion: '',
      eventTime: '2026-11-27T10:00:00.000Z',
      eventName: 's3:ObjectCreated:Put',
      responseElements: { 'x-amz-request-id': '187A', 'x-minio-origin-endpoint': 'http://m' },
      s3: {
        s3SchemaVersion: '1.0',
        configurationId: 'Config',
        bucket: { name: 'photos', arn: 'arn:aws:s3:::photos' },
        object: { key: 'holiday+photos%2Fbeach.jpg', size: 3, eTag: 'abc', sequencer: '1' },
      },
    },
  ],
};

describe('S3 notification bodies', () => {
  it("normalise MinIO's records to AWS's shape", () => {
    const [r] = parseNotification(minioBody, 'us-east-1');
    expect(r).toMatchObject({
      eventSource: 'aws:s3',
      awsRegion: 'us-east-1',
      eventName: 'ObjectCreated:Put',
      s3: { bucket: { name: 'photos' }, object: { key: 'holiday+photos/beach.jpg', size: 3 } },
    });
    // Fields Eddy does not read travel along.
    expect(r!.responseElements?.['x-amz-request-id']).toBe('187A');
  });

  it("keep AWS's records as they are", () => {
    const aws = {
      Records: [
        {
          eventVersion: '2.1',
          eventSource: 'aws:s3',
          awsRegion: 'eu-west-1',
          eventTime: '2026-11-27T10:00:00.000Z',
          eventName: 'ObjectRemoved:Delete',
          s3: { bucket: { name: 'b' }, object: { key: 'a/b+c.txt' } },
        },
      ],
    };
    expect(parseNotification(aws, 'us-east-1')).toEqual(aws.Records);
  });

  it('have no records in a test event', () => {
    expect(parseNotification({ Service: 'Amazon S3', Event: 's3:TestEvent' }, 'x')).toEqual([]);
  });

  it.each([
    [null, 'must be a JSON object'],
    [{ Records: 'x' }, 'no Records array'],
    [{ Records: [1] }, 'Records[0] is not an object'],
    [{ Records: [{ s3: {} }] }, 'Records[0].eventName is missing'],
    [{ Records: [{ eventName: 'x', s3: { bucket: { name: 'b' } } }] }, 'Records[0].s3.object.key'],
    [
      { Records: [{ eventName: 'x', s3: { bucket: { name: 'b' }, object: { key: '%E0%A4%A' } } }] },
      'not URL-encoded',
    ],
  ])('refuse %j with a reason', (body, reason) => {
    expect(() => parseNotification(body, 'r')).toThrow(InvalidS3Body);
    expect(() => parseNotification(body, 'r')).toThrow(reason);
  });
});

describe('keys', () => {
  it('decode and encode as AWS does', () => {
    expect(decodeS3Key('a+b%2Fc%C3%BC.jpg')).toBe('a b/cü.jpg');
    expect(encodeS3Key('a b/cü+.jpg')).toBe('a+b/c%C3%BC%2B.jpg');
    expect(decodeS3Key(encodeS3Key('x y/z+w'))).toBe('x y/z+w');
  });
});

describe('matching', () => {
  const [record] = parseNotification(minioBody, 'us-east-1');
  const trigger = { bucket: 'photos', connection: {} };
  it('follows event patterns', () => {
    expect(eventMatches(['s3:ObjectCreated:*'], 'ObjectCreated:Put')).toBe(true);
    expect(eventMatches(['s3:ObjectCreated:Copy'], 'ObjectCreated:Put')).toBe(false);
    expect(eventMatches(['s3:ObjectRemoved:*'], 'ObjectCreated:Put')).toBe(false);
    for (const created of ['Put', 'Post', 'Copy', 'CompleteMultipartUpload']) {
      expect(eventMatches(['s3:ObjectCreated:*'], `ObjectCreated:${created}`)).toBe(true);
    }
    for (const removed of ['Delete', 'DeleteMarkerCreated', 'DeleteAllVersions']) {
      expect(eventMatches(['s3:ObjectRemoved:*'], `ObjectRemoved:${removed}`)).toBe(true);
    }
  });

  it("keeps MinIO's tagging, retention, legal hold and no-op delete out of the wildcards, as AWS's have them", () => {
    // MinIO's s3:ObjectCreated:* covers tagging: a function that tags its photo would be
    // called again for its own tag, for ever.
    for (const minioOnly of ['PutTagging', 'DeleteTagging', 'PutRetention', 'PutLegalHold']) {
      expect(eventMatches(['s3:ObjectCreated:*'], `ObjectCreated:${minioOnly}`)).toBe(false);
      // Named, they are delivered.
      expect(eventMatches([`s3:ObjectCreated:${minioOnly}`], `ObjectCreated:${minioOnly}`)).toBe(
        true,
      );
    }
    expect(eventMatches(['s3:ObjectRemoved:*'], 'ObjectRemoved:NoOP')).toBe(false);
    expect(eventMatches(['s3:ObjectRemoved:NoOP'], 'ObjectRemoved:NoOP')).toBe(true);
  });
  it('follows bucket, prefix and suffix on the decoded key', () => {
    expect(recordMatches(trigger, record!)).toBe(true);
    expect(recordMatches({ ...trigger, bucket: 'other' }, record!)).toBe(false);
    expect(recordMatches({ ...trigger, filter: { prefix: 'holiday photos/' } }, record!)).toBe(
      true,
    );
    expect(recordMatches({ ...trigger, filter: { suffix: '.png' } }, record!)).toBe(false);
    expect(recordMatches({ ...trigger, events: ['s3:ObjectRemoved:*'] }, record!)).toBe(false);
  });
});

describe('CloudEvents', () => {
  it('follow the AWS S3 adapter, with a stable id', () => {
    const [record] = parseNotification(minioBody, 'us-east-1');
    const e = s3CloudEvent(record!, 'uploads');
    expect(e.headers).toMatchObject({
      'ce-specversion': '1.0',
      'ce-type': 'com.amazonaws.s3.ObjectCreated:Put',
      'ce-source': 'aws:s3.us-east-1.photos',
      'ce-subject': 'holiday+photos/beach.jpg',
      'ce-time': '2026-11-27T10:00:00.000Z',
      'content-type': 'application/json',
    });
    expect(JSON.parse(e.body.toString())).toEqual(record);
    expect(e.trigger).toBe('uploads');
    expect(s3CloudEvent(record!, 'uploads').id).toBe(e.id);
  });
  it('differ for records of one request and for two triggers', () => {
    const [a] = parseNotification(minioBody, 'us-east-1');
    const b = { ...a!, s3: { ...a!.s3, object: { ...a!.s3.object, key: 'other.jpg' } } };
    expect(s3CloudEvent(a!, 'up').id).not.toBe(s3CloudEvent(b, 'up').id);
    expect(s3CloudEvent(a!, 'up').id).not.toBe(s3CloudEvent(a!, 'copy').id);
  });
});

describe("the bucket's notification entry", () => {
  const arn = 'arn:minio:sqs::EDDY:webhook';
  it('is the one the store holds when the store read it back with its region filled in', () => {
    const wanted = desiredEntry([{ bucket: 'p', connection: {}, filter: { suffix: '.jpg' } }], arn);
    // What MinIO answers for the entry it was given: its own region in the ARN, rules reordered.
    const stored = { ...wanted, QueueArn: 'arn:minio:sqs:us-east-1:EDDY:webhook' };
    expect(sameEntry(stored, wanted)).toBe(true);
    expect(sameEntry(wanted, stored)).toBe(true);
    expect(
      sameEntry({ ...stored, QueueArn: 'arn:minio:sqs:us-east-1:OTHER:webhook' }, wanted),
    ).toBe(false);
    expect(sameEntry({ ...stored, Events: ['s3:ObjectRemoved:*'] }, wanted)).toBe(false);
    expect(sameEntry(undefined, wanted)).toBe(false);
    expect(sameEntry(undefined, undefined)).toBe(true);
  });

  it('covers every trigger on the bucket with the filters they share', () => {
    const entry = desiredEntry(
      [
        {
          bucket: 'p',
          connection: {},
          events: ['s3:ObjectCreated:Put'],
          filter: { prefix: 'up/a', suffix: '.jpg' },
        },
        {
          bucket: 'p',
          connection: {},
          events: ['s3:ObjectCreated:*', 's3:ObjectRemoved:Delete'],
          filter: { prefix: 'up/b', suffix: '.jpg' },
        },
      ],
      arn,
    );
    expect(entry).toEqual({
      Id: 'eddy',
      QueueArn: arn,
      Events: ['s3:ObjectCreated:*', 's3:ObjectRemoved:Delete'],
      Filter: {
        Key: {
          FilterRules: [
            { Name: 'prefix', Value: 'up/' },
            { Name: 'suffix', Value: '.jpg' },
          ],
        },
      },
    });
  });
  it("is set and removed without touching others' entries", () => {
    const other = { Id: 'audit', QueueArn: 'arn:x', Events: ['s3:ObjectRemoved:*' as const] };
    const topic = { Id: 't', TopicArn: 'arn:t', Events: ['s3:ObjectCreated:*' as const] };
    const entry = desiredEntry([{ bucket: 'p', connection: {} }], arn);
    const set = withEntry({ QueueConfigurations: [other], TopicConfigurations: [topic] }, entry);
    expect(set).toEqual({ QueueConfigurations: [other, entry], TopicConfigurations: [topic] });
    expect(withEntry(set, undefined)).toEqual({
      QueueConfigurations: [other],
      TopicConfigurations: [topic],
    });
    expect(withEntry({ QueueConfigurations: [entry] }, undefined)).toEqual({});
  });
});
