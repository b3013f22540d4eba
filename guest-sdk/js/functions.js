// weir-guest's four kinds of function (map, processor, aggregate, join) and
// state upgrades: each helper returns the object a world's export is, whose
// methods decode a batch, call the user's function once per record and
// encode the result list. Internal: import these from "weir-guest", which
// re-exports them.

import { Reader, Writer, malformed } from "./codec.js";
import { init } from "./host.js";
import { messageOf } from "./records.js";
import { text, toBytes, utf8 } from "./utf8.js";

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
 * returns the value (a string, Uint8Array, null for a result without a value,
 * a tombstone in a table join, or anything else as JSON). Throwing rejects the pair. Export the result as `joining`.
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
