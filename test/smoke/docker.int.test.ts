import { describe, expect, it, beforeAll } from 'vitest';
import { join } from 'node:path';
import { baseImageDir, baseImageTag } from '../harness/components.js';
import { dockerCli, ensureDockerd, hasImage, importBaseImage } from '../harness/docker.js';
import { run } from '../harness/proc.js';
import { canRun } from '../harness/suite.js';

describe.skipIf(!canRun('docker'))('Docker', () => {
  beforeAll(async () => {
    await ensureDockerd();
    if (!(await hasImage(baseImageTag))) await importBaseImage(join(baseImageDir, 'rootfs.tar'));
  }, 120_000);

  it(`runs the local ${baseImageTag} base image with Node 22`, async () => {
    const out = await run(
      dockerCli,
      ['run', '--rm', '--network', 'none', baseImageTag, 'node', '--version'],
      {
        timeoutMs: 60_000,
      },
    );
    console.log(`node --version in ${baseImageTag}: ${out.trim()}`);
    expect(out.trim()).toMatch(/^v22\.\d+\.\d+$/);
  });

  it('runs as the image’s node user and has npm', async () => {
    const out = await run(
      dockerCli,
      [
        'run',
        '--rm',
        '--network',
        'none',
        '--user',
        'node',
        baseImageTag,
        'sh',
        '-c',
        'id -un && npm --version',
      ],
      { timeoutMs: 60_000 },
    );
    const [user, npmVersion] = out.trim().split('\n');
    expect(user).toBe('node');
    expect(npmVersion).toMatch(/^10\./);
  });
});
