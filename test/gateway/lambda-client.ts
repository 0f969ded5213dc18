/** What the Invoke API tests share: payloads as the SDK sends them, and its refusals. */
import type { LambdaServiceException } from '@aws-sdk/client-lambda';

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
