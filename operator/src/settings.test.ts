import { describe, expect, it } from 'vitest';
import { loadSettings } from './settings.js';

describe('loadSettings', () => {
  it('serves metrics on 9090 and admits the release eddy’s operator pods by default', () => {
    const s = loadSettings({ POD_NAMESPACE: 'platform' });
    expect(s.metricsPort).toBe(9090);
    expect(s.gatewayPort).toBe(8080);
    expect(s.gatewayNamespace).toBe('platform');
    expect(s.gatewayPodLabels).toEqual({
      'app.kubernetes.io/instance': 'eddy',
      'app.kubernetes.io/component': 'operator',
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
});
