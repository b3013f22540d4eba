// weir-guest for JavaScript: write Weir stream functions as one plain
// function per record. This module implements the packed batch encoding of
// wit/functions.wit (decode the record batch, call your function once per
// record, encode the result list), so you never see it.
//
//   import { map, Output } from "weir-guest";
//   export const mapping = map((r) => Output.forward(r).to("high"));
//
// Build with guest-sdk/js/build.mjs, which bundles your module with this one
// and turns it into a WebAssembly component (see docs/guide-js.md).

import * as logImport from "weir:functions/log@0.1.0";

// Set by build.mjs: "qjs" (QuickJS) or "sm" (StarlingMonkey). The engines
// differ in how they pass s64 (Number or BigInt) and import interfaces.
// eslint-disable-next-line no-undef
const ENGINE = typeof __WEIR_ENGINE__ === "string" ? __WEIR_ENGINE__ : "qjs";

/** The engine's binding of an imported WIT interface. */
export function witImport(ns) {
  return ns && ns.default !== undefined ? ns.default : ns;
}

/** A number for an s64 argument of an imported function. */
export function s64(n) {
  return ENGINE === "sm" ? BigInt(Math.trunc(n)) : Math.trunc(n);
}

const logWit = witImport(logImport);

// ---------------------------------------------------------------- UTF-8

const hasTextCodec =
  typeof globalThis.TextEncoder === "function" && typeof globalThis.TextDecoder === "function";
const encoder = hasTextCodec ? new TextEncoder() : null;
const strictDecoder = hasTextCodec ? new TextDecoder("utf-8", { fatal: true }) : null;

/** The UTF-8 bytes of a string. */
export function utf8(s) {
  if (encoder !== null) return encoder.encode(s);
  const out = new Uint8Array(s.length * 3);
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      out[n++] = c;
      continue;
    }
    if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    if (c >= 0xd800 && c < 0xe000) c = 0xfffd; // a lone surrogate
    if (c < 0x800) {
      out[n++] = 0xc0 | (c >> 6);
      out[n++] = 0x80 | (c & 63);
    } else if (c < 0x10000) {
      out[n++] = 0xe0 | (c >> 12);
      out[n++] = 0x80 | ((c >> 6) & 63);
      out[n++] = 0x80 | (c & 63);
    } else {
      out[n++] = 0xf0 | (c >> 18);
      out[n++] = 0x80 | ((c >> 12) & 63);
      out[n++] = 0x80 | ((c >> 6) & 63);
      out[n++] = 0x80 | (c & 63);
    }
  }
  return out.subarray(0, n);
}

/** The text of UTF-8 bytes; throws on bytes that are not UTF-8. */
export function text(bytes) {
  if (strictDecoder !== null) return strictDecoder.decode(bytes);
  const n = bytes.length;
  if (n <= 4096) {
    let ascii = true;
    for (let i = 0; i < n; i++) {
      if (bytes[i] >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (ascii) return String.fromCharCode.apply(null, bytes);
  }
  return decodeUtf8(bytes, false);
}

/**
 * Decodes UTF-8. An invalid sequence throws, or with `lossy` becomes one
 * U+FFFD per maximal invalid subpart (as the Encoding Standard's decoder).
 */
function decodeUtf8(bytes, lossy) {
  const n = bytes.length;
  let s = "";
  let chunk = [];
  let i = 0;
  while (i < n) {
    const b = bytes[i];
    let c = b;
    let len = 1;
    if (b >= 0x80) {
      let need = 0;
      let lo = 0x80;
      let hi = 0xbf;
      if (b >= 0xc2 && b <= 0xdf) {
        need = 1;
        c = b & 31;
      } else if (b >= 0xe0 && b <= 0xef) {
        need = 2;
        c = b & 15;
        if (b === 0xe0) lo = 0xa0; // no overlong forms
        if (b === 0xed) hi = 0x9f; // no surrogates
      } else if (b >= 0xf0 && b <= 0xf4) {
        need = 3;
        c = b & 7;
        if (b === 0xf0) lo = 0x90;
        if (b === 0xf4) hi = 0x8f; // nothing past U+10FFFF
      } else {
        c = -1;
      }
      for (let k = 0; k < need; k++) {
        const x = bytes[i + len];
        if (i + len >= n || x < lo || x > hi) {
          c = -1;
          break;
        }
        c = (c << 6) | (x & 63);
        len++;
        lo = 0x80;
        hi = 0xbf;
      }
      if (c < 0) {
        if (!lossy) throw new Error(`invalid utf-8 sequence at byte ${i}`);
        c = 0xfffd;
      }
    }
    i += len;
    if (c >= 0x10000) {
      c -= 0x10000;
      chunk.push(0xd800 + (c >> 10), 0xdc00 + (c & 1023));
    } else {
      chunk.push(c);
    }
    if (chunk.length >= 4096) {
      s += String.fromCharCode.apply(null, chunk);
      chunk = [];
    }
  }
  return s + String.fromCharCode.apply(null, chunk);
}

// QuickJS has no TextEncoder and TextDecoder: give guests written for other
// engines the UTF-8 ones (the only encoding they need here).
if (typeof globalThis.TextEncoder !== "function") {
  globalThis.TextEncoder = class TextEncoder {
    get encoding() {
      return "utf-8";
    }
    encode(s = "") {
      return utf8(String(s));
    }
  };
}
if (typeof globalThis.TextDecoder !== "function") {
  globalThis.TextDecoder = class TextDecoder {
    constructor(label = "utf-8", options = {}) {
      const l = String(label).trim().toLowerCase();
      if (l !== "utf-8" && l !== "utf8" && l !== "unicode-1-1-utf-8") {
        throw new RangeError(`TextDecoder: only utf-8 is available in a Weir guest, not ${label}`);
      }
      this.fatal = Boolean(options && options.fatal);
      this.ignoreBOM = Boolean(options && options.ignoreBOM);
    }
    get encoding() {
      return "utf-8";
    }
    decode(input) {
      let bytes;
      if (input === undefined) bytes = new Uint8Array(0);
      else if (input instanceof Uint8Array) bytes = input;
      else if (ArrayBuffer.isView(input)) bytes = new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
      else bytes = new Uint8Array(input);
      if (!this.ignoreBOM && bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) {
        bytes = bytes.subarray(3);
      }
      try {
        return decodeUtf8(bytes, !this.fatal);
      } catch (e) {
        throw new TypeError(`TextDecoder: ${e.message}`);
      }
    }
  };
}

/** Bytes from a string (as UTF-8), a Uint8Array or an array of bytes; null stays null. */
function toBytes(v, what) {
  if (v === null || v === undefined) return null;
  if (typeof v === "string") return utf8(v);
  if (v instanceof Uint8Array) return v;
  if (Array.isArray(v)) return Uint8Array.from(v);
  throw new TypeError(`${what} must be a string, a Uint8Array or null, not ${typeof v}`);
}

// ---------------------------------------------------------------- the packed encoding

const NONE = 0xffffffff;
const TWO32 = 4294967296;

function malformed(what) {
  return new Error(`weir-guest: the host sent a malformed batch (${what})`);
}

/** Reads the packed encoding of wit/functions.wit. */
export class Reader {
  constructor(bytes) {
    this.b = bytes;
    this.v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.p = 0;
  }
  need(n) {
    if (this.p + n > this.b.length) {
      throw malformed(`needed ${n} bytes at offset ${this.p}, length ${this.b.length}`);
    }
  }
  u8() {
    this.need(1);
    return this.b[this.p++];
  }
  u32() {
    this.need(4);
    const x = this.v.getUint32(this.p, true);
    this.p += 4;
    return x;
  }
  /** An s64 as a Number (exact up to 2^53). */
  i64() {
    this.need(8);
    const lo = this.v.getUint32(this.p, true);
    const hi = this.v.getInt32(this.p + 4, true);
    this.p += 8;
    return hi * TWO32 + lo;
  }
  take(n) {
    this.need(n);
    const s = this.b.subarray(this.p, this.p + n);
    this.p += n;
    return s;
  }
  bytes() {
    return this.take(this.u32());
  }
  optBytes() {
    const n = this.u32();
    return n === NONE ? null : this.take(n);
  }
  record() {
    const offset = this.i64();
    const timestamp = this.i64();
    const key = this.optBytes();
    const value = this.optBytes();
    const n = this.u32();
    const headers = new Array(n);
    for (let i = 0; i < n; i++) {
      const name = text(this.bytes());
      headers[i] = [name, this.bytes()];
    }
    return new Record(offset, timestamp, key, value, headers);
  }
}

/** Builds a result list. */
export class Writer {
  constructor(capacity) {
    this.b = new Uint8Array(Math.max(64, capacity | 0));
    this.v = new DataView(this.b.buffer);
    this.p = 4;
    this.count = 0;
  }
  room(n) {
    if (this.p + n <= this.b.length) return;
    let size = this.b.length * 2;
    while (size < this.p + n) size *= 2;
    const b = new Uint8Array(size);
    b.set(this.b.subarray(0, this.p));
    this.b = b;
    this.v = new DataView(b.buffer);
  }
  u8(x) {
    this.room(1);
    this.b[this.p++] = x;
  }
  u32(x) {
    this.room(4);
    const b = this.b;
    let p = this.p;
    b[p++] = x & 255;
    b[p++] = (x >>> 8) & 255;
    b[p++] = (x >>> 16) & 255;
    b[p++] = x >>> 24;
    this.p = p;
  }
  i64(x) {
    this.room(8);
    const hi = Math.floor(x / TWO32);
    this.v.setUint32(this.p, x - hi * TWO32, true);
    this.v.setInt32(this.p + 4, hi, true);
    this.p += 8;
  }
  bytes(b) {
    if (b.length >= NONE) throw new RangeError("a key, value or header is larger than 4 GiB");
    this.u32(b.length);
    this.room(b.length);
    this.b.set(b, this.p);
    this.p += b.length;
  }
  optBytes(b) {
    if (b === null) this.u32(NONE);
    else this.bytes(b);
  }
  /** A string as UTF-8 `bytes`, written in place. */
  str(s) {
    const n = s.length;
    this.room(4 + n * 3);
    const b = this.b;
    const start = this.p + 4;
    let p = start;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) {
        p = -1;
        break;
      }
      b[p++] = c;
    }
    if (p < 0) {
      // Not ASCII: the general encoder.
      const u = utf8(s);
      this.u32(u.length);
      b.set(u, this.p);
      this.p += u.length;
      return;
    }
    this.u32(p - start);
    this.p = p;
  }
  /** An output's key, value or header value: a string, bytes or null. */
  field(v, what) {
    if (typeof v === "string") this.str(v);
    else this.optBytes(toBytes(v, what));
  }
  entry(tag, index) {
    this.count++;
    this.u8(tag);
    this.u32(index);
  }
  /** An output (tag 0) of input `index`; its timestamp defaults to `ts`. */
  output(index, o, ts) {
    if (o === null || typeof o !== "object") {
      throw new TypeError(`a function must return outputs (objects), not ${o === null ? "null" : typeof o}`);
    }
    this.entry(0, index);
    const to = o.output;
    if (to === null || to === undefined) this.u32(NONE);
    else this.str(String(to));
    const t = o.timestamp;
    this.i64(t === null || t === undefined ? ts : Number(t));
    this.field(o.key, "an output's key");
    this.field(o.value, "an output's value");
    const headers = o.headers || [];
    this.u32(headers.length);
    for (const [name, value] of headers) {
      this.str(String(name));
      this.field(value === null || value === undefined ? "" : value, "a header value");
    }
  }
  rejected(index, message) {
    this.entry(1, index);
    this.str(String(message));
  }
  accumulator(index, acc) {
    this.entry(2, index);
    this.bytes(acc);
  }
  value(index, v) {
    this.entry(3, index);
    this.optBytes(v);
  }
  finish() {
    this.v.setUint32(0, this.count, true);
    return this.b.slice(0, this.p);
  }
}

// ---------------------------------------------------------------- records and outputs

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

// ---------------------------------------------------------------- settings and log

let settings = [];

/** The step's settings (`[steps.config]`, or `weir test --config k=v`). */
export const config = {
  /** The value of `name`, or undefined. The last setting of a name wins. */
  get(name) {
    for (let i = settings.length - 1; i >= 0; i--) if (settings[i][0] === name) return settings[i][1];
    return undefined;
  },
  /** Every setting, as [name, value] pairs in order. */
  entries() {
    return settings.slice();
  },
};

let initialized = false;
function init(entries) {
  // A second init on the same instance keeps the first settings.
  if (!initialized) {
    settings = Array.from(entries, ([k, v]) => [String(k), String(v)]);
    initialized = true;
  }
}

/** Messages into the host's log, tagged with the module and the step. */
export const log = {
  trace: (m) => logWit.write("trace", String(m)),
  debug: (m) => logWit.write("debug", String(m)),
  info: (m) => logWit.write("info", String(m)),
  warn: (m) => logWit.write("warn", String(m)),
  error: (m) => logWit.write("error", String(m)),
};

// QuickJS has no console: send console.log and the like to the host's log,
// as Rust's and Python's stdout and stderr go there.
function inspect(v) {
  if (typeof v === "string") return v;
  if (v instanceof Error) return `${v.name}: ${v.message}`;
  if (v instanceof Uint8Array) return `Uint8Array(${v.length}) [${Array.prototype.join.call(v, ", ")}]`;
  if (typeof v === "object" && v !== null) {
    try {
      return JSON.stringify(v);
    } catch {
      return String(v);
    }
  }
  return String(v);
}
if (typeof globalThis.console === "undefined") {
  const line = (args) => args.map(inspect).join(" ");
  globalThis.console = {
    log: (...a) => log.info(line(a)),
    info: (...a) => log.info(line(a)),
    debug: (...a) => log.debug(line(a)),
    trace: (...a) => log.trace(line(a)),
    warn: (...a) => log.warn(line(a)),
    error: (...a) => log.error(line(a)),
  };
}

// ---------------------------------------------------------------- the four kinds of function

function emit(out, index, result, ts) {
  if (result === null || result === undefined) return;
  if (Array.isArray(result)) {
    for (const o of result) out.output(index, o, ts);
  } else {
    out.output(index, result, ts);
  }
}

/** Runs `f` over every record of a packed batch; f returns an output, an array of outputs, or null. */
function mapBatch(batch, f) {
  const r = new Reader(batch);
  const n = r.u32();
  const out = new Writer(batch.length + 64);
  for (let i = 0; i < n; i++) {
    const record = r.record();
    const mark = { p: out.p, count: out.count };
    try {
      emit(out, i, f(record), record.timestamp);
    } catch (e) {
      // Drop what this record emitted before it threw.
      out.p = mark.p;
      out.count = mark.count;
      out.rejected(i, messageOf(e));
    }
  }
  return out.finish();
}

/**
 * A mapper: `f(record)` returns an {@link Output} (or a plain object like
 * one), an array of them, or null for nothing. Throwing rejects the record.
 * Export the result as `mapping`.
 */
export function map(f) {
  if (typeof f !== "function") throw new TypeError(`map(f): f is ${describeArg(f)}, not a function of a record`);
  return {
    init,
    process: (batch) => mapBatch(batch, f),
  };
}

/**
 * A processor (world `processor`, with state stores and timers from
 * "weir-guest/state"): `{ process(record), onTimer?(time, tag) }`, where
 * process returns like a map function. Export the result as `processing`.
 */
export function processor(p) {
  if (p === null || typeof p !== "object" || typeof p.process !== "function") {
    throw new TypeError("processor({ process, onTimer }): `process` is missing, or not a function of a record");
  }
  if (p.onTimer !== undefined && typeof p.onTimer !== "function") {
    throw new TypeError(`processor({ process, onTimer }): \`onTimer\` is ${describeArg(p.onTimer)}, not a function (time, tag)`);
  }
  return {
    init,
    process: (batch) => mapBatch(batch, (r) => p.process(r)),
    onTimer: (time, tag) => {
      const t = Number(time);
      const out = new Writer(64);
      try {
        emit(out, 0, p.onTimer ? p.onTimer(t, tag) : null, t);
      } catch (e) {
        out.rejected(0, messageOf(e));
      }
      return out.finish();
    },
  };
}

function decodeAcc(a, bytes) {
  if (bytes === null) return a.init();
  try {
    return JSON.parse(text(bytes));
  } catch (e) {
    throw new Error(`stored accumulator does not decode: ${e.message}`);
  }
}

function encodeAcc(acc) {
  const json = JSON.stringify(acc);
  if (json === undefined) throw new TypeError("the accumulator does not encode as JSON");
  return utf8(json);
}

function presented(v) {
  if (v === null || v === undefined) return null;
  if (typeof v === "string" || v instanceof Uint8Array) return toBytes(v, "a presented value");
  return utf8(JSON.stringify(v));
}

/** How a wrong argument to map, join, processor or aggregate is named. */
function describeArg(v) {
  if (v === undefined || v === null) return String(v);
  const t = typeof v;
  return `${/^[aeiou]/.test(t) ? "an" : "a"} ${t}`;
}

/**
 * An aggregator (world `aggregator`): the host keeps one accumulator per key
 * and window, stored as JSON. `{ init(), add(acc, record), merge(a, b),
 * present?(acc, key, window) }`: init returns a new accumulator, add and
 * merge return the new one; throwing in add rejects the record (it is then
 * left out of every group). present returns the output value (a string,
 * Uint8Array, null for nothing, or anything else as JSON); by default the
 * accumulator as JSON. Export the result as `aggregation`.
 */
export function aggregate(a) {
  for (const f of ["init", "add", "merge"]) {
    const v = a === null || a === undefined ? undefined : a[f];
    if (typeof v !== "function") {
      throw new TypeError(
        `aggregate({ init, add, merge }): \`${f}\` is ${v === undefined ? "missing" : describeArg(v)}, ` +
          "not a function (merge combines two accumulators: sessions that come together)",
      );
    }
  }
  return {
    init,
    add(batch) {
      const r = new Reader(batch);
      const n = r.u32();
      const records = new Array(n);
      for (let i = 0; i < n; i++) records[i] = r.record();
      const groups = [];
      const g = r.u32();
      for (let i = 0; i < g; i++) {
        const acc = r.optBytes();
        const m = r.u32();
        const members = new Array(m);
        for (let j = 0; j < m; j++) {
          const k = r.u32();
          if (k >= n) throw malformed(`group member ${k} out of range`);
          members[j] = k;
        }
        groups.push([acc, members]);
      }
      // A record rejected in one group is left out of every group: rerun
      // until no new rejection appears (one pass when none is rejected).
      const rejected = new Map();
      for (;;) {
        const before = rejected.size;
        const accs = groups.map(([bytes, members]) => {
          let acc = decodeAcc(a, bytes);
          for (const k of members) {
            if (rejected.has(k)) continue;
            try {
              acc = a.add(acc, records[k]);
            } catch (e) {
              rejected.set(k, messageOf(e));
            }
          }
          return acc;
        });
        if (rejected.size === before) {
          const out = new Writer(64 * (groups.length + 1));
          for (const k of [...rejected.keys()].sort((x, y) => x - y)) out.rejected(k, rejected.get(k));
          accs.forEach((acc, i) => out.accumulator(i, encodeAcc(acc)));
          return out.finish();
        }
      }
    },
    merge(x, y) {
      try {
        return encodeAcc(a.merge(decodeAcc(a, x), decodeAcc(a, y)));
      } catch (e) {
        throw messageOf(e);
      }
    },
    present(batch) {
      const r = new Reader(batch);
      const n = r.u32();
      const out = new Writer(64 * (n + 1));
      for (let i = 0; i < n; i++) {
        const key = r.optBytes();
        const start = r.i64();
        const end = r.i64();
        const bytes = r.bytes();
        const window = start !== 0 || end !== 0 ? { start, end } : null;
        try {
          const acc = decodeAcc(a, bytes);
          out.value(i, presented(a.present ? a.present(acc, key, window) : acc));
        } catch (e) {
          out.rejected(i, messageOf(e));
        }
      }
      return out.finish();
    },
  };
}

/**
 * A joiner (world `joiner`): `f({ key, timestamp, left, right })` combines
 * the two sides (Uint8Arrays, or null when that side did not match) and
 * returns the value (a string, Uint8Array, null to drop the pair, or anything
 * else as JSON). Throwing rejects the pair. Export the result as `joining`.
 */
export function join(f) {
  if (typeof f !== "function") throw new TypeError(`join(f): f is ${describeArg(f)}, not a function of a pair`);
  return {
    init,
    join(batch) {
      const r = new Reader(batch);
      const n = r.u32();
      const out = new Writer(batch.length + 64);
      for (let i = 0; i < n; i++) {
        const key = r.optBytes();
        const timestamp = r.i64();
        const left = r.optBytes();
        const right = r.optBytes();
        try {
          out.value(i, presented(f({ key, timestamp, left, right })));
        } catch (e) {
          out.rejected(i, messageOf(e));
        }
      }
      return out.finish();
    },
  };
}

// ---------------------------------------------------------------- state upgrades

/** A stored state entry to convert to the module's format (see upgradeAccumulators, upgradeStores). */
export class StateEntry {
  constructor(store, key, value) {
    /** The state store ("" for an aggregator's accumulator). */
    this.store = store;
    /** The record key an accumulator groups, or the store key (a Uint8Array). */
    this.key = key;
    /** The stored bytes, in the older format (a Uint8Array). */
    this.value = value;
  }
  /** The key as text. */
  keyText() {
    return this.key === null ? "" : text(this.key);
  }
  /** The stored bytes as text. */
  valueText() {
    return text(this.value);
  }
  /** The stored bytes parsed as JSON. */
  json() {
    return JSON.parse(text(this.value));
  }
}

function upgrading(stateFormat, f, encode) {
  if (!Number.isInteger(stateFormat) || stateFormat < 0 || stateFormat > 0xffffffff) {
    throw new TypeError(`the state format must be a whole number from 0 to 2^32-1, not ${stateFormat}`);
  }
  return {
    stateFormat: () => stateFormat,
    upgrade(from, batch) {
      const r = new Reader(batch);
      const n = r.u32();
      const out = new Writer(batch.length + 64);
      for (let i = 0; i < n; i++) {
        const store = text(r.bytes());
        const key = r.optBytes();
        const value = r.bytes();
        try {
          const v = f(Number(from), new StateEntry(store, key, value));
          out.value(i, v === null || v === undefined ? null : encode(v));
        } catch (e) {
          out.rejected(i, messageOf(e));
        }
      }
      return out.finish();
    },
  };
}

/**
 * An aggregator's state upgrade: export the result as `upgrading`, beside
 * `aggregation`. `stateFormat` is the format of the accumulators this
 * version writes (a module without `upgrading` writes 0); when a step
 * switches to it and its accumulators were written in another format, the
 * host calls `f(from, entry)` for each: it returns the new accumulator
 * (stored as JSON), or null to drop it; throwing refuses the switch.
 */
export function upgradeAccumulators(stateFormat, f) {
  return upgrading(stateFormat, f, encodeAcc);
}

/**
 * A processor's state upgrade: export the result as `upgrading`, beside
 * `processing`. `f(from, entry)` returns the entry's new value (a string,
 * Uint8Array, or anything else as JSON), or null to delete it.
 */
export function upgradeStores(stateFormat, f) {
  return upgrading(stateFormat, f, presented);
}
