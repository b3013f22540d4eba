// weir-guest for JavaScript: write Weir stream functions as one plain
// function per record. The SDK implements the packed batch encoding of
// wit/functions.wit (decode the record batch, call your function once per
// record, encode the result list), so you never see it.
//
//   import { map, Output } from "weir-guest";
//   export const mapping = map((r) => Output.forward(r).to("high"));
//
// Build with guest-sdk/js/build.mjs, which bundles your module with the SDK
// and turns it into a WebAssembly component (see docs/guide-js.md).
//
// This file is the SDK's entry point, "weir-guest": it re-exports what the
// files beside it export for functions, so that a function imports from
// "weir-guest" alone, whichever file holds a name. Those files, by concern:
//
//   host.js       the engine, the step's settings, the log (and console)
//   utf8.js       UTF-8, and TextEncoder and TextDecoder where missing
//   codec.js      the packed encoding: Reader and Writer
//   records.js    Record, Output, Reject
//   functions.js  map, processor, aggregate, join, and state upgrades
//
// state.js is the one a function imports by itself ("weir-guest/state"):
// state stores and timers exist in the processor world only.

export { witImport, s64, config, log } from "./host.js";
export { utf8, text } from "./utf8.js";
export { Reader, Writer } from "./codec.js";
export { Record, Output, Reject, reject, messageOf } from "./records.js";
export {
  map,
  processor,
  aggregate,
  join,
  StateEntry,
  upgradeAccumulators,
  upgradeStores,
} from "./functions.js";
