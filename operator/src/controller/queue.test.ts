import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { WorkQueue } from './queue.js';

describe('WorkQueue', () => {
  it('never hands one key to two workers at once, and runs it again if it changed meanwhile', async () => {
    const q = new WorkQueue();
    const stop = new AbortController();
    let running = 0;
    let maxRunning = 0;
    const seen: string[] = [];
    const done = q.run(
      4,
      async (key) => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        seen.push(key);
        if (seen.length === 1) q.add('a'); // changed while being handled
        await sleep(20);
        running--;
      },
      stop.signal,
    );
    q.add('a');
    q.add('a');
    await sleep(100);
    stop.abort();
    await done;
    expect(seen).toEqual(['a', 'a']);
    expect(maxRunning).toBe(1);
  });

  it('lets other keys through while one is slow', async () => {
    const q = new WorkQueue();
    const stop = new AbortController();
    const finished: string[] = [];
    const done = q.run(
      2,
      async (key) => {
        await sleep(key === 'slow' ? 300 : 5);
        finished.push(key);
      },
      stop.signal,
    );
    q.add('slow');
    for (const k of ['b', 'c', 'd']) q.add(k);
    await sleep(100);
    expect(finished).toEqual(['b', 'c', 'd']);
    stop.abort();
    await done;
    expect(finished).toContain('slow');
  });

  it('backs off exponentially after failures, and forgets on success', () => {
    const q = new WorkQueue({ baseDelayMs: 100, maxDelayMs: 1_000 });
    expect([1, 2, 3, 4, 5].map(() => q.addRateLimited('k'))).toEqual([100, 200, 400, 800, 1_000]);
    q.forget('k');
    expect(q.addRateLimited('k')).toBe(100);
  });
});
