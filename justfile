# Every developer task. `bash .ci/setup` installs what these need (the
# wasm32-wasip2 target, just itself); the README's two commands run it first.

# One build directory that survives between runs (and between CI runs).
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") + "/.cache/weir/target")

guests_rust := "-p uppercase -p filter-errors -p split-words -p count -p stock-stats -p merge-json -p select-key -p pick-field -p burst-count -p faulty -p half-mapper -p lowercase -p hostile -p hoarder -p trap-all -p count-v2 -p count-v3 -p upgrading-mapper -p outside-avg -p outside-bursts"
weir := CARGO_TARGET_DIR + "/release/weir"
wasm := CARGO_TARGET_DIR + "/wasm32-wasip2/guest"
guests_dir := CARGO_TARGET_DIR + "/guests"

default:
    @just --list

# Install what the project needs (idempotent).
setup:
    bash .ci/setup

# Build the weir binary (release).
build:
    cargo build --release -p weir

# Put `weir` on your PATH (~/.cargo/bin), reusing the release build.
install:
    cargo install --path host --locked --quiet

# Build every guest (examples and test guests), in every language, to components.
guests: guests-rust guests-js guests-python guests-go guests-c

# The Rust guests, to wasm32-wasip2 components.
guests-rust:
    cargo build --profile guest --target wasm32-wasip2 {{guests_rust}}

# The JavaScript guests (examples/js, tests/guests/js), to $CARGO_TARGET_DIR/guests/js/NAME.wasm.
guests-js: setup
    bash guest-sdk/build-guests.sh js {{guests_dir}}/js

# The Python guests (examples/python, tests/guests/python), to $CARGO_TARGET_DIR/guests/python/NAME.wasm.
guests-python: setup
    bash guest-sdk/build-guests.sh python {{guests_dir}}/python

# The Go guests (examples/go, tests/guests/go), to $CARGO_TARGET_DIR/guests/go/NAME.wasm.
guests-go: setup
    bash guest-sdk/build-guests.sh go {{guests_dir}}/go

# The C guests (examples/c, tests/guests/c), to $CARGO_TARGET_DIR/guests/c/NAME.wasm.
guests-c: setup
    bash guest-sdk/build-guests.sh c {{guests_dir}}/c

# Run every test: unit, doc and end-to-end (guests are built first, once),
# then Kafka Streams itself over the parity scenarios, against the goldens
# the e2e parity tests hold Weir to.
test: guests
    cargo test --release --workspace --exclude uppercase --exclude filter-errors --exclude split-words --exclude count --exclude stock-stats --exclude merge-json --exclude select-key --exclude pick-field --exclude burst-count --exclude faulty --exclude half-mapper --exclude lowercase --exclude hostile --exclude hoarder --exclude trap-all --exclude count-v2 --exclude count-v3 --exclude upgrading-mapper --exclude outside-avg --exclude outside-bursts
    bash tests/parity/regen.sh

# The demo: word count, stock statistics and orders joined with their customers on the embedded log, end to end.
demo: build guests-rust
    WEIR_MODULE_PATH={{wasm}} {{weir}} demo

# One example function over its sample records with `weir test`, e.g. `just try filter-errors`.
try name: build guests-rust
    {{weir}} test {{wasm}}/$(echo {{name}} | tr - _).wasm --input examples/{{name}}/sample.jsonl

# The Wasm boundary benchmark: records/s of the uppercase map vs native.
bench: build guests
    {{weir}} bench --module {{wasm}}/uppercase.wasm
    {{weir}} bench --pipelines --module {{wasm}}/uppercase.wasm

# Word count over 100, 100,000 and 1,000,000 distinct words: Kafka Streams
# and Weir on one local broker, both guarantees (issue 14); optional
# arguments: LINES REPEATS (default 250000 2).
bench-keyspace *args:
    bash bench/kafka-streams.sh --keyspace {{args}}

# Fetches Kafka 4.4 from Maven Central the first time (cached under
# ~/.cache/weir/kafka); point weir at the printed address with --brokers
# ADDRESS or WEIR_BROKERS=ADDRESS.
# A single-node Apache Kafka broker on loopback, in the foreground (Ctrl-C stops it).
kafka:
    bash tests/kafka/broker.sh run

# The parity check's Kafka Streams side: rebuilds tests/parity's Java program
# (Kafka Streams 4.4's TopologyTestDriver, Maven), reruns every scenario and
# fails if its outputs differ from the committed goldens; `just parity
# --update` rewrites them. The e2e test tests/e2e/parity.rs holds Weir to them.
parity *args:
    bash tests/parity/regen.sh {{args}}

# Weir against Kafka Streams on random inputs nobody wrote, seed by seed
# (`just parity-fuzz 1000 10`): a development tool, not part of `just test`.
parity-fuzz first="1000" seeds="10": build guests
    bash tests/parity/fuzz.sh {{first}} {{seeds}}

# Formatting and lints, as CI would want them.
lint:
    cargo fmt --all -- --check
    cargo clippy --release --workspace --all-targets -- -D warnings
