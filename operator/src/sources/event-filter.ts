/**
 * Lambda's event filtering for stream triggers: a record goes to the function when it matches at
 * least one of the trigger's filters (none: every record goes). Patterns are parsed by
 * `api/filter-pattern.ts`; matching is here. Records that match no filter are skipped and
 * checkpointed with the batch around them, as Lambda does.
 */
import { Counter, type Registry } from 'prom-client';
import {
  parseFilterPattern,
  type Condition,
  type FieldRule,
  type Pattern,
} from '../api/filter-pattern.js';

export interface MatchOptions {
  /**
   * Strings that are decimal numbers match `numeric` conditions too: DynamoDB writes a number
   * attribute as a string (`{"N": "150"}`).
   */
  numericStrings?: boolean;
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

const decimal = /^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;

function asNumber(v: unknown, o: MatchOptions): number | undefined {
  if (typeof v === 'number') return v;
  if (o.numericStrings && typeof v === 'string' && decimal.test(v.trim())) return Number(v);
  return undefined;
}

/** Whether one leaf value (not a list) satisfies a condition other than `exists`. */
function leafMatches(c: Condition, v: unknown, o: MatchOptions): boolean {
  switch (c.op) {
    case 'equals':
      if (typeof c.value === 'number') return typeof v === 'number' && v === c.value;
      return v === c.value;
    case 'prefix':
      return typeof v === 'string' && v.startsWith(c.value);
    case 'suffix':
      return typeof v === 'string' && v.endsWith(c.value);
    case 'equals-ignore-case':
      return typeof v === 'string' && v.toLowerCase() === c.value.toLowerCase();
    case 'anything-but':
      if (typeof v !== 'string' && typeof v !== 'number')
        return v === null || typeof v === 'boolean';
      return !c.values.some((x) => x === v);
    case 'numeric': {
      const n = asNumber(v, o);
      if (n === undefined) return false;
      const { lower, upper } = c;
      if (lower && (lower.inclusive ? n < lower.value : n <= lower.value)) return false;
      if (upper && (upper.inclusive ? n > upper.value : n >= upper.value)) return false;
      return true;
    }
    case 'exists':
      return c.value;
  }
}

function ruleMatches(rule: FieldRule, value: unknown, o: MatchOptions): boolean {
  if (rule.kind === 'object') {
    // A missing object still matches a nested pattern that asks for absence ({"exists": false}).
    if (value === undefined) return patternMatches(rule.pattern, {}, o);
    const candidates = Array.isArray(value) ? value : [value];
    return candidates.some((c) => isObject(c) && patternMatches(rule.pattern, c, o));
  }
  return rule.conditions.some((c) => {
    if (c.op === 'exists') {
      // Only leaves exist as far as a pattern is concerned: an object is not a value.
      const present = value !== undefined && !isObject(value);
      return c.value ? present : value === undefined;
    }
    if (value === undefined) return false;
    // A list in the record matches when any of its items does.
    if (Array.isArray(value)) {
      return c.op === 'anything-but'
        ? value.length > 0 && value.every((v) => leafMatches(c, v, o))
        : value.some((v) => leafMatches(c, v, o));
    }
    return leafMatches(c, value, o);
  });
}

function patternMatches(p: Pattern, record: Record<string, unknown>, o: MatchOptions): boolean {
  for (const { name, rule } of p.fields) {
    const value = Object.hasOwn(record, name) ? record[name] : undefined;
    if (!ruleMatches(rule, value, o)) return false;
  }
  return p.or.length === 0 || p.or.some((alt) => patternMatches(alt, record, o));
}

/** A trigger's filters, compiled once: `matches(record)` says whether a record goes on. */
export class EventFilter {
  private readonly patterns: Pattern[];

  /** Throws FilterPatternError for a pattern that cannot be used (the API refuses it first). */
  constructor(
    patterns: readonly string[],
    private readonly options: MatchOptions = {},
  ) {
    this.patterns = patterns.map(parseFilterPattern);
  }

  /** Whether there is anything to filter: without filters every record goes. */
  get active(): boolean {
    return this.patterns.length > 0;
  }

  matches(record: unknown): boolean {
    if (this.patterns.length === 0) return true;
    if (!isObject(record)) return false;
    return this.patterns.some((p) => patternMatches(p, record, this.options));
  }
}

/**
 * What a Kinesis record is matched as: `{data: <the decoded JSON>}` when its data decodes as
 * JSON (an object or a list), else `{}`, so that a pattern on `data` lets it pass only when it
 * asks for data's absence, as Lambda drops records that are not JSON from `data` filters.
 */
export function kinesisFilterView(data: Uint8Array | undefined): Record<string, unknown> {
  if (!data || data.byteLength === 0) return {};
  const first = data[0];
  // Only JSON objects and lists are worth parsing: anything else cannot match a nested pattern.
  if (first !== 0x7b && first !== 0x5b && first !== 0x20 && first !== 0x0a && first !== 0x09)
    return {};
  try {
    const value: unknown = JSON.parse(
      Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8'),
    );
    return typeof value === 'object' && value !== null ? { data: value } : {};
  } catch {
    return {};
  }
}

export type FilteredCounter = Counter<'namespace' | 'function' | 'trigger'>;
const counters = new WeakMap<Registry, FilteredCounter>();

/** `eddy_source_filtered_records_total`, registered once per registry for every stream source. */
export function filteredRecordsCounter(registry: Registry): FilteredCounter {
  let counter = counters.get(registry);
  if (!counter) {
    counter = new Counter({
      name: 'eddy_source_filtered_records_total',
      help: "Stream records that matched none of their trigger's filters: skipped and checkpointed, never delivered.",
      labelNames: ['namespace', 'function', 'trigger'],
      registers: [registry],
    });
    counters.set(registry, counter);
  }
  return counter;
}
