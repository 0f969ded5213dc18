import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPrometheus } from '../harness/prometheus.js';
import { canRun, useComponent } from '../harness/suite.js';

describe.skipIf(!canRun('prometheus'))('Prometheus', () => {
  // A tiny target whose sample value is chosen per run, so only a real scrape can return it.
  const value = Math.floor(Math.random() * 1_000_000);
  let target: Server;
  let targetAddress = '';
  beforeAll(async () => {
    target = createServer((_req, res) => {
      res.setHeader('content-type', 'text/plain; version=0.0.4');
      res.end(`# TYPE eddy_smoke_value gauge\neddy_smoke_value{kind="smoke"} ${value}\n`);
    });
    await new Promise<void>((resolve) => target.listen(0, '127.0.0.1', resolve));
    targetAddress = `127.0.0.1:${(target.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise((resolve) => target.close(resolve));
  });
  const prometheus = useComponent(() =>
    startPrometheus({ jobs: [{ job: 'smoke', targets: [targetAddress] }] }),
  );

  it('scrapes a target and answers a query with its sample', async () => {
    const p = prometheus();
    const deadline = Date.now() + 30_000;
    let result = await p.query('eddy_smoke_value');
    while (result.length === 0 && Date.now() < deadline) {
      await sleep(250);
      result = await p.query('eddy_smoke_value');
    }
    expect(result).toHaveLength(1);
    expect(result[0]!.metric).toMatchObject({
      job: 'smoke',
      kind: 'smoke',
      instance: targetAddress,
    });
    expect(Number(result[0]!.value[1])).toBe(value);
  });
});
