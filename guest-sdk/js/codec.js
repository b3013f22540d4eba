// weir-guest's packed encoding of wit/functions.wit: the Reader of a batch
// the host sends and the Writer of the result list a function returns.
// Internal: import these from "weir-guest", which re-exports them.

import { Record } from "./records.js";
import { text, toBytes, utf8 } from "./utf8.js";

const NONE = 0xffffffff;
const TWO32 = 4294967296;

export function malformed(what) {
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
