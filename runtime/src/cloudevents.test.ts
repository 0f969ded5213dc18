import { describe, expect, it } from 'vitest';
import { binaryAttributes, classify, structuredEvent } from './cloudevents.js';

const raw = (h: Record<string, string>) => Object.entries(h).flat();
const lower = (h: Record<string, string>) =>
  Object.fromEntries(Object.entries(h).map(([k, v]) => [k.toLowerCase(), v]));

describe('classify', () => {
  it('tells the modes apart by Content-Type and ce- headers', () => {
    const c = (h: Record<string, string>) => classify(lower(h), raw(h));
    expect(c({ 'Content-Type': 'application/cloudevents+json; charset=utf-8' })).toBe('structured');
    expect(c({ 'Content-Type': 'application/cloudevents-batch+json' })).toBe('batch');
    expect(c({ 'ce-specversion': '1.0' })).toBe('binary');
    expect(c({ 'CE-Id': '1' })).toBe('binary');
    expect(c({ 'Content-Type': 'application/json', Cert: 'x' })).toBe('direct');
    expect(c({})).toBe('direct');
  });
});

describe('binaryAttributes', () => {
  const base = { 'ce-specversion': '1.0', 'ce-id': '1', 'ce-source': '/s', 'ce-type': 't' };
  const attrs = (h: Record<string, string>) => binaryAttributes(lower(h), raw(h));

  it('reads attributes from headers of any case, and the Content-Type as datacontenttype', () => {
    expect(attrs({ ...base, 'CE-Subject': 'a%20b', 'Content-Type': 'text/plain' })).toEqual({
      specversion: '1.0',
      id: '1',
      source: '/s',
      type: 't',
      subject: 'a b',
      datacontenttype: 'text/plain',
    });
  });

  it('refuses header names that are not attribute names', () => {
    expect(attrs({ ...base, 'ce-my_ext': 'x' })).toMatch(
      /header ce-my_ext does not name a valid CloudEvents attribute/,
    );
  });

  it('checks dataschema and source shapes', () => {
    expect(attrs({ ...base, 'ce-dataschema': 'not a uri' })).toMatch(/dataschema.*absolute URI/);
    expect(attrs({ ...base, 'ce-source': 'has space' })).toMatch(/source.*URI-reference/);
  });

  it.each([
    '2024-02-30T00:00:00Z',
    '2023-02-29T00:00:00Z',
    '1900-02-29T00:00:00Z',
    '2024-04-31T00:00:00Z',
    '2024-11-31T00:00:00Z',
    '2024-01-32T00:00:00Z',
    '2024-13-01T00:00:00Z',
    '2024-00-10T00:00:00Z',
    '2024-01-01T24:00:00Z',
    '2024-01-01T23:60:00Z',
    '2024-01-01T23:59:61Z',
    '2024-01-01T12:00:00+24:00',
    '2024-01-01T12:00:00+01:60',
    '2024-01-01 12:00:00Z',
  ])('refuses the time %s, which the calendar or the clock does not have', (time) => {
    expect(attrs({ ...base, 'ce-time': time })).toBe(
      `CloudEvent attribute 'time' (header ce-time) is "${time}", not an RFC 3339 timestamp (a real date and time, such as 2024-05-01T12:00:00Z)`,
    );
  });

  it.each([
    '2024-02-29T00:00:00Z',
    '2000-02-29T23:59:59.999Z',
    '2024-04-30T00:00:00-05:00',
    '2024-12-31t23:59:60z',
    '2024-05-01T12:00:00.5+02:00',
  ])('accepts the time %s', (time) => {
    expect(attrs({ ...base, 'ce-time': time })).toEqual(expect.objectContaining({ time }));
  });
});

describe('structuredEvent', () => {
  it('separates attributes from data, and keeps extension values as strings', () => {
    expect(
      structuredEvent(
        JSON.stringify({
          specversion: '1.0',
          id: '1',
          source: '/s',
          type: 't',
          data: { a: 1 },
          count: 3,
        }),
      ),
    ).toEqual({
      attributes: { specversion: '1.0', id: '1', source: '/s', type: 't', count: '3' },
      data: { a: 1 },
    });
  });

  it.each([
    ['[]', /must be a JSON object/],
    ['{', /must be a JSON object: /],
    [
      JSON.stringify({
        specversion: '1.0',
        id: '1',
        source: '/s',
        type: 't',
        data: 1,
        data_base64: 'AA==',
      }),
      /either data or data_base64/,
    ],
    [
      JSON.stringify({ specversion: '1.0', id: '1', source: '/s', type: 't', Bad: 'x' }),
      /"Bad" is not a valid CloudEvents attribute name/,
    ],
    [
      JSON.stringify({ specversion: '1.0', id: 1, source: '/s', type: 't' }),
      /attribute 'id' must be a string/,
    ],
  ])('refuses %s', (body, message) => {
    expect(structuredEvent(body)).toMatch(message);
  });
});
