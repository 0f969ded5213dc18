/** What the Invoke API tests share: payloads as the SDK sends them, its refusals, the CLI. */
import type { LambdaServiceException } from '@aws-sdk/client-lambda';
import { execFile } from 'node:child_process';
import { dirname, join } from 'node:path';

export const payload = (v: unknown) => Buffer.from(JSON.stringify(v));

/** The SDK's exception for a call the gateway refused; fails when the call succeeded. */
export async function refused(p: Promise<unknown>): Promise<LambdaServiceException> {
  try {
    await p;
  } catch (err) {
    return err as LambdaServiceException;
  }
  throw new Error('the call was not refused');
}

/**
 * `aws lambda invoke --endpoint-url <endpoint> ... <out>` with the AWS CLI at `cli`, signed with
 * `keys` and reading no AWS configuration of this machine: resolves with the CLI's stdout.
 */
export function awsLambdaInvoke(
  cli: string,
  o: {
    endpoint: string;
    region: string;
    keys: { accessKeyId: string; secretAccessKey: string };
    /** Where the answer's payload is written; its directory also stands for missing config. */
    out: string;
    args: string[];
    timeoutMs: number;
  },
): Promise<string> {
  const none = join(dirname(o.out), 'no-aws-config');
  return new Promise<string>((resolve, reject) =>
    execFile(
      cli,
      ['lambda', 'invoke', '--endpoint-url', o.endpoint, '--region', o.region, ...o.args, o.out],
      {
        timeout: o.timeoutMs,
        env: {
          ...process.env,
          AWS_ACCESS_KEY_ID: o.keys.accessKeyId,
          AWS_SECRET_ACCESS_KEY: o.keys.secretAccessKey,
          AWS_CONFIG_FILE: none,
          AWS_SHARED_CREDENTIALS_FILE: none,
        },
      },
      (err, stdout, stderr) =>
        err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    ),
  );
}
