#!/usr/bin/env bash
# The Weir / Kafka Streams comparison (issue 10), in one run on one
# single-node broker: the stateless upper-case map and word count, each
# under exactly-once and at-least-once, on 2-partition inputs: Kafka Streams
# (bench/kafka-streams, 2 stream threads, commit.interval.ms 100) and Weir
# (`weir run --until-caught-up --stats` with the uppercase / split-words +
# count guests, 2 partitions = 2 tasks per segment). Prints records (lines)
# per second from the first record, and each run's peak RSS; WEIR_ONLY=1
# skips the Kafka Streams runs.
#
#   bash bench/kafka-streams.sh [MAP_RECORDS] [WORDCOUNT_LINES]   (default 1000000 250000)
#
# It starts a broker with tests/kafka/broker.sh, or uses WEIR_BROKERS.
# The program and its jars are built with Maven into
# ${WEIR_TOOLS:-~/.cache/weir}/kafka-streams-bench/<hash of its sources>.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="${WEIR_TOOLS:-$HOME/.cache/weir}"
n_map="${1:-1000000}"
n_lines="${2:-250000}"

src=bench/kafka-streams
hash="$(cat "$src/pom.xml" "$src"/src/main/java/dev/weir/bench/*.java | sha256sum | cut -c1-16)"
dir="$tools/kafka-streams-bench/$hash"
if [ ! -f "$dir/.complete" ]; then
    echo "building $src into $dir" >&2
    rm -rf "$dir"
    mkdir -p "$dir"
    if ! mvn -q -B -f "$src/pom.xml" -Dmaven.repo.local="$tools/kafka/m2" \
        -Dbench.build.dir="$dir/build" package dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$dir/lib" >"$dir/mvn.log" 2>&1; then
        cat "$dir/mvn.log" >&2
        exit 1
    fi
    touch "$dir/.complete"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/weir-streams-bench.XXXXXX")"
cleanup() {
    if [ -z "${WEIR_BROKERS:-}" ]; then bash tests/kafka/broker.sh stop "$work/broker"; fi
    rm -rf "$work"
}
trap cleanup EXIT
if [ -n "${WEIR_BROKERS:-}" ]; then
    brokers="$WEIR_BROKERS"
else
    brokers="$(bash tests/kafka/broker.sh start "$work/broker")"
fi
echo "broker: $brokers" >&2

cat >"$work/log4j2.properties" <<LOG
appender.file.type=File
appender.file.name=file
appender.file.fileName=$work/streams.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=file
LOG
java_run() {
    # Kafka Streams' state directory (a temporary one) goes under $work,
    # which is removed on the way out.
    java -Dlog4j2.configurationFile="$work/log4j2.properties" -Djava.io.tmpdir="$work" \
        -cp "$dir/build/classes:$dir/lib/*" dev.weir.bench.StreamsBench "$@"
}

suffix="$(date +%s)"
map_in="bench-map-$suffix"
lines_in="bench-lines-$suffix"
t0=$(date +%s.%N)
java_run produce "$brokers" "$map_in" map "$n_map" 2
java_run produce "$brokers" "$lines_in" lines "$n_lines" 2
echo "input written in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s" >&2

# Weir: the release binary and the Rust guests (built if needed).
target="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
cargo build -q --release -p weir
cargo build -q --profile guest --target wasm32-wasip2 -p uppercase -p split-words -p count
export WEIR_MODULE_PATH="$target/wasm32-wasip2/guest"
weir_run() { # workload guarantee input n records|lines
    local workload="$1" guarantee="$2" input="$3"
    local name="weir-$workload-$guarantee-$suffix"
    {
        echo "name = \"$name\""
        echo "input = \"$input\""
        echo "output = \"$name-out\""
        if [ "$workload" = map ]; then
            printf '[[steps]]\nname = "upper"\nkind = "map"\nmodule = "uppercase.wasm"\n'
        else
            printf '[[steps]]\nname = "split"\nkind = "map"\nmodule = "split_words.wasm"\n'
            printf '[[steps]]\nname = "count"\nkind = "aggregate"\nmodule = "count.wasm"\n'
        fi
        printf '[kafka]\n"bootstrap.servers" = "%s"\nguarantee = "%s"\n' "$brokers" "$guarantee"
    } >"$work/$name.toml"
    local n="$4" what="$5" line secs
    line="$("$target/release/weir" run "$work/$name.toml" --until-caught-up --quiet --stats \
        --data "$work/$name.data" 2>&1 | grep "records/s")"
    # "NAME: R records in S s from the first = ... (T s from the start), peak RSS M MB"
    secs="$(echo "$line" | sed -E 's/.* records in ([0-9.]+) s from the first.*/\1/')"
    echo "$line" | sed -E "s/^[^:]*: [0-9]+ records in ([0-9.]+) s from the first = [0-9]+ records\/s \(([0-9.]+) s from the start\), (peak RSS [0-9]+ MB)/weir $workload $guarantee: $n $what in \1 s = $(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.0f", n / s }') $what\/s (\2 s from start), \3/"
}

for guarantee in exactly-once at-least-once; do
    weir_run map "$guarantee" "$map_in" "$n_map" records
    weir_run wordcount "$guarantee" "$lines_in" "$n_lines" lines
done
if [ -z "${WEIR_ONLY:-}" ]; then
    for guarantee in exactly_once_v2 at_least_once; do
        java_run run "$brokers" map "$guarantee" "$map_in" "$n_map"
        java_run run "$brokers" wordcount "$guarantee" "$lines_in" "$n_lines"
    done
fi
