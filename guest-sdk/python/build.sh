#!/usr/bin/env bash
# Builds a Python Weir function into a WebAssembly component:
#
#   bash guest-sdk/python/build.sh APP_DIR MODULE OUT.wasm [WORLD]
#
# APP_DIR holds MODULE.py (the function, decorated with @weir.map, or
# @weir.aggregate, @weir.join, @weir.processor); WORLD is mapper, aggregator,
# joiner or processor (upgradable-aggregator or upgradable-processor when the
# class sets state_format), by default the one its decorator says. componentize-py comes from the project's
# setup (`bash .ci/setup`), in the virtual environment $WEIR_TOOLS/venv
# (default ~/.cache/weir/venv).
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: bash build.sh APP_DIR MODULE OUT.wasm [mapper|aggregator|joiner|processor]" >&2
    exit 2
fi
here="$(cd "$(dirname "$0")" && pwd)"
app="$1" module="$2" out="$3" world="${4:-}"
src="$app/$module.py"
if [ ! -f "$src" ]; then
    echo "build.sh: $src: no such file (the arguments are the app's directory, its module without .py, and the output)" >&2
    exit 1
fi
# The decorator exports the class componentize-py looks for (Mapping, ...):
# without it the build fails deep inside componentize-py.
decorator="$(grep -Eo '^@([A-Za-z_]+\.)?(map|aggregate|join|processor)\b' "$src" | head -1 || true)"
case "$decorator" in
    *aggregate) found=aggregator ;;
    *join) found=joiner ;;
    *processor) found=processor ;;
    *map) found=mapper ;;
    *)
        echo "build.sh: $src has no function decorated with @weir.map (nor @weir.aggregate, @weir.join or @weir.processor): put \`@weir.map\` on the line above your function, with \`import weir_guest as weir\`" >&2
        exit 1
        ;;
esac
# A class that sets `state_format` exports `upgrading` too (the SDK checks
# that it defines `upgrade`).
if grep -Eq '^[[:space:]]+state_format[[:space:]]*(:[^=]*)?=' "$src"; then
    case "$found" in
        aggregator | processor) found="upgradable-$found" ;;
        *)
            echo "build.sh: $src sets state_format, but a $found keeps no state to upgrade: only an aggregate or a processor may" >&2
            exit 1
            ;;
    esac
fi
if [ -z "$world" ]; then
    world="$found"
elif [ "$world" != "$found" ]; then
    echo "build.sh: $src is decorated with $decorator, which makes a $found, but the world asked for is $world: change the decorator, or leave the world out" >&2
    exit 1
fi
tool="${WEIR_TOOLS:-$HOME/.cache/weir}/venv/bin/componentize-py"
if [ ! -x "$tool" ]; then
    echo "build.sh: $tool is not installed: run \`bash .ci/setup\` in the Weir repository (or set WEIR_TOOLS)" >&2
    exit 1
fi
mkdir -p "$(dirname "$out")"
# An error in the module (an import that fails, an exception while it loads)
# is a Python traceback; with RUST_BACKTRACE set, componentize-py would add
# thirty frames of its own Rust stack after it.
RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 \
    "$tool" -q -d "$here/../../wit" -w "$world" componentize -p "$app" -p "$here" "$module" -o "$out"
echo "built $out (world $world)" >&2
