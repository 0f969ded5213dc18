import { describe, expect, it } from 'vitest';
import { requestIdPattern } from './contract/http.js';
import { newRequestId } from './server.js';

describe('newRequestId', () => {
  it('makes version 4 UUIDs, none twice', () => {
    const ids = Array.from({ length: 20_000 }, newRequestId);
    for (const id of ids) {
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    }
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe('requestIdPattern', () => {
  it('takes what a Runtime API path carries unescaped, and nothing a client could rewrite', () => {
    for (const id of ['abc', 'shard-1:4955:100', 'a.b', 'x=1+2', 'x'.repeat(128), '...'])
      expect(requestIdPattern.test(id)).toBe(true);
    for (const id of ['a/b', '.', '..', 'a b', 'über', '', 'x'.repeat(129), 'a?b', 'a%2Fb'])
      expect(requestIdPattern.test(id)).toBe(false);
  });
});
