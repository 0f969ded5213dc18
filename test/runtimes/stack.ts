/**
 * The local stack (`node dist/operator/dev.js`) running Functions of the non-Node runtimes, and
 * what the tests of each runtime share: invoking through its gateway, reading its log.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectRoot, pythonRic } from '../harness/components.js';
import { startProcess, waitUntilReady, type ManagedProcess } from '../harness/proc.js';
import { waitFor } from '../harness/wait.js';

const devMain = join(projectRoot, 'dist', 'operator', 'dev.js');

export interface Stack {
  url: string;
  dir: string;
  log(): string;
  invoke(name: string, event: unknown): Promise<Answer>;
  /** The stack's log lines of one invocation's replica, from its START to its REPORT. */
  linesOf(requestId: string): Promise<string[]>;
  stop(): Promise<void>;
}

export interface Answer {
  status: number;
  requestId: string;
  initDurationMs: string | null;
  body: Record<string, unknown>;
}

/** A Function manifest in namespace `dev`; `spec` is YAML lines indented by two spaces. */
export function manifest(name: string, spec: string, annotations = ''): string {
  return `apiVersion: eddy.dev/v1alpha1
kind: Function
metadata:
  name: ${name}
  namespace: dev
${annotations ? `  annotations:\n    ${annotations}\n` : ''}spec:
${spec}
`;
}

/** Indents code for a manifest's `code.inline` block. */
export const inline = (code: string) =>
  `  code:\n    inline: |\n${code
    .trim()
    .split('\n')
    .map((l) => `      ${l}`)
    .join('\n')}\n`;

export async function startStack(
  manifests: string[],
  env: Record<string, string> = {},
): Promise<Stack> {
  const dir = await mkdtemp(join(tmpdir(), 'eddy-runtimes-'));
  await writeFile(join(dir, 'functions.yaml'), manifests.join('---\n'));
  const proc: ManagedProcess = startProcess(
    'dev',
    process.execPath,
    [devMain, '--port', '0', '--metrics-port', '0', join(dir, 'functions.yaml')],
    join(dir, 'dev.log'),
    {
      cwd: dir,
      env: {
        // Without nats-server or minio: events in memory, s3rver for the store.
        PATH: '/usr/local/bin:/usr/bin:/bin',
        HOME: process.env.HOME,
        // The harness's virtual environment, so no test installs from PyPI.
        EDDY_PYTHON: pythonRic,
        ...env,
      },
    },
  );
  let url = '';
  await waitUntilReady(
    proc,
    async () => {
      const m = /gateway listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(proc.log());
      if (m) url = m[1]!;
      return url !== '';
    },
    30_000,
    50,
  );
  return {
    url,
    dir,
    log: () => proc.log(),
    async invoke(name, event) {
      const res = await fetch(`${url}/functions/dev/${name}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(event),
        signal: AbortSignal.timeout(60_000),
      });
      const text = await res.text();
      let body: Record<string, unknown>;
      try {
        body = JSON.parse(text) as Record<string, unknown>;
      } catch {
        body = { text };
      }
      return {
        status: res.status,
        requestId: res.headers.get('x-eddy-request-id') ?? '',
        initDurationMs: res.headers.get('x-eddy-init-duration-ms'),
        body,
      };
    },
    async linesOf(requestId) {
      return waitFor(`the REPORT line of ${requestId}`, async () => {
        const lines = proc.log().split('\n');
        const start = lines.findIndex((l) => l.includes(`START RequestId: ${requestId}`));
        const end = lines.findIndex((l) => l.includes(`REPORT RequestId: ${requestId}`));
        if (start < 0 || end < 0) return undefined;
        // Lines of the replica that ran it (its prefix), in order.
        const prefix = lines[start]!.slice(0, lines[start]!.indexOf('START'));
        return lines.slice(start, end + 1).filter((l) => l.startsWith(prefix));
      });
    },
    async stop() {
      await proc.stop(15_000);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
