#!/usr/bin/env bash
# Builds a C Weir function into a WebAssembly component:
#
#   bash guest-sdk/c/build.sh OUT.wasm SOURCE.c... [--world mapper|aggregator|joiner|processor]
#
# The world is the one the sources' macro says (WEIR_MAP: mapper,
# WEIR_AGGREGATE: aggregator, WEIR_JOIN: joiner, WEIR_PROCESSOR: processor;
# with WEIR_UPGRADE too, upgradable-aggregator or upgradable-processor)
# unless --world names it. Tools: clang and wasi-libc from Debian (`bash
# .ci/setup` installs the packages clang, wasi-libc and
# libclang-rt-14-dev-wasm32), and wasm-component-ld, which ships with the
# Rust toolchain: it links with wasm-ld and turns the module into a
# component of the world. WASI_SYSROOT (default /usr) and CC (default clang)
# move them; CFLAGS adds flags.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
usage="usage: bash build.sh OUT.wasm SOURCE.c... [--world mapper|aggregator|joiner|processor]"
out="" world="" sources=()
while [ $# -gt 0 ]; do
    case "$1" in
        --world) world="$2"; shift 2 ;;
        -h|--help) echo "$usage"; exit 0 ;;
        -*) echo "build.sh: unknown option $1" >&2; echo "$usage" >&2; exit 2 ;;
        *) if [ -z "$out" ]; then out="$1"; else sources+=("$1"); fi; shift ;;
    esac
done
if [ -z "$out" ] || [ ${#sources[@]} -eq 0 ]; then
    echo "$usage" >&2
    exit 2
fi
if [ -z "$world" ]; then
    case "$(grep -ho '^WEIR_\(MAP\|AGGREGATE\|JOIN\|PROCESSOR\)\b' "${sources[@]}" | head -1)" in
        WEIR_MAP) world=mapper ;;
        WEIR_AGGREGATE) world=aggregator ;;
        WEIR_JOIN) world=joiner ;;
        WEIR_PROCESSOR) world=processor ;;
        *) echo "build.sh: ${sources[*]}: no WEIR_MAP(...), WEIR_AGGREGATE(...), WEIR_JOIN(...) or WEIR_PROCESSOR(...) at the start of a line: which kind of function is it?" >&2; exit 1 ;;
    esac
fi
case "$world" in
    mapper|aggregator|joiner|processor) ;;
    *) echo "build.sh: --world is mapper, aggregator, joiner or processor, not $world" >&2; exit 2 ;;
esac
# WEIR_UPGRADE(...) exports `upgrading` too: the upgradable world of the kind.
if grep -q '^WEIR_UPGRADE\b' "${sources[@]}"; then
    case "$world" in
        aggregator|processor) world="upgradable-$world" ;;
        *) echo "build.sh: ${sources[*]}: WEIR_UPGRADE(...) is for an aggregator or a processor; a $world keeps no state to upgrade" >&2; exit 1 ;;
    esac
fi

cc="${CC:-clang}"
sysroot="${WASI_SYSROOT:-/usr}"
libc="$sysroot/lib/wasm32-wasi"
if [ ! -f "$libc/libc.a" ]; then
    echo "build.sh: wasi-libc is not installed ($libc/libc.a): run \`bash .ci/setup\` in the Weir repository (or set WASI_SYSROOT)" >&2
    exit 1
fi
builtins="$("$cc" --target=wasm32-wasi -print-libgcc-file-name 2>/dev/null || true)"
[ -f "$builtins" ] || builtins="$(ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a 2>/dev/null | head -1)"
if [ ! -f "$builtins" ]; then
    echo "build.sh: the wasm32 compiler runtime is not installed: run \`bash .ci/setup\` (Debian package libclang-rt-14-dev-wasm32)" >&2
    exit 1
fi
bin="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin"
if [ ! -x "$bin/wasm-component-ld" ]; then
    echo "build.sh: $bin/wasm-component-ld not found: it ships with Rust 1.82 and later (rustup)" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The component's type: the world, from the contract in wit/.
mkdir -p "$work/wit/deps"
cp "$here/../../wit/functions.wit" "$work/wit/deps/"
printf 'package weir:c-guest;\n\nworld %s {\n    include weir:functions/%s@0.1.0;\n}\n' "$world" "$world" > "$work/wit/world.wit"

# The SDK's files (weir.c's opening comment says what each holds), then the
# function's.
sdk=()
for f in weir.c weir-buf.c weir-codec.c weir-text.c weir-state.c weir-exports.c; do sdk+=("$here/$f"); done
objects=()
for src in "${sdk[@]}" "${sources[@]}"; do
    obj="$work/$(basename "$src" .c)-${#objects[@]}.o"
    # shellcheck disable=SC2086
    "$cc" --target=wasm32-wasi --sysroot="$sysroot" -isystem "$sysroot/include/wasm32-wasi" \
        -I "$here" -O2 -std=c11 -Wall -Wextra -Werror=implicit-function-declaration \
        -Werror=incompatible-function-pointer-types \
        -mbulk-memory ${CFLAGS:-} -c "$src" -o "$obj"
    objects+=("$obj")
done
mkdir -p "$(dirname "$out")"
"$bin/wasm-component-ld" --wasm-ld-path "$bin/gcc-ld/wasm-ld" --component-type "$work/wit" \
    --wasi-adapter reactor --no-entry --strip-all -z stack-size=1048576 \
    -o "$out" "${objects[@]}" -L "$libc" -lc "$builtins"
echo "built $out (world $world)" >&2
