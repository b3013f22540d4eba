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
# With --keyspace, word count over a growing key space instead (issue 14):
# the lines of `weir bench --one wordcount --words D` (LINES lines of 8
# words drawn uniformly from D distinct words, 2 partitions) for D = 100,
# 100,000 and 1,000,000, counted by Kafka Streams (flatMapValues, groupBy =
# a repartition, count() into its RocksDB store) and by Weir on the same
# broker, under exactly-once (commit every 100 ms) and at-least-once (Kafka
# Streams' defaults: commit.interval.ms 30000, 10 MB cache; Weir with
# --commit-interval 30s), each point REPEATS times, the D runs interleaved;
# and for reference the same through Weir's embedded log (`weir bench`).
# Prints every run, then a table: lines/s (min and max), outputs emitted,
# and the ratio to the same engine's 100-word rate of the same repeat.
#
#   bash bench/kafka-streams.sh --keyspace [LINES] [REPEATS]   (default 250000 2)
#
# WEIR_KEYSPACE_RESULTS=FILE appends each run's figures to FILE (a line:
# engine guarantee words run lines/s outputs) and makes the table of every
# run in it, so that runs of several invocations (with the same LINES) add up.
#
# It starts a broker with tests/kafka/broker.sh, or uses WEIR_BROKERS.
# The program and its jars are built with Maven into
# ${WEIR_TOOLS:-~/.cache/weir}/kafka-streams-bench/<hash of its sources>.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="${WEIR_TOOLS:-$HOME/.cache/weir}"
keyspace=
if [ "${1:-}" = --keyspace ]; then
    keyspace=1
    shift
    n_lines="${1:-250000}"
    repeats="${2:-2}"
else
    n_map="${1:-1000000}"
    n_lines="${2:-250000}"
fi

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
keyspace_words=(100 100000 1000000)
t0=$(date +%s.%N)
if [ -n "$keyspace" ]; then
    for d in "${keyspace_words[@]}"; do
        java_run produce "$brokers" "bench-words-$d-$suffix" "words:$d" "$n_lines" 2
    done
else
    java_run produce "$brokers" "$map_in" map "$n_map" 2
    java_run produce "$brokers" "$lines_in" lines "$n_lines" 2
fi
echo "input written in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s" >&2

# Weir: the release binary and the Rust guests (built if needed).
target="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
cargo build -q --release -p weir
cargo build -q --profile guest --target wasm32-wasip2 -p uppercase -p split-words -p count
export WEIR_MODULE_PATH="$target/wasm32-wasip2/guest"
weir_toml() { # workload guarantee input name: writes $work/name.toml
    local workload="$1" guarantee="$2" input="$3" name="$4"
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
}
weir_run() { # workload guarantee input n records|lines
    local workload="$1" guarantee="$2" input="$3"
    local name="weir-$workload-$guarantee-$suffix"
    weir_toml "$workload" "$guarantee" "$input" "$name"
    local n="$4" what="$5" line secs
    line="$("$target/release/weir" run "$work/$name.toml" --until-caught-up --quiet --stats \
        --data "$work/$name.data" 2>&1 | grep "records/s")"
    # "NAME: R records in S s from the first = ... (T s from the start), peak RSS M MB"
    secs="$(echo "$line" | sed -E 's/.* records in ([0-9.]+) s from the first.*/\1/')"
    echo "$line" | sed -E "s/^[^:]*: [0-9]+ records in ([0-9.]+) s from the first = [0-9]+ records\/s \(([0-9.]+) s from the start\), (peak RSS [0-9]+ MB)/weir $workload $guarantee: $n $what in \1 s = $(awk -v n="$n" -v s="$secs" 'BEGIN { printf "%.0f", n / s }') $what\/s (\2 s from start), \3/"
}

if [ -n "$keyspace" ]; then
    # One line per run: engine guarantee words run lines/s outputs, the run
    # named INVOCATION.REPEAT.
    results="${WEIR_KEYSPACE_RESULTS:-$work/results}"
    touch "$results"
    keyspace_streams() { # guarantee words repeat
        local guarantee="$1" d="$2" r="$3" commit_ms=100 streams_guarantee=exactly_once_v2 line
        if [ "$guarantee" = at-least-once ]; then commit_ms=30000 streams_guarantee=at_least_once; fi
        line="$(java_run run "$brokers" keyspace "$streams_guarantee" "bench-words-$d-$suffix" "$n_lines" "$commit_ms")"
        echo "$d words, repeat $r: $line"
        # "... = R lines/s (...), O outputs, peak RSS M MB"
        echo "kafka-streams $guarantee $d $suffix.$r $(echo "$line" | sed -E 's/.* = ([0-9]+) lines\/s .*, ([0-9]+) outputs, .*/\1 \2/')" >>"$results"
    }
    # Weir's commit interval for a guarantee: Kafka Streams' at-least-once
    # default (30 s) for at-least-once, else Weir's own default.
    weir_interval() { # guarantee
        if [ "$1" = at-least-once ]; then echo "--commit-interval 30s"; fi
    }
    keyspace_weir() { # guarantee words repeat
        local guarantee="$1" d="$2" r="$3" name out stats secs outputs rate
        name="weir-keyspace-$d-$guarantee-$r-$suffix"
        weir_toml wordcount "$guarantee" "bench-words-$d-$suffix" "$name"
        # shellcheck disable=SC2046 # the interval is two words or none
        out="$("$target/release/weir" run "$work/$name.toml" --until-caught-up --quiet --stats \
            $(weir_interval "$guarantee") --data "$work/$name.data" 2>&1)"
        # "NAME: R records in S s from the first = ... (T s from the start), peak RSS M MB"
        # "NAME: R records in, O out, ..."
        stats="$(echo "$out" | grep "records/s")"
        secs="$(echo "$stats" | sed -E 's/.* records in ([0-9.]+) s from the first.*/\1/')"
        outputs="$(echo "$out" | grep " out, " | sed -E 's/.* records? in, ([0-9]+) out, .*/\1/')"
        rate="$(awk -v n="$n_lines" -v s="$secs" 'BEGIN { printf "%.0f", n / s }')"
        echo "$d words, repeat $r: weir $guarantee: $n_lines lines in $secs s = $rate lines/s, $outputs outputs ($stats)"
        echo "weir-kafka $guarantee $d $suffix.$r $rate $outputs" >>"$results"
    }
    keyspace_embedded() { # guarantee words repeat
        local guarantee="$1" d="$2" r="$3" line
        # "RESULT lines records-in seconds peak-kb outputs"
        line="$("$target/release/weir" bench --module "$WEIR_MODULE_PATH/uppercase.wasm" --one wordcount \
            --records "$((n_lines * 4))" --words "$d" $(weir_interval "$guarantee") | grep '^RESULT ')"
        echo "$d words, repeat $r: weir embedded log $guarantee: $line"
        echo "weir-embedded $guarantee $d $suffix.$r $(echo "$line" | awk '{ printf "%.0f %d", $2 / $4, $6 }')" >>"$results"
    }
    for r in $(seq 1 "$repeats"); do
        for guarantee in exactly-once at-least-once; do
            # 100 and 1,000,000 words next to each other, so that noise
            # from elsewhere on the machine hits both.
            for d in 100 1000000 100000; do
                keyspace_streams "$guarantee" "$d" "$r"
                keyspace_weir "$guarantee" "$d" "$r"
                keyspace_embedded "$guarantee" "$d" "$r"
            done
        done
    done
    echo
    echo "word count over a growing key space: $n_lines lines of 8 words from D distinct words, 2 partitions; lines/s: min - max of the runs;"
    echo "ratio: lines/s over the same engine's 100-word lines/s in the same repeat"
    echo "(the embedded log has no guarantee to choose: at-least-once there is the 30 s commit interval alone)"
    echo
    echo "| engine | guarantee | distinct words | runs | lines/s | outputs emitted | ratio to 100 words |"
    echo "|---|---|---|---|---|---|---|"
    awk '
        {
            key = $1 " " $2 " " $3; rate[key, $4] = $5; outs[key, $4] = $6; seen[key] = 1
            if (!($4 in known)) { known[$4] = 1; runs[++nruns] = $4 }
        }
        END {
            n = split("kafka-streams weir-kafka weir-embedded", engines, " ")
            split("exactly-once at-least-once", gs, " ")
            split("100 100000 1000000", ds, " ")
            for (g = 1; g <= 2; g++) for (e = 1; e <= n; e++) for (i = 1; i <= 3; i++) {
                key = engines[e] " " gs[g] " " ds[i]
                base = engines[e] " " gs[g] " 100"
                if (!(key in seen)) continue
                lo = hi = omin = omax = qmin = qmax = ""
                count = 0
                for (k = 1; k <= nruns; k++) {
                    r = runs[k]
                    if (!((key, r) in rate)) continue
                    count++
                    x = rate[key, r]; o = outs[key, r]
                    if (lo == "" || x < lo) lo = x
                    if (hi == "" || x > hi) hi = x
                    if (omin == "" || o < omin) omin = o
                    if (omax == "" || o > omax) omax = o
                    if (((base, r) in rate) && rate[base, r] > 0) {
                        q = x / rate[base, r]
                        if (qmin == "" || q < qmin) qmin = q
                        if (qmax == "" || q > qmax) qmax = q
                    }
                }
                printf "| %s | %s | %d | %d | %d - %d | %s | %.2f - %.2f |\n", engines[e], gs[g], ds[i], count, lo, hi,
                    (omin == omax ? omin : omin " - " omax), qmin, qmax
            }
        }' "$results"
    exit 0
fi

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
