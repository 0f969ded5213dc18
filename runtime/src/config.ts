/** The runtime's configuration, read from the environment (the contract with the operator). */
import {
  envDefaults as d,
  envNames as n,
  heapSizing,
  limits,
  runtimeNames,
  usesRuntimeApi,
  type LogFormat,
  type RuntimeName,
  type RuntimeEnvInput,
} from './contract/env.js';

export { heapSizing, limits, type LogFormat };

/** The runtime's settings: everything a platform may set in its environment, resolved. */
export type RuntimeConfig = Required<RuntimeEnvInput>;

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid runtime configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

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

  const runtime = text(
    n.runtime,
    d.runtime,
    new RegExp(`^(${runtimeNames.map((r) => r.replace('.', '\\.')).join('|')})$`),
    `use one of ${runtimeNames.join(', ')}`,
  ) as RuntimeName;
  // Node's handler is a file and an export; a language process reads _HANDLER its own way
  // (Python's module.function, Java's package.Class::method, anything for a bootstrap).
  const handler = usesRuntimeApi(runtime)
    ? text(n.handler, d.handler, /^\S+$/, 'use the handler as the runtime names it, without spaces')
    : text(
        n.handler,
        d.handler,
        handlerPattern,
        'use file.export, such as index.handler or src/app.handler',
      );
  const functionName = text(
    n.functionName,
    d.functionName,
    namePattern,
    'use a Kubernetes object name (lowercase letters, digits, "-" and ".")',
  );
  const functionNamespace = text(
    n.functionNamespace,
    d.functionNamespace,
    namePattern,
    'use a Kubernetes namespace name (lowercase letters, digits and "-")',
  );
  const logFormat = text(
    n.logFormat,
    d.logFormat,
    /^(text|json)$/,
    'use text or json',
  ) as LogFormat;
  const config: RuntimeConfig = {
    handler,
    codeDir: env[n.codeDir] || d.codeDir,
    functionName,
    functionNamespace,
    memoryMb: int(n.memoryMb, d.memoryMb, limits.memoryMb),
    timeoutMs: int(n.timeoutMs, d.timeoutMs, limits.timeoutMs),
    concurrency: int(n.concurrency, d.concurrency, limits.concurrency),
    logFormat,
    runtime,
    port: int(n.port, d.port, limits.port),
    host: env[n.host] || d.host,
  };
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}
