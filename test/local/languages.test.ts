/**
 * What the local stack makes for a language, and what it says when it cannot: fetching the
 * Node.js a nodejs<major> Function names (its deadline and failures, naming the runtime and what
 * to do; the fetch itself, from the npm registry, is run by test/runtimes/node.int.test.ts), and
 * python3.11's virtual environment: its progress, and python3 without its venv module.
 */
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nodeFor, pythonWithRic } from '../../operator/src/platform/local-code.js';

describe('nodeFor', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'eddy-node-fetch-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  async function fakeNpm(script: string): Promise<string> {
    const file = join(dir, 'npm');
    await writeFile(file, `#!/bin/sh\n${script}\n`);
    await chmod(file, 0o755);
    return file;
  }

  const other = process.versions.node.startsWith('24.') ? 'nodejs22' : 'nodejs24';

  it('runs a Function of the stack’s own Node major on the stack’s node, fetching nothing', async () => {
    const own = `nodejs${process.versions.node.split('.')[0]}` as 'nodejs20';
    const lines: string[] = [];
    expect(await nodeFor(own, dir, (l) => lines.push(l), { npm: '/nonexistent/npm' })).toBe(
      process.execPath,
    );
    expect(lines).toEqual([]);
  });

  it('stops a fetch at its deadline and says so', async () => {
    const npm = await fakeNpm('exec sleep 60');
    const lines: string[] = [];
    const fetching = nodeFor(other, join(dir, 'a'), (l) => lines.push(l), {
      npm,
      deadlineMs: 300,
    });
    await expect(fetching).rejects.toThrow(
      new RegExp(
        `fetching Node ${other.slice(6)} for ${other} from the npm registry failed: .*npm pack node-${process.platform}-${process.arch}@${other.slice(6)} .*did not finish within 0.3 s and was stopped; check that the registry`,
      ),
    );
    expect(lines[0]).toContain(
      `eddy: ${other} functions run on Node ${other.slice(6)}; this stack runs on Node ${process.version}: fetching`,
    );
  });

  it('stops a fetch at once when the stack stops', async () => {
    const npm = await fakeNpm('exec sleep 60');
    const stop = new AbortController();
    const started = Date.now();
    const fetching = nodeFor(other, join(dir, 'c'), () => undefined, { npm, signal: stop.signal });
    setTimeout(() => stop.abort(), 200);
    await expect(fetching).rejects.toThrow(
      new RegExp(
        `npm pack node-${process.platform}-${process.arch}@${other.slice(6)} .* was stopped: the stack is stopping$`,
      ),
    );
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('tells npm’s own error when the fetch fails, and tries again when asked again', async () => {
    const npm = await fakeNpm(
      'echo "npm error code E404" >&2; echo "npm error 404 Not Found" >&2; exit 1',
    );
    const say = () => undefined;
    const target = join(dir, 'b');
    await expect(nodeFor(other, target, say, { npm })).rejects.toThrow(
      /from the npm registry failed: .* failed: npm error 404 Not Found; check that the registry/,
    );
    // Not remembered as failed: the next replica asks again (and fails again here).
    await expect(nodeFor(other, target, say, { npm })).rejects.toThrow(/404 Not Found/);
  });
});

describe('pythonWithRic', () => {
  let dir: string;
  const saved = { PATH: process.env.PATH, EDDY_PYTHON: process.env.EDDY_PYTHON };
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'eddy-python-venv-'));
  });
  afterEach(async () => {
    process.env.PATH = saved.PATH;
    if (saved.EDDY_PYTHON === undefined) delete process.env.EDDY_PYTHON;
    else process.env.EDDY_PYTHON = saved.EDDY_PYTHON;
    await rm(dir, { recursive: true, force: true });
  });

  it('says to install python3-venv when python3 cannot make a virtual environment', async () => {
    // python3 as Debian ships it without python3-venv: `-m venv` fails, saying so at length.
    const bin = join(dir, 'bin');
    await mkdir(bin);
    await writeFile(
      join(bin, 'python3'),
      '#!/bin/sh\necho "The virtual environment was not created successfully because ensurepip is not" >&2\necho "available.  On Debian/Ubuntu systems, you need to install the python3-venv" >&2\necho "Failing command: $3/bin/python3" >&2\nexit 1\n',
    );
    await chmod(join(bin, 'python3'), 0o755);
    process.env.PATH = bin;
    delete process.env.EDDY_PYTHON;
    await expect(pythonWithRic(join(dir, 'languages'), () => undefined)).rejects.toThrow(
      "failed: python3's venv module is missing (Debian: apt-get install -y python3-venv), or set EDDY_PYTHON",
    );
  });

  /** A python on PATH that tells its version and fails to make a virtual environment. */
  async function fakePython(name: string, version: string): Promise<string> {
    const bin = join(dir, 'bin');
    await mkdir(bin, { recursive: true });
    await writeFile(
      join(bin, name),
      `#!/bin/sh\nif [ "$1" = -c ]; then echo ${version}; exit 0; fi\necho "no venv from ${name}" >&2\nexit 1\n`,
    );
    await chmod(join(bin, name), 0o755);
    process.env.PATH = bin;
    delete process.env.EDDY_PYTHON;
    return join(bin, name);
  }

  it('takes python3.11 before python3, and names the environment for the python it is made from', async () => {
    await fakePython('python3', '3.12');
    const python311 = await fakePython('python3.11', '3.11');
    const lines: string[] = [];
    await expect(pythonWithRic(join(dir, 'languages'), (l) => lines.push(l))).rejects.toThrow(
      'no venv from python3.11',
    );
    expect(lines).toEqual([
      `eddy: python3.11 functions run on ${python311} with awslambdaric 4.2.2; making its virtual environment in ${join(dir, 'languages', 'python3.11-awslambdaric-4.2.2')} (once)`,
    ]);
  });

  it('says while it makes the environment what it is doing, and when it is made', async () => {
    // A python3.11 whose venv has a pip that takes a while for each install.
    const bin = join(dir, 'bin');
    await mkdir(bin, { recursive: true });
    const pip = '#!/bin/sh\nsleep 0.3\n';
    await writeFile(
      join(bin, 'python3.11'),
      `#!/bin/sh\nif [ "$1" = -c ]; then echo 3.11; exit 0; fi\nmkdir -p "$3/bin"\nprintf '${pip}' > "$3/bin/pip"\nchmod +x "$3/bin/pip"\ntouch "$3/bin/python"\n`,
    );
    await chmod(join(bin, 'python3.11'), 0o755);
    // The shell's own tools (mkdir, sleep) after the fake python.
    process.env.PATH = `${bin}:/usr/bin:/bin`;
    delete process.env.EDDY_PYTHON;
    const lines: string[] = [];
    const venv = join(dir, 'languages', 'python3.11-awslambdaric-4.2.2-requirements-');
    const python = await pythonWithRic(join(dir, 'languages'), (l) => lines.push(l), 'pillow\n', {
      progressMs: 100,
    });
    expect(python).toMatch(
      /python3\.11-awslambdaric-4\.2\.2-requirements-[0-9a-f]{16}\/bin\/python$/,
    );
    expect(lines[0]).toContain('making its virtual environment in');
    const progress = lines.slice(1, -1);
    expect(progress.length).toBeGreaterThan(0);
    for (const line of progress) {
      expect(line).toMatch(
        /^eddy: still making the virtual environment in .*: (creating it|installing awslambdaric 4\.2\.2 from PyPI|installing the function's requirements\.txt) \(\d+ s so far\)$/,
      );
    }
    expect(progress.some((l) => l.includes('requirements.txt'))).toBe(true);
    expect(lines.at(-1)).toMatch(
      new RegExp(
        `^eddy: made the virtual environment in ${venv.replace(/[.]/g, '\\.')}[0-9a-f]{16} in \\d+\\.\\d s$`,
      ),
    );
    // Made once: asked again, it says nothing more.
    const count = lines.length;
    expect(await pythonWithRic(join(dir, 'languages'), (l) => lines.push(l), 'pillow\n')).toBe(
      python,
    );
    expect(lines.length).toBe(count);
  });

  it('says so when the only python3 is not 3.11', async () => {
    const python3 = await fakePython('python3', '3.12');
    const lines: string[] = [];
    await expect(pythonWithRic(join(dir, 'languages'), (l) => lines.push(l))).rejects.toThrow(
      'no venv from python3',
    );
    expect(lines).toEqual([
      `eddy: python3.11 functions run on Python 3.12 (${python3}), not 3.11: there is no python3.11 on PATH; install Python 3.11 to run them on Lambda's version`,
      `eddy: python3.11 functions run on ${python3} with awslambdaric 4.2.2; making its virtual environment in ${join(dir, 'languages', 'python3.12-awslambdaric-4.2.2')} (once)`,
    ]);
  });
});
