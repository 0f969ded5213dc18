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

  /** Saves what has not been saved yet, now; nothing is scheduled afterwards. */
  async flush(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.saving) await this.saving;
    if (this.dirty) await this.write();
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

  private write(): Promise<void> {
    this.dirty = false;
    this.lastSaveAt = this.now();
    this.saving = this.o
      .save({ ...this.data })
      .catch((err: unknown) => {
        // Kept dirty: the next save carries it.
        this.dirty = true;
        this.o.log(`saving the checkpoint failed (retrying): ${describeError(err)}`);
      })
      .finally(() => {
        this.saving = undefined;
        this.schedule();
      });
    return this.saving;
  }
}
