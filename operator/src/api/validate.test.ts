import { describe, expect, it } from 'vitest';
import { triggerProblem } from './validate.js';

describe('triggerProblem', () => {
  it('accepts good schedules', () => {
    for (const expression of [
      'rate(5 minutes)',
      'cron(0 3 * * ? *)',
      'cron(0/15 8-17 ? * MON-FRI *)',
      '*/10 * * * *',
      '0 3 1 1 0',
    ]) {
      expect(
        triggerProblem({ name: 't', schedule: { expression, timezone: 'Europe/Berlin' } }),
      ).toBeUndefined();
    }
  });

  it('names an unknown time zone', () => {
    expect(
      triggerProblem({
        name: 't',
        schedule: { expression: 'rate(1 hour)', timezone: 'Europe/Atlantis' },
      }),
    ).toBe('time zone "Europe/Atlantis" is unknown: use an IANA name such as Europe/Berlin or UTC');
  });

  it('names the cron field out of range', () => {
    expect(triggerProblem({ name: 't', schedule: { expression: '61 * * * *' } })).toBe(
      'schedule "61 * * * *": minute 61 is out of range (0 to 59)',
    );
    expect(triggerProblem({ name: 't', schedule: { expression: 'cron(0 25 * * ? *)' } })).toBe(
      'schedule "cron(0 25 * * ? *)": hour 25 is out of range (0 to 23)',
    );
    expect(triggerProblem({ name: 't', schedule: { expression: '*/0 * * * *' } })).toMatch(
      /a step is at least 1/,
    );
  });

  it('names a wrong number of cron fields instead of failing', () => {
    expect(triggerProblem({ name: 't', schedule: { expression: '0 3 * * * *' } })).toMatch(
      /a plain cron has 5 fields .* not 6; EventBridge's six go in cron\(\.\.\.\)/,
    );
    expect(triggerProblem({ name: 't', schedule: { expression: 'cron(0 3 * * ?)' } })).toMatch(
      /cron\(\.\.\.\) has 6 fields .* not 5/,
    );
  });

  it('checks a Kinesis starting timestamp', () => {
    const connection = {};
    expect(
      triggerProblem({
        name: 'k',
        kinesis: { stream: 's', startingTimestamp: 'soon', connection },
      }),
    ).toMatch(/not an RFC 3339 time/);
    expect(
      triggerProblem({
        name: 'k',
        kinesis: { stream: 's', startingTimestamp: '2024-01-01T00:00:00Z', connection },
      }),
    ).toBeUndefined();
  });
});
