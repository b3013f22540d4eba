// weir-guest's records and outputs: the record a function is given, the
// output it returns, and rejections. Internal: import these from
// "weir-guest", which re-exports them.

import { text } from "./utf8.js";

/** An input record. `key` and `value` are Uint8Arrays, or null (none; a null value is a tombstone). */
export class Record {
  constructor(offset, timestamp, key, value, headers) {
    /** Position in the input partition, 0-based (for `weir test`, among the input file's records). */
    this.offset = offset;
    /** Event time, ms since the Unix epoch. */
    this.timestamp = timestamp;
    this.key = key;
    this.value = value;
    /** [name, Uint8Array] pairs, in order. */
    this.headers = headers;
  }
  /** The key as text; throws if there is none or it is not UTF-8. */
  keyText() {
    if (this.key === null) throw new Reject("the record has no key");
    try {
      return text(this.key);
    } catch (e) {
      throw new Reject(`the key is not UTF-8: ${e.message}`);
    }
  }
  /** The value as text; throws if there is none (a tombstone) or it is not UTF-8. */
  valueText() {
    if (this.value === null) throw new Reject("the record has no value (a tombstone)");
    try {
      return text(this.value);
    } catch (e) {
      throw new Reject(`the value is not UTF-8: ${e.message}`);
    }
  }
  /** The value parsed as JSON. */
  json() {
    const t = this.valueText();
    try {
      return JSON.parse(t);
    } catch (e) {
      throw new Reject(`the value is not valid JSON: ${e.message}`);
    }
  }
  /** The value of the first header called `name` (a Uint8Array), or null. */
  header(name) {
    for (const [n, v] of this.headers) if (n === name) return v;
    return null;
  }
}

/**
 * A record a function emits. Plain objects with the same fields work too:
 * `{ output, key, value, headers, timestamp }`, where `key`, `value` and
 * header values are strings (sent as UTF-8), Uint8Arrays or null.
 */
export class Output {
  constructor(key = null, value = null) {
    /** The named output it goes to; null is the step's default output. */
    this.output = null;
    this.key = key;
    this.value = value;
    this.headers = [];
    /** Event time; null keeps the input record's. */
    this.timestamp = null;
  }
  /** An unkeyed output with this value. */
  static value(value) {
    return new Output(null, value);
  }
  /** An output with this key and value. */
  static keyed(key, value) {
    return new Output(key, value);
  }
  /** An output whose value is `v` as JSON. */
  static json(v) {
    return new Output(null, JSON.stringify(v));
  }
  /** A copy of the input record: same key, value, headers and timestamp. */
  static forward(r) {
    const o = new Output(r.key, r.value);
    o.headers = r.headers.slice();
    o.timestamp = r.timestamp;
    return o;
  }
  /** Sends it to the named output `name`. */
  to(name) {
    this.output = name;
    return this;
  }
  withKey(key) {
    this.key = key;
    return this;
  }
  withValue(value) {
    this.value = value;
    return this;
  }
  withHeader(name, value) {
    this.headers.push([name, value]);
    return this;
  }
  /** Sets the event time (ms since the Unix epoch). */
  at(timestamp) {
    this.timestamp = timestamp;
    return this;
  }
}

/** Rejects the record being processed: it goes to the dead-letter output with this message. */
export class Reject extends Error {}

/** Throws a {@link Reject} with this message. */
export function reject(message) {
  throw new Reject(message);
}

/** The dead-letter reason for something thrown: its message (with the error's type, unless it is a plain Error). */
export function messageOf(e) {
  if (e instanceof Error) {
    if (e instanceof Reject || e.name === "Error" || !e.name) return String(e.message);
    return `${e.name}: ${e.message}`;
  }
  if (typeof e === "object" && e !== null) {
    try {
      const json = JSON.stringify(e);
      if (json !== undefined && json !== "{}") return json;
    } catch {
      // fall through to String(e)
    }
  }
  return String(e);
}
