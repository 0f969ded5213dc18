/**
 * A schedule trigger's expression read into its ticks: EventBridge's `rate(...)` and six-field
 * `cron(...)`, and the plain five-field cron. Calendar arithmetic (time zones, DST, L, W, #) is
 * croner's; this module maps EventBridge's fields onto it and says what is wrong with a bad one.
 */
import { Cron } from 'croner';
import { triggerProblem, validTimeZone } from '../api/validate.js';

/** The ticks of a schedule, in milliseconds since the epoch. */
export interface Schedule {
  kind: 'rate' | 'cron';
  /** A rate's period; ticks are `anchor + k * periodMs` for k >= 1. */
  periodMs?: number;
  /** The first tick strictly after `after`, or undefined when none is left (a past year). */
  next(after: number, anchor: number): number | undefined;
}

/** The schedule, or what is wrong with it, said so that a user can fix it. */
export type ParsedSchedule = { schedule: Schedule } | { problem: string };

const examples =
  'a valid one looks like rate(5 minutes), cron(0 3 * * ? *) (EventBridge: minute hour ' +
  'day-of-month month day-of-week year, with ? in one of the two day fields) or 0 3 * * * ' +
  '(five-field cron)';

const units: Record<string, number> = {
  minute: 60_000,
  hour: 3_600_000,
  day: 86_400_000,
};

export function parseSchedule(expression: string, timezone = 'UTC'): ParsedSchedule {
  const text = expression.trim();
  const invalid = (why: string): ParsedSchedule => ({
    problem: `expression "${expression}" is invalid: ${why}; ${examples}`,
  });
  if (!validTimeZone(timezone)) {
    return {
      problem: `time zone "${timezone}" is unknown: use an IANA name such as Europe/Berlin, America/New_York or UTC`,
    };
  }
  if (text.startsWith('rate(')) return parseRate(text, invalid);

  // The API's field-range checks name the field and its range (hour 25 is out of range...);
  // they expect the right number of fields.
  const rangeProblem = () => triggerProblem({ name: 'schedule', schedule: { expression: text } });
  const eventBridge = /^cron\((.*)\)$/.exec(text);
  if (eventBridge) {
    const fields = eventBridge[1]!.trim().split(/\s+/);
    if (fields.length !== 6) {
      return invalid(`cron() takes six fields, not ${fields.length}`);
    }
    const range = rangeProblem();
    if (range) return invalid(withoutPrefix(range));
    const [minute, hour, dom, month, dow, year] = fields as [
      string,
      string,
      string,
      string,
      string,
      string,
    ];
    if ((dom === '?') === (dow === '?')) {
      return invalid(
        'EventBridge needs ? in exactly one of day-of-month and day-of-week, as in ' +
          'cron(0 3 * * ? *) or cron(0 3 ? * MON-FRI *)',
      );
    }
    // Croner's seven fields: second minute hour day-of-month month day-of-week year. EventBridge
    // counts weekdays 1-7 from Sunday (Quartz's numbering: croner's alternativeWeekdays); its
    // day-of-week `L` alone is the last day of the week, Saturday.
    const pattern = ['0', minute, hour, dom, month, dow === 'L' ? '7' : dow, year].join(' ');
    return cron(pattern, timezone, { mode: '7-part', alternativeWeekdays: true }, invalid);
  }
  const fields = text.split(/\s+/);
  if (fields.length !== 5) {
    return invalid(
      text.startsWith('cron')
        ? 'write EventBridge cron as cron(<six fields>)'
        : `a plain cron takes five fields (minute hour day-of-month month day-of-week), not ${fields.length}`,
    );
  }
  const range = rangeProblem();
  if (range) return invalid(withoutPrefix(range));
  return cron(text, timezone, { mode: '5-part', alternativeWeekdays: false }, invalid);
}

function parseRate(text: string, invalid: (why: string) => ParsedSchedule): ParsedSchedule {
  const m = /^rate\(\s*(\d+)\s+([a-z]+)\s*\)$/.exec(text);
  if (!m) return invalid('write a rate as rate(<value> <unit>), such as rate(1 minute)');
  const value = Number(m[1]);
  const word = m[2]!;
  const unit = word.endsWith('s') ? word.slice(0, -1) : word;
  const ms = units[unit];
  if (ms === undefined) return invalid(`the unit "${word}" is not minute(s), hour(s) or day(s)`);
  if (value < 1) return invalid('the value of a rate is at least 1');
  if (value === 1 && word !== unit) {
    return invalid(`a value of 1 takes the singular unit: rate(1 ${unit})`);
  }
  if (value > 1 && word === unit) {
    return invalid(`a value above 1 takes the plural unit: rate(${value} ${unit}s)`);
  }
  const periodMs = value * ms;
  // Beyond about a century the next tick is past the last year a cron can name: refuse it.
  if (periodMs > 36_500 * units.day!) {
    return invalid('a rate is at most 36500 days (about a century)');
  }
  return {
    schedule: {
      kind: 'rate',
      periodMs,
      next(after, anchor) {
        if (after < anchor) return anchor + periodMs;
        return anchor + (Math.floor((after - anchor) / periodMs) + 1) * periodMs;
      },
    },
  };
}

function cron(
  pattern: string,
  timezone: string,
  options: { mode: '5-part' | '7-part'; alternativeWeekdays: boolean },
  invalid: (why: string) => ParsedSchedule,
): ParsedSchedule {
  let job: Cron;
  try {
    // EventBridge writes a start/step as 0/15; croner calls that a "sloppy range".
    job = new Cron(pattern, { ...options, timezone, sloppyRanges: true, domAndDow: false });
  } catch (err) {
    return invalid((err as Error).message.replace(/^CronPattern: /, '').replace(/^CronDate: /, ''));
  }
  return {
    schedule: {
      kind: 'cron',
      next(after) {
        // Croner reads a Date to the second; a tick at `after` itself is not "after" it.
        return job.nextRun(new Date(after))?.getTime();
      },
    },
  };
}

function withoutPrefix(problem: string): string {
  return problem.replace(/^schedule "[^"]*": /, '');
}

/**
 * The ticks in `(after, through]`: how many (at most `cap`) and the latest of them. Counting
 * stops at `cap`, so an operator that was down for a month does not walk every minute of it.
 */
export function ticksBetween(
  schedule: Schedule,
  anchor: number,
  after: number,
  through: number,
  cap = 1000,
): { count: number; capped: boolean; latest?: number } {
  if (schedule.periodMs !== undefined) {
    const first = schedule.next(after, anchor)!;
    if (first > through) return { count: 0, capped: false };
    const count = Math.floor((through - first) / schedule.periodMs) + 1;
    return { count, capped: false, latest: first + (count - 1) * schedule.periodMs };
  }
  let count = 0;
  let latest: number | undefined;
  let at = after;
  for (;;) {
    const tick = schedule.next(at, anchor);
    if (tick === undefined || tick > through) return { count, capped: false, latest };
    count++;
    latest = at = tick;
    if (count >= cap) {
      // The latest is what matters: find it from the other end.
      return { count, capped: true, latest: latestBefore(schedule, anchor, at, through) };
    }
  }
}

/** The last tick in `(after, through]`, searching back from `through` in widening steps. */
function latestBefore(schedule: Schedule, anchor: number, after: number, through: number): number {
  let span = 60_000;
  for (;;) {
    const from = Math.max(after, through - span);
    let latest: number | undefined;
    for (let t = schedule.next(from, anchor); t !== undefined && t <= through;) {
      latest = t;
      t = schedule.next(t, anchor);
    }
    if (latest !== undefined || from === after) return latest ?? after;
    span *= 8;
  }
}
