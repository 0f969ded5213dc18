import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { EddyFunction } from '../api/types.js';
import { ManifestSet } from './manifests.js';

const crdPath = fileURLToPath(new URL('../../../crds/function.yaml', import.meta.url));

function fnDoc(name: string, spec: string): string {
  return `apiVersion: eddy.dev/v1alpha1
kind: Function
metadata:
  name: ${name}
  namespace: photos
spec:
  image: registry.example.com/${name}:1.0
${spec}`;
}

const secretDoc = `apiVersion: v1
kind: Secret
metadata:
  name: minio-creds
  namespace: photos
  labels:
    eddy.dev/connection: 'true'
data:
  accessKeyId: ${Buffer.from('minioadmin').toString('base64')}
stringData:
  secretAccessKey: s3cret
`;

const configMapDoc = `apiVersion: v1
kind: ConfigMap
metadata:
  name: thumbnail-code
  namespace: photos
data:
  index.mjs: export const handler = async () => 'ok';
`;

/** The 1-based line of the first line of `text` that starts with `start`, after `after`. */
function lineOf(text: string, start: string, after = 0): number {
  const lines = text.split('\n');
  const i = lines.findIndex((l, n) => n >= after && l.startsWith(start));
  if (i < 0) throw new Error(`no line starts with ${start}`);
  return i + 1;
}

/** Polls until `check` passes, for at most 5 s. */
async function eventually(check: () => void): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      check();
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

let dir: string;
let reports: string[];
let stop: AbortController;

function manifests(): ManifestSet {
  return new ManifestSet({ crdPath, report: (line) => reports.push(line), debounceMs: 50 });
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'eddy-manifests-'));
  reports = [];
  stop = new AbortController();
});

afterEach(async () => {
  stop.abort();
  await rm(dir, { recursive: true, force: true });
});

describe('ManifestSet.load', () => {
  it('loads every document of a file: Functions with the CRD defaults, Secrets and ConfigMaps', async () => {
    const file = join(dir, 'photos.yaml');
    await writeFile(
      file,
      [
        'apiVersion: v1\nkind: Namespace\nmetadata: {name: photos}\n',
        fnDoc('thumbnail', '  memory: 512Mi\n'),
        fnDoc('resize', '  timeoutSeconds: 30\n'),
        secretDoc,
        secretDoc.replace('minio-creds', 'other-creds').replace(/ {2}labels:\n.*\n/, ''),
        configMapDoc,
      ].join('---\n'),
    );
    const set = manifests();
    await set.load([file]);

    expect(reports).toEqual([]);
    const thumbnail = set.store.get('photos', 'thumbnail')!;
    expect(thumbnail.spec).toMatchObject({ memory: '512Mi', timeoutSeconds: 3 });
    expect(thumbnail.metadata.generation).toBe(1);
    expect(thumbnail.metadata.uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(set.store.get('photos', 'resize')!.spec).toMatchObject({
      memory: '128Mi',
      timeoutSeconds: 30,
    });
    await expect(set.secret('photos', 'minio-creds')).resolves.toEqual({
      accessKeyId: 'minioadmin',
      secretAccessKey: 's3cret',
    });
    // Only a Secret labelled for Functions' use is handed out, as in a cluster.
    await expect(set.secret('photos', 'other-creds')).rejects.toThrow(
      'kubectl label secret other-creds -n photos eddy.dev/connection=true',
    );
    expect(set.configMap('photos', 'thumbnail-code')).toEqual({
      'index.mjs': "export const handler = async () => 'ok';",
    });
    expect(set.configMap('photos', 'other')).toBeUndefined();
  });

  it('skips a bad Function, naming file, line, object and fix, and loads the others', async () => {
    const file = join(dir, 'functions.yaml');
    const text = [
      fnDoc('thumbnail', ''),
      fnDoc('bad', '  memory: lots\n  scaling: {minReplicas: 5, maxReplicas: 2}\n'),
      'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: photos}\n',
      fnDoc('resize', ''),
    ].join('---\n');
    await writeFile(file, text);
    const set = manifests();
    await set.load([file]);

    expect(
      set.store
        .list()
        .map((f) => f.metadata.name)
        .sort(),
    ).toEqual(['resize', 'thumbnail']);
    const badLine = lineOf(text, 'apiVersion', lineOf(text, '---'));
    const deploymentLine = lineOf(text, 'apiVersion: apps/v1');
    expect(reports).toEqual([
      expect.stringMatching(
        new RegExp(
          `^${file}:${badLine}: Function photos/bad skipped: spec\\.memory: Invalid value: "lots": must match .*; spec\\.scaling: scaling\\.minReplicas must not exceed scaling\\.maxReplicas`,
        ),
      ),
      `${file}:${deploymentLine}: apps/v1 Deployment photos/web is not used by the local stack (it loads Functions, Secrets and ConfigMaps): ignored`,
    ]);
  });

  it('reports a document that is not YAML with file and line, and loads the other documents', async () => {
    const file = join(dir, 'broken.yaml');
    const text = [
      fnDoc('thumbnail', ''),
      'apiVersion: v1\nkind: Secret\nmetadata: name: x\n',
      secretDoc,
    ].join('---\n');
    await writeFile(file, text);
    const set = manifests();
    await set.load([file]);

    expect(set.store.get('photos', 'thumbnail')).toBeDefined();
    await expect(set.secret('photos', 'minio-creds')).resolves.toHaveProperty('secretAccessKey');
    expect(reports).toHaveLength(1);
    expect(reports[0]).toMatch(
      new RegExp(`^${file}:${lineOf(text, 'metadata: name: x')}:\\d+: not valid YAML`),
    );
  });

  it('reads YAML as kubectl does: yes is a boolean, an unquoted time stays a string', async () => {
    const file = join(dir, 'kinesis.yaml');
    const spec = `  triggers:
    - name: clicks
      kinesis:
        stream: clicks
        startingPosition: AT_TIMESTAMP
        startingTimestamp: 2024-05-01T12:00:00Z
        bisectOnError: yes
        connection: {endpoint: "http://kinesis:4567"}
`;
    await writeFile(file, fnDoc('clicks', spec));
    const set = manifests();
    await set.load([file]);

    expect(reports).toEqual([]);
    expect(set.store.get('photos', 'clicks')!.spec.triggers![0]!.kinesis).toMatchObject({
      startingTimestamp: '2024-05-01T12:00:00Z',
      bisectOnError: true,
    });
  });

  it('rejects a Secret it does not have, naming the files to add it to', async () => {
    const a = join(dir, 'a.yaml');
    const b = join(dir, 'b.yaml');
    await writeFile(a, fnDoc('thumbnail', ''));
    await writeFile(b, configMapDoc);
    const set = manifests();
    await set.load([a, b]);

    await expect(set.secret('photos', 'minio-creds')).rejects.toThrow(
      `Secret photos/minio-creds not found in the loaded manifests: add it to one of ${a}, ${b}`,
    );
  });

  it("hands a Function's environment any Secret of the files, labelled or not", async () => {
    const file = join(dir, 'photos.yaml');
    await writeFile(
      file,
      [secretDoc.replace(/ {2}labels:\n.*\n/, ''), fnDoc('thumbnail', '')].join('---\n'),
    );
    const set = manifests();
    await set.load([file]);
    expect(set.secretData('photos', 'minio-creds')).toEqual({
      accessKeyId: 'minioadmin',
      secretAccessKey: 's3cret',
    });
    expect(set.secretData('photos', 'other')).toBeUndefined();
  });

  it('serves Functions that name the local S3 store (http://eddy-local-s3) with its address', async () => {
    const file = join(dir, 'photos.yaml');
    const s3 = (bucket: string) =>
      `{bucket: ${bucket}, connection: {endpoint: 'http://eddy-local-s3', secretRef: {name: minio-creds}}}`;
    await writeFile(
      file,
      fnDoc(
        'thumbnail',
        `  env:
    - {name: S3_ENDPOINT, value: 'http://eddy-local-s3'}
    - {name: BUCKET_URL, value: 'http://eddy-local-s3/photos'}
    - {name: ELSEWHERE, value: 'http://eddy-local-s3.example.com'}
  deadLetter: {s3: ${s3('dead')}}
  triggers:
    - {name: uploads, s3: ${s3('photos')}}
    - {name: far, s3: {bucket: far, connection: {endpoint: 'http://minio.minio.svc:9000', secretRef: {name: minio-creds}}}}
`,
      ),
    );
    const set = new ManifestSet({
      crdPath,
      report: (line) => reports.push(line),
      localS3: () => 'http://127.0.0.1:9100',
    });
    await set.load([file]);
    expect(reports).toEqual([]);
    const { spec } = set.store.get('photos', 'thumbnail')!;
    expect(spec.env).toEqual([
      { name: 'S3_ENDPOINT', value: 'http://127.0.0.1:9100' },
      { name: 'BUCKET_URL', value: 'http://127.0.0.1:9100/photos' },
      { name: 'ELSEWHERE', value: 'http://eddy-local-s3.example.com' },
    ]);
    expect(spec.triggers!.map((t) => t.s3!.connection.endpoint)).toEqual([
      'http://127.0.0.1:9100',
      'http://minio.minio.svc:9000',
    ]);
    expect(spec.deadLetter!.s3!.connection.endpoint).toBe('http://127.0.0.1:9100');

    // Without a store it stays as written, and the report says how to run one.
    reports = [];
    const none = new ManifestSet({
      crdPath,
      report: (l) => reports.push(l),
      localS3: () => undefined,
    });
    await none.load([file]);
    expect(none.store.get('photos', 'thumbnail')!.spec.env![0]!.value).toBe('http://eddy-local-s3');
    expect(reports).toEqual([
      `${file}:1: Function photos/thumbnail names the local S3 store (http://eddy-local-s3), but none runs: start the local stack with --s3-port <port> (npm start runs one on 9000)`,
    ]);
  });

  it('keeps the first of two files that define the same Function, and says so', async () => {
    const a = join(dir, 'a.yaml');
    const b = join(dir, 'b.yaml');
    await writeFile(a, fnDoc('thumbnail', '  memory: 256Mi\n'));
    await writeFile(b, fnDoc('thumbnail', '  memory: 1Gi\n'));
    const set = manifests();
    await set.load([a, b]);

    expect(set.store.get('photos', 'thumbnail')!.spec.memory).toBe('256Mi');
    expect(reports).toEqual([
      `${b}:1: Function photos/thumbnail is also defined in ${a}: this one is ignored; keep one of them`,
    ]);
  });
});

describe('ManifestSet.watch', () => {
  async function watched(
    text: string,
  ): Promise<{ set: ManifestSet; file: string; changes: string[] }> {
    const file = join(dir, 'functions.yaml');
    await writeFile(file, text);
    const set = manifests();
    await set.load([file]);
    set.watch(stop.signal);
    const changes: string[] = [];
    set.store.onChange((fn: EddyFunction, deleted) =>
      changes.push(`${deleted ? 'delete' : 'set'} ${fn.metadata.name}`),
    );
    return { set, file, changes };
  }

  it('sets a Function again when an edit changes it, and only that one', async () => {
    const resize = fnDoc('resize', '');
    const { set, file, changes } = await watched(`${fnDoc('thumbnail', '')}---\n${resize}`);
    const uid = set.store.get('photos', 'thumbnail')!.metadata.uid;

    await writeFile(file, `${fnDoc('thumbnail', '  memory: 1Gi\n')}---\n${resize}`);
    await eventually(() => expect(set.store.get('photos', 'thumbnail')!.spec.memory).toBe('1Gi'));

    expect(changes).toEqual(['set thumbnail']);
    expect(set.store.get('photos', 'thumbnail')!.metadata).toMatchObject({ uid, generation: 2 });
    expect(reports).toEqual([`${file}:1: Function photos/thumbnail updated`]);
  });

  it('follows an editor that saves by renaming a new file over the old one', async () => {
    const { set, file } = await watched(fnDoc('thumbnail', ''));

    const temporary = join(dir, '.functions.yaml.swp');
    await writeFile(temporary, fnDoc('thumbnail', '  memory: 2Gi\n'));
    await rename(temporary, file);
    await eventually(() => expect(set.store.get('photos', 'thumbnail')!.spec.memory).toBe('2Gi'));
  });

  it('deletes the Function of a document removed from the file', async () => {
    const { set, file, changes } = await watched(
      `${fnDoc('thumbnail', '')}---\n${fnDoc('resize', '')}`,
    );

    await writeFile(file, fnDoc('thumbnail', ''));
    await eventually(() => expect(set.store.get('photos', 'resize')).toBeUndefined());

    expect(changes).toEqual(['delete resize']);
    expect(reports).toEqual([
      `${file}: Function photos/resize removed: it is no longer in the file`,
    ]);
  });

  it('keeps the previous version of a Function an edit breaks, says so, and takes the fix', async () => {
    const { set, file } = await watched(fnDoc('thumbnail', '  memory: 512Mi\n'));

    await writeFile(file, fnDoc('thumbnail', '  memory: 512 megabytes\n'));
    await eventually(() => expect(reports).toHaveLength(1));
    expect(reports[0]).toMatch(
      new RegExp(
        `^${file}:1: Function photos/thumbnail not updated, its previous version keeps running: spec\\.memory: Invalid value: "512 megabytes"`,
      ),
    );
    expect(set.store.get('photos', 'thumbnail')!.spec.memory).toBe('512Mi');

    await writeFile(file, fnDoc('thumbnail', '  memory: 768Mi\n'));
    await eventually(() => expect(set.store.get('photos', 'thumbnail')!.spec.memory).toBe('768Mi'));
  });

  it('keeps everything a file defined while it does not parse', async () => {
    const { set, file, changes } = await watched(
      `${fnDoc('thumbnail', '')}---\n${fnDoc('resize', '')}`,
    );

    await writeFile(file, `${fnDoc('thumbnail', '')}---\napiVersion: [eddy.dev/v1alpha1\n`);
    await eventually(() => expect(reports).toEqual([expect.stringMatching(/not valid YAML/)]));
    expect(changes).toEqual([]);
    expect(set.store.get('photos', 'resize')).toBeDefined();
  });
});
