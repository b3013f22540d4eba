# Sourced by regen.sh and fuzz.sh: builds tests/parity's Java program
# (Kafka Streams 4.4 and its TopologyTestDriver, with Maven) once per
# version of its sources into ${WEIR_TOOLS:-~/.cache/weir}/parity/<hash>,
# and sets `dir` to it. Run from tests/parity.
tools="${WEIR_TOOLS:-$HOME/.cache/weir}"
hash="$(cat pom.xml src/main/java/dev/weir/parity/*.java | sha256sum | cut -c1-16)"
dir="$tools/parity/$hash"
if [ ! -f "$dir/.complete" ]; then
    echo "building tests/parity into $dir" >&2
    rm -rf "$dir"
    mkdir -p "$dir"
    if ! mvn -q -B -f pom.xml -Dmaven.repo.local="$tools/kafka/m2" \
        -Dparity.build.dir="$dir/build" package dependency:copy-dependencies \
        -DincludeScope=runtime -DoutputDirectory="$dir/lib" >"$dir/mvn.log" 2>&1; then
        cat "$dir/mvn.log" >&2
        exit 1
    fi
    touch "$dir/.complete"
fi
