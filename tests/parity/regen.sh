#!/usr/bin/env bash
# The Kafka Streams side of the parity check: builds tests/parity's Java
# program (Kafka Streams 4.4 and its TopologyTestDriver, with Maven, into
# ${WEIR_TOOLS:-~/.cache/weir}/parity/<hash of its sources>), runs every
# scenario's topology over the scenario's inputs, and compares what Kafka
# Streams outputs with the committed goldens
# (tests/parity/SCENARIO/VARIANT.kafka-streams.jsonl, and for time windows
# without the record cache VARIANT.kafka-streams-state.jsonl, the window
# store's contents at the end): it fails, showing the difference, when they
# differ.
#
#   bash tests/parity/regen.sh            check the goldens
#   bash tests/parity/regen.sh --update   write the goldens anew
#
# The e2e test tests/e2e/parity.rs runs Weir on the same scenarios and
# asserts its outputs equal these goldens (it needs no JVM).
set -euo pipefail
cd "$(dirname "$0")"
update=0
case "${1:-}" in
    --update) update=1 ;;
    "") ;;
    *) echo "usage: bash tests/parity/regen.sh [--update]" >&2; exit 2 ;;
esac
# shellcheck source=tests/parity/build.sh
source ./build.sh

work="$(mktemp -d "${TMPDIR:-/tmp}/weir-parity.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cat >"$work/log4j2.properties" <<LOG
appender.file.type=File
appender.file.name=file
appender.file.fileName=$work/streams.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=file
LOG
java -Dlog4j2.configurationFile="$work/log4j2.properties" -Djava.io.tmpdir="$work" \
    -cp "$dir/build/classes:$dir/lib/*" dev.weir.parity.Parity . "$work/out"

status=0
for got in "$work"/out/*/*.kafka-streams*.jsonl; do
    rel="${got#"$work"/out/}"
    if [ "$update" = 1 ]; then
        cp "$got" "$rel"
    elif ! diff -u --label "$rel (committed)" --label "$rel (Kafka Streams now)" "$rel" "$got"; then
        status=1
    fi
done
for golden in */*.kafka-streams*.jsonl; do
    if [ ! -f "$work/out/$golden" ]; then
        echo "$golden: Kafka Streams ran no such variant (remove the file, or add the variant)" >&2
        status=1
    fi
done
if [ "$update" = 1 ]; then
    echo "goldens written" >&2
elif [ "$status" = 0 ]; then
    echo "every golden equals Kafka Streams' output" >&2
else
    echo "the goldens differ from Kafka Streams' output: check why, then bash tests/parity/regen.sh --update" >&2
fi
exit "$status"
