#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft, broker and controller in one
# process) on loopback, for development and tests. Its jars come from Maven
# Central through tests/kafka/pom.xml and are cached under
# ${WEIR_TOOLS:-~/.cache/weir}/kafka/<hash of the pom>/lib.
#
#   broker.sh jars              fetch the jars if needed; print their directory
#   broker.sh start DIR         format a broker in DIR (free ports), start it in
#                               the background, wait until it answers, print
#                               its bootstrap address (host:port) on stdout
#   broker.sh stop DIR          stop the broker started in DIR and wait for it
#   broker.sh status DIR        print "running HOST:PORT" (exit 0) or
#                               "not running" (exit 1)
#   broker.sh run [DIR] [--stop-on-eof]
#                               start one in the foreground: print the bootstrap
#                               address once it answers, stop it on Ctrl-C or
#                               SIGTERM (and, with --stop-on-eof, when stdin
#                               reaches its end: the test harness keeps a pipe
#                               open and the broker dies with the test binary).
#                               Without DIR it uses a fresh temporary directory
#                               and deletes it at the end.
#
# Progress and errors go to stderr; the broker's own log is DIR/server.log.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${WEIR_TOOLS:-$HOME/.cache/weir}"
# How long the broker may take to answer after it is started.
start_timeout_s="${WEIR_KAFKA_START_TIMEOUT:-90}"

say() { echo "broker: $*" >&2; }
die() { say "error: $*"; exit 1; }

# The jar directory for this pom; fetched with Maven the first time.
jars() {
    local hash dir
    hash="$(sha256sum "$here/pom.xml" | cut -c1-16)"
    dir="$tools/kafka/$hash"
    if [ ! -f "$dir/lib/.complete" ]; then
        command -v mvn >/dev/null || die "mvn is not installed (Maven fetches the Kafka jars)"
        say "fetching the Kafka jars from Maven Central into $dir/lib"
        rm -rf "$dir/lib.partial"
        mkdir -p "$dir"
        # Maven 3.8 prints colour codes even when quiet: keep its output in
        # a file and show it only when it fails.
        if ! mvn -q -B -f "$here/pom.xml" -Dmaven.repo.local="$tools/kafka/m2" \
            dependency:copy-dependencies -DincludeScope=runtime \
            -DoutputDirectory="$dir/lib.partial" >"$dir/mvn.log" 2>&1; then
            cat "$dir/mvn.log" >&2
            die "mvn could not fetch the jars of $here/pom.xml (log: $dir/mvn.log)"
        fi
        touch "$dir/lib.partial/.complete"
        rm -rf "$dir/lib"
        mv "$dir/lib.partial" "$dir/lib"
    fi
    echo "$dir/lib"
}

# Two free loopback ports (the kernel picks them; the broker binds them
# moments later).
free_ports() {
    python3 - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() { [ -f "$1/pid" ] && kill -0 "$(cat "$1/pid")" 2>/dev/null; }

# Formats a broker in $1 and starts it in the background; returns once its
# port answers.
start() {
    local dir="$1" lib port cport id pid deadline
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    if alive "$dir"; then
        die "a broker is already running in $dir ($(cat "$dir/bootstrap"))"
    fi
    lib="$(jars)"
    read -r port cport < <(free_ports)
    rm -rf "$dir/data"
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$cport
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
# One node: every replication factor and minimum ISR is 1.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
# Test data carries old event times: never delete by age.
log.retention.ms=-1
EOF
    cat >"$dir/log4j2.properties" <<EOF
appender.file.type=File
appender.file.name=file
appender.file.fileName=$dir/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
logger.kafka.name=kafka
logger.kafka.level=INFO
logger.apache.name=org.apache.kafka
logger.apache.level=INFO
EOF
    local java=(java -cp "$lib/*" -Dlog4j2.configurationFile="$dir/log4j2.properties")
    # A cluster id as `StorageTool random-uuid` makes one (a random UUID in
    # URL-safe base64 that does not start with '-'), without a JVM start.
    id="$(python3 -c 'import base64, uuid
while True:
    i = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    if not i.startswith("-"):
        print(i)
        break')"
    "${java[@]}" kafka.tools.StorageTool format --standalone -t "$id" \
        -c "$dir/server.properties" >>"$dir/server.log" 2>&1 ||
        die "cannot format the broker's storage (see $dir/server.log)"
    echo "127.0.0.1:$port" >"$dir/bootstrap"
    launch "$dir"
}

# Starts the broker formatted in $1 (its ports and data kept) in the
# background; returns once its port answers.
launch() {
    local dir="$1" lib port pid deadline
    lib="$(jars)"
    port="$(sed 's/.*://' "$dir/bootstrap")"
    local java=(java -cp "$lib/*" -Dlog4j2.configurationFile="$dir/log4j2.properties")
    # setsid: a Ctrl-C meant for the caller does not reach the broker.
    setsid "${java[@]}" -Xms256m -Xmx512m kafka.Kafka "$dir/server.properties" \
        >>"$dir/server.log" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$dir/pid"
    deadline=$((SECONDS + start_timeout_s))
    until answers "$port"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$dir/server.log" >&2
            die "the broker exited while starting (log: $dir/server.log)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            stop "$dir"
            die "the broker did not answer on 127.0.0.1:$port within ${start_timeout_s}s (log: $dir/server.log)"
        fi
        sleep 0.1
    done
    cat "$dir/bootstrap"
}


# Stops the broker in $1 (SIGTERM: a clean shutdown; SIGKILL after 30 s).
stop() {
    local dir="$1" pid deadline
    alive "$dir" || { rm -f "$dir/pid"; return 0; }
    pid="$(cat "$dir/pid")"
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    rm -f "$dir/pid"
}

run() {
    local dir="" own=0 on_eof=0 arg
    for arg in "$@"; do
        case "$arg" in
            --stop-on-eof) on_eof=1 ;;
            -*) die "unknown option $arg" ;;
            *) dir="$arg" ;;
        esac
    done
    if [ -z "$dir" ]; then
        dir="$(mktemp -d "${TMPDIR:-/tmp}/weir-kafka.XXXXXX")"
        own=1
    fi
    finish() {
        trap - EXIT INT TERM HUP
        stop "$dir"
        if [ "$own" -eq 1 ]; then rm -rf "$dir"; fi
        exit 0
    }
    trap finish EXIT INT TERM HUP
    start "$dir"
    say "running in $dir (log: $dir/server.log); stop it with Ctrl-C"
    if [ "$on_eof" -eq 1 ]; then
        # Returns at end of input: the harness that holds the pipe is gone.
        cat >/dev/null || true
        finish
    fi
    while alive "$dir"; do
        # `wait` cannot wait for the setsid'd broker; a short poll lets the
        # traps run promptly.
        sleep 1 &
        wait $! || true
    done
    die "the broker stopped by itself (log: $dir/server.log)"
}

cmd="${1:-}"
shift || true
case "$cmd" in
    jars) jars ;;
    start) [ $# -eq 1 ] || die "usage: broker.sh start DIR"; start "$1" ;;
    stop) [ $# -eq 1 ] || die "usage: broker.sh stop DIR"; stop "$1" ;;
    restart)
        [ $# -eq 1 ] || die "usage: broker.sh restart DIR"
        stop "$1"
        launch "$(cd "$1" && pwd)"
        ;;
    status)
        [ $# -eq 1 ] || die "usage: broker.sh status DIR"
        if alive "$1"; then echo "running $(cat "$1/bootstrap")"; else echo "not running"; exit 1; fi
        ;;
    run) run "$@" ;;
    *) die "usage: broker.sh jars | start DIR | stop DIR | restart DIR | status DIR | run [DIR] [--stop-on-eof]" ;;
esac
