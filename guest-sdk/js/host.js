// weir-guest's link to the host, shared by every world: which engine runs
// the module, the step's settings (given to init), and the log, which
// console is also sent to where the engine has none. Internal: import these
// from "weir-guest", which re-exports them.

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
/** Keeps the settings init passes (every world's init export calls it). */
export function init(entries) {
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
