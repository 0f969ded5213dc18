import { describe, expect, it } from 'vitest';
import { filterCriteriaProblem } from '../api/filter-pattern.js';
import { EventFilter, kinesisFilterView } from './event-filter.js';

/**
 * The examples of Lambda's filter rule syntax ("Control which events Lambda sends to your
 * function", its table of comparison operators), each with records that match and records that
 * do not.
 */
const ruleSyntax: Array<{
  name: string;
  pattern: string;
  matches: unknown[];
  misses: unknown[];
}> = [
  {
    name: 'null',
    pattern: '{"UserID": [null]}',
    matches: [{ UserID: null }],
    misses: [{ UserID: 'null' }, { UserID: '' }, {}],
  },
  {
    name: 'empty',
    pattern: '{"LastName": [""]}',
    matches: [{ LastName: '' }],
    misses: [{ LastName: 'Doe' }, { LastName: null }, {}],
  },
  {
    name: 'equals',
    pattern: '{"Name": ["Alice"]}',
    matches: [{ Name: 'Alice' }, { Name: ['Bob', 'Alice'] }],
    misses: [{ Name: 'alice' }, { Name: 'Alice ' }, { name: 'Alice' }],
  },
  {
    name: 'equals (ignore case)',
    pattern: '{"Name": [{"equals-ignore-case": "alice"}]}',
    matches: [{ Name: 'ALICE' }, { Name: 'alice' }, { Name: 'aLiCe' }],
    misses: [{ Name: 'Alicia' }, { Name: 1 }],
  },
  {
    name: 'and',
    pattern: '{"Location": ["New York"], "Day": ["Monday"]}',
    matches: [{ Location: 'New York', Day: 'Monday' }],
    misses: [{ Location: 'New York', Day: 'Tuesday' }, { Location: 'New York' }],
  },
  {
    name: 'or',
    pattern: '{"PaymentType": ["Credit", "Debit"]}',
    matches: [{ PaymentType: 'Credit' }, { PaymentType: 'Debit' }],
    misses: [{ PaymentType: 'Cash' }, {}],
  },
  {
    name: 'or (multiple fields)',
    pattern: '{"$or": [{"Location": ["New York"]}, {"Day": ["Monday"]}]}',
    matches: [
      { Location: 'New York', Day: 'Sunday' },
      { Location: 'Paris', Day: 'Monday' },
    ],
    misses: [{ Location: 'Paris', Day: 'Sunday' }],
  },
  {
    name: 'not',
    pattern: '{"Weather": [{"anything-but": ["Raining"]}]}',
    matches: [{ Weather: 'Sunny' }, { Weather: 'Cloudy' }],
    misses: [{ Weather: 'Raining' }, {}],
  },
  {
    name: 'numeric (equals)',
    pattern: '{"Price": [{"numeric": ["=", 100]}]}',
    matches: [{ Price: 100 }, { Price: 100.0 }],
    misses: [{ Price: 100.01 }, { Price: '100' }],
  },
  {
    name: 'numeric (range)',
    pattern: '{"Price": [{"numeric": [">", 10, "<=", 20]}]}',
    matches: [{ Price: 10.5 }, { Price: 20 }],
    misses: [{ Price: 10 }, { Price: 20.1 }, { Price: '15' }],
  },
  {
    name: 'exists',
    pattern: '{"ProductName": [{"exists": true}]}',
    matches: [{ ProductName: 'Eddy' }, { ProductName: '' }],
    misses: [{}, { ProductName: { en: 'Eddy' } }],
  },
  {
    name: 'does not exist',
    pattern: '{"ProductName": [{"exists": false}]}',
    matches: [{}, { Other: 1 }],
    misses: [{ ProductName: 'Eddy' }],
  },
  {
    name: 'begins with',
    pattern: '{"Region": [{"prefix": "us-"}]}',
    matches: [{ Region: 'us-east-1' }],
    misses: [{ Region: 'eu-west-1' }, { Region: 'US-east-1' }],
  },
  {
    name: 'ends with',
    pattern: '{"FileName": [{"suffix": ".png"}]}',
    matches: [{ FileName: 'photo.png' }],
    misses: [{ FileName: 'photo.jpg' }, { FileName: 'photo.PNG' }],
  },
];

/** DynamoDB's record from Lambda's "Using event filtering with a DynamoDB event source". */
const ddbRecord = {
  eventID: '1',
  eventVersion: '1.0',
  eventName: 'INSERT',
  dynamodb: {
    ApproximateCreationDateTime: 1678831218,
    Keys: { CustomerName: { S: 'AnyCompany Industries' } },
    NewImage: {
      AccountManager: { S: 'Pat Candella' },
      PaymentTerms: { S: '60 days' },
      CustomerName: { S: 'AnyCompany Industries' },
      Approved: { BOOL: true },
      Amount: { N: '150' },
    },
    SequenceNumber: '111',
    SizeBytes: 26,
    StreamViewType: 'NEW_IMAGE',
  },
};

const ddbExamples: Array<{ name: string; pattern: string; matches: boolean }> = [
  {
    name: 'table keys',
    pattern: '{"dynamodb": {"Keys": {"CustomerName": {"S": ["AnyCompany Industries"]}}}}',
    matches: true,
  },
  {
    name: 'table attributes',
    pattern:
      '{"dynamodb": {"NewImage": {"AccountManager": {"S": ["Pat Candella", "Shirley Rodriguez"]}}}}',
    matches: true,
  },
  {
    name: 'a boolean attribute',
    pattern: '{"dynamodb": {"NewImage": {"Approved": {"BOOL": [false]}}}}',
    matches: false,
  },
  {
    name: 'exists on a leaf',
    pattern: '{"dynamodb": {"NewImage": {"AccountManager": {"S": [{"exists": true}]}}}}',
    matches: true,
  },
  {
    // An attribute is an object ({"S": ...}): exists looks at leaves only.
    name: 'exists on an attribute (an object)',
    pattern: '{"dynamodb": {"NewImage": {"AccountManager": [{"exists": true}]}}}',
    matches: false,
  },
  {
    name: 'absence of an attribute',
    pattern: '{"dynamodb": {"NewImage": {"Discount": {"N": [{"exists": false}]}}}}',
    matches: true,
  },
  {
    name: 'a number attribute, written as a string',
    pattern:
      '{"eventName": ["INSERT"], "dynamodb": {"NewImage": {"Amount": {"N": [{"numeric": [">", 100]}]}}}}',
    matches: true,
  },
  {
    name: 'a number attribute out of range',
    pattern: '{"dynamodb": {"NewImage": {"Amount": {"N": [{"numeric": [">", 150]}]}}}}',
    matches: false,
  },
  {
    name: 'the event name',
    pattern: '{"eventName": ["MODIFY", "REMOVE"]}',
    matches: false,
  },
];

describe('EventFilter', () => {
  for (const ex of ruleSyntax) {
    it(`matches Lambda's ${ex.name} example`, () => {
      const filter = new EventFilter([ex.pattern]);
      for (const r of ex.matches) expect(filter.matches(r), JSON.stringify(r)).toBe(true);
      for (const r of ex.misses) expect(filter.matches(r), JSON.stringify(r)).toBe(false);
    });
  }

  for (const ex of ddbExamples) {
    it(`filters a DynamoDB record by ${ex.name}`, () => {
      const filter = new EventFilter([ex.pattern], { numericStrings: true });
      expect(filter.matches(ddbRecord)).toBe(ex.matches);
    });
  }

  it('passes a record that matches any one of several filters', () => {
    const filter = new EventFilter(['{"a": ["x"]}', '{"b": ["y"]}']);
    expect(filter.matches({ a: 'x' })).toBe(true);
    expect(filter.matches({ b: 'y' })).toBe(true);
    expect(filter.matches({ a: 'y', b: 'x' })).toBe(false);
  });

  it('passes every record without filters', () => {
    const filter = new EventFilter([]);
    expect(filter.active).toBe(false);
    expect(filter.matches({})).toBe(true);
  });

  it('matches a number attribute as a string only when told to', () => {
    const pattern = '{"N": [{"numeric": [">", 100]}]}';
    expect(new EventFilter([pattern]).matches({ N: '150' })).toBe(false);
    expect(new EventFilter([pattern], { numericStrings: true }).matches({ N: '150' })).toBe(true);
    expect(new EventFilter([pattern], { numericStrings: true }).matches({ N: 'abc' })).toBe(false);
  });
});

describe('kinesisFilterView', () => {
  // Lambda's "Using event filtering with a Kinesis event source" example.
  const json = Buffer.from(
    '{"RecordNumber": "0001", "TimeStamp": "yyyy-mm-ddThh:mm:ss", "RequestCode": "AAAA"}',
  );
  const filter = new EventFilter(['{"data": {"RequestCode": ["AAAA"]}}']);

  it('matches data that decodes as JSON', () => {
    expect(filter.matches(kinesisFilterView(json))).toBe(true);
    expect(filter.matches(kinesisFilterView(Buffer.from('{"RequestCode": "BBBB"}')))).toBe(false);
  });

  it('never passes data that is not JSON to a pattern on data', () => {
    expect(filter.matches(kinesisFilterView(Buffer.from('RequestCode=AAAA')))).toBe(false);
    expect(filter.matches(kinesisFilterView(Buffer.from('{"RequestCode": "AAAA"')))).toBe(false);
    expect(filter.matches(kinesisFilterView(undefined))).toBe(false);
  });
});

describe('filterCriteriaProblem', () => {
  it('accepts every example above', () => {
    for (const ex of ddbExamples) {
      expect(filterCriteriaProblem('dynamodb', [{ pattern: ex.pattern }])).toBeUndefined();
    }
    expect(
      filterCriteriaProblem('kinesis', [{ pattern: '{"data": {"RequestCode": ["AAAA"]}}' }]),
    ).toBeUndefined();
  });

  it.each([
    ['{"eventName": "INSERT"}', /eventName: "INSERT" must be in a list \(\["INSERT"\]\)/],
    ['{"eventName": ["INSERT"]', /filters\[0\]\.pattern is invalid: it is not JSON/],
    ['["INSERT"]', /a pattern is a JSON object/],
    ['{"eventName": []}', /at eventName: an empty list matches nothing/],
    ['{"a": [{"numeric": [">", "ten"]}]}', /numeric > needs a number, not "ten"/],
    ['{"a": [{"numeric": [">", 10, ">", 20]}]}', /two lower bounds/],
    ['{"a": [{"numeric": [">", 20, "<", 10]}]}', /range from 20 to 10 is empty/],
    ['{"a": [{"wildcard": "x*"}]}', /unknown operator "wildcard"/],
    ['{"a": [{"prefix": "x", "suffix": "y"}]}', /exactly one operator/],
    ['{"a": [{"exists": "yes"}]}', /exists takes true or false/],
    ['{"$or": [{"a": ["x"]}]}', /\$or takes a list of at least two patterns/],
  ])('refuses %s, saying why', (pattern, why) => {
    expect(filterCriteriaProblem('dynamodb', [{ pattern }])).toMatch(why);
  });

  it('refuses fields a Kinesis record is not filtered on', () => {
    expect(filterCriteriaProblem('kinesis', [{ pattern: '{"partitionKey": ["a"]}' }])).toBe(
      'filterCriteria.filters[0].pattern: kinesis records are filtered on data, not "partitionKey" (data is matched as JSON when it decodes as JSON)',
    );
    expect(
      filterCriteriaProblem('dynamodb', [
        { pattern: '{"$or": [{"eventName": ["INSERT"]}, {"Keys": ["a"]}]}' },
      ]),
    ).toMatch(/not "Keys"/);
  });

  it('refuses more than five filters', () => {
    const f = { pattern: '{"data": {"a": ["b"]}}' };
    expect(filterCriteriaProblem('kinesis', [f, f, f, f, f, f])).toMatch(
      /at most 5 filters, not 6/,
    );
  });
});
