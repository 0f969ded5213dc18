/**
 * An accepted event survives its gateway dying: 1,000 asynchronous invocations through two
 * local stacks (`dev.js`) sharing one nats-server, each SIGKILLed twice while events flow.
 * Every accepted event is handled; duplicates (an event whose gateway died after the function
 * ran and before the acknowledgement) are counted and reported.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectRoot } from '../harness/components.js';
import { startNats, type Nats } from '../harness/nats.js';
import { startProcess, waitUntilReady, type ManagedProcess } from '../harness/proc.js';
import { canRun } from '../harness/suite.js';
import { waitFor } from '../harness/wait.js';

const devMain = join(projectRoot, 'dist', 'operator', 'dev.js');
const total = 1_000;

interface Gateway {
  name: string;
  dir: string;
  proc?: ManagedProcess;
  url?: string;
  starts: number;
}

describe.skipIf(!canRun('nats'))('durable queue: gateways killed mid-run', () => {
  let nats: Nats;
  let dir: string;
  const gateways: Gateway[] = [];

  beforeAll(async () => {
    nats = await startNats();
    dir = await mkdtemp(join(tmpdir(), 'eddy-crash-'));
  }, 60_000);
  afterAll(async () => {
    for (const g of gateways) await g.proc?.stop(5_000);
    await nats?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function start(g: Gateway, manifest: string): Promise<void> {
    g.starts++;
    const proc = startProcess(
      `${g.name}-${g.starts}`,
      process.execPath,
      [devMain, '--port', '0', '--metrics-port', '0', manifest],
      join(g.dir, `dev-${g.starts}.log`),
      {
        cwd: g.dir,
        env: { PATH: process.env.PATH, HOME: process.env.HOME, EDDY_NATS_URL: nats.url },
      },
    );
    let url = '';
    await waitUntilReady(
      proc,
      async () => {
        const m = /gateway listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(proc.log());
        if (m) url = m[1]!;
        return url !== '' && /queue: NATS JetStream at/.test(proc.log());
      },
      60_000,
    );
    g.proc = proc;
    g.url = url;
  }

  async function kill(g: Gateway): Promise<void> {
    const proc = g.proc!;
    g.url = undefined;
    proc.child.kill('SIGKILL');
    await proc.exited;
    await proc.stop();
  }

  it('handles every accepted event although every gateway is SIGKILLed twice', async () => {
    const out = join(dir, 'handled.log');
    const manifest = join(dir, 'function.yaml');
    await writeFile(
      manifest,
      `apiVersion: eddy.dev/v1alpha1
kind: Function
metadata:
  name: counter
  namespace: dev
spec:
  memory: 128Mi
  timeoutSeconds: 10
  concurrency: 4
  scaling:
    maxReplicas: 2
  env:
    - name: OUT
      value: ${out}
  code:
    inline: |
      import { appendFileSync } from 'node:fs';
      export const handler = async (event, context) => {
        await new Promise((r) => setTimeout(r, 20));
        appendFileSync(process.env.OUT, context.awsRequestId + '\\n');
        return { n: event.n };
      };
`,
    );
    for (const name of ['a', 'b']) {
      const g: Gateway = { name, dir: await mkdtemp(join(dir, `${name}-`)), starts: 0 };
      gateways.push(g);
      await start(g, manifest);
    }
    const accepted = new Set<string>();
    let sent = 0;
    // After these many accepted events, one gateway is killed and started again: a, b, a, b.
    const kills = [150, 350, 550, 750];
    let killing: Promise<void> | undefined;
    const maybeKill = () => {
      if (killing || kills.length === 0 || accepted.size < kills[0]!) return;
      kills.shift();
      const g = gateways[(4 - kills.length - 1) % 2]!;
      killing = (async () => {
        await kill(g);
        await start(g, manifest);
      })().finally(() => (killing = undefined));
    };
    /** Sends one event to any gateway up, until one accepts it (202). */
    const send = async (n: number): Promise<void> => {
      for (let tries = 0; tries < 600; tries++) {
        const up = gateways.filter((g) => g.url);
        const g = up[(n + tries) % Math.max(1, up.length)];
        if (g?.url) {
          try {
            const res = await fetch(`${g.url}/functions/dev/counter/async`, {
              method: 'POST',
              headers: { 'content-type': 'application/json' },
              body: JSON.stringify({ n }),
              signal: AbortSignal.timeout(10_000),
            });
            if (res.status === 202) {
              accepted.add(((await res.json()) as { requestId: string }).requestId);
              maybeKill();
              return;
            }
            await res.arrayBuffer();
          } catch {
            // that gateway is being killed: another one takes it
          }
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`event ${n} was accepted by no gateway`);
    };
    const workers = Array.from({ length: 8 }, async () => {
      while (sent < total) {
        // The next kill waits for the one under way; events keep flowing meanwhile.
        while (killing && kills.length > 0 && accepted.size >= kills[0]!) await killing;
        maybeKill();
        await send(sent++);
      }
    });
    await Promise.all(workers);
    while (killing) await killing;
    expect(accepted.size).toBe(total);
    expect(gateways.map((g) => g.starts)).toEqual([3, 3]);
    // Events a killed gateway held come back once their acknowledgement wait (30 s) ends.
    const lines = await waitFor(
      'every accepted event handled',
      async () => {
        const seen = (await readFile(out, 'utf8')).split('\n').filter((l) => l !== '');
        const unique = new Set(seen);
        return [...accepted].every((id) => unique.has(id)) ? seen : undefined;
      },
      120_000,
    );
    const unique = new Set(lines);
    const duplicates = lines.length - unique.size;
    const unanswered = [...unique].filter((id) => !accepted.has(id)).length;
    console.log(
      `${total} events accepted and handled; ${duplicates} handled twice (their gateway died between the handler and the acknowledgement); ${unanswered} more handled that the client sent again because their gateway died before answering 202`,
    );
    // Only events in flight at a kill can come twice: at most what two replicas hold at once.
    expect(duplicates).toBeLessThanOrEqual(4 * 2 * 4 * 2);
  }, 300_000);
});
