#!/usr/bin/env bash
# The Kafka Streams side of the Weir / Kafka Streams comparison (issue 10):
# the stateless upper-case map and word count (bench/kafka-streams), each
# under exactly_once_v2 and at_least_once, 2 stream threads, on 2-partition
# inputs, against one single-node broker. Prints records (lines) per second
# and each run's peak RSS.
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
    java -Dlog4j2.configurationFile="$work/log4j2.properties" \
        -cp "$dir/build/classes:$dir/lib/*" dev.weir.bench.StreamsBench "$@"
}

suffix="$(date +%s)"
map_in="bench-map-$suffix"
lines_in="bench-lines-$suffix"
t0=$(date +%s.%N)
java_run produce "$brokers" "$map_in" map "$n_map" 2
java_run produce "$brokers" "$lines_in" lines "$n_lines" 2
echo "input written in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s" >&2

for guarantee in exactly_once_v2 at_least_once; do
    java_run run "$brokers" map "$guarantee" "$map_in" "$n_map"
    java_run run "$brokers" wordcount "$guarantee" "$lines_in" "$n_lines"
done
