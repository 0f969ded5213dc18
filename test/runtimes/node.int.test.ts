/**
 * nodejs22 and nodejs24 on the local stack run on that Node, not on the Node that runs the
 * stack: the stack fetches it from the npm registry once (`node-<platform>-<arch>` at that
 * major) and keeps it. The languages directory is the harness's cache, so runs after the first
 * fetch nothing.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cacheRoot, projectRoot } from '../harness/components.js';
import { freePort } from '../harness/ports.js';
import { waitFor } from '../harness/wait.js';
import { inline, manifest, startStack, type Stack } from './stack.js';

const languagesDir = join(cacheRoot, 'languages');
const stackMajor = process.versions.node.split('.')[0]!;

const versionHandler = inline(`export const handler = async () => ({ version: process.version });`);

const record = {
  eventName: 'ObjectCreated:Put',
  s3: { bucket: { name: 'photos' }, object: { key: 'a.jpg' } },
};

describe('nodejs runtimes on the local stack', () => {
  let stack: Stack;
  beforeAll(async () => {
    // A store nobody listens on: the thumbnail function makes its S3 client and fails to reach it.
    const closed = await freePort();
    const thumbnail = (name: string, runtime: string) =>
      manifest(
        name,
        `  runtime: ${runtime}\n  image: eddy/thumbnail:0.1.0\n  timeoutSeconds: 30\n  env:\n    - {name: S3_ENDPOINT, value: 'http://127.0.0.1:${closed}'}\n    - {name: AWS_ACCESS_KEY_ID, value: eddy}\n    - {name: AWS_SECRET_ACCESS_KEY, value: eddysecret}\n    - {name: AWS_MAX_ATTEMPTS, value: '1'}\n`,
        `eddy.dev/local-code-dir: ${join(projectRoot, 'examples', 'thumbnail')}`,
      );
    stack = await startStack(
      [
        manifest('v20', `  runtime: nodejs20\n${versionHandler}`),
        manifest('v22', `  runtime: nodejs22\n${versionHandler}`),
        manifest('v24', `  runtime: nodejs24\n${versionHandler}`),
        thumbnail('thumbnail', 'nodejs22'),
        thumbnail('thumbnail-on-20', 'nodejs20'),
      ],
      { EDDY_LANGUAGES_DIR: languagesDir },
    );
  }, 600_000);
  afterAll(() => stack?.stop());
  afterEach((ctx) => {
    if (ctx.task.result?.state === 'fail') process.stderr.write(`--- dev.js log\n${stack.log()}\n`);
  });

  for (const major of ['22', '24']) {
    it(`runs a nodejs${major} Function on Node ${major}, and says which Node in its first lines`, async () => {
      const { status, body } = await stack.invoke(`v${major}`, {});
      expect(status).toBe(200);
      expect(body.version).toMatch(new RegExp(`^v${major}\\.`));
      const node =
        stackMajor === major
          ? process.execPath
          : join(languagesDir, 'node', `${major}.x`, 'bin', 'node');
      expect(stack.log()).toContain(
        `eddy: nodejs${major} functions run on Node ${String(body.version)} (${node})`,
      );
    }, 600_000);
  }

  it('runs a nodejs20 Function on the stack’s own Node when that is 20', async () => {
    const { status, body } = await stack.invoke('v20', {});
    expect(status).toBe(200);
    expect(body.version).toMatch(/^v20\./);
    if (stackMajor === '20') expect(body.version).toBe(process.version);
  });

  it('the thumbnail example (nodejs22) no longer has the AWS SDK warn about Node 20', async () => {
    const on22 = await stack.invoke('thumbnail', { Records: [record] });
    // It made its client and could not reach the store: the SDK ran.
    expect(on22.status).toBe(500);
    const lines22 = await stack.linesOf(on22.requestId);
    expect(lines22.join('\n')).not.toContain('NodeVersionSupportWarning');
    if (stackMajor === '20') {
      // The same code on Node 20 does warn: what the check above would see.
      const on20 = await stack.invoke('thumbnail-on-20', { Records: [record] });
      expect(on20.status).toBe(500);
      expect((await stack.linesOf(on20.requestId)).join('\n')).toContain(
        'NodeVersionSupportWarning',
      );
    }
  });
});

describe('a Node.js the stack cannot fetch', () => {
  let stack: Stack;
  let dir: string;
  beforeAll(async () => {
    const closed = await freePort();
    stack = await startStack([manifest('v24', `  runtime: nodejs24\n${versionHandler}`)], {
      // A fresh languages directory and a registry nobody serves: the fetch fails at once.
      EDDY_LANGUAGES_DIR: join(cacheRoot, `languages-unreachable-${process.pid}`),
      npm_config_registry: `http://127.0.0.1:${closed}/`,
      npm_config_fetch_retries: '0',
    });
    dir = join(cacheRoot, `languages-unreachable-${process.pid}`);
  }, 60_000);
  afterAll(async () => {
    await stack?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('says what failed, naming the runtime and what to do', async () => {
    if (stackMajor === '24') return;
    const line = await waitFor(
      'the failed fetch told',
      async () =>
        stack
          .log()
          .split('\n')
          .find((l) =>
            l.includes(
              "[dev/v24] local platform: cannot make nodejs24's environment: fetching Node 24 for nodejs24 from the npm registry failed:",
            ),
          ),
      60_000,
    );
    expect(line).toContain('check that the registry (npm config get registry) is reachable');
    expect(line).toContain('or run the stack on Node 24');
    expect(line).toContain('ECONNREFUSED');
  }, 120_000);
});
