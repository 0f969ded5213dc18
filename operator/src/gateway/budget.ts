/**
 * The gateway's memory budget: one count of the bytes it holds for callers (request bodies
 * while they are read, queued, in flight or waiting for a retry; answers while they are
 * buffered), so that a burst of large invocations is refused with a reason instead of ending
 * the gateway's process in an out-of-memory kill. Bytes are reserved before they are held and
 * released when they are let go, on every path.
 */
import { Counter, Gauge, type Registry } from 'prom-client';
import { parseQuantity } from '../api/quantity.js';

/** 64 MiB: the default budget, which a 256 MiB gateway container holds beside Node itself. */
export const defaultMemoryBudgetBytes = 64 * 2 ** 20;

/** The budget's name where users set it. */
export const memoryBudgetSetting = 'EDDY_GATEWAY_MEMORY_BUDGET (chart: gateway.memoryBudget)';

export class MemoryBudget {
  private heldBytes = 0;
  /** Reservations refused so far: each a request answered 429 or 503. */
  refusals = 0;

  constructor(readonly limitBytes: number = defaultMemoryBudgetBytes) {
    if (!(limitBytes > 0) || !Number.isFinite(limitBytes)) {
      throw new Error(`a memory budget of ${limitBytes} bytes is not allowed: use more than 0`);
    }
  }

  /** Bytes held now. */
  get held(): number {
    return this.heldBytes;
  }

  /** Reserves `bytes` if they fit; false (nothing reserved) if they do not. */
  tryReserve(bytes: number): boolean {
    if (bytes < 0) throw new RangeError(`cannot reserve ${bytes} bytes`);
    if (this.heldBytes + bytes > this.limitBytes) {
      this.refusals++;
      return false;
    }
    this.heldBytes += bytes;
    return true;
  }

  /**
   * Reserves `bytes` whether or not they fit: for what the gateway must hold anyway (the answer
   * of a handler that has already run). While over the budget, `tryReserve` refuses.
   */
  force(bytes: number): void {
    if (bytes < 0) throw new RangeError(`cannot reserve ${bytes} bytes`);
    this.heldBytes += bytes;
  }

  release(bytes: number): void {
    if (bytes < 0 || bytes > this.heldBytes) {
      throw new RangeError(`cannot release ${bytes} bytes: ${this.heldBytes} are held`);
    }
    this.heldBytes -= bytes;
  }

  /** A hold: what one request reserves, grown as it goes, released once at the end. */
  hold(): Hold {
    return new Hold(this);
  }

  /** Why a reservation was refused, for the caller. */
  refusal(wanted: number): string {
    return `the gateway holds ${mib(this.heldBytes)} of bodies and answers and ${mib(wanted)} more would pass its memory budget of ${mib(this.limitBytes)} (${memoryBudgetSetting})`;
  }
}

/**
 * Bytes reserved for one request. `release` gives them all back and may be called any number
 * of times, so every path (success, error, caller gone, retries spent) can call it.
 */
export class Hold {
  private bytesHeld = 0;
  private released = false;

  constructor(readonly budget: MemoryBudget) {}

  get bytes(): number {
    return this.bytesHeld;
  }

  /** Grows the hold by `bytes` if they fit in the budget; false if they do not. */
  take(bytes: number): boolean {
    if (this.released) return false;
    if (!this.budget.tryReserve(bytes)) return false;
    this.bytesHeld += bytes;
    return true;
  }

  /** Grows the hold whether or not it fits (see {@link MemoryBudget.force}). */
  force(bytes: number): void {
    if (this.released) return;
    this.budget.force(bytes);
    this.bytesHeld += bytes;
  }

  /** Shrinks the hold to `bytes` (a body shorter than declared). */
  shrinkTo(bytes: number): void {
    if (this.released || bytes >= this.bytesHeld) return;
    this.budget.release(this.bytesHeld - bytes);
    this.bytesHeld = bytes;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.budget.release(this.bytesHeld);
    this.bytesHeld = 0;
  }
}

/**
 * The budget in `registry`: `eddy_gateway_memory_held_bytes`, `eddy_gateway_memory_budget_bytes`
 * and `eddy_gateway_memory_refusals_total`, read when scraped.
 */
export function registerBudgetMetrics(budget: MemoryBudget, registry: Registry): void {
  new Gauge({
    name: 'eddy_gateway_memory_held_bytes',
    help: 'Bytes of request bodies and answers this gateway holds',
    registers: [registry],
    collect() {
      this.set(budget.held);
    },
  });
  new Gauge({
    name: 'eddy_gateway_memory_budget_bytes',
    help: 'The most bytes of bodies and answers this gateway holds (EDDY_GATEWAY_MEMORY_BUDGET)',
    registers: [registry],
    collect() {
      this.set(budget.limitBytes);
    },
  });
  let counted = 0;
  new Counter({
    name: 'eddy_gateway_memory_refusals_total',
    help: 'Requests refused because their bodies did not fit in the memory budget (429 or 503)',
    registers: [registry],
    collect() {
      this.inc(budget.refusals - counted);
      counted = budget.refusals;
    },
  });
}

/**
 * The budget from a quantity (`64Mi`, `128M`, or bytes); throws naming `name` when it is not
 * a positive one.
 */
export function parseMemoryBudget(raw: string | undefined, name: string): number {
  if (raw === undefined || raw.trim() === '') return defaultMemoryBudgetBytes;
  const bytes = parseQuantity(raw);
  if (bytes === undefined || !Number.isFinite(bytes) || bytes < 2 ** 20) {
    throw new Error(
      `${name}=${JSON.stringify(raw)} is not allowed: use a memory quantity of at least 1Mi, such as 64Mi`,
    );
  }
  return Math.floor(bytes);
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}
