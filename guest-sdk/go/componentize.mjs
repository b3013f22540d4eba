// Turns the core WebAssembly module Go builds (GOOS=wasip1, c-shared) into a
// component of a Weir world:
//
//   node componentize.mjs CORE.wasm WORLD OUT.wasm
//
// It embeds the world's type (from wit/functions.wit) and answers the WASI
// preview1 imports of Go's runtime with wasi-stub.wat (beside this file), so
// that the component imports nothing but its world; the wasm-tools build
// inside jco (from the project's setup, under $WEIR_TOOLS/node, default
// ~/.cache/weir/node) does both.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const [core, world, out] = process.argv.slice(2);
if (!out) {
  console.error("usage: node componentize.mjs CORE.wasm WORLD OUT.wasm");
  process.exit(2);
}
const modules = join(process.env.WEIR_TOOLS || join(homedir(), ".cache/weir"), "node/node_modules/@bytecodealliance");
const tools = join(modules, "jco-transpile/dist/wasm-tools.js");
if (!existsSync(tools)) {
  console.error(`componentize.mjs: jco is not installed under ${modules}: run \`bash .ci/setup\` in the Weir repository (or set WEIR_TOOLS)`);
  process.exit(1);
}
const wt = await import(pathToFileURL(tools).href);
const witSource = readFileSync(resolve(here, "../../wit/functions.wit"), "utf8");
try {
  const embedded = await wt.componentEmbed({ binary: readFileSync(core), witSource, world });
  const stub = await wt.parse(readFileSync(join(here, "wasi-stub.wat"), "utf8"));
  const component = await wt.componentNew(embedded, [["wasi_snapshot_preview1", stub]]);
  writeFileSync(out, component);
} catch (e) {
  console.error(`componentize.mjs: ${core} does not make a ${world} component: ${e && e.message ? e.message : e}`);
  process.exit(1);
}
