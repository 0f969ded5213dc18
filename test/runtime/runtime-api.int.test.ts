/**
 * The runtime on its own with a language process behind the Runtime API (EDDY_RUNTIME=provided):
 * what the platform and an operator see of it, beside what test/runtimes shows through the gateway.
 */
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startRuntime, waitForReadyz, type Runtime } from '../harness/runtime.js';

let rt: Runtime | undefined;
afterEach(async (ctx) => {
  if (ctx.task.result?.state === 'fail' && rt)
    process.stderr.write(`--- runtime log\n${rt.log()}\n`);
  await rt?.stop();
  rt = undefined;
});

const failingInit = `#!/bin/sh
curl -sS -o /dev/null -H 'Lambda-Runtime-Function-Error-Type: Custom.NoConfig' -d '{"errorMessage":"CONFIG is not set","errorType":"Custom.NoConfig"}' "http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime/init/error"
exit 1
`;

/**
 * A bootstrap that runs `start` (shell lines) once, then takes events one by one and runs
 * `answer` for each, with `$API` the Runtime API's base and `$ID` the event's request id.
 */
function serving(answer: string, start = ''): string {
  return `#!/bin/sh
API="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
${start}
while true; do
  curl -sS -D /tmp/eddy-h-$$ -o /dev/null "$API/invocation/next"
  ID=$(grep -i '^Lambda-Runtime-Aws-Request-Id:' /tmp/eddy-h-$$ | tr -d '\\r' | cut -d' ' -f2)
  ${answer}
done
`;
}

async function invoke(url: string, event: unknown) {
  const res = await fetch(url, {
    method: 'POST',
    body: JSON.stringify(event),
    signal: AbortSignal.timeout(30_000),
  });
  return { status: res.status, headers: res.headers, body: await res.json() };
}

describe('the runtime with a provided bootstrap', () => {
  it('is ready, fails an invocation with the init error, and logs it as JSON when asked', async () => {
    rt = await startRuntime(
      { bootstrap: failingInit },
      { EDDY_RUNTIME: 'provided', EDDY_LOG_FORMAT: 'json', PATH: process.env.PATH ?? '' },
    );
    await waitForReadyz(rt.url, 200);
    const { status, headers, body } = await invoke(rt.url, {});
    expect(status).toBe(502);
    expect(headers.get('x-eddy-function-error')).toBe('Unhandled');
    expect(body).toEqual({ errorType: 'Custom.NoConfig', errorMessage: 'CONFIG is not set' });
    const log = await rt.waitForLog(/"type":"platform.initError"/);
    const record = log
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { type: string; record: unknown })
      .find((r) => r.type === 'platform.initError');
    expect(record?.record).toEqual({
      errorType: 'Custom.NoConfig',
      errorMessage: 'CONFIG is not set',
    });
    const metrics = await (await fetch(`${rt.url}/metrics`)).text();
    expect(metrics).toMatch(/eddy_runtime_invocations_total\{[^}]*outcome="error"[^}]*\} 1/);
  });

  it('answers Runtime.InvalidEntrypoint when there is no executable bootstrap', async () => {
    rt = await startRuntime({ 'README.md': 'no bootstrap here' }, { EDDY_RUNTIME: 'provided' });
    await waitForReadyz(rt.url, 200);
    const { status, body } = await invoke(rt.url, {});
    expect(status).toBe(502);
    expect(body).toMatchObject({
      errorType: 'Runtime.InvalidEntrypoint',
      errorMessage: `${join(rt.codeDir, 'bootstrap')} is not an executable file (ENOENT): a provided function brings an executable named bootstrap in its code directory`,
    });
  });

  it("answers a process out of turn as AWS's emulator does: ids, polls and a second answer", async () => {
    const bootstrap = `#!/bin/sh
API="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
T=$(mktemp -d)
# Before any event every id is unknown: 400.
EARLY=$(curl -sS -o /dev/null -w '%{http_code}' -d '{}' "$API/invocation/nope/response")
# Two polls at once: the earliest gets the event, the other waits on.
curl -sS -D "$T/h1" -o "$T/b1" "$API/invocation/next" &
sleep 0.5
curl -sS -D "$T/h2" -o "$T/b2" "$API/invocation/next" &
LATER=$!
sleep 0.5
echo "two polls wait"
while [ ! -s "$T/h1" ] && [ ! -s "$T/h2" ]; do sleep 0.05; done
if [ -s "$T/h1" ]; then GOT=earliest; H="$T/h1"; else GOT=later; H="$T/h2"; fi
ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$H" | tr -d '[:space:]' | cut -d: -f2)
# Asking again while holding the event gives the same event.
AGAIN=$(curl -sS -D - -o /dev/null "$API/invocation/next" | grep -Fi Lambda-Runtime-Aws-Request-Id | tr -d '[:space:]' | cut -d: -f2)
[ "$AGAIN" = "$ID" ] && SAME=yes || SAME=no
curl -sS -o /dev/null -d "$(printf '{"early":"%s","got":"%s","same":"%s"}' "$EARLY" "$GOT" "$SAME")" "$API/invocation/$ID/response"
echo "answered twice: $(curl -sS -w ' %{http_code}' -d '{}' "$API/invocation/$ID/response" | tr -d '\\n')"
echo "answered for another: $(curl -sS -w ' %{http_code}' -d '{}' "$API/invocation/other/response" | tr -d '\\n')"
echo "answered for a bad id: $(curl -sS -w ' %{http_code}' -d '{}' "$API/invocation/%E0/response" | tr -d '\\n')"
kill $LATER
sleep 30
`;
    rt = await startRuntime(
      { bootstrap },
      { EDDY_RUNTIME: 'provided', PATH: process.env.PATH ?? '' },
    );
    await rt.waitForLog(/two polls wait/);
    const { status, body } = await invoke(rt.url, {});
    expect({ status, body }).toEqual({
      status: 200,
      body: { early: '400', got: 'earliest', same: 'yes' },
    });
    const log = await rt.waitForLog(/answered for a bad id: .* 400/);
    expect(log).toContain(
      'answered for a bad id: {"errorMessage":"Invalid request ID","errorType":"InvalidRequestID"} 400',
    );
    expect(log).toContain(
      'answered twice: {"errorMessage":"State transition from RuntimeResponseSentState to InvocationResponse failed for runtime. Error: State transition is not allowed","errorType":"InvalidStateTransition"} 403',
    );
  });

  it('fails an invocation whose answer is cut short with Runtime.TruncatedResponse', async () => {
    // Says a body of 100 bytes, sends 10, and closes the connection.
    const bootstrap = `#!/usr/bin/env python3
import os, socket, time
host, port = os.environ["AWS_LAMBDA_RUNTIME_API"].split(":")
s = socket.create_connection((host, int(port)))
s.sendall(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
head = b""
while b"\\r\\n\\r\\n" not in head:
    head += s.recv(65536)
rid = [l.split(b":", 1)[1].strip().decode() for l in head.split(b"\\r\\n") if l.lower().startswith(b"lambda-runtime-aws-request-id:")][0]
r = socket.create_connection((host, int(port)))
r.sendall(("POST /2018-06-01/runtime/invocation/%s/response HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 100\\r\\n\\r\\n" % rid).encode() + b'{"cut":"sh')
r.close()
time.sleep(30)
`;
    rt = await startRuntime(
      { bootstrap },
      { EDDY_RUNTIME: 'provided', PATH: process.env.PATH ?? '' },
    );
    await waitForReadyz(rt.url, 200);
    const { status, body } = await invoke(rt.url, {});
    expect(status).toBe(502);
    expect(body).toMatchObject({ errorType: 'Runtime.TruncatedResponse' });
  });

  it('keeps the init error of the process started after an exit for the next event', async () => {
    // Its first event makes the bootstrap unrunnable and exits: the process started again for
    // the next event fails its init at once, while the first invocation is still settling.
    const bootstrap = `#!/bin/sh
API="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
curl -sS -o /dev/null "$API/invocation/next"
echo "exiting"
chmod -x "$0"
exit 2
`;
    rt = await startRuntime(
      { bootstrap },
      { EDDY_RUNTIME: 'provided', PATH: process.env.PATH ?? '' },
    );
    await waitForReadyz(rt.url, 200);
    const tailed = async () => {
      const res = await fetch(rt!.url, {
        method: 'POST',
        body: '{}',
        headers: { 'x-eddy-log-type': 'Tail' },
        signal: AbortSignal.timeout(30_000),
      });
      const tail = Buffer.from(res.headers.get('x-eddy-log-result') ?? '', 'base64').toString();
      return { status: res.status, body: (await res.json()) as { errorType: string }, tail };
    };
    const first = await tailed();
    expect(first.status).toBe(502);
    expect(first.body.errorType).toBe('Runtime.ExitError');
    expect(first.tail).toContain('exiting');
    expect(first.tail).not.toContain('INIT_ERROR');
    const second = await tailed();
    expect(second.status).toBe(502);
    expect(second.body.errorType).toBe('Runtime.InvalidEntrypoint');
    expect(second.tail.match(/INIT_ERROR Runtime.InvalidEntrypoint/g)).toHaveLength(1);
  });

  it('lets a process that reported an init error exit by itself, and refuses its next', async () => {
    const bootstrap = `#!/bin/sh
API="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
curl -sS -o /dev/null -d '{"errorMessage":"no config","errorType":"Custom.NoConfig"}' "$API/init/error"
echo "still running after init/error"
echo "next: $(curl -sS -w ' %{http_code}' "$API/invocation/next" | tr -d '\\n')"
exit 3
`;
    rt = await startRuntime(
      { bootstrap },
      { EDDY_RUNTIME: 'provided', PATH: process.env.PATH ?? '' },
    );
    // It starts with the runtime, before any event: what it does after reporting is in the log.
    const log = await rt.waitForLog(/next: .* 403/);
    expect(log).toContain('still running after init/error');
    expect(log).toContain(
      'next: {"errorMessage":"State transition from InitError to Ready failed for runtime. Error: State transition is not allowed","errorType":"InvalidStateTransition"} 403',
    );
    const { status, body } = await invoke(rt.url, {});
    expect(status).toBe(502);
    expect(body).toEqual({ errorType: 'Custom.NoConfig', errorMessage: 'no config' });
  });

  it('is ready once the process has initialised, and times an invocation from then', async () => {
    // Two seconds of init against a one-second timeout: Lambda gives a first init time of its own.
    const bootstrap = serving(
      `curl -sS -o /dev/null -d '"initialised"' "$API/invocation/$ID/response"`,
      'sleep 2',
    );
    const started = Date.now();
    rt = await startRuntime(
      { bootstrap },
      { EDDY_RUNTIME: 'provided', EDDY_TIMEOUT_MS: '1000', PATH: process.env.PATH ?? '' },
    );
    const early = await fetch(`${rt.url}/readyz`);
    expect(early.status).toBe(503);
    expect(await early.text()).toMatch(/not ready: starting/);
    // Sent before the init is over: it waits for it, then has its whole second.
    const first = invoke(rt.url, {});
    await waitForReadyz(rt.url, 200);
    expect(Date.now() - started).toBeGreaterThanOrEqual(2_000);
    const { status, body } = await first;
    expect(status).toBe(200);
    expect(body).toBe('initialised');
  });

  it('holds a process whose caller went away until its handler ends: the next caller is throttled', async () => {
    const bootstrap = serving(
      `sleep 1.5; curl -sS -o /dev/null -d '"slept"' "$API/invocation/$ID/response"`,
    );
    rt = await startRuntime(
      { bootstrap },
      { EDDY_RUNTIME: 'provided', EDDY_TIMEOUT_MS: '10000', PATH: process.env.PATH ?? '' },
    );
    await waitForReadyz(rt.url, 200);
    const gone = fetch(rt.url, { method: 'POST', body: '{}', signal: AbortSignal.timeout(300) });
    await expect(gone).rejects.toThrow();
    const throttled = await invoke(rt.url, {});
    expect(throttled.status).toBe(429);
    expect(throttled.headers.get('retry-after')).toBe('1');
    expect(throttled.body).toMatchObject({ errorType: 'TooManyRequestsException' });
    // Once the handler has answered, the process takes the next.
    const start = Date.now();
    let next = throttled;
    while (next.status === 429 && Date.now() - start < 5_000) {
      await new Promise((r) => setTimeout(r, 100));
      next = await invoke(rt.url, {});
    }
    expect(next.status).toBe(200);
    expect(next.body).toBe('slept');
  });

  it('answers the bytes a process sent, UTF-8 or not', async () => {
    const bootstrap = serving(
      `printf '\\377\\000\\001\\200A' | curl -sS -o /dev/null --data-binary @- "$API/invocation/$ID/response"`,
    );
    rt = await startRuntime(
      { bootstrap },
      { EDDY_RUNTIME: 'provided', PATH: process.env.PATH ?? '' },
    );
    await waitForReadyz(rt.url, 200);
    const res = await fetch(rt.url, {
      method: 'POST',
      body: '{}',
      signal: AbortSignal.timeout(30_000),
    });
    expect(res.status).toBe(200);
    expect([...new Uint8Array(await res.arrayBuffer())]).toEqual([0xff, 0x00, 0x01, 0x80, 0x41]);
  });

  it("says how a process ended as the emulator does: no reason for exit 0, Go's signal names", async () => {
    const bootstrap = `#!/bin/sh
API="http://$AWS_LAMBDA_RUNTIME_API/2018-06-01/runtime"
BODY=$(curl -sS "$API/invocation/next")
case "$BODY" in
  *zero*) exit 0 ;;
  *) kill -TERM $$ ;;
esac
`;
    rt = await startRuntime(
      { bootstrap },
      { EDDY_RUNTIME: 'provided', PATH: process.env.PATH ?? '' },
    );
    await waitForReadyz(rt.url, 200);
    const zero = await invoke(rt.url, { zero: true });
    expect(zero.status).toBe(502);
    expect(zero.body).toEqual({
      errorType: 'Runtime.ExitError',
      errorMessage: `RequestId: ${zero.headers.get('x-eddy-request-id')} Error: Runtime exited without providing a reason`,
    });
    const term = await invoke(rt.url, { term: true });
    expect(term.status).toBe(502);
    expect((term.body as { errorMessage: string }).errorMessage).toMatch(
      /Error: Runtime exited with error: signal: terminated$/,
    );
  });

  it('runs a failed init again for the next event, which it serves once the init succeeds', async () => {
    // A dependency that is down when the pod starts: the init fails until the marker exists.
    const marker = join(tmpdir(), `eddy-init-marker-${process.pid}-${Date.now()}`);
    const bootstrap = serving(
      `curl -sS -o /dev/null -d '"served"' "$API/invocation/$ID/response"`,
      `if [ ! -e "${marker}" ]; then
  curl -sS -o /dev/null -d '{"errorMessage":"database not reachable yet","errorType":"ConnectionError"}' "$API/init/error"
  exit 1
fi`,
    );
    rt = await startRuntime(
      { bootstrap },
      { EDDY_RUNTIME: 'provided', PATH: process.env.PATH ?? '' },
    );
    await waitForReadyz(rt.url, 200);
    await rt.waitForLog(/INIT_ERROR ConnectionError: database not reachable yet/);
    await writeFile(marker, '');
    try {
      const { status, body } = await invoke(rt.url, {});
      expect(status).toBe(200);
      expect(body).toBe('served');
    } finally {
      await rm(marker, { force: true });
    }
  });

  it('answers Runtime.InvalidEntrypoint, with what to do, when the interpreter is not on PATH', async () => {
    rt = await startRuntime(
      { 'index.py': 'def handler(event, context):\n    return 1\n' },
      {
        EDDY_RUNTIME: 'python3.11',
        EDDY_HANDLER: 'index.handler',
        EDDY_PYTHON: 'no-such-python3',
        PATH: process.env.PATH ?? '',
      },
    );
    await waitForReadyz(rt.url, 200);
    const { status, body } = await invoke(rt.url, {});
    expect(status).toBe(502);
    expect(body).toMatchObject({ errorType: 'Runtime.InvalidEntrypoint' });
    expect((body as { errorMessage: string }).errorMessage).toMatch(
      /^no-such-python3 is not on PATH \(.*\): set EDDY_PYTHON to a python3\.11 that has awslambdaric installed$/,
    );
  });

  it('passes on the members of an error body beyond the three it shapes, as the emulator does', async () => {
    const bootstrap = serving(
      `curl -sS -o /dev/null -d '{"errorMessage":"no order 7","errorType":"OrderNotFound","requestId":"r-1","order":7}' "$API/invocation/$ID/error"`,
    );
    rt = await startRuntime(
      { bootstrap },
      { EDDY_RUNTIME: 'provided', PATH: process.env.PATH ?? '' },
    );
    await waitForReadyz(rt.url, 200);
    const { status, body } = await invoke(rt.url, {});
    expect(status).toBe(500);
    expect(body).toEqual({
      errorMessage: 'no order 7',
      errorType: 'OrderNotFound',
      requestId: 'r-1',
      order: 7,
    });
  });

  it('forgets a caller that went away while the processes were starting', async () => {
    const bootstrap = serving(
      `curl -sS -o /dev/null -d '"up"' "$API/invocation/$ID/response"`,
      'sleep 1.5',
    );
    rt = await startRuntime(
      { bootstrap },
      { EDDY_RUNTIME: 'provided', EDDY_TIMEOUT_MS: '5000', PATH: process.env.PATH ?? '' },
    );
    const gone = fetch(rt.url, { method: 'POST', body: '{}', signal: AbortSignal.timeout(300) });
    await expect(gone).rejects.toThrow();
    await waitForReadyz(rt.url, 200);
    // Its one process is free: the caller that left holds nothing.
    const { status, body } = await invoke(rt.url, {});
    expect(status).toBe(200);
    expect(body).toBe('up');
  });
});
