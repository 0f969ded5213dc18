/**
 * The gateway under the chart's memory limit: the local stack's process (`dist/operator/dev.js`)
 * in a memory cgroup of 256 MiB, as the chart's container is, takes 60 synchronous invocations
 * of 6 MB at once. Its replicas run outside that limit, as function pods do. The memory budget
 * (64 MiB by default) must keep it alive: every call is answered, 200 or 429 with the reason.
 */
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { projectRoot } from '../harness/components.js';
import { startProcess, waitUntilReady, type ManagedProcess } from '../harness/proc.js';
import { waitFor } from '../harness/wait.js';

const devMain = join(projectRoot, 'dist', 'operator', 'dev.js');
const MiB = 2 ** 20;
const limitBytes = 256 * MiB;

/** cgroup v2 (one tree) or v1's memory controller, when this process may make groups there. */
function memoryCgroupRoot(): { root: string; v2: boolean } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  if (existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    const controllers = readFileSync('/sys/fs/cgroup/cgroup.controllers', 'utf8');
    return controllers.includes('memory') ? { root: '/sys/fs/cgroup', v2: true } : undefined;
  }
  return existsSync('/sys/fs/cgroup/memory/cgroup.procs')
    ? { root: '/sys/fs/cgroup/memory', v2: false }
    : undefined;
}

const cgroups = memoryCgroupRoot();
let proc: ManagedProcess | undefined;
let dir: string | undefined;
const made: string[] = [];

afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail' && proc) {
    process.stderr.write(`--- dev.js log\n${proc.log().slice(-20_000)}\n`);
  }
  await proc?.stop(30_000);
  proc = undefined;
  // A group can go once its processes have: the replica ends a moment after dev.js, or, if
  // dev.js was killed (the out-of-memory killer), is left behind and is ended here.
  for (const group of made.splice(0).reverse()) {
    const procs = () => readFileSync(join(group, 'cgroup.procs'), 'utf8').trim();
    try {
      await waitFor(`the processes of ${group} to end`, async () =>
        procs() === '' ? true : undefined,
      );
    } catch {
      for (const pid of procs().split('\n').filter(Boolean)) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // ended meanwhile
        }
      }
      await waitFor(`the processes of ${group} to be killed`, async () =>
        procs() === '' ? true : undefined,
      );
    }
    await rmdir(group);
  }
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

/** The ids of `pid`'s child processes. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // pid (comm) state ppid ...: comm may hold spaces, so read after its closing parenthesis.
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

describe('the gateway in a 256 MiB container', () => {
  it.runIf(cgroups)(
    'stays up under 60 concurrent 6 MB invocations and answers every one, 200 or 429 with the budget reason',
    async () => {
      const { root, v2 } = cgroups!;
      dir = await mkdtemp(join(tmpdir(), 'eddy-memory-'));
      const gatewayGroup = join(root, `eddy-gateway-test-${process.pid}`);
      const replicaGroup = join(root, `eddy-replicas-test-${process.pid}`);
      await mkdir(gatewayGroup);
      made.push(gatewayGroup);
      await mkdir(replicaGroup);
      made.push(replicaGroup);
      if (v2) {
        writeFileSync(join(gatewayGroup, 'memory.max'), String(limitBytes));
        const swap = join(gatewayGroup, 'memory.swap.max');
        if (existsSync(swap)) writeFileSync(swap, '0');
      } else {
        writeFileSync(join(gatewayGroup, 'memory.limit_in_bytes'), String(limitBytes));
      }

      const manifest = join(dir, 'function.yaml');
      await writeFile(
        manifest,
        `apiVersion: eddy.dev/v1alpha1
kind: Function
metadata: {name: large, namespace: memory}
spec:
  runtime: nodejs20
  memory: 2048Mi
  timeoutSeconds: 60
  concurrency: 8
  scaling: {maxReplicas: 1, idleSeconds: 600}
  code:
    inline: |
      export const handler = async (event) => ({ bytes: (event.pad ?? '').length });
`,
      );
      // The process joins the group before node starts, so all it ever holds is charged there.
      proc = startProcess(
        'dev',
        '/bin/sh',
        [
          '-c',
          'echo $$ > "$1/cgroup.procs" && exec "$2" "$3" --port 0 "$4"',
          'sh',
          gatewayGroup,
          process.execPath,
          devMain,
          manifest,
        ],
        join(dir, 'dev.log'),
        { cwd: dir, env: { PATH: process.env.PATH, HOME: process.env.HOME } },
      );
      let url = '';
      await waitUntilReady(
        proc,
        async () => {
          const m = /gateway listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(proc!.log());
          if (m) url = m[1]!;
          return url !== '';
        },
        30_000,
        50,
      );
      const invoke = (body: string | Buffer) =>
        fetch(`${url}/functions/memory/large`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body,
        });

      // The one replica starts outside the gateway's limit, as a pod does: dev.js starts it
      // from the replicas' group (a process is born in its parent's group), then goes back.
      const pid = String(proc.child.pid);
      writeFileSync(join(replicaGroup, 'cgroup.procs'), pid);
      const warm = await invoke('{}');
      writeFileSync(join(gatewayGroup, 'cgroup.procs'), pid);
      expect(warm.status).toBe(200);
      const replicas = childrenOf(proc.child.pid!);
      expect(replicas).toHaveLength(1);
      expect(readFileSync(join(replicaGroup, 'cgroup.procs'), 'utf8').trim()).toBe(
        String(replicas[0]),
      );

      const body = Buffer.from(`{"pad":"${'x'.repeat(6_000_000 - 10)}"}`);
      expect(body.length).toBe(6_000_000);
      const answers = await Promise.all(
        Array.from({ length: 60 }, async () => {
          const res = await invoke(body);
          return { status: res.status, body: await res.text() };
        }),
      );

      const ok = answers.filter((a) => a.status === 200);
      const refused = answers.filter((a) => a.status === 429);
      expect(ok.length + refused.length).toBe(60);
      expect(ok.length).toBeGreaterThan(0);
      for (const a of ok) expect(JSON.parse(a.body)).toEqual({ bytes: 6_000_000 - 10 });
      for (const a of refused) {
        expect(JSON.parse(a.body)).toEqual({
          errorType: 'TooManyRequestsException',
          errorMessage: expect.stringMatching(
            /^the gateway holds [\d.]+ MiB of bodies and answers and [\d.]+ MiB more would pass its memory budget of 64\.0 MiB \(EDDY_GATEWAY_MEMORY_BUDGET/,
          ) as unknown,
        });
      }
      // Alive, in its group, and still answering.
      expect(readFileSync(join(gatewayGroup, 'cgroup.procs'), 'utf8').trim()).toBe(
        String(proc.child.pid),
      );
      expect((await fetch(`${url}/healthz`)).status).toBe(200);
      expect((await invoke('{}')).status).toBe(200);
      const peak = Number(
        readFileSync(
          join(gatewayGroup, v2 ? 'memory.peak' : 'memory.max_usage_in_bytes'),
          'utf8',
        ).trim(),
      );
      process.stdout.write(
        `gateway in 256 MiB: ${ok.length} answered 200, ${refused.length} refused 429; peak ${(peak / MiB).toFixed(0)} MiB\n`,
      );
    },
    120_000,
  );
});
