/**
 * The Function CRD's schema applied the way the API server applies it, for Functions that do
 * not pass through one (the local stack's manifest files). crds/function.yaml stays the single
 * source of truth: this module reads its openAPIV3Schema and its CEL rules; it defines none.
 *
 * What happens to a manifest, in the API server's order:
 * 1. `status` is dropped (the CRD has a status subresource: a create ignores it); `null` in a
 *    field that is not `nullable` is dropped, so its default applies.
 * 2. Defaults are applied (structural defaulting: a defaulted object gets its own fields'
 *    defaults too) and the value validations checked: ajv with `useDefaults`.
 * 3. Unknown fields are reported, not pruned: `kubectl apply` asks for strict field validation
 *    by default, so a cluster rejects `spec.memroy` too, and a typo should not silently vanish.
 * 4. Every `x-kubernetes-validations` rule is evaluated on its node with a CEL interpreter
 *    (@marcbachmann/cel-js) extended with Kubernetes' quantity library. Integers reach CEL as
 *    int, `date-time` strings as timestamps, as in the API server. Transition rules (those that
 *    read `oldSelf`) are skipped: they constrain updates, and a manifest file has no history.
 * 5. The checks CEL cannot express (validate.ts) follow; in a cluster they become status
 *    conditions, here they are problems like the others.
 * Not modelled: CEL cost limits, and formats other than those in `formats` below (loading a CRD
 * that uses another one fails, so the gap cannot go unnoticed).
 */
import { Environment, type ParseResult } from '@marcbachmann/cel-js';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { parseAllDocuments } from 'yaml';
import { apiVersion, kind, version, type EddyFunction } from './types.js';
import { triggerProblem } from './validate.js';

/** One node of a CRD's structural openAPIV3Schema. */
interface SchemaNode {
  type?: string;
  description?: string;
  properties?: Record<string, SchemaNode>;
  items?: SchemaNode;
  additionalProperties?: SchemaNode | boolean;
  nullable?: boolean;
  format?: string;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: boolean | number;
  exclusiveMaximum?: boolean | number;
  allOf?: SchemaNode[];
  anyOf?: SchemaNode[];
  oneOf?: SchemaNode[];
  not?: SchemaNode;
  'x-kubernetes-validations'?: ValidationRule[];
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-list-type'?: 'atomic' | 'set' | 'map';
  'x-kubernetes-list-map-keys'?: string[];
  [keyword: string]: unknown;
}

interface ValidationRule {
  rule: string;
  message?: string;
  messageExpression?: string;
  fieldPath?: string;
  reason?: string;
  optionalOldSelf?: boolean;
}

interface CompiledRule {
  rule: string;
  message?: string;
  messageExpression?: ParseResult;
  fieldPath?: string;
  evaluate: ParseResult;
}

/** The Function CRD's schema, ready to check manifests: made by loadFunctionSchema. */
export interface FunctionSchema {
  /** Every CEL rule of the schema with the field it sits on (`spec.scaling`; `` for the root). */
  readonly rules: ReadonlyArray<{ path: string; rule: string }>;
  readonly root: SchemaNode;
  readonly validate: ValidateFunction;
  readonly compiled: ReadonlyMap<SchemaNode, CompiledRule[]>;
}

// Value-validation keywords of OpenAPI v3 that ajv implements as Kubernetes does.
const passThrough = new Set([
  'type',
  'description',
  'title',
  'default',
  'nullable',
  'enum',
  'pattern',
  'minLength',
  'maxLength',
  'minimum',
  'maximum',
  'multipleOf',
  'minItems',
  'maxItems',
  'uniqueItems',
  'minProperties',
  'maxProperties',
  'required',
]);
// Annotations and server-side-apply hints: no effect on what is valid.
const ignored = new Set(['example', 'externalDocs', 'x-kubernetes-map-type']);

const rfc3339 = /^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
const formats: Record<string, true | ((s: string) => boolean)> = {
  // Kubernetes accepts these numeric formats without checking anything more.
  int32: true,
  int64: true,
  float: true,
  double: true,
  'date-time': (s) => rfc3339.test(s) && !Number.isNaN(Date.parse(s)),
  date: (s) => /^\d{4}-\d{2}-\d{2}$/.test(s) && !Number.isNaN(Date.parse(s)),
  byte: (s) => /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(s),
};
const formatHints: Record<string, string> = {
  'date-time': 'an RFC 3339 time such as 2024-05-01T12:00:00Z',
  date: 'a date such as 2024-05-01',
  byte: 'base64-encoded bytes',
};

/** The openAPIV3Schema node as a JSON Schema ajv compiles to the same value validations. */
function toJsonSchema(node: SchemaNode, where: string, isRoot = false): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(node)) {
    if (passThrough.has(key)) out[key] = value;
    else if (key === 'format') {
      if (!(String(value) in formats)) {
        throw new Error(
          `${where || 'the root'}: format "${String(value)}" is not supported by the local schema check: add it to operator/src/api/schema.ts`,
        );
      }
      out[key] = value;
    } else if (key === 'properties') {
      out[key] = Object.fromEntries(
        Object.entries(value as Record<string, SchemaNode>).map(([name, child]) => [
          name,
          toJsonSchema(child, join(where, name)),
        ]),
      );
    } else if (key === 'items') out[key] = toJsonSchema(value as SchemaNode, `${where}[*]`);
    else if (key === 'additionalProperties') {
      out[key] =
        typeof value === 'boolean' ? value : toJsonSchema(value as SchemaNode, `${where}[*]`);
    } else if (key === 'allOf' || key === 'anyOf' || key === 'oneOf') {
      out[key] = (value as SchemaNode[]).map((s) => toJsonSchema(s, where));
    } else if (key === 'not') out[key] = toJsonSchema(value as SchemaNode, where);
    else if (key === 'exclusiveMinimum' || key === 'exclusiveMaximum') {
      // OpenAPI v3.0 spells these as booleans that modify minimum and maximum.
      const bound = key === 'exclusiveMinimum' ? 'minimum' : 'maximum';
      if (value === true) out[key] = node[bound];
      else if (typeof value === 'number') out[key] = value;
    } else if (
      key === 'x-kubernetes-validations' ||
      key === 'x-kubernetes-preserve-unknown-fields' ||
      key === 'x-kubernetes-int-or-string' ||
      key === 'x-kubernetes-list-type' ||
      key === 'x-kubernetes-list-map-keys' ||
      ignored.has(key)
    ) {
      // Handled by checkFunction, or no effect on validity.
    } else {
      throw new Error(
        `${where || 'the root'}: schema keyword "${key}" is not supported by the local schema check: add it to operator/src/api/schema.ts`,
      );
    }
  }
  for (const bound of ['minimum', 'maximum'] as const) {
    const exclusive = bound === 'minimum' ? 'exclusiveMinimum' : 'exclusiveMaximum';
    if (node[exclusive] === true) delete out[bound];
  }
  if (isRoot) {
    // Every object has these whether or not the CRD's schema names them; the API server checks
    // ObjectMeta itself, and so does checkFunction (metadataProblems).
    out.properties = {
      apiVersion: { type: 'string' },
      kind: { type: 'string' },
      ...(out.properties as object | undefined),
      metadata: { type: 'object' },
    };
  }
  if (node['x-kubernetes-int-or-string'] && node.type === undefined) {
    out.type = ['integer', 'string'];
  }
  // Structural schemas close every object unless told otherwise; the API server drops (or, with
  // kubectl's default strict field validation, rejects) the rest. Here they are reported.
  if (
    node.type === 'object' &&
    node.additionalProperties === undefined &&
    !node['x-kubernetes-preserve-unknown-fields']
  ) {
    out.additionalProperties = false;
  }
  return out;
}

function join(path: string, field: string): string {
  if (/^[A-Za-z_$][\w$]*$/.test(field)) return path ? `${path}.${field}` : field;
  return `${path}[${field}]`;
}

/** CEL as the API server offers it to CRD rules: the standard library plus quantities. */
function celEnvironment(): Environment {
  return new Environment()
    .registerType('Quantity', Quantity)
    .registerVariable('self', 'dyn')
    .registerVariable('oldSelf', 'dyn')
    .registerFunction('isQuantity(string): bool', (s: string) => Quantity.parse(s) !== undefined)
    .registerFunction('quantity(string): Quantity', (s: string) => {
      const q = Quantity.parse(s);
      if (!q) throw new Error(`quantities must match the regular expression ${quantityPattern}`);
      return q;
    })
    .registerFunction('Quantity.compareTo(Quantity): int', (a: Quantity, b: Quantity) =>
      BigInt(a.compare(b)),
    )
    .registerFunction(
      'Quantity.isLessThan(Quantity): bool',
      (a: Quantity, b: Quantity) => a.compare(b) < 0,
    )
    .registerFunction(
      'Quantity.isGreaterThan(Quantity): bool',
      (a: Quantity, b: Quantity) => a.compare(b) > 0,
    )
    .registerFunction('Quantity.sign(): int', (a: Quantity) => BigInt(Math.sign(Number(a.num))))
    .registerFunction('Quantity.isInteger(): bool', (a: Quantity) => a.num % a.den === 0n)
    .registerFunction('Quantity.asApproximateFloat(): double', (a: Quantity) => a.toNumber());
}

const quantityPattern = '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$';
const binarySuffixes: Record<string, number> = { Ki: 10, Mi: 20, Gi: 30, Ti: 40, Pi: 50, Ei: 60 };
const decimalSuffixes: Record<string, number> = {
  n: -9,
  u: -6,
  m: -3,
  '': 0,
  k: 3,
  M: 6,
  G: 9,
  T: 12,
  P: 15,
  E: 18,
};

/**
 * A Kubernetes resource quantity as an exact fraction, so `compareTo` orders 1Gi and 1073741824
 * as the API server's quantity library does (equal), with no float rounding.
 */
class Quantity {
  constructor(
    readonly num: bigint,
    readonly den: bigint,
  ) {}

  /** The quantity, or undefined when `s` is not one (Kubernetes' ParseQuantity grammar). */
  static parse(s: string): Quantity | undefined {
    const m = /^([+-]?)(\d+(?:\.\d*)?|\.\d+)(.*)$/.exec(s);
    if (!m) return undefined;
    const [, sign, number, suffix] = m as unknown as [string, string, string, string];
    const [whole, fraction = ''] = number.split('.');
    let num = BigInt(`${whole}${fraction}` || '0') * (sign === '-' ? -1n : 1n);
    let den = 10n ** BigInt(fraction.length);
    let exp10: number;
    if (suffix in binarySuffixes) {
      num *= 2n ** BigInt(binarySuffixes[suffix]!);
      exp10 = 0;
    } else if (suffix in decimalSuffixes) {
      exp10 = decimalSuffixes[suffix]!;
    } else {
      const e = /^[eE]([+-]?\d+)$/.exec(suffix);
      if (!e) return undefined;
      exp10 = Number(e[1]);
      // Far beyond any resource, and 10n ** 1e9 would not finish.
      if (Math.abs(exp10) > 1000) return undefined;
    }
    if (exp10 >= 0) num *= 10n ** BigInt(exp10);
    else den *= 10n ** BigInt(-exp10);
    return new Quantity(num, den);
  }

  /** -1, 0 or 1 as this is less than, equal to or greater than `other`. */
  compare(other: Quantity): number {
    const a = this.num * other.den;
    const b = other.num * this.den;
    return a < b ? -1 : a > b ? 1 : 0;
  }

  toNumber(): number {
    return Number(this.num) / Number(this.den);
  }
}

function compileRule(env: Environment, rule: ValidationRule, where: string): CompiledRule {
  const compile = (what: string, expression: string, returns: string[]): ParseResult => {
    const checked = env.check(expression);
    const problem = !checked.valid
      ? (checked.error?.message ?? 'invalid')
      : !returns.includes(checked.type ?? '')
        ? `it returns ${checked.type}, not ${returns[0]}`
        : undefined;
    if (problem) {
      throw new Error(
        `${where || 'the root'}: the CEL ${what} ${JSON.stringify(expression)} does not compile: ${problem}`,
      );
    }
    return env.parse(expression);
  };
  return {
    rule: rule.rule,
    message: rule.message,
    fieldPath: rule.fieldPath,
    evaluate: compile('rule', rule.rule, ['bool', 'dyn']),
    messageExpression:
      rule.messageExpression === undefined
        ? undefined
        : compile('messageExpression', rule.messageExpression, ['string', 'dyn']),
  };
}

/**
 * Reads the Function CRD (crds/function.yaml) and prepares its schema: the value validations
 * for ajv and every CEL rule compiled. Throws when the CRD has no v1alpha1 schema, or uses a
 * keyword, format or CEL function this check does not implement, naming it.
 */
export function loadFunctionSchema(crdYamlText: string): FunctionSchema {
  const docs = parseAllDocuments(crdYamlText);
  const error = docs.flatMap((d) => d.errors)[0];
  if (error) throw new Error(`the CRD is not valid YAML: ${error.message}`);
  // The CRD is the project's own file: its aliases (&id001) may expand as much as they like.
  const crd = docs
    .map((d) => d.toJS({ maxAliasCount: -1 }) as unknown)
    .find((d) => (d as { kind?: unknown } | null)?.kind === 'CustomResourceDefinition') as
    | {
        spec?: {
          versions?: Array<{
            name: string;
            subresources?: { status?: unknown };
            schema?: { openAPIV3Schema?: SchemaNode };
          }>;
        };
      }
    | undefined;
  const served = crd?.spec?.versions?.find((v) => v.name === version);
  const openAPI = served?.schema?.openAPIV3Schema;
  if (!served || !openAPI) {
    throw new Error(`the CRD has no openAPIV3Schema for version ${version}`);
  }
  const root: SchemaNode = { ...openAPI, properties: { ...openAPI.properties } };
  // With the status subresource, a create or update of the object ignores status.
  if (served.subresources?.status !== undefined) delete root.properties!.status;

  const env = celEnvironment();
  const compiled = new Map<SchemaNode, CompiledRule[]>();
  const rules: Array<{ path: string; rule: string }> = [];
  const visit = (node: SchemaNode, where: string): void => {
    const own = node['x-kubernetes-validations'] ?? [];
    // Transition rules judge a change against the stored object; a file has none.
    const current = own.filter((r) => !/\boldSelf\b/.test(r.rule));
    if (current.length > 0 && !compiled.has(node)) {
      compiled.set(
        node,
        current.map((r) => compileRule(env, r, where)),
      );
    }
    for (const r of own) rules.push({ path: where, rule: r.rule });
    for (const [name, child] of Object.entries(node.properties ?? {})) {
      visit(child, join(where, name));
    }
    if (node.items) visit(node.items, `${where}[*]`);
    if (typeof node.additionalProperties === 'object') {
      visit(node.additionalProperties, `${where}[*]`);
    }
  };
  visit(root, '');
  // Rules on status are never evaluated here, but a CRD with one that does not compile is broken.
  const status = openAPI.properties?.status;
  if (status && !root.properties!.status) visit(status, 'status');

  const ajv = new Ajv({
    allErrors: true,
    useDefaults: true,
    verbose: true,
    strictSchema: true,
    strictTypes: false,
    strictRequired: false,
    allowUnionTypes: true,
  });
  for (const [name, check] of Object.entries(formats)) ajv.addFormat(name, check);
  const validate = ajv.compile(toJsonSchema(root, '', true));
  return { rules, root, validate, compiled };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function childSchema(node: SchemaNode | undefined, key: string): SchemaNode | undefined {
  if (!node) return undefined;
  const p = node.properties?.[key];
  if (p) return p;
  return typeof node.additionalProperties === 'object' ? node.additionalProperties : undefined;
}

/** Removes `null` where the schema does not allow it, so defaults apply (as the API server does). */
function dropNulls(value: unknown, node: SchemaNode | undefined): void {
  if (!node) return;
  if (Array.isArray(value)) {
    for (const item of value) dropNulls(item, node.items);
  } else if (isObject(value)) {
    for (const [key, child] of Object.entries(value)) {
      const s = childSchema(node, key);
      if (!s) continue;
      if (child === null && !s.nullable) delete value[key];
      else dropNulls(child, s);
    }
  }
}

/** The value as CEL sees it under the schema: integers as int, date-times as timestamps. */
function toCel(value: unknown, node: SchemaNode | undefined): unknown {
  if (Array.isArray(value)) return value.map((v) => toCel(v, node?.items));
  if (isObject(value)) {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, toCel(v, childSchema(node, k))]),
    );
  }
  if (typeof value === 'number') {
    return node?.type !== 'number' && Number.isInteger(value) ? BigInt(value) : value;
  }
  if (typeof value === 'string' && (node?.format === 'date-time' || node?.format === 'date')) {
    const d = new Date(value);
    return Number.isNaN(d.getTime()) ? value : d;
  }
  return value;
}

/** `spec.triggers[0].s3` from ajv's `/spec/triggers/0/s3`, walking the data to tell lists. */
function pathOf(pointer: string, data: unknown): string {
  let path = '';
  let at = data;
  for (const raw of pointer.split('/').slice(1)) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(at)) {
      path += `[${seg}]`;
      at = at[Number(seg)];
    } else {
      path = join(path, seg);
      at = isObject(at) ? at[seg] : undefined;
    }
  }
  return path;
}

/** A value as JSON, cut short: a problem with a 256 KiB inline handler fits on one line. */
function show(v: unknown): string {
  const json = JSON.stringify(v) ?? String(v);
  return json.length > 80 ? `${json.slice(0, 77)}...` : json;
}

function hint(node: unknown): string {
  const d = isObject(node) ? node.description : undefined;
  return typeof d === 'string' ? ` (${d.replace(/\s+/g, ' ').trim()})` : '';
}

/** A problem a person can act on, from one ajv error. */
function describe(e: ErrorObject, data: unknown): Problem {
  const path = pathOf(e.instancePath, data);
  const p = e.params as Record<string, unknown>;
  const node = e.parentSchema;
  switch (e.keyword) {
    case 'required': {
      const field = String(p.missingProperty);
      const props = (node?.properties ?? {}) as Record<string, unknown>;
      return problemAt(join(path, field), `Required value: add it${hint(props[field])}`);
    }
    case 'additionalProperties': {
      const field = String(p.additionalProperty);
      const known = Object.keys((node?.properties ?? {}) as object);
      const takes = known.length
        ? `; ${path || 'a Function'} takes ${known.join(', ')}`
        : `; ${path} takes no fields`;
      return problemAt(
        join(path, field),
        `unknown field: remove it or correct its spelling${takes}`,
      );
    }
    case 'type': {
      const want = Array.isArray(p.type) ? p.type.join(' or ') : String(p.type);
      return problemAt(
        path,
        `Invalid value: ${show(e.data)}: must be of type ${want}${hint(node)}`,
      );
    }
    case 'enum':
      return problemAt(
        path,
        `Unsupported value: ${show(e.data)}: supported values: ${(p.allowedValues as unknown[]).map(show).join(', ')}`,
      );
    case 'pattern':
      return problemAt(
        path,
        `Invalid value: ${show(e.data)}: must match ${String(p.pattern)}${hint(node)}`,
      );
    case 'format': {
      const f = String(p.format);
      return problemAt(path, `Invalid value: ${show(e.data)}: must be ${formatHints[f] ?? f}`);
    }
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum': {
      const words: Record<string, string> = {
        '>=': 'at least',
        '<=': 'at most',
        '>': 'more than',
        '<': 'less than',
      };
      const bound = `${words[String(p.comparison)] ?? String(p.comparison)} ${String(p.limit)}`;
      return problemAt(path, `Invalid value: ${show(e.data)}: must be ${bound}${hint(node)}`);
    }
    case 'minLength':
    case 'maxLength':
      return problemAt(
        path,
        `Invalid value: ${show(e.data)}: must be ${e.keyword === 'minLength' ? 'at least' : 'at most'} ${String(p.limit)} characters long${hint(node)}`,
      );
    case 'minItems':
    case 'maxItems':
    case 'minProperties':
    case 'maxProperties': {
      const count = Array.isArray(e.data) ? e.data.length : Object.keys(e.data as object).length;
      const what = e.keyword.endsWith('Items') ? 'items' : 'fields';
      const bound = e.keyword.startsWith('min') ? 'at least' : 'at most';
      return problemAt(
        path,
        `Invalid value: ${count} ${what}: must have ${bound} ${String(p.limit)}${hint(node)}`,
      );
    }
    default:
      return problemAt(path, `${e.message ?? e.keyword}${hint(node)}`);
  }
}

const dns1123Label = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const dns1123Subdomain = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const qualifiedName = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const labelValue = /^(|[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$/;
const objectMetaFields = new Set([
  'name',
  'generateName',
  'namespace',
  'selfLink',
  'uid',
  'resourceVersion',
  'generation',
  'creationTimestamp',
  'deletionTimestamp',
  'deletionGracePeriodSeconds',
  'labels',
  'annotations',
  'ownerReferences',
  'finalizers',
  'managedFields',
]);

function keyProblem(key: string): string | undefined {
  const slash = key.lastIndexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = key.slice(slash + 1);
  if (prefix !== undefined && (prefix.length > 253 || !dns1123Subdomain.test(prefix))) {
    return 'its prefix (before "/") must be a DNS subdomain such as example.com';
  }
  if (name.length > 63 || !qualifiedName.test(name)) {
    return 'its name must be at most 63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit';
  }
  return undefined;
}

interface Problem {
  /** The field it is about; `` for the whole object. */
  path: string;
  text: string;
}

function problemAt(path: string, text: string): Problem {
  return { path, text: `${path || 'the Function'}: ${text}` };
}

/** What the API server checks of every object's metadata, on a Function's. */
function metadataProblems(metadata: Record<string, unknown>): Problem[] {
  const problems: Problem[] = [];
  const { name, namespace } = metadata;
  if (name === undefined || name === '') {
    problems.push(
      problemAt('metadata.name', 'Required value: give the Function a name, such as thumbnail'),
    );
  } else if (typeof name !== 'string' || name.length > 253 || !dns1123Subdomain.test(name)) {
    problems.push(
      problemAt(
        'metadata.name',
        `Invalid value: ${show(name)}: use lowercase letters, digits and '-', starting and ending with a letter or digit, such as thumbnail`,
      ),
    );
  }
  if (
    namespace !== undefined &&
    (typeof namespace !== 'string' || namespace.length > 63 || !dns1123Label.test(namespace))
  ) {
    problems.push(
      problemAt(
        'metadata.namespace',
        `Invalid value: ${show(namespace)}: use lowercase letters, digits and '-', starting and ending with a letter or digit, such as photos`,
      ),
    );
  }
  for (const field of ['labels', 'annotations'] as const) {
    const map = metadata[field];
    if (map === undefined || map === null) continue;
    if (!isObject(map)) {
      problems.push(
        problemAt(`metadata.${field}`, `Invalid value: ${show(map)}: must be a map of strings`),
      );
      continue;
    }
    for (const [key, value] of Object.entries(map)) {
      const where = `metadata.${field}[${key}]`;
      const bad = keyProblem(key);
      if (bad) problems.push(problemAt(where, `Invalid key: ${bad}`));
      if (typeof value !== 'string') {
        problems.push(
          problemAt(where, `Invalid value: ${show(value)}: must be a string: quote it`),
        );
      } else if (field === 'labels' && (value.length > 63 || !labelValue.test(value))) {
        problems.push(
          problemAt(
            where,
            `Invalid value: ${show(value)}: a label value is at most 63 letters, digits, "-", "_" or ".", starting and ending with a letter or digit`,
          ),
        );
      }
    }
  }
  for (const field of Object.keys(metadata)) {
    if (!objectMetaFields.has(field)) {
      problems.push(
        problemAt(`metadata.${field}`, 'unknown field: remove it or correct its spelling'),
      );
    }
  }
  return problems;
}

function ruleProblems(schema: FunctionSchema, root: unknown, schemaErrorPaths: string[]): string[] {
  const problems: string[] = [];
  const hasSchemaError = (path: string) =>
    schemaErrorPaths.some(
      (p) => path === '' || p === path || p.startsWith(`${path}.`) || p.startsWith(`${path}[`),
    );
  const visit = (value: unknown, node: SchemaNode, path: string): void => {
    if (value === undefined) return;
    const rules = schema.compiled.get(node);
    if (rules) {
      let self = toCel(value, node);
      if (path === '' && isObject(self) && isObject(self.metadata)) {
        // The API server shows root rules only the name and generateName of metadata.
        const { name, generateName } = self.metadata;
        self = { ...self, metadata: { name, generateName } };
      }
      for (const r of rules) {
        let ok: unknown;
        try {
          ok = r.evaluate({ self });
        } catch (err) {
          // A field of the wrong type makes rules on it fail; its schema problem says why.
          if (!hasSchemaError(path)) {
            problems.push(
              `${path || 'the Function'}: the rule ${r.rule} could not be evaluated: ${err instanceof Error ? err.message : String(err)}`,
            );
          }
          continue;
        }
        if (ok === true) continue;
        let message = r.message ?? `failed rule: ${r.rule}`;
        if (r.messageExpression) {
          try {
            const m: unknown = r.messageExpression({ self });
            if (typeof m === 'string' && m.trim() !== '') message = m;
          } catch {
            // The API server falls back to message, as here.
          }
        }
        // fieldPath is relative to the rule's node: `.minReplicas`, `['a.b']`.
        const at = r.fieldPath ? `${path}${r.fieldPath}`.replace(/^\./, '') : path;
        problems.push(at ? `${at}: ${message}` : message);
      }
    }
    const listType = node['x-kubernetes-list-type'];
    if (Array.isArray(value) && (listType === 'set' || listType === 'map')) {
      const keys = node['x-kubernetes-list-map-keys'] ?? [];
      const seen = new Set<string>();
      value.forEach((item, i) => {
        const identity =
          listType === 'set'
            ? JSON.stringify(item)
            : JSON.stringify(
                Object.fromEntries(keys.map((k) => [k, isObject(item) ? item[k] : undefined])),
              );
        if (seen.has(identity)) problems.push(`${path}[${i}]: Duplicate value: ${identity}`);
        seen.add(identity);
      });
    }
    if (Array.isArray(value) && node.items) {
      value.forEach((item, i) => visit(item, node.items!, `${path}[${i}]`));
    } else if (isObject(value)) {
      for (const [key, child] of Object.entries(value)) {
        const s = childSchema(node, key);
        if (s) visit(child, s, join(path, key));
      }
    }
  };
  visit(root, schema.root, '');
  return problems;
}

/**
 * Checks and defaults a Function manifest exactly as the API server would for the CRD `schema`
 * was loaded from, plus the checks of validate.ts. Returns the defaulted Function (a copy,
 * namespace `default` unless set, no status), or every problem found, each starting with the
 * field's path (`spec.memory: ...`) and saying what is accepted.
 */
export function checkFunction(
  schema: FunctionSchema,
  obj: unknown,
): { fn: EddyFunction } | { problems: string[] } {
  if (!isObject(obj)) {
    return {
      problems: ['a Function manifest is a mapping with apiVersion, kind, metadata and spec'],
    };
  }
  const problems: Problem[] = [];
  const data = structuredClone(obj);
  if (data.apiVersion !== apiVersion) {
    problems.push(
      problemAt('apiVersion', `Invalid value: ${show(data.apiVersion)}: use ${apiVersion}`),
    );
  }
  if (data.kind !== kind) {
    problems.push(problemAt('kind', `Invalid value: ${show(data.kind)}: use ${kind}`));
  }
  if (data.metadata === undefined || data.metadata === null) data.metadata = {};
  if (!isObject(data.metadata)) {
    problems.push(
      problemAt('metadata', `Invalid value: ${show(data.metadata)}: must be a mapping`),
    );
    return { problems: problems.map((p) => p.text) };
  }
  problems.push(...metadataProblems(data.metadata));
  if (data.metadata.namespace === undefined || data.metadata.namespace === '') {
    data.metadata.namespace = 'default';
  }
  delete data.status;
  dropNulls(data, schema.root);
  if (!schema.validate(data)) {
    for (const e of schema.validate.errors ?? []) {
      const p = describe(e, data);
      if (!problems.some((q) => q.text === p.text)) problems.push(p);
    }
  }
  const texts = [
    ...problems.map((p) => p.text),
    ...ruleProblems(
      schema,
      data,
      problems.map((p) => p.path),
    ),
  ];
  if (texts.length > 0) return { problems: texts };

  const fn = data as unknown as EddyFunction;
  (fn.spec.triggers ?? []).forEach((t, i) => {
    const p = triggerProblem(t);
    if (p) texts.push(`spec.triggers[${i}] (${t.name}): ${p}`);
  });
  return texts.length > 0 ? { problems: texts } : { fn };
}
