import { describe, expect, it } from 'vitest';
import { loadSettings, queueSettings, roleSetting } from './settings.js';

describe('loadSettings', () => {
  it('serves metrics on 9090 and admits the release eddy’s operator pods by default', () => {
    const s = loadSettings({ POD_NAMESPACE: 'platform' });
    expect(s.metricsPort).toBe(9090);
    expect(s.gatewayPort).toBe(8080);
    expect(s.gatewayNamespace).toBe('platform');
    expect(s.gatewayPodLabels).toEqual({
      'app.kubernetes.io/instance': 'eddy',
      'eddy.dev/operator': 'true',
    });
  });

  it('reads the metrics port and the gateway pods’ labels as the chart sets them', () => {
    const s = loadSettings({
      EDDY_METRICS_PORT: '9191',
      EDDY_GATEWAY_POD_LABELS:
        'app.kubernetes.io/instance=functions, app.kubernetes.io/component=operator',
    });
    expect(s.metricsPort).toBe(9191);
    expect(s.gatewayPodLabels).toEqual({
      'app.kubernetes.io/instance': 'functions',
      'app.kubernetes.io/component': 'operator',
    });
  });

  it('refuses labels it cannot read and ports out of range, saying what to write', () => {
    expect(() => loadSettings({ EDDY_GATEWAY_POD_LABELS: 'app.kubernetes.io/instance' })).toThrow(
      /EDDY_GATEWAY_POD_LABELS="app.kubernetes.io\/instance" is not allowed: use labels as key=value pairs/,
    );
    expect(() => loadSettings({ EDDY_GATEWAY_POD_LABELS: 'a=b=c' })).toThrow(/key=value/);
    expect(() => loadSettings({ EDDY_METRICS_PORT: '8080' })).toThrow(
      /EDDY_METRICS_PORT=8080 is the gateway's port \(EDDY_GATEWAY_PORT\): metrics need a port of their own/,
    );
    expect(() => loadSettings({ EDDY_METRICS_PORT: '70000' })).toThrow(
      /EDDY_METRICS_PORT="70000" is not allowed: use a whole number from 1 to 65535/,
    );
  });

  it('lets function containers use up to one vCPU unless EDDY_FUNCTION_CPU_LIMIT says otherwise', () => {
    expect(loadSettings({}).functionCpuLimit).toBe('1');
    expect(loadSettings({ EDDY_FUNCTION_CPU_LIMIT: '2' }).functionCpuLimit).toBe('2');
    expect(loadSettings({ EDDY_FUNCTION_CPU_LIMIT: ' 500m ' }).functionCpuLimit).toBe('500m');
    expect(loadSettings({ EDDY_FUNCTION_CPU_LIMIT: 'request' }).functionCpuLimit).toBe('request');
    for (const bad of ['lots', '5m', '100', '-1']) {
      expect(() => loadSettings({ EDDY_FUNCTION_CPU_LIMIT: bad })).toThrow(
        /EDDY_FUNCTION_CPU_LIMIT=.* is not allowed: give a CPU quantity from 10m to 64, such as 1 or 500m, or request/,
      );
    }
  });
});

describe('roleSetting and queueSettings', () => {
  it('runs everything in one process, with events in memory, when nothing is set', () => {
    expect(roleSetting({})).toBe('all');
    expect(queueSettings({})).toBeUndefined();
  });

  it('reads the role and the queue as the chart sets them', () => {
    expect(roleSetting({ EDDY_ROLE: 'gateway' })).toBe('gateway');
    expect(roleSetting({ EDDY_ROLE: 'controller' })).toBe('controller');
    expect(
      queueSettings({
        EDDY_NATS_URL: 'nats://nats-0.nats:4222, nats://nats-1.nats:4222',
        EDDY_QUEUE_STREAM: 'TEAM_EVENTS',
        EDDY_QUEUE_REPLICAS: '3',
        EDDY_QUEUE_MAX_BYTES: '8Gi',
      }),
    ).toEqual({
      servers: ['nats://nats-0.nats:4222', 'nats://nats-1.nats:4222'],
      stream: 'TEAM_EVENTS',
      replicas: 3,
      maxBytes: 8 * 1024 ** 3,
    });
  });

  it('refuses what it cannot use, saying what to set instead', () => {
    expect(() => roleSetting({ EDDY_ROLE: 'operator' })).toThrow(
      /EDDY_ROLE="operator" is not allowed: use controller, gateway or all/,
    );
    expect(() => queueSettings({ EDDY_NATS_URL: 'http://nats:8222' })).toThrow(
      /not a NATS server address: give nats:\/\/host:port/,
    );
    expect(() => queueSettings({ EDDY_NATS_CREDS_FILE: '/etc/nats/user.creds' })).toThrow(
      /EDDY_NATS_CREDS_FILE is set but EDDY_NATS_URL is not/,
    );
    expect(() =>
      queueSettings({ EDDY_NATS_URL: 'nats://n:4222', EDDY_NATS_CREDS_FILE: '/no/such.creds' }),
    ).toThrow(/no such file: mount the Secret/);
    expect(() =>
      queueSettings({ EDDY_NATS_URL: 'nats://n:4222', EDDY_QUEUE_STREAM: 'a.b' }),
    ).toThrow(/EDDY_QUEUE_STREAM="a.b" is not allowed/);
  });
});
