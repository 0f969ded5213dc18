/** The function runtime: `node dist/runtime/main.js`, configured by the environment. */
import { hostname } from 'node:os';
import { ConfigError, loadConfig, type RuntimeConfig } from './config.js';
import { Invoker } from './invoker.js';
import { write } from './logs.js';
import { RuntimeMetrics } from './metrics.js';
import { createRuntimeServer } from './server.js';

function logStreamName(): string {
  const day = new Date().toISOString().slice(0, 10).replaceAll('-', '/');
  return `${day}/[$LATEST]${hostname()}-${process.pid}`;
}

function start(config: RuntimeConfig): void {
  const invoker = new Invoker({
    settings: {
      codeDir: config.codeDir,
      handler: config.handler,
      functionName: config.functionName,
      functionNamespace: config.functionNamespace,
      memoryMb: config.memoryMb,
      logFormat: config.logFormat,
      logStreamName: logStreamName(),
    },
    // Events from the handler thread arrive after `runtime` below is set.
    onBroken: (reason) => runtime.recycle(reason),
  });
  const metrics = new RuntimeMetrics({
    namespace: config.functionNamespace,
    function: config.functionName,
  });
  const runtime = createRuntimeServer({
    config,
    invoker,
    metrics,
    onIdle: (reason) => {
      // Recycling exits non-zero so the platform starts a fresh process, as Lambda does.
      const code = reason === 'drained' ? 0 : 1;
      runtime.server.close();
      runtime.server.closeAllConnections();
      void invoker.stop().finally(() => process.exit(code));
    },
  });
  const { server } = runtime;
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
  process.once('SIGTERM', () => runtime.drain());
  process.once('SIGINT', () => runtime.drain());
}

try {
  start(loadConfig());
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`eddy runtime: ${err.message}\n`);
    process.exit(2);
  }
  throw err;
}
