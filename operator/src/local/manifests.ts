/**
 * The local stack's API objects: the Functions, Secrets and ConfigMaps of manifest files
 * (several YAML documents a file, as `kubectl apply -f` takes them), kept current while the
 * files are edited. Each Function is checked and defaulted with the CRD's own schema
 * (api/schema.ts), so the rest of the stack sees the objects a cluster would hold.
 *
 * A bad object is reported and skipped while the others run. When an edit breaks an object that
 * was loaded, the report says so and its previous version keeps running: a half-typed change in
 * an editor must not take a working function away. YAML is read as kubectl reads it (YAML 1.1:
 * `yes` and `on` are booleans, timestamps stay strings). `kind: Namespace` documents are
 * accepted and ignored: locally every namespace exists.
 */
import { randomUUID } from 'node:crypto';
import { watch as watchDirectory } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { LineCounter, parseAllDocuments } from 'yaml';
import { checkFunction, loadFunctionSchema, type FunctionSchema } from '../api/schema.js';
import type { EddyFunction } from '../api/types.js';
import { MemoryFunctionStore, type SecretReader } from '../functions.js';
import { mayUseSecret } from '../secrets.js';
import type { ConfigMapReader } from '../platform/local-code.js';

export interface ManifestSetOptions {
  /** The Function CRD (crds/function.yaml), whose schema and rules every Function must pass. */
  crdPath: string;
  /**
   * Receives one line per problem and, while watching, per change. Each names the file (and
   * line), the object (`Function photos/thumbnail`) and what to do. Default: stderr.
   */
  report?: (line: string) => void;
  /** Where the Functions go; a new store unless given. */
  store?: MemoryFunctionStore;
  /** Quiet time after a file's last change before it is read again. */
  debounceMs?: number;
  /**
   * The address of the local stack's own S3 store, undefined when it runs none. When given,
   * Functions that name the store as `http://eddy-local-s3` (a trigger's or dead letter's
   * `connection.endpoint`, an env value) are served with this address instead, and those
   * loaded while no store runs are reported.
   */
  localS3?: () => string | undefined;
}

/**
 * How manifests name the local stack's own S3 store, whichever port it was given (`--s3-port`):
 * the stack serves Functions with the store's address in its place. The name resolves nowhere
 * else, so a manifest that keeps it outside the local stack fails at once rather than reaching
 * some other store.
 */
export const localS3Endpoint = 'http://eddy-local-s3';

/** Whether `value` names the local store: the endpoint itself, or a URL under it. */
const namesLocalS3 = (value: unknown): value is string =>
  typeof value === 'string' &&
  (value === localS3Endpoint || value.startsWith(`${localS3Endpoint}/`));

/**
 * `spec` with the local store's name replaced by `address` in connection endpoints (triggers,
 * dead letter) and env values; `found` tells whether it named the store at all.
 */
function mapLocalS3(
  spec: EddyFunction['spec'],
  address: string | undefined,
): { spec: EddyFunction['spec']; found: boolean } {
  let found = false;
  const swap = (value: string) => {
    found = true;
    return address === undefined ? value : address + value.slice(localS3Endpoint.length);
  };
  const walk = (v: unknown, key?: string): unknown => {
    if (Array.isArray(v)) return v.map((item) => walk(item));
    if (!isObject(v)) return key === 'endpoint' && namesLocalS3(v) ? swap(v) : v;
    return Object.fromEntries(Object.entries(v).map(([k, item]) => [k, walk(item, k)]));
  };
  const env = spec.env?.map((e) => (namesLocalS3(e.value) ? { ...e, value: swap(e.value) } : e));
  const mapped = {
    ...spec,
    ...(env ? { env } : {}),
    ...(spec.triggers ? { triggers: walk(spec.triggers) as typeof spec.triggers } : {}),
    ...(spec.deadLetter ? { deadLetter: walk(spec.deadLetter) as typeof spec.deadLetter } : {}),
  };
  return { spec: mapped, found };
}

type Kind = 'Function' | 'Secret' | 'ConfigMap';

/**
 * What a document holds: an object ready to use, one with the reasons it cannot be used, or
 * something to tell the user about (in document order, with the rest).
 */
type Entry =
  | { kind: 'Function'; key: string; line: number; fn: EddyFunction }
  | {
      kind: 'Secret' | 'ConfigMap';
      key: string;
      line: number;
      data: Record<string, string>;
      /** A Secret's labels: they decide whether Functions may use it. */
      labels?: Record<string, string>;
    }
  | { kind: Kind; key: string | undefined; line: number; problems: string[] }
  | { note: string };

const configKey = /^[-._a-zA-Z0-9]+$/;
const base64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Key `namespace/name` of a manifest, or undefined when it has no usable name. */
function keyOf(obj: Record<string, unknown>): string | undefined {
  const meta = isObject(obj.metadata) ? obj.metadata : {};
  if (typeof meta.name !== 'string' || meta.name === '') return undefined;
  const namespace =
    typeof meta.namespace === 'string' && meta.namespace !== '' ? meta.namespace : 'default';
  return `${namespace}/${meta.name}`;
}

/**
 * A Secret's or ConfigMap's data as strings: `encoded` (Secret data, ConfigMap binaryData) is
 * base64, `plain` (Secret stringData, ConfigMap data) is taken as it is and wins.
 */
function dataOf(
  obj: Record<string, unknown>,
  encoded: string,
  plain: string,
): { data: Record<string, string> } | { problems: string[] } {
  const data: Record<string, string> = {};
  const problems: string[] = [];
  for (const [field, isEncoded] of [
    [encoded, true],
    [plain, false],
  ] as const) {
    const map = obj[field];
    if (map === undefined || map === null) continue;
    if (!isObject(map)) {
      problems.push(`${field}: must be a mapping of keys to strings`);
      continue;
    }
    for (const [key, value] of Object.entries(map)) {
      if (!configKey.test(key) || key.length > 253) {
        problems.push(`${field}[${key}]: a key is letters, digits, '-', '_' or '.'`);
      } else if (typeof value !== 'string') {
        problems.push(`${field}[${key}]: must be a string: quote it`);
      } else if (isEncoded && !base64.test(value)) {
        problems.push(
          `${field}[${key}]: not base64: encode the value (base64 -w0) or put it under ${plain}`,
        );
      } else {
        data[key] = isEncoded ? Buffer.from(value, 'base64').toString('utf8') : value;
      }
    }
  }
  return problems.length > 0 ? { problems } : { data };
}

/**
 * Functions, Secrets and ConfigMaps from manifest files. Functions go into `store`; Secrets and
 * ConfigMaps are read with `secret` and `configMap`.
 */
export class ManifestSet {
  readonly store: MemoryFunctionStore;
  private readonly crdPath: string;
  private readonly report: (line: string) => void;
  private readonly debounceMs: number;
  private readonly localS3: (() => string | undefined) | undefined;
  private schema: FunctionSchema | undefined;
  /** Absolute path -> the path as the user gave it, for reports. */
  private readonly files = new Map<string, string>();
  /** `Kind namespace/name` -> the file whose version is in use. */
  private readonly owners = new Map<string, string>();
  /** `Kind namespace/name` -> files that define it too and were turned away. */
  private readonly turnedAway = new Map<string, Set<string>>();
  /** File -> the objects in use from it. */
  private readonly fromFile = new Map<string, Set<string>>();
  /** Running Functions: as checked (to see whether an edit changes them), and as served. */
  private readonly functions = new Map<string, { checked: EddyFunction; served: EddyFunction }>();
  private readonly secrets = new Map<string, Record<string, string>>();
  private readonly secretLabels = new Map<string, Record<string, string> | undefined>();
  private readonly configMaps = new Map<string, Record<string, string>>();
  /** Loads run one at a time, in order, so two edits of a file cannot interleave. */
  private queue: Promise<void> = Promise.resolve();

  constructor(options: ManifestSetOptions) {
    this.crdPath = options.crdPath;
    this.report = options.report ?? ((line) => console.error(line));
    this.store = options.store ?? new MemoryFunctionStore();
    this.debounceMs = options.debounceMs ?? 100;
    this.localS3 = options.localS3;
  }

  /**
   * Reads every document of `files`. Problems are reported, not thrown; only an unreadable or
   * unusable CRD rejects, since then no Function can be checked.
   */
  async load(files: string[]): Promise<void> {
    this.schema ??= loadFunctionSchema(await readFile(this.crdPath, 'utf8'));
    const added: string[] = [];
    for (const file of files) {
      const path = resolve(file);
      if (this.files.has(path)) continue;
      this.files.set(path, file);
      added.push(path);
    }
    for (const path of added) await this.enqueue(() => this.reload(path, false));
  }

  /** A Secret's data, decoded (a SecretReader); rejects naming the files when there is none. */
  readonly secret: SecretReader = async (namespace, name) => {
    const data = this.secrets.get(`${namespace}/${name}`);
    if (!data) {
      throw new Error(
        `Secret ${namespace}/${name} not found in the loaded manifests: add it to one of ${[...this.files.values()].join(', ')}`,
      );
    }
    mayUseSecret(namespace, name, this.secretLabels.get(`${namespace}/${name}`));
    return { ...data };
  };

  /**
   * A Secret's data for a Function's environment (secretKeyRef, envFrom), or undefined when the
   * files hold none. As for a pod in a cluster, no label is asked for: the Secret is the
   * Function's own, in its namespace, not a trigger's connection.
   */
  readonly secretData = (namespace: string, name: string): Record<string, string> | undefined => {
    const data = this.secrets.get(`${namespace}/${name}`);
    return data && { ...data };
  };

  /** A ConfigMap's data (binaryData decoded as UTF-8), or undefined when there is none. */
  readonly configMap: ConfigMapReader = (namespace, name) => {
    const data = this.configMaps.get(`${namespace}/${name}`);
    return data && { ...data };
  };

  /**
   * Reloads a loaded file some `debounceMs` after it last changed, until `signal` aborts: the
   * changed objects are put in use, those no longer in the file taken out. Watches each
   * file's directory rather than the file, so an editor that saves by writing a new file and
   * renaming it over the old one is followed too.
   */
  watch(signal: AbortSignal): void {
    if (signal.aborted) return;
    const byDirectory = new Map<string, string[]>();
    for (const path of this.files.keys()) {
      const dir = dirname(path);
      byDirectory.set(dir, [...(byDirectory.get(dir) ?? []), path]);
    }
    const timers = new Map<string, NodeJS.Timeout>();
    const changed = (path: string) => {
      clearTimeout(timers.get(path));
      timers.set(
        path,
        setTimeout(() => {
          timers.delete(path);
          if (!signal.aborted) void this.enqueue(() => this.reload(path, true));
        }, this.debounceMs),
      );
    };
    signal.addEventListener(
      'abort',
      () => {
        for (const t of timers.values()) clearTimeout(t);
        timers.clear();
      },
      { once: true },
    );
    for (const [dir, paths] of byDirectory) {
      const names = paths.map((p) => this.files.get(p)!).join(', ');
      try {
        const watcher = watchDirectory(dir, { signal }, (_event, filename) => {
          for (const path of paths) {
            if (filename === null || filename === basename(path)) changed(path);
          }
        });
        watcher.on('error', (err) =>
          this.report(`${names}: no longer watched (${err.message}): restart to pick up edits`),
        );
      } catch (err) {
        this.report(
          `${names}: cannot be watched (${err instanceof Error ? err.message : String(err)}): restart to pick up edits`,
        );
      }
    }
  }

  private enqueue(task: () => Promise<void>): Promise<void> {
    this.queue = this.queue.then(task).catch((err: unknown) => {
      this.report(`loading manifests failed: ${err instanceof Error ? err.message : String(err)}`);
    });
    return this.queue;
  }

  /** Reads `path` again and brings what is in use in line with it. */
  private async reload(path: string, watching: boolean): Promise<void> {
    const shown = this.files.get(path)!;
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      this.report(
        watching
          ? `${shown}: cannot be read (${why}): what it defined keeps running until it is back`
          : `${shown}: cannot be read (${why}): check the path`,
      );
      return;
    }
    const { entries, broken } = this.parse(shown, text);
    const previous = this.fromFile.get(path) ?? new Set<string>();
    const now = new Set<string>();
    for (const entry of entries) {
      if ('note' in entry) {
        this.report(entry.note);
        continue;
      }
      const id = entry.key === undefined ? undefined : `${entry.kind} ${entry.key}`;
      const where = `${shown}:${entry.line}`;
      const what = id ?? `a ${entry.kind} without a name`;
      if (id !== undefined && now.has(id)) {
        this.report(`${where}: ${what} is defined twice in this file: the later one is ignored`);
        continue;
      }
      const owner = id === undefined ? undefined : this.owners.get(id);
      if (id !== undefined && owner !== undefined && owner !== path) {
        this.report(
          `${where}: ${what} is also defined in ${this.files.get(owner)}: this one is ignored; keep one of them`,
        );
        this.turnedAway.set(id, new Set([...(this.turnedAway.get(id) ?? []), path]));
        continue;
      }
      if ('problems' in entry) {
        const kept = id !== undefined && previous.has(id);
        if (kept) now.add(id);
        const outcome = !kept
          ? 'skipped'
          : entry.kind === 'Function'
            ? 'not updated, its previous version keeps running'
            : 'not updated, its previous version stays in use';
        this.report(`${where}: ${what} ${outcome}: ${entry.problems.join('; ')}`);
        continue;
      }
      now.add(id!);
      this.owners.set(id!, path);
      if (entry.kind === 'Function' && this.localS3) {
        const { found } = mapLocalS3(entry.fn.spec, undefined);
        if (found && this.localS3() === undefined) {
          this.report(
            `${where}: ${what} names the local S3 store (${localS3Endpoint}), but none runs: start the local stack with --s3-port <port> (npm start runs one on 9000)`,
          );
        }
      }
      if (this.use(entry) && watching) {
        this.report(`${where}: ${what} ${previous.has(id!) ? 'updated' : 'added'}`);
      }
    }
    for (const id of previous) {
      if (now.has(id)) continue;
      if (broken) {
        // What a document that does not parse defined is unknown: nothing is taken away.
        now.add(id);
        continue;
      }
      this.remove(id);
      this.report(`${shown}: ${id} removed: it is no longer in the file`);
    }
    this.fromFile.set(path, now);
  }

  /** Every object in a file's documents, and whether some document did not parse. */
  private parse(shown: string, text: string): { entries: Entry[]; broken: boolean } {
    const lines = new LineCounter();
    const docs = parseAllDocuments(text, {
      lineCounter: lines,
      prettyErrors: false,
      // As kubectl reads manifests (go-yaml v2): YAML 1.1 scalars, but timestamps and
      // base-60 numbers stay strings.
      version: '1.1',
      customTags: (tags) =>
        tags.filter((t) =>
          typeof t === 'string'
            ? !['timestamp', 'intTime', 'floatTime'].includes(t)
            : t.tag !== 'tag:yaml.org,2002:timestamp' && t.format !== 'TIME',
        ),
    });
    const entries: Entry[] = [];
    let broken = false;
    for (const doc of docs) {
      const [error] = doc.errors;
      if (error) {
        // Later errors of a document mostly follow from its first.
        broken = true;
        const at = lines.linePos(error.pos[0]);
        entries.push({
          note: `${shown}:${at.line}:${at.col}: not valid YAML (${error.message}): fix it; until then nothing in this document is loaded or changed`,
        });
        continue;
      }
      if (doc.contents === null) continue;
      const line = lines.linePos(doc.contents.range[0]).line;
      let value: unknown;
      try {
        value = doc.toJS();
      } catch (err) {
        // Such as aliases expanding beyond reason (a "billion laughs" document).
        const why = err instanceof Error ? err.message : String(err);
        entries.push({ note: `${shown}:${line}: cannot be read (${why}): ignored` });
        continue;
      }
      const items =
        isObject(value) && typeof value.kind === 'string' && value.kind.endsWith('List')
          ? Array.isArray(value.items)
            ? (value.items as unknown[])
            : []
          : [value];
      for (const item of items) {
        const entry = this.interpret(item, shown, line);
        if (entry) entries.push(entry);
      }
    }
    return { entries, broken };
  }

  /** What one manifest is; undefined for what is ignored without a word (Namespaces). */
  private interpret(obj: unknown, shown: string, line: number): Entry | undefined {
    const where = `${shown}:${line}`;
    if (!isObject(obj) || typeof obj.kind !== 'string') {
      return {
        note: `${where}: not a Kubernetes object (a mapping with apiVersion, kind and metadata): ignored`,
      };
    }
    const key = keyOf(obj);
    const { kind, apiVersion } = obj;
    if (kind === 'Function') {
      const checked = checkFunction(this.schema!, obj);
      if ('problems' in checked) return { kind, key, line, problems: checked.problems };
      const { namespace, name } = checked.fn.metadata;
      return { kind, key: `${namespace}/${name}`, line, fn: checked.fn };
    }
    if (apiVersion === 'v1' && kind === 'Namespace') return undefined;
    if (apiVersion === 'v1' && (kind === 'Secret' || kind === 'ConfigMap')) {
      if (key === undefined) {
        return { kind, key, line, problems: ['metadata.name: Required value: give it a name'] };
      }
      const read =
        kind === 'Secret' ? dataOf(obj, 'data', 'stringData') : dataOf(obj, 'binaryData', 'data');
      if ('problems' in read) return { kind, key, line, problems: read.problems };
      const labels = isObject(obj.metadata) ? obj.metadata.labels : undefined;
      return {
        kind,
        key,
        line,
        data: read.data,
        ...(kind === 'Secret' && isObject(labels)
          ? { labels: labels as Record<string, string> }
          : {}),
      };
    }
    return {
      note: `${where}: ${String(apiVersion)} ${kind} ${key ?? ''} is not used by the local stack (it loads Functions, Secrets and ConfigMaps): ignored`,
    };
  }

  /** Puts an object in use; true when that changed anything. */
  private use(entry: Extract<Entry, { fn: EddyFunction } | { data: unknown }>): boolean {
    if (entry.kind === 'Function') {
      const running = this.functions.get(entry.key);
      if (running && isDeepStrictEqual(running.checked, entry.fn)) return false;
      const before = running?.served.metadata;
      // As the API server does: an identity per object, a generation that counts spec changes.
      const generation = !before
        ? 1
        : isDeepStrictEqual(running.checked.spec, entry.fn.spec)
          ? (before.generation ?? 1)
          : (before.generation ?? 1) + 1;
      const address = this.localS3?.();
      const served: EddyFunction = {
        ...entry.fn,
        metadata: { ...entry.fn.metadata, uid: before?.uid ?? randomUUID(), generation },
        spec: address === undefined ? entry.fn.spec : mapLocalS3(entry.fn.spec, address).spec,
      };
      this.functions.set(entry.key, { checked: entry.fn, served });
      this.store.set(served);
      return true;
    }
    const map = entry.kind === 'Secret' ? this.secrets : this.configMaps;
    const relabelled =
      entry.kind === 'Secret' && !isDeepStrictEqual(this.secretLabels.get(entry.key), entry.labels);
    if (entry.kind === 'Secret') this.secretLabels.set(entry.key, entry.labels);
    if (isDeepStrictEqual(map.get(entry.key), entry.data) && !relabelled) return false;
    map.set(entry.key, entry.data);
    return true;
  }

  /** Takes an object out of use; a file that defines it too gets its turn. */
  private remove(id: string): void {
    const space = id.indexOf(' ');
    const kind = id.slice(0, space) as Kind;
    const key = id.slice(space + 1);
    this.owners.delete(id);
    if (kind === 'Function') {
      this.functions.delete(key);
      const slash = key.indexOf('/');
      this.store.delete(key.slice(0, slash), key.slice(slash + 1));
    } else {
      (kind === 'Secret' ? this.secrets : this.configMaps).delete(key);
      if (kind === 'Secret') this.secretLabels.delete(key);
    }
    const waiting = this.turnedAway.get(id);
    this.turnedAway.delete(id);
    for (const path of waiting ?? []) void this.enqueue(() => this.reload(path, true));
  }
}
