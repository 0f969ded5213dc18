import { chmod, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shUnderBash } from './process-invoker.js';

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
