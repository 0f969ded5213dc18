import { chmod, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lambdaEnv, shUnderBash, type ProcessInvokerSettings } from './process-invoker.js';

describe('a #!/bin/sh bootstrap', () => {
  let dir: string;
  /** /bin/sh as Debian has it (dash) and as Lambda has it (bash), and a bash to run. */
  let dashSh: string;
  let bashSh: string;
  let bash: string;

  async function file(name: string, text: string, mode = 0o755): Promise<string> {
    const path = join(dir, name);
    await writeFile(path, text);
    await chmod(path, mode);
    return path;
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'eddy-sh-'));
    bash = await file('bash', '');
    await file('dash', '');
    dashSh = join(dir, 'sh-dash');
    await symlink(join(dir, 'dash'), dashSh);
    bashSh = join(dir, 'sh-bash');
    await symlink(bash, bashSh);
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('runs under bash where /bin/sh is not bash, as on Lambda, keeping its shebang argument', async () => {
    const tutorial = await file('tutorial', '#!/bin/sh\n\nset -euo pipefail\n');
    expect(shUnderBash(tutorial, dashSh, bash)).toEqual({
      command: bash,
      args: ['--posix', tutorial],
    });
    const withFlag = await file('flag', '#! /bin/sh -e\nexit 0\n');
    expect(shUnderBash(withFlag, dashSh, bash)).toEqual({
      command: bash,
      args: ['--posix', '-e', withFlag],
    });
  });

  it('runs as it is otherwise', async () => {
    const tutorial = await file('tutorial2', '#!/bin/sh\nset -euo pipefail\n');
    // /bin/sh is bash already, or there is no bash.
    expect(shUnderBash(tutorial, bashSh, bash)).toBeUndefined();
    expect(shUnderBash(tutorial, dashSh, join(dir, 'no-bash'))).toBeUndefined();
    // Another interpreter, a program, a script that is not executable, no file at all.
    expect(shUnderBash(await file('b1', '#!/bin/bash\n'), dashSh, bash)).toBeUndefined();
    expect(shUnderBash(await file('b2', '#!/bin/shell\n'), dashSh, bash)).toBeUndefined();
    expect(shUnderBash(await file('b3', '\x7fELF\x02\x01'), dashSh, bash)).toBeUndefined();
    expect(shUnderBash(await file('b4', '#!/bin/sh\n', 0o644), dashSh, bash)).toBeUndefined();
    expect(shUnderBash(join(dir, 'none'), dashSh, bash)).toBeUndefined();
  });
});

describe('the environment of a language process', () => {
  const settings = (logFormat: 'text' | 'json'): ProcessInvokerSettings => ({
    runtime: 'python3.11',
    python: 'python3',
    env: { PATH: '/usr/bin', NODE_OPTIONS: '--max-old-space-size=100', AWS_REGION: 'eu-west-1' },
    codeDir: '/code',
    handler: 'app.handler',
    functionName: 'orders',
    functionNamespace: 'shop',
    memoryMb: 256,
    concurrency: 1,
    logFormat,
    logStreamName: 'stream',
  });

  it("is Lambda's, with JSON logs asked of AWS's client when the function logs JSON", () => {
    const text = lambdaEnv(settings('text'), '127.0.0.1:9001');
    expect(text).toMatchObject({
      AWS_LAMBDA_RUNTIME_API: '127.0.0.1:9001',
      AWS_REGION: 'eu-west-1',
      AWS_LAMBDA_FUNCTION_NAME: 'orders',
      AWS_LAMBDA_FUNCTION_MEMORY_SIZE: '256',
      PATH: '/usr/bin',
    });
    expect(text.NODE_OPTIONS).toBeUndefined();
    expect(text.AWS_LAMBDA_LOG_FORMAT).toBeUndefined();
    expect(lambdaEnv(settings('json'), '127.0.0.1:9001').AWS_LAMBDA_LOG_FORMAT).toBe('JSON');
  });
});
