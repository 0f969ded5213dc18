/**
 * Lambda's event filter patterns (`filterCriteria.filters[].pattern`), read into a form the stream
 * sources match records against. The rule syntax is Lambda's: a JSON object whose fields name the
 * record's fields (nested objects for nested fields) and whose leaves are lists of conditions, any
 * of which may match: exact strings, numbers, booleans and null, `prefix`, `suffix`,
 * `equals-ignore-case`, `anything-but`, `numeric` ranges and `exists`; `$or` takes a list of
 * patterns of which one must match. Parsing is here, under the API, so the status of a Function
 * and the sources refuse the same patterns with the same words.
 */

/** One condition of a leaf's list. */
export type Condition =
  | { op: 'equals'; value: string | number | boolean | null }
  | { op: 'prefix' | 'suffix' | 'equals-ignore-case'; value: string }
  | { op: 'anything-but'; values: Array<string | number> }
  | {
      op: 'numeric';
      lower?: { value: number; inclusive: boolean };
      upper?: { value: number; inclusive: boolean };
    }
  | { op: 'exists'; value: boolean };

/** A parsed pattern: fields that must all match, and `$or` alternatives of which one must. */
export interface Pattern {
  fields: Array<{ name: string; rule: FieldRule }>;
  or: Pattern[];
}

export type FieldRule =
  { kind: 'leaf'; conditions: Condition[] } | { kind: 'object'; pattern: Pattern };

/** Lambda's limits: 5 filters a trigger, 4,096 characters a pattern. */
export const maxFilters = 5;
export const maxPatternLength = 4096;

/** A pattern that cannot be used; the message says where and what a valid one looks like. */
export class FilterPatternError extends Error {
  override name = 'FilterPatternError';
}

const fail = (where: string, what: string): never => {
  throw new FilterPatternError(`${where ? `at ${where}: ` : ''}${what}`);
};

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

const numericOps = new Set(['=', '<', '<=', '>', '>=']);

function parseNumeric(where: string, spec: unknown): Condition {
  if (!Array.isArray(spec) || spec.length === 0 || spec.length % 2 !== 0 || spec.length > 4) {
    return fail(
      where,
      'numeric takes one or two comparisons, such as ["=", 100] or [">", 0, "<=", 10]',
    );
  }
  const c: Extract<Condition, { op: 'numeric' }> = { op: 'numeric' };
  for (let i = 0; i < spec.length; i += 2) {
    const op: unknown = spec[i];
    const value: unknown = spec[i + 1];
    if (typeof op !== 'string' || !numericOps.has(op)) {
      return fail(where, `numeric comparison ${JSON.stringify(op)} is not one of =, <, <=, >, >=`);
    }
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      return fail(where, `numeric ${op} needs a number, not ${JSON.stringify(value)}`);
    }
    if (op === '=') {
      if (spec.length !== 2) return fail(where, 'numeric "=" stands alone: ["=", 100]');
      c.lower = { value, inclusive: true };
      c.upper = { value, inclusive: true };
    } else if (op.startsWith('>')) {
      if (c.lower) return fail(where, 'numeric has two lower bounds');
      c.lower = { value, inclusive: op === '>=' };
    } else {
      if (c.upper) return fail(where, 'numeric has two upper bounds');
      c.upper = { value, inclusive: op === '<=' };
    }
  }
  if (c.lower && c.upper && c.lower.value > c.upper.value) {
    return fail(where, `numeric range from ${c.lower.value} to ${c.upper.value} is empty`);
  }
  return c;
}

function parseCondition(where: string, item: unknown): Condition {
  if (
    item === null ||
    typeof item === 'string' ||
    typeof item === 'boolean' ||
    (typeof item === 'number' && Number.isFinite(item))
  ) {
    return { op: 'equals', value: item };
  }
  if (!isObject(item)) {
    return fail(
      where,
      `${JSON.stringify(item)} is not a value or a condition such as {"prefix": "a"}`,
    );
  }
  const keys = Object.keys(item);
  if (keys.length !== 1) {
    return fail(
      where,
      `a condition has exactly one operator, not ${keys.length} (${keys.join(', ')})`,
    );
  }
  const op = keys[0]!;
  const arg = item[op];
  switch (op) {
    case 'prefix':
    case 'suffix':
    case 'equals-ignore-case':
      if (typeof arg !== 'string')
        return fail(where, `${op} takes a string, not ${JSON.stringify(arg)}`);
      return { op, value: arg };
    case 'anything-but': {
      const values: unknown[] = Array.isArray(arg) ? arg : [arg];
      if (
        values.length === 0 ||
        !values.every((v): v is string | number => typeof v === 'string' || typeof v === 'number')
      ) {
        return fail(where, 'anything-but takes a string, a number, or a list of them');
      }
      return { op, values };
    }
    case 'numeric':
      return parseNumeric(where, arg);
    case 'exists':
      if (typeof arg !== 'boolean')
        return fail(where, `exists takes true or false, not ${JSON.stringify(arg)}`);
      return { op, value: arg };
    default:
      return fail(
        where,
        `unknown operator "${op}": use prefix, suffix, equals-ignore-case, anything-but, numeric or exists`,
      );
  }
}

function parseObject(where: string, value: Record<string, unknown>): Pattern {
  const pattern: Pattern = { fields: [], or: [] };
  const keys = Object.keys(value);
  if (keys.length === 0)
    return fail(where, 'an empty object matches nothing: name at least one field');
  for (const name of keys) {
    const v = value[name];
    const at = where ? `${where}.${name}` : name;
    if (name === '$or') {
      if (!Array.isArray(v) || v.length < 2 || !v.every(isObject)) {
        return fail(at, '$or takes a list of at least two patterns (objects)');
      }
      pattern.or = v.map((alt, i) => parseObject(`${at}[${i}]`, alt));
    } else if (Array.isArray(v)) {
      if (v.length === 0)
        return fail(at, 'an empty list matches nothing: give at least one value or condition');
      pattern.fields.push({
        name,
        rule: { kind: 'leaf', conditions: v.map((c, i) => parseCondition(`${at}[${i}]`, c)) },
      });
    } else if (isObject(v)) {
      pattern.fields.push({ name, rule: { kind: 'object', pattern: parseObject(at, v) } });
    } else {
      return fail(
        at,
        `${JSON.stringify(v)} must be in a list (["${String(v)}"]) or be an object of nested fields`,
      );
    }
  }
  return pattern;
}

/** Reads one pattern; throws FilterPatternError saying what is wrong. */
export function parseFilterPattern(text: string): Pattern {
  if (text.length > maxPatternLength) {
    return fail('', `a pattern has at most ${maxPatternLength} characters, not ${text.length}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return fail('', `it is not JSON (${(err as Error).message})`);
  }
  if (!isObject(value))
    return fail('', 'a pattern is a JSON object, such as {"eventName": ["INSERT"]}');
  return parseObject('', value);
}

/** The top-level record fields each kind of stream trigger may filter on, as Lambda allows. */
export const filterableFields = {
  kinesis: ['data'],
  dynamodb: [
    'eventID',
    'eventName',
    'eventVersion',
    'eventSource',
    'awsRegion',
    'dynamodb',
    'eventSourceARN',
    'userIdentity',
  ],
} as const;

function topFields(p: Pattern): string[] {
  return [...p.fields.map((f) => f.name), ...p.or.flatMap(topFields)];
}

/**
 * The problem with a trigger's filters, or undefined: each must parse, and name only the fields
 * its kind of record has at the top (Kinesis: `data`).
 */
export function filterCriteriaProblem(
  kind: keyof typeof filterableFields,
  filters: ReadonlyArray<{ pattern?: string }>,
): string | undefined {
  const allowed: readonly string[] = filterableFields[kind];
  if (filters.length > maxFilters)
    return `filterCriteria has at most ${maxFilters} filters, not ${filters.length}`;
  for (const [i, f] of filters.entries()) {
    const what = `filterCriteria.filters[${i}].pattern`;
    try {
      const p = parseFilterPattern(f.pattern ?? '');
      const other = topFields(p).find((name) => !allowed.includes(name));
      if (other !== undefined) {
        return `${what}: ${kind} records are filtered on ${allowed.join(', ')}, not "${other}"${kind === 'kinesis' ? ' (data is matched as JSON when it decodes as JSON)' : ''}`;
      }
    } catch (err) {
      if (err instanceof FilterPatternError) return `${what} is invalid: ${err.message}`;
      throw err;
    }
  }
  return undefined;
}
