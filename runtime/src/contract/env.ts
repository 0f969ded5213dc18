/**
 * The runtime's environment: the names the operator and the local platform set, their defaults,
 * the bounds the runtime enforces, and how the heap is sized from the memory. Both sides build
 * or read the environment through this file only.
 */

export const envNames = {
  handler: 'EDDY_HANDLER',
  codeDir: 'EDDY_CODE_DIR',
  functionName: 'EDDY_FUNCTION_NAME',
  functionNamespace: 'EDDY_FUNCTION_NAMESPACE',
  memoryMb: 'EDDY_MEMORY_MB',
  timeoutMs: 'EDDY_TIMEOUT_MS',
  concurrency: 'EDDY_CONCURRENCY',
  logFormat: 'EDDY_LOG_FORMAT',
  port: 'PORT',
  host: 'HOST',
  nodeOptions: 'NODE_OPTIONS',
  /** Which language runs the handler (the Function's spec.runtime). */
  runtime: 'EDDY_RUNTIME',
  /** python3.11: the interpreter with awslambdaric installed (a virtual environment's python). */
  python: 'EDDY_PYTHON',
  /** java17: AWS's Java runtime interface client and what it needs, as classpath entries. */
  javaClasspath: 'EDDY_JAVA_CLASSPATH',
} as const;

/**
 * The Function's spec.runtime values. The Node versions run the handler in the runtime's own
 * process; the others run the language's process behind Lambda's Runtime API, served in the pod.
 */
export const runtimeNames = [
  'nodejs20',
  'nodejs22',
  'nodejs24',
  'python3.11',
  'java17',
  'provided',
] as const;
export type RuntimeName = (typeof runtimeNames)[number];

/** True for runtimes whose handler runs in a language process behind the Runtime API. */
export function usesRuntimeApi(runtime: string): boolean {
  return runtime === 'python3.11' || runtime === 'java17' || runtime === 'provided';
}

/**
 * The file a Function's inline code (spec.code.inline) becomes in its code directory, in a pod's
 * ConfigMap as on the local stack: `<module>.mjs` for Node.js and `<module>.py` for python3.11,
 * the module its handler names (index.mjs for the default handler index.handler), an executable
 * bootstrap for provided. java17 takes no inline code (the CRD refuses it: a class must be
 * compiled).
 */
export function inlineCodeFile(runtime: string, handler: string = envDefaults.handler): string {
  if (runtime === 'provided') return 'bootstrap';
  // Named by the handler's module, as Lambda's console names the file (`app.handler`: app.mjs;
  // `lambda_function.lambda_handler`: lambda_function.py); a module in a folder or package
  // cannot be one inline file, which stays `index`.
  // Python's module ends at the last dot (`pkg.mod.handler`), Node's file at the first.
  const dot = runtime === 'python3.11' ? handler.lastIndexOf('.') : handler.indexOf('.');
  const module = dot > 0 ? handler.slice(0, dot) : '';
  const name = /^[A-Za-z0-9_-]+$/.test(module) ? module : 'index';
  return runtime === 'python3.11' ? `${name}.py` : `${name}.mjs`;
}

export type LogFormat = 'text' | 'json';

export const envDefaults = {
  handler: 'index.handler',
  codeDir: '/var/task',
  functionName: 'function',
  functionNamespace: 'default',
  memoryMb: 128,
  timeoutMs: 3000,
  concurrency: 1,
  logFormat: 'text' as LogFormat,
  runtime: 'nodejs22' as RuntimeName,
  python: 'python3',
  port: 8080,
  host: '0.0.0.0',
} as const;

/** Lambda's bounds: 128 MB to 10 GB of memory, 1 s to 15 min of timeout. */
export const limits = {
  memoryMb: { min: 128, max: 10240 },
  timeoutMs: { min: 1, max: 900_000 },
  concurrency: { min: 1, max: 1000 },
  port: { min: 0, max: 65535 },
} as const;

/**
 * The heap for a function of `memoryMb`: what is left after a reserve for Node itself, buffers
 * and native memory, so pressure shows as a JavaScript error rather than a kill by the kernel.
 * V8's limit is old space plus three semi-spaces of young generation.
 */
export function heapSizing(memoryMb: number): { oldSpaceMb: number; semiSpaceMb: number } {
  const semiSpaceMb = Math.min(16, Math.max(1, Math.round(memoryMb / 64)));
  const reserve = Math.max(48, Math.round(memoryMb * 0.15));
  return { oldSpaceMb: Math.max(32, memoryMb - reserve - 3 * semiSpaceMb), semiSpaceMb };
}

/** The flags the platform passes (in NODE_OPTIONS) for a function of `memoryMb`. */
export function heapFlags(memoryMb: number): string[] {
  const { oldSpaceMb, semiSpaceMb } = heapSizing(memoryMb);
  return [`--max-old-space-size=${oldSpaceMb}`, `--max-semi-space-size=${semiSpaceMb}`];
}

/**
 * NODE_OPTIONS for a replica: a Node function's heap sized from its memory; none for the other
 * runtimes, whose memory is the language process's and whose runtime process only relays events
 * (and starts sooner without heap flags, which keep Node's built-in modules from their code cache
 * until it sets them aside: see setHeapFlagsAside).
 */
export function nodeOptions(runtime: string, memoryMb: number): string {
  return usesRuntimeApi(runtime) ? '' : heapFlags(memoryMb).join(' ');
}

/** The region a function is told (`AWS_REGION`): as its pod sets it, else us-east-1. */
export function functionRegion(env: NodeJS.ProcessEnv): string {
  return env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1';
}

/**
 * The ARN a handler sees as its context's invoked function ARN: Lambda's shape, with the
 * function's namespace where the account id goes, so that code splitting it on `:` finds each
 * part where Lambda puts it. The gateway takes the same ARN as a function name.
 */
export function invokedFunctionArn(
  env: NodeJS.ProcessEnv,
  namespace: string,
  name: string,
): string {
  return `arn:aws:lambda:${functionRegion(env)}:${namespace}:function:${name}`;
}

/** What a platform knows about a replica it is about to start. */
export interface RuntimeEnvInput {
  handler: string;
  codeDir: string;
  functionName: string;
  functionNamespace: string;
  memoryMb: number;
  timeoutMs: number;
  concurrency: number;
  port: number;
  host?: string;
  logFormat?: LogFormat;
  runtime?: RuntimeName;
}

/**
 * The environment a replica of the runtime is started with, a Node function's heap flags
 * included. The Function's own NODE_OPTIONS (`--enable-source-maps`, say) follows the heap
 * flags in the one variable, so that Node reads both (a flag given twice: the Function's).
 */
export function runtimeEnv(
  input: RuntimeEnvInput,
  functionNodeOptions?: string,
): Record<string, string> {
  const heap = nodeOptions(input.runtime ?? envDefaults.runtime, input.memoryMb);
  const env: Record<string, string> = {
    [envNames.handler]: input.handler,
    [envNames.codeDir]: input.codeDir,
    [envNames.functionName]: input.functionName,
    [envNames.functionNamespace]: input.functionNamespace,
    [envNames.memoryMb]: String(input.memoryMb),
    [envNames.timeoutMs]: String(input.timeoutMs),
    [envNames.concurrency]: String(input.concurrency),
    [envNames.port]: String(input.port),
    [envNames.runtime]: input.runtime ?? envDefaults.runtime,
    // The heap is fixed when Node starts; sized here, the runtime need not start itself again.
    [envNames.nodeOptions]: [heap, functionNodeOptions?.trim()].filter(Boolean).join(' '),
  };
  if (input.host !== undefined) env[envNames.host] = input.host;
  if (input.logFormat !== undefined) env[envNames.logFormat] = input.logFormat;
  return env;
}
