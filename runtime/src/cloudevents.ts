/**
 * CloudEvents 1.0 over HTTP without a schema engine: read binary-mode headers directly, check
 * the required attributes by hand. Every verdict names the attribute and, in binary mode, the
 * header, so a sender knows what to fix.
 */
import type { IncomingHttpHeaders } from 'node:http';
import type { EventAttributes } from './invocation.js';

export type Mode = 'binary' | 'structured' | 'batch' | 'direct';

/** Which of the HTTP binding's modes a request uses; without any CloudEvents marker it is a direct call. */
export function classify(headers: IncomingHttpHeaders, rawHeaders: string[]): Mode {
  const contentType = headers['content-type'];
  if (contentType !== undefined && contentType.startsWith('application/cloudevents')) {
    return contentType.startsWith('application/cloudevents-batch') ? 'batch' : 'structured';
  }
  if (headers['ce-specversion'] !== undefined) return 'binary';
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!;
    if (
      name.length > 3 &&
      name.charCodeAt(2) === 45 /* - */ &&
      name.slice(0, 3).toLowerCase() === 'ce-'
    ) {
      return 'binary';
    }
  }
  return 'direct';
}

const attributeName = /^[a-z0-9]+$/;
/** The spec's own attributes, always strings; extensions may also be numbers or booleans. */
const contextAttributes = new Set([
  'specversion',
  'id',
  'source',
  'type',
  'datacontenttype',
  'dataschema',
  'subject',
  'time',
]);
const rfc3339 =
  /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))$/;
// URI-references have no spaces or control characters; anything more exact belongs to the sender.
// eslint-disable-next-line no-control-regex -- control characters are exactly what is refused
const uriReference = /^[^\s\u0000-\u001f\u007f]+$/;
const absoluteUri = /^[a-zA-Z][a-zA-Z0-9+.-]*:[^\s]*$/;

/**
 * RFC 3339's date-time, each field within its range (section 5.7): JavaScript's Date is no judge,
 * since it rolls 2024-02-30 over to 1 March and 24:00 to the next day. Second 60 is a leap
 * second, which the RFC allows.
 */
export function isRfc3339(value: string): boolean {
  const m = rfc3339.exec(value);
  if (!m) return false;
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  if (month < 1 || month > 12 || day < 1) return false;
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  const days = month === 2 ? (leap ? 29 : 28) : [4, 6, 9, 11].includes(month) ? 30 : 31;
  if (day > days) return false;
  if (Number(m[4]) > 23 || Number(m[5]) > 59 || Number(m[6]) > 60) return false;
  if (m[8] !== undefined && (Number(m[8]) > 23 || Number(m[9]) > 59)) return false;
  return true;
}

function decodeHeaderValue(value: string): string {
  if (!value.includes('%')) return value;
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

/** The context attributes of a binary-mode request, from its `ce-*` headers and Content-Type. */
export function binaryAttributes(
  headers: IncomingHttpHeaders,
  rawHeaders: string[],
): EventAttributes | string {
  const attributes: EventAttributes = {};
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const raw = rawHeaders[i]!;
    if (raw.length <= 3 || raw.charCodeAt(2) !== 45) continue;
    const name = raw.toLowerCase();
    if (!name.startsWith('ce-')) continue;
    const attr = name.slice(3);
    if (!attributeName.test(attr)) {
      return `header ${raw} does not name a valid CloudEvents attribute: use lowercase letters and digits after "ce-"`;
    }
    attributes[attr] = decodeHeaderValue(rawHeaders[i + 1]!);
  }
  const contentType = headers['content-type'];
  if (contentType !== undefined) attributes.datacontenttype = contentType;
  return check(attributes, 'binary') ?? attributes;
}

/** Attributes and data of a structured-mode event (`application/cloudevents+json`). */
export function structuredEvent(
  body: string,
): { attributes: EventAttributes; data: unknown } | string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch (err) {
    return `a structured-mode CloudEvent must be a JSON object: ${(err as Error).message}`;
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    return 'a structured-mode CloudEvent must be a JSON object';
  }
  const attributes: EventAttributes = {};
  let data: unknown;
  for (const [key, value] of Object.entries(parsed as Record<string, unknown>)) {
    if (key === 'data') {
      data = value;
      continue;
    }
    if (key === 'data_base64') {
      if (typeof value !== 'string') return 'data_base64 must be a base64 string';
      data = Buffer.from(value, 'base64');
      continue;
    }
    if (!attributeName.test(key)) {
      return `"${key}" is not a valid CloudEvents attribute name: use lowercase letters and digits`;
    }
    if (value === null) continue;
    if (typeof value === 'string') attributes[key] = value;
    else if (contextAttributes.has(key)) return `attribute '${key}' must be a string`;
    else if (typeof value === 'number' || typeof value === 'boolean')
      attributes[key] = String(value);
    else return `attribute "${key}" must be a string, number or boolean`;
  }
  if ('data' in parsed && 'data_base64' in parsed) {
    return 'a CloudEvent carries either data or data_base64, not both';
  }
  return check(attributes, 'structured') ?? { attributes, data };
}

function where(attr: string, mode: 'binary' | 'structured'): string {
  return mode === 'binary' ? `attribute '${attr}' (header ce-${attr})` : `attribute '${attr}'`;
}

/** The first problem with the context attributes, or undefined when they are valid. */
function check(a: EventAttributes, mode: 'binary' | 'structured'): string | undefined {
  for (const required of ['specversion', 'id', 'source', 'type'] as const) {
    const value = a[required];
    if (value === undefined) return `CloudEvent is missing required ${where(required, mode)}`;
    if (value === '') return `CloudEvent ${where(required, mode)} must not be empty`;
  }
  if (a.specversion !== '1.0') {
    return `CloudEvent ${where('specversion', mode)} is "${a.specversion}"; only 1.0 is supported`;
  }
  if (!uriReference.test(a.source!)) {
    return `CloudEvent ${where('source', mode)} must be a URI-reference (no spaces or control characters)`;
  }
  if (a.time !== undefined && !isRfc3339(a.time)) {
    return `CloudEvent ${where('time', mode)} is "${a.time}", not an RFC 3339 timestamp (a real date and time, such as 2024-05-01T12:00:00Z)`;
  }
  if (a.dataschema !== undefined && !absoluteUri.test(a.dataschema)) {
    return `CloudEvent ${where('dataschema', mode)} must be an absolute URI`;
  }
  if (a.subject === '')
    return `CloudEvent ${where('subject', mode)} must not be empty when present`;
  return undefined;
}
