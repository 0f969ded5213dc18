/**
 * Checks that the CRD's schema and CEL rules cannot make: a time zone that exists, cron fields
 * within their ranges. A problem becomes a condition on the Function, not a retry.
 */
import { filterCriteriaProblem } from './filter-pattern.js';
import type { EddyFunction, Trigger } from './types.js';

const ranges5: Array<[string, number, number]> = [
  ['minute', 0, 59],
  ['hour', 0, 23],
  ['day of month', 1, 31],
  ['month', 1, 12],
  ['day of week', 0, 7],
];
// EventBridge: minutes hours day-of-month month day-of-week year.
const ranges6: Array<[string, number, number]> = [
  ['minute', 0, 59],
  ['hour', 0, 23],
  ['day of month', 1, 31],
  ['month', 1, 12],
  ['day of week', 1, 7],
  ['year', 1970, 2199],
];

function cronProblem(
  fields: string[],
  ranges: Array<[string, number, number]>,
): string | undefined {
  if (fields.length !== ranges.length) {
    return ranges.length === 5
      ? `a plain cron has 5 fields (minute hour day-of-month month day-of-week), not ${fields.length}; EventBridge's six go in cron(...)`
      : `cron(...) has 6 fields (minutes hours day-of-month month day-of-week year), not ${fields.length}`;
  }
  for (let i = 0; i < fields.length; i++) {
    const [what, min, max] = ranges[i]!;
    for (const n of fields[i]!.match(/\d+/g) ?? []) {
      const step = fields[i]!.includes(`/${n}`);
      const value = Number(n);
      if (step ? value < 1 : value < min || value > max) {
        return `${what} ${value} is out of range (${step ? 'a step is at least 1' : `${min} to ${max}`})`;
      }
    }
  }
  return undefined;
}

/** Whether the IANA time zone exists here. */
export function validTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/** The problem with one trigger, or undefined when it is fine. */
export function triggerProblem(t: Trigger): string | undefined {
  if (t.schedule) {
    const { expression, timezone } = t.schedule;
    if (timezone && !validTimeZone(timezone)) {
      return `time zone "${timezone}" is unknown: use an IANA name such as Europe/Berlin or UTC`;
    }
    const six = /^cron\((.*)\)$/.exec(expression.trim());
    const problem = six
      ? cronProblem(six[1]!.trim().split(/\s+/), ranges6)
      : expression.startsWith('rate(')
        ? undefined
        : cronProblem(expression.trim().split(/\s+/), ranges5);
    if (problem) return `schedule "${expression}": ${problem}`;
  }
  if (t.kinesis?.startingTimestamp && Number.isNaN(Date.parse(t.kinesis.startingTimestamp))) {
    return `startingTimestamp "${t.kinesis.startingTimestamp}" is not an RFC 3339 time`;
  }
  if (t.kinesis?.filterCriteria) {
    return filterCriteriaProblem('kinesis', t.kinesis.filterCriteria.filters ?? []);
  }
  if (t.dynamodb?.filterCriteria) {
    return filterCriteriaProblem('dynamodb', t.dynamodb.filterCriteria.filters ?? []);
  }
  return undefined;
}

/** Problems by trigger name. */
export function triggerProblems(fn: EddyFunction): Map<string, string> {
  const problems = new Map<string, string>();
  for (const t of fn.spec.triggers ?? []) {
    const p = triggerProblem(t);
    if (p) problems.set(t.name, p);
  }
  return problems;
}
