import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { CheckpointWriter } from './checkpoint-writer.js';
import type { Checkpoint } from './checkpoints.js';

describe('checkpoint writer', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: 0 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  const writer = (o: { fail?: number; hang?: number } = {}) => {
    const saves: Array<{ at: number; data: Checkpoint }> = [];
    const logs: string[] = [];
    const events: string[] = [];
    let fail = o.fail ?? 0;
    let hang = o.hang ?? 0;
    const w = new CheckpointWriter(
      { stream: 'clicks' },
      {
        save: async (data) => {
          // A save that never answers (an API server that went away).
          if (hang-- > 0) return new Promise<void>(() => undefined);
          if (fail-- > 0) throw new Error('configmaps "fn-clicks-source" is forbidden');
          saves.push({ at: Date.now(), data });
        },
        intervalMs: 1_000,
        log: (m) => logs.push(m),
        onError: () => events.push('error'),
        onSaved: () => events.push('saved'),
      },
    );
    return { w, saves, logs, events };
  };

  it('saves the first change at once and then at most once a second, the latest positions', async () => {
    const { w, saves } = writer();
    w.set('shardId-000000000000', '1');
    await vi.advanceTimersByTimeAsync(0);
    for (let i = 2; i <= 50; i++) {
      w.set('shardId-000000000000', String(i));
      w.set('shardId-000000000001', String(i * 10));
      await vi.advanceTimersByTimeAsync(50);
    }
    // 49 changes over 2.45 s: saved at 0, 1 s and 2 s; the rest waits for the next second.
    expect(saves.map((s) => s.at)).toEqual([0, 1_000, 2_000]);
    expect(saves[0]!.data).toEqual({ stream: 'clicks', 'shardId-000000000000': '1' });
    await vi.advanceTimersByTimeAsync(1_000);
    expect(saves.map((s) => s.at)).toEqual([0, 1_000, 2_000, 3_000]);
    expect(saves[3]!.data).toEqual({
      stream: 'clicks',
      'shardId-000000000000': '50',
      'shardId-000000000001': '500',
    });
    await vi.advanceTimersByTimeAsync(5_000);
    expect(saves).toHaveLength(4);
  });

  it('writes nothing when nothing changed', async () => {
    const { w, saves } = writer();
    w.set('stream', 'clicks');
    await vi.advanceTimersByTimeAsync(5_000);
    await w.flush();
    expect(saves).toEqual([]);
  });

  it('flushes what waits for the interval at once on stop, and schedules nothing after', async () => {
    const { w, saves } = writer();
    w.set('shardId-000000000000', '1');
    await vi.advanceTimersByTimeAsync(100);
    w.set('shardId-000000000000', '2');
    await w.flush();
    expect(saves.map((s) => [s.at, s.data['shardId-000000000000']])).toEqual([
      [0, '1'],
      [100, '2'],
    ]);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(saves).toHaveLength(2);
  });

  it('saves what it holds on touch, unchanged', async () => {
    const { w, saves } = writer();
    w.touch();
    await vi.advanceTimersByTimeAsync(0);
    expect(saves).toEqual([{ at: 0, data: { stream: 'clicks' } }]);
  });

  it('bounds the last save on stop, tries it once more, and says when it was lost', async () => {
    const { w, saves, logs } = writer({ hang: 1 });
    w.set('shardId-000000000000', '3');
    const flushed = w.flush(500);
    await vi.advanceTimersByTimeAsync(1_000);
    await expect(flushed).resolves.toBe(true);
    expect(saves).toEqual([{ at: 500, data: { stream: 'clicks', 'shardId-000000000000': '3' } }]);
    expect(logs).toEqual(['the last checkpoint was saved on a second try']);

    const lost = writer({ hang: 3 });
    lost.w.set('shardId-000000000000', '4');
    const gaveUp = lost.w.flush(500);
    await vi.advanceTimersByTimeAsync(5_000);
    await expect(gaveUp).resolves.toBe(false);
    expect(lost.saves).toEqual([]);
    expect(lost.logs).toEqual([
      'the last checkpoint could not be saved as the consumer stopped: what was done since the last save will be delivered again',
    ]);
  });

  it('keeps a failed save and carries it with the next one', async () => {
    const { w, saves, logs, events } = writer({ fail: 1 });
    w.set('shardId-000000000000', '7');
    await vi.advanceTimersByTimeAsync(0);
    expect(saves).toEqual([]);
    expect(logs).toEqual([
      'saving the checkpoint failed (retrying): configmaps "fn-clicks-source" is forbidden',
    ]);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(saves).toEqual([{ at: 1_000, data: { stream: 'clicks', 'shardId-000000000000': '7' } }]);
    // Told, so that the trigger's state shows a save that keeps failing.
    expect(events).toEqual(['error', 'saved']);
  });
});
