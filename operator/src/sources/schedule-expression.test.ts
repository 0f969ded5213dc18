import { describe, expect, it } from 'vitest';
import { parseSchedule, ticksBetween, type Schedule } from './schedule-expression.js';

function schedule(expression: string, timezone?: string): Schedule {
  const parsed = parseSchedule(expression, timezone);
  if ('problem' in parsed) throw new Error(parsed.problem);
  return parsed.schedule;
}

/** The next `n` ticks after `from`, as UTC ISO strings. */
function ticks(expression: string, from: string, n: number, timezone?: string): string[] {
  const s = schedule(expression, timezone);
  const anchor = Date.parse(from);
  const out: string[] = [];
  let at = anchor;
  for (let i = 0; i < n; i++) {
    const t = s.next(at, anchor);
    if (t === undefined) break;
    out.push(new Date(t).toISOString().replace('.000Z', 'Z'));
    at = t;
  }
  return out;
}

function problem(expression: string, timezone?: string): string {
  const parsed = parseSchedule(expression, timezone);
  if (!('problem' in parsed)) throw new Error(`${expression} was accepted`);
  return parsed.problem;
}

describe('rate()', () => {
  it('ticks every period from its anchor, not from the clock hour', () => {
    expect(ticks('rate(5 minutes)', '2025-01-01T10:02:30Z', 3)).toEqual([
      '2025-01-01T10:07:30Z',
      '2025-01-01T10:12:30Z',
      '2025-01-01T10:17:30Z',
    ]);
    expect(ticks('rate(1 minute)', '2025-01-01T10:00:00Z', 2)).toEqual([
      '2025-01-01T10:01:00Z',
      '2025-01-01T10:02:00Z',
    ]);
    expect(ticks('rate(2 hours)', '2025-01-01T10:00:00Z', 1)).toEqual(['2025-01-01T12:00:00Z']);
    expect(ticks('rate(1 day)', '2025-01-01T10:00:00Z', 1)).toEqual(['2025-01-02T10:00:00Z']);
  });

  it('keeps counting from the anchor after a gap', () => {
    const s = schedule('rate(10 minutes)');
    const anchor = Date.parse('2025-01-01T00:00:00Z');
    expect(new Date(s.next(Date.parse('2025-01-01T05:03:00Z'), anchor)!).toISOString()).toBe(
      '2025-01-01T05:10:00.000Z',
    );
    // A tick is not after itself.
    expect(new Date(s.next(Date.parse('2025-01-01T05:10:00Z'), anchor)!).toISOString()).toBe(
      '2025-01-01T05:20:00.000Z',
    );
  });

  it('ignores the time zone: a rate is elapsed time, through DST too', () => {
    expect(ticks('rate(1 hour)', '2025-03-30T00:30:00Z', 2, 'Europe/Berlin')).toEqual([
      '2025-03-30T01:30:00Z',
      '2025-03-30T02:30:00Z',
    ]);
  });

  it('says what is wrong with a bad rate and what a good one looks like', () => {
    expect(problem('rate(0 minutes)')).toMatch(/the value of a rate is at least 1/);
    expect(problem('rate(100000000 days)')).toMatch(/at most 36500 days/);
    expect(problem('rate(1 minutes)')).toMatch(
      /a value of 1 takes the singular unit: rate\(1 minute\)/,
    );
    expect(problem('rate(5 minute)')).toMatch(
      /a value above 1 takes the plural unit: rate\(5 minutes\)/,
    );
    expect(problem('rate(5 seconds)')).toMatch(
      /"seconds" is not minute\(s\), hour\(s\) or day\(s\)/,
    );
    expect(problem('rate(five minutes)')).toMatch(/rate\(<value> <unit>\)/);
    expect(problem('rate(5 minutes)x')).toMatch(/a valid one looks like rate\(5 minutes\)/);
  });
});

describe('EventBridge cron()', () => {
  it('reads minute hour day-of-month month day-of-week year', () => {
    expect(ticks('cron(0 3 * * ? *)', '2025-01-01T00:00:00Z', 2)).toEqual([
      '2025-01-01T03:00:00Z',
      '2025-01-02T03:00:00Z',
    ]);
    expect(ticks('cron(0/15 8-9 ? * MON-FRI *)', '2025-01-03T09:40:00Z', 3)).toEqual([
      '2025-01-03T09:45:00Z',
      '2025-01-06T08:00:00Z', // Friday's last, then Monday
      '2025-01-06T08:15:00Z',
    ]);
  });

  it('counts days of the week 1-7 from Sunday, or names them', () => {
    // 2025-01-05 is a Sunday.
    expect(ticks('cron(0 12 ? * 1 *)', '2025-01-01T00:00:00Z', 1)).toEqual([
      '2025-01-05T12:00:00Z',
    ]);
    expect(ticks('cron(0 12 ? * 7 *)', '2025-01-01T00:00:00Z', 1)).toEqual([
      '2025-01-04T12:00:00Z', // Saturday
    ]);
    expect(ticks('cron(0 12 ? * 2 *)', '2025-01-01T00:00:00Z', 1)).toEqual(
      ticks('cron(0 12 ? * MON *)', '2025-01-01T00:00:00Z', 1),
    );
    expect(ticks('cron(0 12 ? * SUN,SAT *)', '2025-01-01T00:00:00Z', 2)).toEqual([
      '2025-01-04T12:00:00Z',
      '2025-01-05T12:00:00Z',
    ]);
    expect(problem('cron(0 12 ? * 0 *)')).toMatch(/day of week 0 is out of range \(1 to 7\)/);
    expect(problem('cron(0 12 ? * 8 *)')).toMatch(/day of week 8 is out of range \(1 to 7\)/);
  });

  it('understands L, W and #', () => {
    const from = '2025-01-01T00:00:00Z';
    expect(ticks('cron(0 12 L * ? *)', from, 3)).toEqual([
      '2025-01-31T12:00:00Z',
      '2025-02-28T12:00:00Z',
      '2025-03-31T12:00:00Z',
    ]);
    // The weekday nearest the 15th: 2025-02-15 is a Saturday, 2025-03-15 too.
    expect(ticks('cron(0 12 15W * ? *)', from, 3)).toEqual([
      '2025-01-15T12:00:00Z',
      '2025-02-14T12:00:00Z',
      '2025-03-14T12:00:00Z',
    ]);
    // The last weekday: 2025-05-31 is a Saturday.
    expect(ticks('cron(0 12 LW * ? *)', '2025-05-01T00:00:00Z', 2)).toEqual([
      '2025-05-30T12:00:00Z',
      '2025-06-30T12:00:00Z',
    ]);
    // The third Friday (6 = FRI).
    expect(ticks('cron(0 12 ? * 6#3 *)', from, 2)).toEqual([
      '2025-01-17T12:00:00Z',
      '2025-02-21T12:00:00Z',
    ]);
    expect(ticks('cron(0 12 ? * FRI#3 *)', from, 1)).toEqual(['2025-01-17T12:00:00Z']);
    // The last Friday.
    expect(ticks('cron(0 12 ? * 6L *)', from, 3)).toEqual([
      '2025-01-31T12:00:00Z',
      '2025-02-28T12:00:00Z',
      '2025-03-28T12:00:00Z',
    ]);
    // L alone in day-of-week: the last day of the week, Saturday.
    expect(ticks('cron(0 12 ? * L *)', from, 1)).toEqual(['2025-01-04T12:00:00Z']);
  });

  it('honours the year field', () => {
    expect(ticks('cron(0 12 1 1 ? 2027-2028)', '2025-01-01T00:00:00Z', 3)).toEqual([
      '2027-01-01T12:00:00Z',
      '2028-01-01T12:00:00Z',
    ]);
    // A year that has passed is valid but has no tick left.
    expect(ticks('cron(0 12 1 1 ? 2020)', '2025-01-01T00:00:00Z', 1)).toEqual([]);
    expect(problem('cron(0 12 1 1 ? 1969)')).toMatch(/year 1969 is out of range \(1970 to 2199\)/);
  });

  it('wants ? in exactly one of day-of-month and day-of-week', () => {
    for (const e of ['cron(0 3 * * * *)', 'cron(0 3 ? * ? *)', 'cron(0 3 1 * MON *)']) {
      expect(problem(e)).toMatch(/needs \? in exactly one of day-of-month and day-of-week/);
    }
  });

  it('names the field that is wrong', () => {
    expect(problem('cron(0 25 * * ? *)')).toBe(
      'expression "cron(0 25 * * ? *)" is invalid: hour 25 is out of range (0 to 23); a valid one ' +
        'looks like rate(5 minutes), cron(0 3 * * ? *) (EventBridge: minute hour day-of-month month ' +
        'day-of-week year, with ? in one of the two day fields) or 0 3 * * * (five-field cron)',
    );
    expect(problem('cron(0 3 * * ?)')).toMatch(/cron\(\) takes six fields, not 5/);
    expect(problem('cron(0 3 * FOO ? *)')).toMatch(/is invalid: .*; a valid one looks like/);
  });
});

describe('five-field cron', () => {
  it('counts Sunday as 0 or 7 and ORs the day fields, as Vixie cron does', () => {
    const from = '2025-01-01T00:00:00Z'; // a Wednesday
    expect(ticks('0 3 * * 0', from, 1)).toEqual(['2025-01-05T03:00:00Z']);
    expect(ticks('0 3 * * 7', from, 1)).toEqual(['2025-01-05T03:00:00Z']);
    // The 1st of the month or any Monday.
    expect(ticks('0 3 1 * 1', from, 3)).toEqual([
      '2025-01-01T03:00:00Z',
      '2025-01-06T03:00:00Z',
      '2025-01-13T03:00:00Z',
    ]);
    expect(ticks('*/10 * * * *', '2025-01-01T00:05:00Z', 2)).toEqual([
      '2025-01-01T00:10:00Z',
      '2025-01-01T00:20:00Z',
    ]);
  });

  it('says how many fields it wants', () => {
    expect(problem('0 3 * *')).toMatch(/a plain cron takes five fields .*, not 4/);
    expect(problem('0 0 3 * * *')).toMatch(/not 6/);
    expect(problem('61 * * * *')).toMatch(/minute 61 is out of range \(0 to 59\)/);
  });
});

describe('time zones and DST', () => {
  it('Europe/Berlin spring forward: a fixed time in the gap runs once, right after it', () => {
    // 2025-03-30 02:00 CET becomes 03:00 CEST: 02:30 does not exist that day.
    expect(ticks('cron(30 2 * * ? *)', '2025-03-29T12:00:00Z', 3, 'Europe/Berlin')).toEqual([
      '2025-03-30T01:00:00Z', // 03:00 CEST
      '2025-03-31T00:30:00Z', // 02:30 CEST
      '2025-04-01T00:30:00Z',
    ]);
  });

  it('Europe/Berlin fall back: a fixed time runs once; an interval runs on both passes', () => {
    // 2025-10-26 03:00 CEST becomes 02:00 CET: 02:30 happens twice.
    expect(ticks('30 2 * * *', '2025-10-25T12:00:00Z', 2, 'Europe/Berlin')).toEqual([
      '2025-10-26T00:30:00Z', // the first 02:30 (CEST)
      '2025-10-27T01:30:00Z', // 02:30 CET
    ]);
    expect(ticks('cron(0/30 2 * * ? *)', '2025-10-25T12:00:00Z', 4, 'Europe/Berlin')).toEqual([
      '2025-10-26T00:00:00Z',
      '2025-10-26T00:30:00Z',
      '2025-10-26T01:00:00Z',
      '2025-10-26T01:30:00Z',
    ]);
  });

  it('America/New_York across both changes', () => {
    // 2025-03-09 02:00 EST becomes 03:00 EDT.
    expect(ticks('30 2 * * *', '2025-03-08T12:00:00Z', 2, 'America/New_York')).toEqual([
      '2025-03-09T07:00:00Z', // 03:00 EDT
      '2025-03-10T06:30:00Z',
    ]);
    // 2025-11-02 02:00 EDT becomes 01:00 EST: 01:30 happens twice, runs once.
    expect(ticks('cron(30 1 * * ? *)', '2025-11-01T12:00:00Z', 2, 'America/New_York')).toEqual([
      '2025-11-02T05:30:00Z',
      '2025-11-03T06:30:00Z',
    ]);
  });

  it('names an unknown time zone', () => {
    expect(problem('cron(0 3 * * ? *)', 'Mars/Olympus')).toBe(
      'time zone "Mars/Olympus" is unknown: use an IANA name such as Europe/Berlin, America/New_York or UTC',
    );
  });
});

describe('ticksBetween', () => {
  it('counts a rate arithmetically and names the latest tick', () => {
    const s = schedule('rate(1 minute)');
    const anchor = Date.parse('2025-01-01T00:00:00Z');
    const month = ticksBetween(s, anchor, anchor, Date.parse('2025-01-31T00:00:30Z'));
    expect(month).toEqual({
      count: 30 * 24 * 60,
      capped: false,
      latest: Date.parse('2025-01-31T00:00:00Z'),
    });
  });

  it('stops counting a cron at the cap but still finds the latest tick', () => {
    const s = schedule('* * * * *');
    const from = Date.parse('2025-01-01T00:00:00Z');
    const r = ticksBetween(s, from, from, Date.parse('2025-01-03T10:20:30Z'), 100);
    expect(r).toEqual({ count: 100, capped: true, latest: Date.parse('2025-01-03T10:20:00Z') });
    expect(ticksBetween(s, from, from, from + 59_000)).toEqual({ count: 0, capped: false });
  });
});
