// TypeScript declarations for weir-guest, the JavaScript SDK
// (weir-guest.js and state.js beside this file), so that editors complete
// its API and `tsc` checks guests written in TypeScript. Point a project at
// it with `"files": [".../guest-sdk/js/weir-guest.d.ts"]` (or "include") in
// its tsconfig.json; guest-sdk/js/build.mjs builds .ts files as it builds
// .js ones (the bundler strips the types). See docs/guide-js.md.

declare module "weir-guest" {
  /** Keys, values and header values of outputs: a string (sent as UTF-8), bytes, or null (none). */
  export type Bytes = string | Uint8Array | null;

  /** An input record. `key` and `value` are null for none (a null value is a tombstone). */
  export class Record {
    /** Position in the input partition (for `weir test`, the line number). */
    readonly offset: number;
    /** Event time, ms since the Unix epoch. */
    readonly timestamp: number;
    readonly key: Uint8Array | null;
    readonly value: Uint8Array | null;
    /** [name, value] pairs, in order. */
    readonly headers: ReadonlyArray<[string, Uint8Array]>;
    /** The key as text; throws a {@link Reject} if there is none or it is not UTF-8. */
    keyText(): string;
    /** The value as text; throws a {@link Reject} if there is none (a tombstone) or it is not UTF-8. */
    valueText(): string;
    /** The value parsed as JSON; throws a {@link Reject} if it is not. */
    json(): unknown;
    /** The value of the first header called `name`, or null. */
    header(name: string): Uint8Array | null;
  }

  /** The fields of an output; a plain object of this shape may be returned instead of an {@link Output}. */
  export interface OutputFields {
    /** The named output it goes to; null (or absent) is the step's default output. */
    output?: string | null;
    key?: Bytes;
    value?: Bytes;
    headers?: Array<[string, Bytes]>;
    /** Event time; null (or absent) keeps the input record's. */
    timestamp?: number | null;
  }

  /** A record a function emits. */
  export class Output implements OutputFields {
    constructor(key?: Bytes, value?: Bytes);
    output: string | null;
    key: Bytes;
    value: Bytes;
    headers: Array<[string, Bytes]>;
    timestamp: number | null;
    /** An unkeyed output with this value. */
    static value(value: Bytes): Output;
    /** An output with this key and value. */
    static keyed(key: Bytes, value: Bytes): Output;
    /** An unkeyed output whose value is `v` as JSON. */
    static json(v: unknown): Output;
    /** A copy of the input record: same key, value, headers and timestamp. */
    static forward(r: Record): Output;
    /** Sends it to the named output `name`. */
    to(name: string): this;
    withKey(key: Bytes): this;
    withValue(value: Bytes): this;
    withHeader(name: string, value: Bytes): this;
    /** Sets the event time (ms since the Unix epoch). */
    at(timestamp: number): this;
  }

  /** What a map or process function returns: one output, several, or nothing. */
  export type Outputs = Output | OutputFields | ReadonlyArray<Output | OutputFields> | null | undefined;

  /** Thrown to reject the record being processed: it goes to the dead-letter output with this message. */
  export class Reject extends Error {}
  /** Throws a {@link Reject} with this message. */
  export function reject(message: string): never;

  /** The step's settings (`[steps.config]`, or `weir test --config k=v`). */
  export const config: {
    /** The value of `name`, or undefined. The last setting of a name wins. */
    get(name: string): string | undefined;
    /** Every setting, as [name, value] pairs in order. */
    entries(): Array<[string, string]>;
  };

  /** Messages into the host's log, tagged with the module and the step. */
  export const log: {
    trace(message: unknown): void;
    debug(message: unknown): void;
    info(message: unknown): void;
    warn(message: unknown): void;
    error(message: unknown): void;
  };

  /** The UTF-8 bytes of a string. */
  export function utf8(s: string): Uint8Array;
  /** The text of UTF-8 bytes; throws on bytes that are not UTF-8. */
  export function text(bytes: Uint8Array): string;

  /** What `map`, `processor`, `aggregate` and `join` return: export it under the name the SDK says. */
  export interface Exported {
    readonly __weirExport: unique symbol;
  }

  /**
   * A mapper: `f(record)` returns outputs (or null for nothing); throwing
   * rejects the record. Export the result as `mapping`.
   */
  export function map(f: (r: Record) => Outputs): Exported;

  /** A processor (world `processor`, with `state` and `timers` from "weir-guest/state"). */
  export interface Processor {
    process(r: Record): Outputs;
    /** A timer fired: `tag` as scheduled, `time` the time it was set for. */
    onTimer?(time: number, tag: Uint8Array): Outputs;
  }
  /** A processor; export the result as `processing`. */
  export function processor(p: Processor): Exported;

  /** A time window, [start, end) in ms since the Unix epoch. */
  export interface Window {
    start: number;
    end: number;
  }

  /** What `present` and `join` functions return: a string, bytes, null (emit nothing), or anything else as JSON. */
  export type Presented = string | Uint8Array | null | undefined | number | boolean | object;

  /**
   * An aggregator over an accumulator of type `A` (stored as JSON, so `A` must
   * survive JSON.stringify and JSON.parse). Throwing in `add` rejects the
   * record, which is then left out of every group.
   */
  export interface Aggregator<A> {
    init(): A;
    add(acc: A, r: Record): A;
    merge(a: A, b: A): A;
    /** The value emitted; by default the accumulator as JSON. `window` is null for an unwindowed aggregate. */
    present?(acc: A, key: Uint8Array | null, window: Window | null): Presented;
  }
  /** An aggregator; export the result as `aggregation`. */
  export function aggregate<A>(a: Aggregator<A>): Exported;

  /** The two sides of a join that met; `left` or `right` is null when that side did not match. */
  export interface Pair {
    key: Uint8Array | null;
    timestamp: number;
    left: Uint8Array | null;
    right: Uint8Array | null;
  }
  /** A joiner: `f(pair)` returns the combined value (null: a result without a value, a tombstone in a table join); throwing rejects it. Export the result as `joining`. */
  export function join(f: (p: Pair) => Presented): Exported;

  /** A stored state entry to convert to the module's format. */
  export class StateEntry {
    /** The state store ("" for an aggregator's accumulator). */
    readonly store: string;
    /** The record key an accumulator groups, or the store key. */
    readonly key: Uint8Array | null;
    /** The stored bytes, in the older format. */
    readonly value: Uint8Array;
    keyText(): string;
    valueText(): string;
    json(): unknown;
  }
  /**
   * An aggregator's state upgrade; export the result as `upgrading`, beside
   * `aggregation`. `f(from, entry)` returns the new accumulator (null drops
   * it); throwing refuses the switch to this version.
   */
  export function upgradeAccumulators<A>(stateFormat: number, f: (from: number, entry: StateEntry) => A | null): Exported;
  /**
   * A processor's state upgrade; export the result as `upgrading`, beside
   * `processing`. `f(from, entry)` returns the entry's new value (null
   * deletes it); throwing refuses the switch to this version.
   */
  export function upgradeStores(stateFormat: number, f: (from: number, entry: StateEntry) => Presented): Exported;
}

declare module "weir-guest/state" {
  /** Keys and values: a string (UTF-8) or bytes. */
  export type Key = string | Uint8Array;

  /** Key-value stores kept by the host (processors only). A failed call throws, which rejects the record. */
  export const state: {
    /** The value of `key` in `store`, or null. */
    get(store: string, key: Key): Uint8Array | null;
    /** Sets `key` in `store`. */
    put(store: string, key: Key, value: Key): void;
    /** Removes `key` from `store`. */
    delete(store: string, key: Key): void;
    /** Up to `limit` [key, value] entries with start <= key < end (null: no bound), in key order. */
    range(store: string, start: Key | null, end: Key | null, limit: number): Array<[Uint8Array, Uint8Array]>;
    /** The value of `key` parsed from JSON, or null. */
    getJson<T = unknown>(store: string, key: Key): T | null;
    /** Sets `key` to `value` as JSON. */
    putJson(store: string, key: Key, value: unknown): void;
  };

  /** Timers: when one fires the host calls the processor's onTimer(time, tag). A tag is one timer per clock: setting it again moves it. */
  export const timers: {
    /** Fires `tag` when the partition's stream time reaches `time` (ms). */
    atEventTime(time: number, tag: Key): void;
    /** Fires `tag` when the wall clock reaches `time` (ms). */
    atWallClock(time: number, tag: Key): void;
    cancelEventTime(tag: Key): void;
    cancelWallClock(tag: Key): void;
  };
}
