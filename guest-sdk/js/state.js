// State stores and timers, for processors (world `processor`) only: a module
// of another world that imports this one does not build, because its world
// has no state or timers.
//
//   import { state, timers } from "weir-guest/state";

import * as stateImport from "weir:functions/state@0.1.0";
import * as timersImport from "weir:functions/timers@0.1.0";
import { utf8, text, witImport, s64 } from "weir-guest";

const stateWit = witImport(stateImport);
const timersWit = witImport(timersImport);

function bytes(k) {
  return typeof k === "string" ? utf8(k) : k;
}

function stateError(store, e) {
  // StarlingMonkey wraps the error variant in an Error with a `payload`;
  // QuickJS throws the variant itself.
  const v = e && e.payload !== undefined ? e.payload : e;
  if (v && v.tag === "no-such-store") {
    return new Error(`no state store named \`${v.val}\`: declare it in the pipeline file`);
  }
  if (v && v.tag === "io") return new Error(`state store \`${store}\`: ${v.val}`);
  return e instanceof Error ? e : new Error(`state store \`${store}\`: ${String(v)}`);
}

function call(store, f) {
  try {
    return f();
  } catch (e) {
    throw stateError(store, e);
  }
}

/** Key-value stores kept by the host; keys and values are strings (UTF-8) or Uint8Arrays. */
export const state = {
  /** The value of `key` in `store` (a Uint8Array), or null. */
  get(store, key) {
    const v = call(store, () => stateWit.get(store, bytes(key)));
    return v === undefined ? null : v;
  },
  /** Sets `key` in `store`. */
  put(store, key, value) {
    call(store, () => stateWit.put(store, bytes(key), bytes(value)));
  },
  /** Removes `key` from `store`. */
  delete(store, key) {
    call(store, () => stateWit.delete(store, bytes(key)));
  },
  /** Up to `limit` [key, value] entries with start <= key < end (null: no bound), in key order. */
  range(store, start, end, limit) {
    return call(store, () =>
      stateWit.range(store, start === null ? null : bytes(start), end === null ? null : bytes(end), limit),
    );
  },
  /** The value of `key` parsed from JSON, or null. */
  getJson(store, key) {
    const v = state.get(store, key);
    return v === null ? null : JSON.parse(text(v));
  },
  /** Sets `key` to `value` as JSON. */
  putJson(store, key, value) {
    state.put(store, key, utf8(JSON.stringify(value)));
  },
};

/** Timers: when one fires the host calls the processor's onTimer(time, tag). */
export const timers = {
  /** Fires `tag` when the partition's stream time reaches `time` (ms). */
  atEventTime(time, tag) {
    timersWit.schedule("event-time", s64(time), bytes(tag));
  },
  /** Fires `tag` when the wall clock reaches `time` (ms). */
  atWallClock(time, tag) {
    timersWit.schedule("wall-clock", s64(time), bytes(tag));
  },
  cancelEventTime(tag) {
    timersWit.cancel("event-time", bytes(tag));
  },
  cancelWallClock(tag) {
    timersWit.cancel("wall-clock", bytes(tag));
  },
};
