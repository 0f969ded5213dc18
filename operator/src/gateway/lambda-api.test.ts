import { describe, expect, it } from 'vitest';
import { parseFunctionName } from './lambda-api.js';

describe("Invoke's FunctionName", () => {
  it("reads Lambda's forms, the account field standing for the namespace", () => {
    expect(parseFunctionName('hello')).toEqual({ name: 'hello' });
    expect(parseFunctionName('hello:$LATEST')).toEqual({ name: 'hello', qualifier: '$LATEST' });
    expect(parseFunctionName('photos:function:thumbnail')).toEqual({
      namespace: 'photos',
      name: 'thumbnail',
    });
    expect(parseFunctionName('photos:function:thumbnail:$LATEST')).toEqual({
      namespace: 'photos',
      name: 'thumbnail',
      qualifier: '$LATEST',
    });
    expect(parseFunctionName('arn:aws:lambda:eu-west-1:photos:function:thumbnail')).toEqual({
      region: 'eu-west-1',
      namespace: 'photos',
      name: 'thumbnail',
    });
    expect(parseFunctionName('arn:aws:lambda:eu-west-1:photos:function:thumbnail:v2')).toEqual({
      region: 'eu-west-1',
      namespace: 'photos',
      name: 'thumbnail',
      qualifier: 'v2',
    });
  });

  it('says how to name a function when it cannot read one', () => {
    for (const bad of ['arn:aws:s3:::bucket', 'a::b', 'a:b:c', 'arn:aws:lambda:r:ns:layer:x']) {
      expect(parseFunctionName(bad)).toMatch(/NAMESPACE:function:NAME/);
    }
  });
});
