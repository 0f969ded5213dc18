import { describe, expect, it } from 'vitest';
import { formatElapsed } from './progress.js';

describe('formatElapsed', () => {
  it('shows seconds under a minute and minutes with padded seconds above', () => {
    expect(formatElapsed(0)).toBe('0s');
    expect(formatElapsed(59_999)).toBe('59s');
    expect(formatElapsed(60_000)).toBe('1m00s');
    expect(formatElapsed(754_000)).toBe('12m34s');
  });
});
