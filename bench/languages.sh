#!/usr/bin/env bash
# Prints, per guest language, the figures of split-words: component size,
# compile time (`weir check --no-cache`), load time from the precompiled
# cache and instantiation time (host/examples/instantiate.rs: medians), and
# records/s of `weir test --batch 1000` over the same N-line file (default
# 1,000,000; bench/lines.py writes it), output to /dev/null. Run after
# `just build guests` (Rust, C, Go, JavaScript, Python; StarlingMonkey is built here):
#
#   bash bench/languages.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
weir="$target/release/weir"
n="${1:-1000000}"
input="$target/bench-lines-$n.jsonl"
[ -f "$input" ] || python3 bench/lines.py "$n" > "$input"
cache="$(mktemp -d)"
trap 'rm -rf "$cache"' EXIT

now() { date +%s.%N; }

cargo build --quiet --release -p weir --example instantiate
printf '%-10s %10s %11s %8s %12s %9s %10s\n' language bytes compile_ms load_ms instantiate_ms seconds records/s
for lang in rust c go js python js-sm; do
    case "$lang" in
        rust) module="$target/wasm32-wasip2/guest/split_words.wasm" ;;
        js-sm)
            # StarlingMonkey, for comparison: the same example built with
            # componentize-js (its SpiderMonkey lacks Unicode property
            # escapes, so the example's \p{...} regex is swapped for ASCII).
            module="$target/guests/js-sm/split-words.wasm"
            if [ ! -f "$module" ]; then
                mkdir -p "$(dirname "$module")"
                sed 's|/\[^\\p{Alphabetic}\\p{N}\]+/u|/[^a-z0-9]+/|' examples/js/split-words/index.js > "$target/guests/js-sm/index.js"
                node guest-sdk/js/build.mjs "$target/guests/js-sm/index.js" -o "$module" --engine sm 2>/dev/null
            fi ;;
        *) module="$target/guests/$lang/split-words.wasm" ;;
    esac
    size=$(stat -c %s "$module")
    compile=$("$weir" check --no-cache "$module" | sed -n 's/^load time: \(.*\) ms$/\1/p')
    times=$("$target/release/examples/instantiate" "$module" "$cache")
    load=$(echo "$times" | sed -n 's/.*load from the cache \([0-9.]*\) ms.*/\1/p')
    inst=$(echo "$times" | sed -n 's/.*; instantiate \([0-9.]*\) ms.*/\1/p')
    t0=$(now); "$weir" test --cache "$cache" --batch 1000 "$module" --input "$input" > /dev/null; t1=$(now)
    secs=$(echo "$t1 - $t0" | bc)
    rate=$(python3 -c 'import sys; print(f"{int(sys.argv[1]) / float(sys.argv[2]):,.0f}")' "$n" "$secs")
    printf '%-10s %10s %11s %8s %12s %9.1f %10s\n' "$lang" "$size" "$compile" "$load" "$inst" "$secs" "$rate"
done
