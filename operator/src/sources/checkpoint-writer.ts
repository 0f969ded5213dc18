/**
 * A trigger's progress, held in memory and saved at most once per interval: a shard that moves
 * a hundred batches a second must not write a ConfigMap a hundred times a second. What a crash
 * loses is at most one interval of progress, delivered again after the restart.
 */
import { describeError } from '../errors.js';
import type { Checkpoint } from './checkpoints.js';

export interface CheckpointWriterOptions {
  save: (data: Checkpoint) => Promise<void>;
  /** Default 1 s. */
  intervalMs?: number;
  log: (message: string) => void;
  now?: () => number;
  /** A save failed (it is tried again): the trigger's state shows it. */
  onError?: (err: unknown) => void;
  /** A save succeeded. */
  onSaved?: () => void;
}

export class CheckpointWriter {
  private readonly data: Checkpoint;
  private readonly intervalMs: number;
  private readonly now: () => number;
  private dirty = false;
  private closed = false;
  private lastSaveAt = -Infinity;
  private timer: NodeJS.Timeout | undefined;
  private saving: Promise<void> | undefined;

  constructor(
    initial: Checkpoint,
    private readonly o: CheckpointWriterOptions,
  ) {
    this.data = { ...initial };
    this.intervalMs = o.intervalMs ?? 1_000;
    this.now = o.now ?? Date.now;
  }

  get(key: string): string | undefined {
    return this.data[key];
  }

  /** What would be saved now. */
  snapshot(): Checkpoint {
    return { ...this.data };
  }

  set(key: string, value: string): void {
    if (this.data[key] === value) return;
    this.data[key] = value;
    this.changed();
  }

  delete(key: string): void {
    if (!(key in this.data)) return;
    delete this.data[key];
    this.changed();
  }

  /** Saves what is held now, even unchanged (a first start's position, say). */
  touch(): void {
    this.changed();
  }

  /**
   * Saves what has not been saved yet, now, and schedules nothing afterwards. Each save is
   * waited for at most `timeoutMs`; one that fails or does not answer is tried once more.
   * Resolves whether everything was saved.
   */
  async flush(timeoutMs = 5_000): Promise<boolean> {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    let failed = 0;
    const settle = async (p: Promise<void>) => {
      if (!(await this.within(p, timeoutMs))) {
        // Given up on: what it carried is saved by the next try.
        this.saving = undefined;
        this.dirty = true;
      }
      if (this.dirty) failed++;
    };
    if (this.saving) await settle(this.saving);
    for (let tries = 0; this.dirty && tries < 2; tries++) await settle(this.write(true));
    if (!this.dirty) {
      if (failed > 0) this.o.log('the last checkpoint was saved on a second try');
      return true;
    }
    this.o.log(
      'the last checkpoint could not be saved as the consumer stopped: what was done since the last save will be delivered again',
    );
    return false;
  }

  /** Whether `p` settled within `ms`. */
  private async within(p: Promise<void>, ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const settled = await Promise.race([
      p.then(() => true),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms))),
    ]);
    clearTimeout(timer);
    return settled;
  }

  private changed(): void {
    this.dirty = true;
    this.schedule();
  }

  private schedule(): void {
    if (this.closed || this.timer || this.saving || !this.dirty) return;
    const wait = this.lastSaveAt + this.intervalMs - this.now();
    if (wait <= 0) void this.write();
    else {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        void this.write();
      }, wait);
    }
  }

  private write(last = false): Promise<void> {
    this.dirty = false;
    this.lastSaveAt = this.now();
    this.saving = this.o
      .save({ ...this.data })
      .then(() => this.o.onSaved?.())
      .catch((err: unknown) => {
        // Kept dirty: the next save carries it.
        this.dirty = true;
        this.o.log(
          `saving the checkpoint failed${last ? '' : ' (retrying)'}: ${describeError(err)}`,
        );
        this.o.onError?.(err);
      })
      .finally(() => {
        this.saving = undefined;
        this.schedule();
      });
    return this.saving;
  }
}
