import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import {
  defaultMemoryBudgetBytes,
  MemoryBudget,
  parseMemoryBudget,
  registerBudgetMetrics,
} from './budget.js';

const MiB = 2 ** 20;

describe('the memory budget', () => {
  it('reserves what fits and refuses what would pass the limit, reserving nothing then', () => {
    const budget = new MemoryBudget(10 * MiB);
    expect(budget.tryReserve(6 * MiB)).toBe(true);
    expect(budget.tryReserve(5 * MiB)).toBe(false);
    expect(budget.held).toBe(6 * MiB);
    expect(budget.tryReserve(4 * MiB)).toBe(true);
    expect(budget.held).toBe(10 * MiB);
    expect(budget.tryReserve(1)).toBe(false);
    budget.release(6 * MiB);
    expect(budget.tryReserve(5 * MiB)).toBe(true);
    expect(budget.held).toBe(9 * MiB);
  });

  it('takes a forced reservation past the limit and refuses others until it is released', () => {
    const budget = new MemoryBudget(10 * MiB);
    expect(budget.tryReserve(8 * MiB)).toBe(true);
    budget.force(6 * MiB);
    expect(budget.held).toBe(14 * MiB);
    expect(budget.tryReserve(1)).toBe(false);
    budget.release(6 * MiB);
    expect(budget.tryReserve(2 * MiB)).toBe(true);
  });

  it('never releases more than it holds', () => {
    const budget = new MemoryBudget(MiB);
    budget.force(10);
    expect(() => budget.release(11)).toThrow(RangeError);
    expect(budget.held).toBe(10);
  });

  it('gives a hold back once, however often it is released', () => {
    const budget = new MemoryBudget(10 * MiB);
    const a = budget.hold();
    const b = budget.hold();
    expect(a.take(3 * MiB)).toBe(true);
    expect(a.take(2 * MiB)).toBe(true);
    expect(b.take(4 * MiB)).toBe(true);
    expect(a.take(2 * MiB)).toBe(false);
    expect(a.bytes).toBe(5 * MiB);
    a.release();
    a.release();
    expect(budget.held).toBe(4 * MiB);
    // A released hold takes nothing more: a late chunk cannot leak a reservation.
    expect(a.take(1)).toBe(false);
    a.force(1);
    expect(budget.held).toBe(4 * MiB);
    b.release();
    expect(budget.held).toBe(0);
  });

  it('shrinks a hold to the bytes a body really had', () => {
    const budget = new MemoryBudget(10 * MiB);
    const hold = budget.hold();
    expect(hold.take(6 * MiB)).toBe(true);
    hold.shrinkTo(MiB);
    expect(budget.held).toBe(MiB);
    hold.shrinkTo(2 * MiB);
    expect(budget.held).toBe(MiB);
    hold.release();
    expect(budget.held).toBe(0);
  });

  it('says what it holds, what was asked and where the limit is set', () => {
    const budget = new MemoryBudget(64 * MiB);
    budget.force(60 * MiB);
    expect(budget.refusal(6 * MiB)).toBe(
      'the gateway holds 60.0 MiB of bodies and answers and 6.0 MiB more would pass its memory budget of 64.0 MiB (EDDY_GATEWAY_MEMORY_BUDGET (chart: gateway.memoryBudget))',
    );
  });
});

describe('parseMemoryBudget', () => {
  it('reads quantities, defaults to 64 MiB and refuses what is not a size', () => {
    expect(parseMemoryBudget(undefined, 'X')).toBe(defaultMemoryBudgetBytes);
    expect(parseMemoryBudget('', 'X')).toBe(64 * MiB);
    expect(parseMemoryBudget('128Mi', 'X')).toBe(128 * MiB);
    expect(parseMemoryBudget('100M', 'X')).toBe(100_000_000);
    expect(parseMemoryBudget('1Gi', 'X')).toBe(1024 * MiB);
    expect(parseMemoryBudget(String(2 * MiB), 'X')).toBe(2 * MiB);
    expect(() => parseMemoryBudget('lots', 'EDDY_GATEWAY_MEMORY_BUDGET')).toThrow(
      'EDDY_GATEWAY_MEMORY_BUDGET="lots" is not allowed: use a memory quantity of at least 1Mi, such as 64Mi',
    );
    expect(() => parseMemoryBudget('100Ki', 'X')).toThrow(/at least 1Mi/);
    expect(() => parseMemoryBudget('-64Mi', 'X')).toThrow(/at least 1Mi/);
  });
});

describe('the budget in metrics', () => {
  it('shows what is held, the limit and the refusals when scraped', async () => {
    const budget = new MemoryBudget(10 * MiB);
    const registry = new Registry();
    registerBudgetMetrics(budget, registry);
    const hold = budget.hold();
    expect(hold.take(4 * MiB)).toBe(true);
    expect(hold.take(7 * MiB)).toBe(false);
    expect(budget.tryReserve(8 * MiB)).toBe(false);
    let text = await registry.metrics();
    expect(text).toMatch(/^eddy_gateway_memory_held_bytes 4194304$/m);
    expect(text).toMatch(/^eddy_gateway_memory_budget_bytes 10485760$/m);
    expect(text).toMatch(/^eddy_gateway_memory_refusals_total 2$/m);
    hold.release();
    expect(budget.tryReserve(11 * MiB)).toBe(false);
    text = await registry.metrics();
    expect(text).toMatch(/^eddy_gateway_memory_held_bytes 0$/m);
    expect(text).toMatch(/^eddy_gateway_memory_refusals_total 3$/m);
  });
});
