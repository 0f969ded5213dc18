/** The runtime's configuration, read from the environment (the contract with the operator). */

export type LogFormat = 'text' | 'json';

export interface RuntimeConfig {
  handler: string;
  codeDir: string;
  functionName: string;
  functionNamespace: string;
  memoryMb: number;
  timeoutMs: number;
  concurrency: number;
  logFormat: LogFormat;
  port: number;
  host: string;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid runtime configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

/** Lambda's bounds: 128 MB to 10 GB of memory, 1 s to 15 min of timeout. */
export const limits = {
  memoryMb: { min: 128, max: 10240 },
  timeoutMs: { min: 1, max: 900_000 },
  concurrency: { min: 1, max: 1000 },
  port: { min: 0, max: 65535 },
} as const;

// `file.export`, where file may sit in subfolders: `index.handler`, `src/app.handler`.
const handlerPattern = /^[^.\s][^\s]*\.[A-Za-z_$][\w$]*$/;
// Kubernetes object names (DNS-1123 labels/subdomains), as the operator sets them.
const namePattern = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

/** Reads and checks the environment; every problem is reported at once, naming the variable. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): RuntimeConfig {
  const problems: string[] = [];
  const int = (name: string, fallback: number, range: { min: number; max: number }): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') return fallback;
    const value = Number(raw);
    if (
      !/^\d+$/.test(raw.trim()) ||
      !Number.isSafeInteger(value) ||
      value < range.min ||
      value > range.max
    ) {
      problems.push(
        `${name}=${JSON.stringify(raw)} is not allowed: use a whole number from ${range.min} to ${range.max}`,
      );
      return fallback;
    }
    return value;
  };
  const text = (name: string, fallback: string, pattern: RegExp, what: string): string => {
    const raw = env[name];
    if (raw === undefined || raw === '') return fallback;
    if (!pattern.test(raw)) {
      problems.push(`${name}=${JSON.stringify(raw)} is not allowed: ${what}`);
      return fallback;
    }
    return raw;
  };

  const handler = text(
    'EDDY_HANDLER',
    'index.handler',
    handlerPattern,
    'use file.export, such as index.handler or src/app.handler',
  );
  const functionName = text(
    'EDDY_FUNCTION_NAME',
    'function',
    namePattern,
    'use a Kubernetes object name (lowercase letters, digits, "-" and ".")',
  );
  const functionNamespace = text(
    'EDDY_FUNCTION_NAMESPACE',
    'default',
    namePattern,
    'use a Kubernetes namespace name (lowercase letters, digits and "-")',
  );
  const logFormat = text(
    'EDDY_LOG_FORMAT',
    'text',
    /^(text|json)$/,
    'use text or json',
  ) as LogFormat;
  const config: RuntimeConfig = {
    handler,
    codeDir: env.EDDY_CODE_DIR || '/var/task',
    functionName,
    functionNamespace,
    memoryMb: int('EDDY_MEMORY_MB', 128, limits.memoryMb),
    timeoutMs: int('EDDY_TIMEOUT_MS', 3000, limits.timeoutMs),
    concurrency: int('EDDY_CONCURRENCY', 1, limits.concurrency),
    logFormat,
    port: int('PORT', 8080, limits.port),
    host: env.HOST || '0.0.0.0',
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

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
