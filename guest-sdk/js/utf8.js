// weir-guest's UTF-8: encoding and decoding without TextEncoder or
// TextDecoder (QuickJS has neither), and those two classes for guests that
// use them. Internal: import these from "weir-guest", which re-exports them.

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
export function toBytes(v, what) {
  if (v === null || v === undefined) return null;
  if (typeof v === "string") return utf8(v);
  if (v instanceof Uint8Array) return v;
  if (Array.isArray(v)) return Uint8Array.from(v);
  throw new TypeError(`${what} must be a string, a Uint8Array or null, not ${typeof v}`);
}
