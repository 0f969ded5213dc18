import { describe, expect, it } from 'vitest';
import { Manager, soleLeader, type Elector, type Runnable } from './manager.js';

const log = () => undefined;

/** A runnable that records when it runs and stops, and can be made to fail. */
function probe(name: string, leaderOnly: boolean, events: string[]) {
  let failNow: (err: Error) => void = () => undefined;
  const runnable: Runnable = {
    name,
    leaderOnly,
    run: (signal) =>
      new Promise<void>((resolve, reject) => {
        events.push(`${name} runs`);
        failNow = reject;
        signal.addEventListener('abort', () => {
          events.push(`${name} stops`);
          resolve();
        });
      }),
  };
  return { runnable, fail: (err: Error) => failNow(err) };
}

/** An elector the test elects and deposes by hand. */
function manualElector() {
  let elect: () => void = () => undefined;
  let depose: () => void = () => undefined;
  const elector: Elector = {
    async run(lead, signal) {
      while (!signal.aborted) {
        await new Promise<void>((r) => {
          elect = r;
          signal.addEventListener('abort', () => r(), { once: true });
        });
        if (signal.aborted) return;
        const lost = new AbortController();
        depose = () => lost.abort();
        const stop = () => lost.abort();
        signal.addEventListener('abort', stop, { once: true });
        await lead(lost.signal);
        signal.removeEventListener('abort', stop);
      }
    },
  };
  return { elector, elect: () => elect(), depose: () => depose() };
}

const tick = () => new Promise((r) => setTimeout(r, 5));

describe('Manager', () => {
  it('starts the caches first, runs everywhere-runnables at once and leader-only ones while leading', async () => {
    const events: string[] = [];
    const e = manualElector();
    const stop = new AbortController();
    const m = new Manager({
      elector: e.elector,
      log,
      startCaches: async () => {
        events.push('caches');
      },
    }).add(probe('gateway', false, events).runnable, probe('autoscaler', true, events).runnable);
    const done = m.start(stop.signal);
    await tick();
    expect(events).toEqual(['caches', 'gateway runs']);
    e.elect();
    await tick();
    expect(events).toContain('autoscaler runs');
    e.depose();
    await tick();
    expect(events.slice(-1)).toEqual(['autoscaler stops']);
    expect(events).not.toContain('gateway stops');
    e.elect();
    await tick();
    expect(events.filter((x) => x === 'autoscaler runs')).toHaveLength(2);
    stop.abort();
    await done;
    expect(events).toContain('gateway stops');
  });

  it('stops everything and rejects when a runnable fails', async () => {
    const events: string[] = [];
    const failing = probe('consumer', true, events);
    const m = new Manager({ elector: soleLeader, log }).add(
      probe('gateway', false, events).runnable,
      probe('autoscaler', true, events).runnable,
      failing.runnable,
    );
    const done = m.start(new AbortController().signal);
    await tick();
    failing.fail(new Error('stream gone'));
    await expect(done).rejects.toThrow('stream gone');
    expect(events).toEqual(expect.arrayContaining(['gateway stops', 'autoscaler stops']));
  });

  it('treats a runnable that returns before being stopped as a failure', async () => {
    const m = new Manager({ elector: soleLeader, log }).add({
      name: 'schedules',
      leaderOnly: true,
      run: async () => undefined,
    });
    await expect(m.start(new AbortController().signal)).rejects.toThrow(
      'schedules stopped on its own',
    );
  });

  it('rejects when the caches cannot start, running nothing, and says why', async () => {
    const events: string[] = [];
    const logged: string[] = [];
    const m = new Manager({
      elector: soleLeader,
      log: (line) => logged.push(line),
      startCaches: async () => {
        throw new Error('API server unreachable');
      },
    }).add(probe('gateway', false, events).runnable);
    await expect(m.start(new AbortController().signal)).rejects.toThrow('API server unreachable');
    expect(events).toEqual([]);
    expect(logged).toEqual(['starting the shared caches failed, stopping: API server unreachable']);
  });
});
