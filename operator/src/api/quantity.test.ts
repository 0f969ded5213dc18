import { describe, expect, it } from 'vitest';
import { mebibytes, parseQuantity } from './quantity.js';

describe('quantities', () => {
  it.each([
    ['128Mi', 128 * 2 ** 20],
    ['1.5Gi', 1.5 * 2 ** 30],
    ['1G', 1e9],
    ['500m', 0.5],
    ['2', 2],
    ['1e3', 1000],
    ['10Gi', 10 * 2 ** 30],
  ])('reads %s', (q, value) => {
    expect(parseQuantity(q)).toBe(value);
  });

  it('refuses what is not a quantity', () => {
    expect(parseQuantity('lots')).toBeUndefined();
    expect(parseQuantity('12 Mi')).toBeUndefined();
    expect(() => mebibytes('lots')).toThrow('"lots" is not a quantity');
  });

  it('counts whole MiB', () => {
    expect(mebibytes('1769Mi')).toBe(1769);
    expect(mebibytes('1Gi')).toBe(1024);
    expect(mebibytes('1G')).toBe(953);
  });
});
