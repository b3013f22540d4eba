#!/usr/bin/env bash
# Builds every JavaScript, Python, Go or C guest of the repository
# (examples/LANG/* and tests/guests/LANG/*) into OUT_DIR/NAME.wasm, skipping
# those whose component is newer than their sources, the SDK and the WIT.
#
#   bash guest-sdk/build-guests.sh js|python|go|c OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
lang="$1" out="$2"
mkdir -p "$out"
for dir in examples/"$lang"/*/ tests/guests/"$lang"/*/; do
    [ -d "$dir" ] || continue
    name="$(basename "$dir")"
    wasm="$out/$name.wasm"
    if [ -f "$wasm" ] && [ -z "$(find "$dir" "guest-sdk/$lang" wit -newer "$wasm" -type f -not -path '*/__pycache__/*' -print -quit)" ]; then
        continue
    fi
    case "$lang" in
        js) node guest-sdk/js/build.mjs "$dir/index.js" -o "$wasm" ;;
        python) bash guest-sdk/python/build.sh "$dir" app "$wasm" ;;
        go) bash guest-sdk/go/build.sh "$dir" "$wasm" ;;
        c) bash guest-sdk/c/build.sh "$wasm" "$dir"*.c ;;
        *) echo "build-guests.sh: unknown language $lang" >&2; exit 2 ;;
    esac
done
