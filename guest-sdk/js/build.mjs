#!/usr/bin/env node
// Builds a JavaScript Weir function into a WebAssembly component:
//
//   node guest-sdk/js/build.mjs index.js -o function.wasm [--engine qjs|sm]
//
// 1. bundles the module with weir-guest (this directory) into one file,
//    keeping the `weir:functions/...` imports for the component;
// 2. reads the world from what the module exports (`mapping`: mapper,
//    `aggregation`: aggregator, `joining`: joiner, `processing`: processor;
//    with `upgrading` beside `aggregation` or `processing`, the upgradable
//    world of that kind);
// 3. runs the engine's componentize tool on the bundle and the WIT in wit/:
//    componentize-qjs (QuickJS, the default) or componentize-js
//    (StarlingMonkey, `--engine sm`).
//
// The tools come from the project's setup (`bash .ci/setup`), installed under
// $WEIR_TOOLS (default ~/.cache/weir) in node/.

import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir, homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const wit = resolve(here, "../../wit");
const tools = process.env.WEIR_TOOLS || join(homedir(), ".cache/weir");
const nodeDir = join(tools, "node");

const WORLDS = { mapping: "mapper", aggregation: "aggregator", joining: "joiner", processing: "processor" };
// What each export must be: the object the SDK's helper returns.
const SHAPES = {
  mapping: { helper: "map", example: "map((r) => ...)", functions: ["init", "process"] },
  aggregation: { helper: "aggregate", example: "aggregate({ init, add, merge })", functions: ["init", "add", "merge", "present"] },
  joining: { helper: "join", example: "join((p) => ...)", functions: ["init", "join"] },
  processing: { helper: "processor", example: "processor({ process })", functions: ["init", "process", "onTimer"] },
  upgrading: {
    helper: "upgradeAccumulators",
    example: "upgradeAccumulators(1, (from, entry) => ...)` (or upgradeStores for a processor",
    functions: ["stateFormat", "upgrade"],
  },
};
// The worlds of a module that also exports `upgrading`.
const UPGRADABLE = { aggregation: "upgradable-aggregator", processing: "upgradable-processor" };
const WIT_IMPORTS = ["log", "state", "timers"].map((i) => `weir:functions/${i}@0.1.0`);

// The scratch directory of the build under way, removed on the way out
// (`process.exit` skips `finally`).
let scratch = null;

function fail(message) {
  console.error(`build.mjs: ${message}`);
  if (scratch) {
    rmSync(scratch, { recursive: true, force: true });
  }
  process.exit(1);
}

function parseArgs(argv) {
  const args = { entry: null, out: null, engine: "qjs", keep: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "-o" || a === "--out") args.out = argv[++i];
    else if (a === "--engine") args.engine = argv[++i];
    else if (a === "--keep-bundle") args.keep = true;
    else if (a === "-h" || a === "--help") {
      console.log("usage: node build.mjs ENTRY.js -o OUT.wasm [--engine qjs|sm] [--keep-bundle]");
      process.exit(0);
    } else if (a.startsWith("-")) fail(`unknown option ${a}`);
    else if (args.entry === null) args.entry = a;
    else fail(`unexpected argument ${a}`);
  }
  if (args.entry === null || !args.out) fail("usage: node build.mjs ENTRY.js -o OUT.wasm [--engine qjs|sm]");
  if (args.engine !== "qjs" && args.engine !== "sm") fail(`--engine is qjs or sm, not ${args.engine}`);
  return args;
}

/** How a value looks, for a message. */
function describe(v) {
  if (typeof v === "function") return "a function";
  if (v === null) return "null";
  if (typeof v === "object") return Array.isArray(v) ? "an array" : "an object";
  return typeof v === "undefined" ? "undefined" : `a ${typeof v}`;
}

/**
 * Evaluates the module in Node, with the component's imports stubbed, and
 * checks that its export is what the SDK's helper returns: without the
 * helper, the component builds and then fails when it first runs. A module
 * that does not evaluate in Node is left to the component build.
 */
async function checkShape(name, work) {
  const stub = join(work, "wit-stub.js");
  writeFileSync(stub, "export default new Proxy({}, { get: () => () => undefined });\n");
  const alias = { "weir-guest/state": join(here, "state.js"), "weir-guest": join(here, "weir-guest.js") };
  for (const i of WIT_IMPORTS) alias[i] = stub;
  let mod;
  try {
    const bundle = await rolldown({
      input: entry,
      resolve: { alias },
      transform: { define: { __WEIR_ENGINE__: JSON.stringify(args.engine) } },
      logLevel: "silent",
    });
    const file = join(work, "shape-check.mjs");
    await bundle.write({ file, format: "esm" });
    await bundle.close();
    mod = await import(pathToFileURL(file).href);
  } catch (e) {
    // What the SDK refuses while the module loads (an aggregate without
    // merge, say) is the user's to fix; anything else is left to the build.
    if (e instanceof TypeError && /^(aggregate|processor|join|map)\(/.test(e.message)) fail(`${args.entry}: ${e.message}`);
    return;
  }
  const shape = SHAPES[name];
  const v = mod[name];
  const ok = v !== null && typeof v === "object" && shape.functions.every((f) => typeof v[f] === "function");
  if (!ok) {
    fail(
      `${args.entry}: \`${name}\` is ${describe(v)}, not what ${shape.helper}(...) returns: ` +
        `write \`export const ${name} = ${shape.example}\`, with \`import { ${shape.helper} } from "weir-guest"\``,
    );
  }
}

const args = parseArgs(process.argv.slice(2));
const entry = resolve(args.entry);
const out = resolve(args.out);
if (!existsSync(entry)) fail(`${args.entry}: no such file`);
const tool = join(nodeDir, "node_modules/.bin", args.engine === "qjs" ? "componentize-qjs" : "componentize-js");
if (!existsSync(tool)) {
  fail(`${tool} is not installed: run \`bash .ci/setup\` in the Weir repository (or set WEIR_TOOLS)`);
}

const require = createRequire(join(nodeDir, "package.json"));
const { rolldown } = await import(pathToFileURL(require.resolve("rolldown")).href);

const work = mkdtempSync(join(tmpdir(), "weir-js-"));
scratch = work;
try {
  const bundlePath = args.keep ? `${out}.bundle.js` : join(work, "bundle.js");
  let output;
  try {
    const bundle = await rolldown({
      input: entry,
      external: [/^weir:functions\//, /^wasi:/],
      resolve: {
        alias: {
          "weir-guest/state": join(here, "state.js"),
          "weir-guest": join(here, "weir-guest.js"),
        },
      },
      transform: { define: { __WEIR_ENGINE__: JSON.stringify(args.engine) } },
      logLevel: "warn",
    });
    ({ output } = await bundle.write({ file: bundlePath, format: "esm" }));
    await bundle.close();
  } catch (e) {
    // A syntax error, an import the SDK does not export: the bundler's
    // message points at the line; its stack trace would only hide it.
    fail(`${args.entry} does not build:\n${e instanceof Error ? e.message : String(e)}`);
  }
  const exported = output[0].exports.filter((e) => e in WORLDS);
  if (exported.length !== 1) {
    fail(
      `${args.entry} must export exactly one of mapping (map(...)), aggregation (aggregate(...)), ` +
        `joining (join(...)) or processing (processor(...)); it exports: ${output[0].exports.join(", ") || "nothing"}`,
    );
  }
  let world = WORLDS[exported[0]];
  await checkShape(exported[0], work);
  if (output[0].exports.includes("upgrading")) {
    if (!(exported[0] in UPGRADABLE)) {
      fail(
        `${args.entry} exports \`upgrading\` beside \`${exported[0]}\`, which keeps no state to upgrade: ` +
          "only an aggregator (aggregation) or a processor (processing) may export it",
      );
    }
    world = UPGRADABLE[exported[0]];
    await checkShape("upgrading", work);
  }
  const argv =
    args.engine === "qjs"
      ? ["--wit", wit, "--world", world, "--js", bundlePath, "--sync", "-o", out]
      : [bundlePath, "--wit", wit, "--world-name", world, "-d", "http", "fetch-event", "-o", out];
  // The tools' progress report goes to stdout: shown only when they fail.
  const r = spawnSync(tool, argv, { stdio: ["ignore", "pipe", "inherit"], encoding: "utf8" });
  if (r.status !== 0) {
    process.stderr.write(r.stdout || "");
    fail(`${tool} failed (exit ${r.status ?? r.signal})`);
  }
  console.error(`built ${out} (world ${world}, engine ${args.engine === "qjs" ? "QuickJS" : "StarlingMonkey"})`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
