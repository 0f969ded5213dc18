import { ApiException } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { describeError } from './errors.js';

describe('describeError', () => {
  it("gives the API server's own message for its refusals", () => {
    const body = JSON.stringify({
      kind: 'Status',
      message: 'deployments.apps "x" is forbidden: nope',
      code: 403,
    });
    expect(
      describeError(new ApiException(403, 'HTTP-Code: 403\nMessage: ...\nBody: ...', body, {})),
    ).toBe('deployments.apps "x" is forbidden: nope (HTTP 403)');
    expect(describeError(new ApiException(502, 'x', 'Bad Gateway', {}))).toBe(
      'HTTP 502 from the API server',
    );
  });

  it('keeps the first line of other errors', () => {
    expect(describeError(new Error('socket hang up\n    at somewhere'))).toBe('socket hang up');
    expect(describeError('plain')).toBe('plain');
  });
});
