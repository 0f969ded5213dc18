import { describe, expect, it } from 'vitest';
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
