/** The variables Lambda sets in a function's environment, for every runtime. */
import { functionRegion, type RuntimeName } from './contract/env.js';
import { functionVersion } from './logs.js';

export interface LambdaEnvInput {
  runtime: RuntimeName;
  handler: string;
  codeDir: string;
  functionName: string;
  functionNamespace: string;
  memoryMb: number;
  logStreamName: string;
  logFormat: 'text' | 'json';
}

/**
 * `_HANDLER`, `LAMBDA_TASK_ROOT`, `AWS_EXECUTION_ENV`, `AWS_LAMBDA_FUNCTION_*`, `AWS_REGION`,
 * the log group and stream, the initialization type and `TZ`, as Lambda sets them; a region or
 * time zone the function's own environment (`env`) sets is kept. Libraries that tell Lambda by
 * these (Powertools, the AWS SDK's user agent, tracing wrappers) find them as on Lambda.
 */
export function lambdaVariables(s: LambdaEnvInput, env: NodeJS.ProcessEnv): Record<string, string> {
  const region = functionRegion(env);
  // Lambda names its Node.js runtimes nodejs22.x; the others as they are (python3.11, java17).
  const executionEnv = /^nodejs\d+$/.test(s.runtime) ? `${s.runtime}.x` : s.runtime;
  const vars: Record<string, string> = {
    _HANDLER: s.handler,
    LAMBDA_TASK_ROOT: s.codeDir,
    AWS_EXECUTION_ENV: `AWS_Lambda_${executionEnv}`,
    AWS_LAMBDA_FUNCTION_NAME: s.functionName,
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(s.memoryMb),
    AWS_LAMBDA_FUNCTION_VERSION: functionVersion,
    AWS_REGION: region,
    AWS_DEFAULT_REGION: env.AWS_DEFAULT_REGION || region,
    AWS_LAMBDA_LOG_GROUP_NAME: `/eddy/${s.functionNamespace}/${s.functionName}`,
    AWS_LAMBDA_LOG_STREAM_NAME: s.logStreamName,
    AWS_LAMBDA_INITIALIZATION_TYPE: 'on-demand',
    TZ: env.TZ || ':UTC',
  };
  // A function logging JSON (Lambda's LogFormat JSON): AWS's clients format their lines so too.
  if (s.logFormat === 'json') vars.AWS_LAMBDA_LOG_FORMAT = 'JSON';
  return vars;
}
