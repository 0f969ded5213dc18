/**
 * Where a local replica's code comes from: inline code and ConfigMap code are written to disk
 * (one directory per content, so a replica never sees files change under it), a Function
 * annotated with `eddy.dev/local-code-dir` runs from that directory as it is, and an image
 * alone cannot run as a local process.
 */
import { execFile } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { accessSync, constants, existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { basename, delimiter, dirname, join, resolve } from 'node:path';
import { envDefaults, inlineCodeFile } from '../../../runtime/src/contract/index.js';
import type { EddyFunction, Runtime } from '../api/types.js';
import { CannotRun, keyOf } from './platform.js';

/** Runs a Function from a directory of this machine (an image-based Function's code, locally). */
export const localCodeDirAnnotation = 'eddy.dev/local-code-dir';

/** Reads a ConfigMap's data in a namespace, or undefined when there is no such ConfigMap. */
export type ConfigMapReader = (
  namespace: string,
  name: string,
) => Record<string, string> | undefined;

export type CodeSource =
  /** Run from this directory as it is. */
  | { kind: 'dir'; dir: string }
  /** Write these files (name -> content) and run from there; `hash` names their content. */
  | { kind: 'files'; files: Record<string, string>; hash: string };

function contentHash(files: Record<string, string>): string {
  const h = createHash('sha256');
  for (const name of Object.keys(files).sort()) h.update(`${name}\0${files[name]}\0`);
  return h.digest('hex').slice(0, 16);
}

/**
 * The code a local replica of `fn` runs. Throws an Error a user can act on when the Function
 * cannot run locally: only an image, a missing ConfigMap or directory.
 */
export function codeSource(fn: EddyFunction, configMaps?: ConfigMapReader): CodeSource {
  const source = findCode(fn, configMaps);
  checkLanguage(fn, source);
  return source;
}

function findCode(fn: EddyFunction, configMaps?: ConfigMapReader): CodeSource {
  const key = keyOf(fn);
  // The annotation wins: it is the local stack's explicit answer to "where is this code here".
  const annotated = fn.metadata.annotations?.[localCodeDirAnnotation];
  if (annotated !== undefined && annotated !== '') {
    const dir = resolve(annotated);
    if (!existsSync(dir) || !statSync(dir).isDirectory()) {
      throw new CannotRun(
        `Function ${key} cannot run locally: its annotation ${localCodeDirAnnotation} names ${dir}, which is not a directory`,
      );
    }
    return { kind: 'dir', dir };
  }
  const code = fn.spec.code;
  if (code?.inline !== undefined) {
    const files = {
      [inlineCodeFile(fn.spec.runtime ?? envDefaults.runtime, fn.spec.handler)]: code.inline,
    };
    return { kind: 'files', files, hash: contentHash(files) };
  }
  if (code?.configMap?.name) {
    const name = code.configMap.name;
    const data = configMaps?.(fn.metadata.namespace, name);
    if (!data) {
      throw new CannotRun(
        `Function ${key} cannot run locally: its code is in ConfigMap ${fn.metadata.namespace}/${name}, which the local stack does not have`,
      );
    }
    for (const file of Object.keys(data)) {
      // ConfigMap keys are file names; never let one climb out of the code directory.
      if (file === '' || file === '.' || file === '..' || /[/\\]/.test(file)) {
        throw new CannotRun(
          `Function ${key} cannot run locally: ConfigMap ${fn.metadata.namespace}/${name} has a key ${JSON.stringify(file)} that is not a file name`,
        );
      }
    }
    return { kind: 'files', files: { ...data }, hash: contentHash(data) };
  }
  const what = fn.spec.image ? `only an image (${fn.spec.image})` : 'no code';
  throw new CannotRun(
    `Function ${key} cannot run locally: it names ${what}; set the annotation ${localCodeDirAnnotation} to the directory holding its code, or use spec.code.inline or spec.code.configMap`,
  );
}

/**
 * Writes `files` into `<functionDir>/<hash>` unless it is there already, and returns that
 * directory. The files go to a temporary directory renamed into place, so a directory that
 * exists is complete. Callers serialise calls for the same `functionDir`.
 */
export async function writeCode(
  functionDir: string,
  source: Extract<CodeSource, { kind: 'files' }>,
): Promise<string> {
  const dir = join(functionDir, source.hash);
  if (existsSync(dir)) return dir;
  const tmp = join(functionDir, `.tmp-${randomUUID()}`);
  await mkdir(tmp, { recursive: true });
  try {
    for (const [name, content] of Object.entries(source.files)) {
      // A provided function's bootstrap is what the runtime starts.
      await writeFile(join(tmp, name), content, { mode: name === 'bootstrap' ? 0o755 : 0o644 });
    }
    await rename(tmp, dir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
  return dir;
}

/** Removes the code directories under `functionDir` other than those in `keep`. */
export async function removeCodeExcept(functionDir: string, keep: Set<string>): Promise<void> {
  let entries: string[];
  try {
    entries = await readdir(functionDir);
  } catch {
    return;
  }
  for (const entry of entries) {
    const dir = join(functionDir, entry);
    if (!keep.has(dir)) await rm(dir, { recursive: true, force: true });
  }
}

/** awslambdaric, AWS's Python runtime interface client, as the local stack installs it. */
export const awslambdaricVersion = '4.2.2';

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // not here
    }
  }
  return undefined;
}

/** The python a local python3.11 replica runs: EDDY_PYTHON when set, else python3 on PATH. */
export function basePython(env: NodeJS.ProcessEnv = process.env): string | undefined {
  // Lambda's version first, where the machine has it beside another python3.
  return env.EDDY_PYTHON || onPath('python3.11') || onPath('python3');
}

const pythonVersions = new Map<string, Promise<string | undefined>>();

/** A python's major.minor, or undefined when it does not say. */
function pythonVersion(python: string): Promise<string | undefined> {
  // Named for its version: no python started to ask it.
  if (basename(python) === 'python3.11') return Promise.resolve('3.11');
  let version = pythonVersions.get(python);
  if (!version) {
    version = run(python, ['-c', 'import sys; print("%d.%d" % sys.version_info[:2])'], 30_000).then(
      (out) => (/^\d+\.\d+$/.test(out.trim()) ? out.trim() : undefined),
      () => undefined,
    );
    pythonVersions.set(python, version);
  }
  return version;
}

/** The pythons already said not to be 3.11. */
const notLambdasPython = new Set<string>();

/**
 * Throws, saying what is missing, when this machine cannot run the language `fn` names: a
 * provided function without an executable bootstrap, a python3.11 function without python3,
 * java17 (not run locally yet).
 */
function checkLanguage(fn: EddyFunction, source: CodeSource): void {
  const key = keyOf(fn);
  switch (fn.spec.runtime) {
    case 'provided': {
      const hint =
        'a provided function brings an executable named bootstrap (Go: GOOS=linux go build -o bootstrap)';
      if (source.kind === 'files') {
        if (!('bootstrap' in source.files))
          throw new CannotRun(
            `Function ${key} cannot run locally: runtime provided starts bootstrap, which its code does not hold; ${hint}`,
          );
        return;
      }
      const bootstrap = join(source.dir, 'bootstrap');
      try {
        accessSync(bootstrap, constants.X_OK);
      } catch {
        throw new CannotRun(
          `Function ${key} cannot run locally: runtime provided starts ${bootstrap}, which ${existsSync(bootstrap) ? 'is not executable (chmod +x it)' : 'does not exist'}; ${hint}`,
        );
      }
      return;
    }
    case 'python3.11':
      if (!basePython())
        throw new CannotRun(
          `Function ${key} cannot run locally: runtime python3.11 needs python3 on PATH (Debian: apt-get install -y python3 python3-venv), or EDDY_PYTHON naming a python that has awslambdaric ${awslambdaricVersion}`,
        );
      return;
    case 'java17':
      if (!onPath('java'))
        throw new CannotRun(
          `Function ${key} cannot run locally: runtime java17 needs java on PATH (Debian: apt-get install -y openjdk-17-jre-headless)`,
        );
      if (!process.env.EDDY_JAVA_CLASSPATH && !onPath('mvn'))
        throw new CannotRun(
          `Function ${key} cannot run locally: runtime java17 needs mvn on PATH to fetch AWS's Java runtime interface client ${javaRicVersion} (Debian: apt-get install -y maven), or EDDY_JAVA_CLASSPATH naming its jars`,
        );
      return;
    default:
      return;
  }
}

/**
 * Runs a command to its end within `timeoutMs` (then it is killed), resolving with its stdout;
 * rejects saying which command failed and why: its last line on stderr, or the deadline.
 */
function run(
  command: string,
  args: string[],
  timeoutMs: number,
  options: {
    cwd?: string;
    /** Why it failed, from what it wrote; default: its last line on stderr. */
    explain?: (stdout: string, stderr: string) => string | undefined;
    /** Ends it (the stack stopping). */
    signal?: AbortSignal;
  } = {},
): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      command,
      args,
      {
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
        cwd: options.cwd,
        maxBuffer: 16 << 20,
        signal: options.signal,
      },
      (err, out, stderr) => {
        if (!err) return resolve(out);
        const what = `${command} ${args.join(' ')}`;
        if (options.signal?.aborted)
          reject(new Error(`${what} was stopped: the stack is stopping`));
        else if (err.killed && err.signal === 'SIGKILL')
          reject(new Error(`${what} did not finish within ${timeoutMs / 1000} s and was stopped`));
        else {
          const told =
            options.explain?.(out, stderr) ??
            stderr
              .trim()
              .split('\n')
              .filter((l) => l.trim() !== '')
              .pop();
          reject(new Error(`${what} failed: ${told ?? `exit code ${String(err.code)}`}`));
        }
      },
    );
  });
}

/** AWS's Java runtime interface client, as the local stack fetches it. */
export const javaRicVersion = '2.10.1';

const javaRics = new Map<string, Promise<string>>();

/**
 * The classpath entries of AWS's Java runtime interface client and what it needs, copied from
 * Maven Central by mvn under `dir` once and kept; or EDDY_JAVA_CLASSPATH as it is, when set.
 */
export function javaRicClasspath(
  dir: string,
  say: (line: string) => void,
  signal?: AbortSignal,
): Promise<string> {
  if (process.env.EDDY_JAVA_CLASSPATH) return Promise.resolve(process.env.EDDY_JAVA_CLASSPATH);
  const target = join(dir, `java-ric-${javaRicVersion}`);
  const classpath = join(target, '*');
  let made = javaRics.get(target);
  if (!made) {
    made = (async () => {
      if (existsSync(target)) return classpath;
      say(
        `eddy: java17 functions run on ${onPath('java')} with AWS's Java runtime interface client ${javaRicVersion}; copying it from Maven Central into ${target} (once)`,
      );
      const partial = `${target}.partial-${randomUUID()}`;
      await mkdir(partial, { recursive: true });
      try {
        await writeFile(
          join(partial, 'pom.xml'),
          `<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion><groupId>dev.eddy.local</groupId><artifactId>java-ric</artifactId><version>1</version><packaging>pom</packaging><dependencies><dependency><groupId>com.amazonaws</groupId><artifactId>aws-lambda-java-runtime-interface-client</artifactId><version>${javaRicVersion}</version></dependency></dependencies></project>\n`,
        );
        await run(
          'mvn',
          [
            '-q',
            '-B',
            '-f',
            join(partial, 'pom.xml'),
            'dependency:copy-dependencies',
            `-DoutputDirectory=${join(partial, 'jars')}`,
          ],
          300_000,
          { signal },
        );
        await rename(join(partial, 'jars'), target);
      } finally {
        await rm(partial, { recursive: true, force: true });
      }
      return classpath;
    })();
    javaRics.set(target, made);
    made.catch(() => javaRics.delete(target));
  }
  return made;
}

const venvs = new Map<string, Promise<string>>();

/** Debian's python3 without its venv module says so at length; this says what to install. */
function venvMissing(_stdout: string, stderr: string): string | undefined {
  return /ensurepip is not available|No module named venv|python3[\d.]*-venv/.test(stderr)
    ? "python3's venv module is missing (Debian: apt-get install -y python3-venv), or set EDDY_PYTHON to a python that has awslambdaric"
    : undefined;
}

/** How long pip may take to install a function's requirements before the stack gives up. */
const pipDeadlineMs = 600_000;

/** The function's own requirements.txt in its code directory, or undefined without one. */
export function requirementsOf(codeDir: string): string | undefined {
  const file = join(codeDir, 'requirements.txt');
  if (!existsSync(file)) return undefined;
  const text = readFileSync(file, 'utf8');
  // Comments and blank lines change nothing installed: not a new environment.
  const lines = text
    .split('\n')
    .map((l) => l.replace(/(^|\s)#.*$/, '').trim())
    .filter(Boolean);
  return lines.length === 0 ? undefined : `${lines.join('\n')}\n`;
}

/** How often the stack says that a long step (a virtual environment, a Node.js fetch) goes on. */
const progressMs = 10_000;

/**
 * The python of a virtual environment under `dir` with awslambdaric installed from PyPI
 * (manylinux wheels, no compiler), and the function's own requirements.txt (the lines of
 * `requirements`) when it has one, made once per set of requirements and kept; or EDDY_PYTHON
 * as it is, when set. `say` is told when an environment is made.
 */
export async function pythonWithRic(
  dir: string,
  say: (line: string) => void,
  requirements?: string,
  options: { signal?: AbortSignal; progressMs?: number } = {},
): Promise<string> {
  const { signal } = options;
  if (process.env.EDDY_PYTHON) return process.env.EDDY_PYTHON;
  const basePy = basePython();
  if (!basePy) throw new Error('python3 is not on PATH');
  // Named for the python it is made from: another python on PATH later makes another one.
  const version = (await pythonVersion(basePy)) ?? '3.11';
  if (version !== '3.11' && !notLambdasPython.has(basePy)) {
    notLambdasPython.add(basePy);
    say(
      `eddy: python3.11 functions run on Python ${version} (${basePy}), not 3.11: there is no python3.11 on PATH; install Python 3.11 to run them on Lambda's version`,
    );
  }
  const base = `python${version}-awslambdaric-${awslambdaricVersion}`;
  const venv = join(
    dir,
    requirements === undefined
      ? base
      : `${base}-requirements-${createHash('sha256').update(requirements).digest('hex').slice(0, 16)}`,
  );
  const python = join(venv, 'bin', 'python');
  let made = venvs.get(venv);
  if (!made) {
    made = (async () => {
      if (existsSync(python)) return python;
      say(
        `eddy: python3.11 functions run on ${basePy} with awslambdaric ${awslambdaricVersion}${requirements === undefined ? '' : ' and their requirements.txt'}; making its virtual environment in ${venv} (once)`,
      );
      const partial = `${venv}.partial-${randomUUID()}`;
      const started = Date.now();
      let step = 'creating it';
      const progress = setInterval(
        () =>
          say(
            `eddy: still making the virtual environment in ${venv}: ${step} (${Math.round((Date.now() - started) / 1000)} s so far)`,
          ),
        options.progressMs ?? progressMs,
      );
      await mkdir(dir, { recursive: true });
      try {
        await run(basePy, ['-m', 'venv', partial], 60_000, { explain: venvMissing, signal });
        const pip = join(partial, 'bin', 'pip');
        step = `installing awslambdaric ${awslambdaricVersion} from PyPI`;
        await run(
          pip,
          [
            'install',
            '-q',
            '--timeout',
            '30',
            '--only-binary=:all:',
            `awslambdaric==${awslambdaricVersion}`,
          ],
          300_000,
          { signal },
        );
        if (requirements !== undefined) {
          step = "installing the function's requirements.txt";
          await writeFile(join(partial, 'requirements.txt'), requirements);
          // The function's own packages: wheels where PyPI has them, else what pip can build.
          await run(
            pip,
            ['install', '-q', '--timeout', '30', '--prefer-binary', '-r', 'requirements.txt'],
            pipDeadlineMs,
            { cwd: partial, signal },
          );
        }
        await rename(partial, venv);
      } catch (err) {
        await rm(partial, { recursive: true, force: true });
        throw err;
      } finally {
        clearInterval(progress);
      }
      say(
        `eddy: made the virtual environment in ${venv} in ${((Date.now() - started) / 1000).toFixed(1)} s`,
      );
      return python;
    })();
    venvs.set(venv, made);
    // A failure is kept a while: replicas started again meanwhile are told it at once
    // instead of making the environment again (a changed requirements.txt is another one).
    made.catch(() => setTimeout(() => venvs.delete(venv), failedEnvironmentKeptMs).unref());
  }
  return made;
}

/** How long a virtual environment that could not be made is not tried again. */
export const failedEnvironmentKeptMs = 60_000;

/** How long fetching a Node.js from the npm registry may take before the stack gives up. */
export const nodeFetchDeadlineMs = 300_000;

/** The Node.js major version a nodejs runtime names: 'nodejs22' -> '22'. */
export function nodeMajor(runtime: Runtime): string | undefined {
  const m = /^nodejs(\d+)$/.exec(runtime);
  return m?.[1];
}

/** npm, as the stack finds it: beside the node that runs the stack, else on PATH. */
function findNpm(): string | undefined {
  const beside = join(dirname(process.execPath), 'npm');
  if (existsSync(beside)) return beside;
  return onPath('npm');
}

const nodes = new Map<string, Promise<string>>();

export interface NodeFetchOptions {
  /** The npm command; default: the one beside this Node, else on PATH. */
  npm?: string;
  deadlineMs?: number;
  /** Stops a fetch (the stack stopping). */
  signal?: AbortSignal;
}

/**
 * The node binary a replica of a `nodejs<major>` Function runs on: this process's own when it
 * is that major, otherwise Node.js of that major as the npm registry serves it (the package
 * `node-<platform>-<arch>`), fetched with npm into `<dir>/node/<major>.x` once and kept.
 * `say` is told which Node runs them, and while a fetch goes on.
 */
export function nodeFor(
  runtime: Runtime,
  dir: string,
  say: (line: string) => void,
  options: NodeFetchOptions = {},
): Promise<string> {
  const major = nodeMajor(runtime);
  if (major === undefined) return Promise.reject(new Error(`${runtime} is not a Node.js runtime`));
  if (process.versions.node.split('.')[0] === major) return Promise.resolve(process.execPath);
  const target = join(dir, 'node', `${major}.x`);
  const node = join(target, 'bin', 'node');
  let made = nodes.get(target);
  if (!made) {
    made = (async () => {
      if (!existsSync(node)) await fetchNode(runtime, major, target, say, options);
      const version = (await run(node, ['--version'], 30_000, { signal: options.signal })).trim();
      if (version.split('.')[0] !== `v${major}`)
        throw new Error(
          `${node} is Node ${version}, not ${major}: remove ${target} to fetch it again`,
        );
      say(`eddy: ${runtime} functions run on Node ${version} (${node})`);
      return node;
    })();
    nodes.set(target, made);
    made.catch(() => nodes.delete(target));
  }
  return made;
}

/** The summary of the error `npm --json` writes on stdout, e.g. `FetchError: ... ECONNREFUSED`. */
function npmError(stdout: string): string | undefined {
  try {
    const parsed = JSON.parse(stdout) as { error?: { summary?: unknown } };
    const summary = parsed.error?.summary;
    return typeof summary === 'string' && summary !== '' ? summary.split('\n')[0] : undefined;
  } catch {
    return undefined;
  }
}

async function fetchNode(
  runtime: Runtime,
  major: string,
  target: string,
  say: (line: string) => void,
  options: NodeFetchOptions,
): Promise<void> {
  const deadlineMs = options.deadlineMs ?? nodeFetchDeadlineMs;
  const npm = options.npm ?? findNpm();
  const pkg = `node-${process.platform}-${process.arch}@${major}`;
  if (!npm)
    throw new Error(
      `${runtime} runs on Node ${major}, which this stack (Node ${process.version}) is not, and npm, which fetches it, is not on PATH: install npm, or run the stack on Node ${major}`,
    );
  say(
    `eddy: ${runtime} functions run on Node ${major}; this stack runs on Node ${process.version}: fetching ${pkg} (about 50 MB) from the npm registry into ${target} (once, for up to ${deadlineMs / 1000} s)`,
  );
  const started = Date.now();
  const progress = setInterval(
    () =>
      say(`eddy: still fetching ${pkg} (${Math.round((Date.now() - started) / 1000)} s so far)`),
    progressMs,
  );
  const partial = `${target}.partial-${randomUUID()}`;
  await mkdir(partial, { recursive: true });
  try {
    const packed = await run(
      npm,
      ['pack', pkg, '--json', '--loglevel=error', '--pack-destination', partial],
      deadlineMs,
      { cwd: partial, explain: npmError, signal: options.signal },
    ).catch((err: Error) => {
      if (options.signal?.aborted) throw err;
      throw new Error(
        `fetching Node ${major} for ${runtime} from the npm registry failed: ${err.message}; check that the registry (npm config get registry) is reachable, or run the stack on Node ${major}`,
      );
    });
    let file: string | undefined;
    try {
      const parsed = JSON.parse(packed) as { filename?: string }[];
      file = parsed[0]?.filename;
    } catch {
      // told below
    }
    if (!file)
      throw new Error(`npm pack ${pkg} did not say which file it wrote: ${packed.slice(0, 200)}`);
    await run('tar', ['-xzf', file, 'package/bin/node'], 120_000, {
      cwd: partial,
      signal: options.signal,
    });
    await mkdir(dirname(target), { recursive: true });
    await rename(join(partial, 'package'), target);
    say(`eddy: fetched ${pkg} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  } finally {
    clearInterval(progress);
    await rm(partial, { recursive: true, force: true });
  }
}
