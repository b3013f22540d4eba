#!/usr/bin/env bash
# Looks for differences from Kafka Streams on inputs nobody wrote: for each
# seed, new random inputs for the wordcount, random-aggregates,
# random-joins and fk-join scenarios (their pipelines, as committed; keys, record count,
# event-time steps and how far records go back in time drawn from the
# seed), Kafka
# Streams' output for them (tests/parity's program, as regen.sh runs it),
# and `weir test VARIANT.toml --batch 1` on the same inputs, compared record
# by record as the e2e parity tests compare them; then `weir run` on an
# embedded log (its own batches and commits), whose final value per key and
# window must be Kafka Streams'. A development tool, not
# part of `just test`: a difference found here becomes a scenario of its
# own (a few records that show it) with committed goldens.
#
#   bash tests/parity/fuzz.sh [FIRST_SEED] [SEEDS]    (default 1000 10)
#
# Needs the release `weir` and the guests (`just build guests`). Prints a
# line per seed; on a difference, the first differing record of each
# variant, and keeps that seed's inputs and Kafka Streams' outputs under
# ${TMPDIR:-/tmp}/weir-fuzz.*/SEED. Exits 1 when any seed differed.
set -euo pipefail
cd "$(dirname "$0")"
first="${1:-1000}"
seeds="${2:-10}"
# shellcheck source=tests/parity/build.sh
source ./build.sh
target="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
weir="$target/release/weir"
export WEIR_MODULE_PATH="$target/wasm32-wasip2/guest"
for need in "$weir" "$WEIR_MODULE_PATH/count.wasm" "$WEIR_MODULE_PATH/merge_json.wasm"; do
    if [ ! -f "$need" ]; then
        echo "$need is missing: run \`just build guests\` first" >&2
        exit 2
    fi
done
work="$(mktemp -d "${TMPDIR:-/tmp}/weir-fuzz.XXXXXX")"
cat >"$work/log4j2.properties" <<LOG
rootLogger.level=ERROR
LOG
failed=0
for seed in $(seq "$first" $((first + seeds - 1))); do
    root="$work/$seed"
    mkdir -p "$root"
    # Every scenario (the program runs them all), without its goldens.
    for s in */; do
        s="${s%/}"
        [ "$s" = src ] && continue
        mkdir -p "$root/$s"
        cp "$s"/*.toml "$root/$s/"
        for f in "$s"/*.jsonl; do
            case "$f" in *.kafka-streams*) ;; *) cp "$f" "$root/$s/" ;; esac
        done
    done
    params="$(python3 - "$root" "$seed" <<'PY'
import json, os, random, sys

from gen_random import joins_left, orders, records

root, seed = sys.argv[1], int(sys.argv[2])
rnd = random.Random(seed)
n = rnd.choice([150, 300, 500])
keys = [chr(ord("a") + i) for i in range(rnd.randint(2, 12))]
step = rnd.choice([300, 700, 1500, 4000])
back = rnd.choice([3000, 8000, 12000, 30000])


def draw(value):
    return records(random.Random(rnd.random()), n, value, keys, step, back, label=seed)


for path, value in [
    ("random-aggregates/events.jsonl", str),
    ("random-joins/left.jsonl", joins_left),
    ("random-joins/right.jsonl", lambda i: i),
]:
    with open(os.path.join(root, path), "w") as f:
        f.write("\n".join(draw(value)) + "\n")
# Orders (keyed as the other scenarios) naming users (or none) for the
# foreign-key joins; users keyed by user id.
users = [f"u{i}" for i in range(rnd.randint(2, 8))]
with open(os.path.join(root, "fk-join/left.jsonl"), "w") as f:
    f.write("\n".join(draw(orders(random.Random(rnd.random()), users, n))) + "\n")
with open(os.path.join(root, "fk-join/right.jsonl"), "w") as f:
    f.write("\n".join(records(random.Random(rnd.random()), n, lambda i: {"name": i}, users, step, back, label=seed)) + "\n")
# Lines of words for the word count (mixed case, punctuation, some lines
# without a key or a value), repartitioned by word.
vocab = [w for w in "the quick brown fox jumps over lazy dog And THE Dog's fox-trot".split()][: len(keys) + 4]
r = random.Random(rnd.random())
lines = []
for rec in map(json.loads, records(r, n, str, keys, step, back, label=seed)):
    if rec["value"] is not None:
        words = [r.choice(vocab) for _ in range(r.randint(0, 6))]
        rec["value"] = r.choice([" ", ", ", "! ", "  "]).join(words)
    lines.append(json.dumps(rec))
with open(os.path.join(root, "wordcount/lines.jsonl"), "w") as f:
    f.write("\n".join(lines) + "\n")
print(f"{n} records, {len(keys)} keys, steps up to {step} ms, back up to {back} ms")
PY
)"
    if ! (cd "$root" && java -Dlog4j2.configurationFile="$work/log4j2.properties" \
        -Djava.io.tmpdir="$root" -cp "$dir/build/classes:$dir/lib/*" \
        dev.weir.parity.Parity . "$root/kafka-streams" >"$root/java.log" 2>&1); then
        echo "seed $seed: Kafka Streams failed (see $root/java.log)" >&2
        failed=1
        continue
    fi
    if python3 - "$root" "$weir" <<'PY'
import json, os, subprocess, sys

root, weir = sys.argv[1], sys.argv[2]


def compared(line):
    v, o = json.loads(line), {}
    for f in ["topic", "key", "value", "headers", "timestamp"]:
        if f in v:
            if not (f == "headers" and v[f] == {}):
                o[f] = v[f]
        elif f in ("key", "value"):
            o[f] = None
    return o


def finals(recs):
    # The last value per key and window (sessions: start and end), as the
    # e2e parity tests compare `weir run`: without tombstones, and without
    # sessions inside a larger one of their key (merged into it).
    def bound(r, h):
        v = (r.get("headers") or {}).get(h)
        return int(v) if v is not None else None

    m = {}
    for r in recs:
        at = (json.dumps(r["key"]), bound(r, "weir.window.start"), bound(r, "weir.window.end"))
        m[at] = None if r["value"] is None else json.dumps(r["value"], sort_keys=True)
    m = {k: v for k, v in m.items() if v is not None}

    def inside(at):
        k, s, e = at
        return s is not None and any(
            k2 == k and (s2, e2) != (s, e) and s2 is not None and s2 <= s and e <= e2
            for (k2, s2, e2) in m
        )

    return {at: v for at, v in m.items() if not inside(at)}


def weir_run(d, toml, topics):
    # `weir run` on a fresh embedded log, one partition per input, its
    # default batch and the pipeline's own cache setting.
    data = os.path.join(root, "data", os.path.basename(d), toml[:-5])
    env = dict(os.environ, WEIR_DATA=data)
    for t in topics:
        subprocess.run([weir, "topic", "create", t, "--partitions", "1"], env=env, check=True, capture_output=True)
        with open(os.path.join(d, t + ".jsonl")) as f:
            subprocess.run([weir, "produce", t], env=env, stdin=f, check=True, capture_output=True)
    r = subprocess.run([weir, "run", os.path.join(d, toml), "--until-caught-up", "--quiet"], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        return None, r.stderr.strip()
    r = subprocess.run([weir, "consume", "out", "--from-beginning"], env=env, capture_output=True, text=True, check=True)
    return [compared(l) for l in r.stdout.splitlines() if l.strip()], ""


bad = 0
compared_variants = 0
for scenario in ["wordcount", "random-aggregates", "random-joins", "fk-join"]:
    d = os.path.join(root, scenario)
    topics = sorted(f[:-6] for f in os.listdir(d) if f.endswith(".jsonl"))
    for toml in sorted(f for f in os.listdir(d) if f.endswith(".toml")):
        variant = toml[:-5]
        compared_variants += 1
        golden = os.path.join(root, "kafka-streams", scenario, variant + ".kafka-streams.jsonl")
        with open(golden) as f:
            ks = [compared(l) for l in f if l.strip()]
        cmd = [weir, "test", os.path.join(d, toml), "--batch", "1"]
        for t in topics:
            cmd += ["--input", f"{t}={d}/{t}.jsonl"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"  {scenario}/{variant}: weir test failed: {r.stderr.strip()}")
            bad += 1
            continue
        got = [c for c in map(compared, filter(str.strip, r.stdout.splitlines())) if c.get("topic") == "out"]
        if got != ks:
            bad += 1
            i = next((i for i, (a, b) in enumerate(zip(got, ks)) if a != b), min(len(got), len(ks)))
            print(f"  {scenario}/{variant}: {len(got)} records, Kafka Streams {len(ks)}; first difference at {i}:")
            print(f"    weir          {got[i] if i < len(got) else '(none)'}")
            print(f"    Kafka Streams {ks[i] if i < len(ks) else '(none)'}")
        # `weir run` with commits and batches of its own ends on Kafka
        # Streams' final values (the stream-stream joins' outputs have no
        # final value to compare: their records are compared above; nor do
        # results held by `emit_after`, where what stays held at the end
        # depends on commits).
        if "stream-stream" in variant or "-after" in variant:
            continue
        ran, err = weir_run(d, toml, topics)
        if ran is None:
            print(f"  {scenario}/{variant}: weir run failed: {err}")
            bad += 1
            continue
        want, have = finals(ks), finals(ran)
        if want != have:
            bad += 1
            diff = sorted(set(want.items()) ^ set(have.items()), key=str)[:4]
            print(f"  {scenario}/{variant}: weir run's final values differ from Kafka Streams': {diff}")
print(f"  {compared_variants} variants compared")
sys.exit(1 if bad else 0)
PY
    then
        echo "seed $seed ($params): every variant equals Kafka Streams"
        rm -rf "$root"
    else
        echo "seed $seed ($params): differs; inputs and Kafka Streams' outputs in $root"
        failed=1
    fi
done
[ "$failed" = 0 ] && rm -rf "$work"
exit "$failed"
