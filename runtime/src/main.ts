/** The function runtime: `node dist/runtime/main.js`, configured by the environment. */
// First, before any other built-in module loads (see code-cache.ts).
import { restoreHeapFlags } from './code-cache.js';
import { join } from 'node:path';
import { ConfigError, loadConfig, type RuntimeConfig } from './config.js';
import { heapIsSized, relaunchWithHeap, watchLifeline } from './heap.js';
import { Invoker } from './invoker.js';
import { write } from './logs.js';
import { RuntimeMetrics } from './metrics.js';
import { envDefaults, envNames, usesRuntimeApi } from './contract/env.js';
import { lambdaVariables } from './lambda-env.js';
import type { FunctionInvoker } from './invocation.js';
import { ProcessInvoker, type ProcessInvokerSettings } from './runtime-api/process-invoker.js';
import { createRuntimeServer, type RuntimeServer } from './server.js';
import { Watchdog } from './watchdog.js';

function logStreamName(): string {
  const day = new Date().toISOString().slice(0, 10).replaceAll('-', '/');
  // In a pod HOSTNAME is the pod's name.
  return `${day}/[$LATEST]${process.env.HOSTNAME ?? 'local'}-${process.pid}`;
}

/** What both kinds of invoker are told about the function. */
function functionSettings(config: RuntimeConfig) {
  return {
    codeDir: config.codeDir,
    handler: config.handler,
    functionName: config.functionName,
    functionNamespace: config.functionNamespace,
    memoryMb: config.memoryMb,
    concurrency: config.concurrency,
    logFormat: config.logFormat,
    logStreamName: logStreamName(),
  };
}

/** python3.11, java17, provided: the handler runs in language processes behind the Runtime API. */
function startProcesses(config: RuntimeConfig): void {
  const invoker = new ProcessInvoker({
    runtime: config.runtime as ProcessInvokerSettings['runtime'],
    ...functionSettings(config),
    python: process.env[envNames.python] || envDefaults.python,
    env: process.env,
  });
  serve(config, invoker, () => Promise.resolve());
}

function start(config: RuntimeConfig): void {
  const settings = functionSettings(config);
  // Lambda's variables, set before the handler is imported (its module scope may read them).
  Object.assign(
    process.env,
    lambdaVariables({ ...settings, runtime: config.runtime }, process.env),
  );
  const invoker = new Invoker(
    settings,
    // Only called from later turns of the event loop, once `rt` below exists.
    (reason) => rt.recycle(reason),
  );
  void invoker.ready.then(restoreHeapFlags);
  const watchdog = new Watchdog({
    // The bundle is CommonJS (a cold start then needs no ES module loader until the handler
    // is imported); the thread's file sits beside it.
    threadFile: join(__dirname, 'watchdog-thread.js'),
    logFormat: config.logFormat,
    timeoutMs: config.timeoutMs,
    earliestDeadline: () => invoker.earliestDeadline(),
  });
  invoker.onDeadlinesChanged = () => watchdog.deadlinesChanged();
  const rt = serve(config, invoker, () => watchdog.stop());
}

function serve(
  config: RuntimeConfig,
  invoker: FunctionInvoker,
  stopping: () => Promise<void>,
): RuntimeServer {
  const metrics = new RuntimeMetrics({
    namespace: config.functionNamespace,
    function: config.functionName,
  });
  const rt = createRuntimeServer({
    config,
    invoker,
    metrics,
    onIdle: (reason) => {
      // Recycling exits non-zero so the platform starts a fresh process, as Lambda does.
      const code = reason === 'drained' ? 0 : 1;
      rt.server.close();
      rt.server.closeAllConnections();
      void stopping().finally(() => process.exit(code));
    },
  });
  const { server } = rt;
  server.keepAliveTimeout = 65_000;
  server.listen(config.port, config.host, () => {
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : config.port;
    write(
      `eddy runtime listening on ${config.host}:${port} (handler ${config.handler}, ${config.memoryMb} MB, timeout ${config.timeoutMs} ms, concurrency ${config.concurrency})\n`,
    );
  });
  server.on('error', (err) => {
    process.stderr.write(
      `eddy runtime: cannot listen on ${config.host}:${config.port}: ${err.message}\n`,
    );
    process.exit(1);
  });
  // drain() is idempotent: a second signal (a supervisor forwarding one already sent) changes nothing.
  process.on('SIGTERM', () => rt.drain());
  process.on('SIGINT', () => rt.drain());
  // Started again by a runtime without a sized heap: drains once that one is gone.
  watchLifeline(() => rt.drain());
  return rt;
}

let config: RuntimeConfig | undefined;
try {
  config = loadConfig();
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`eddy runtime: ${err.message}\n`);
  process.exitCode = 2;
}
if (config) {
  if (usesRuntimeApi(config.runtime)) startProcesses(config);
  else if (heapIsSized()) start(config);
  else
    relaunchWithHeap(config.memoryMb).catch((err: Error) => {
      process.stderr.write(`eddy runtime: cannot start itself with a sized heap: ${err.message}\n`);
      process.exitCode = 1;
    });
}
