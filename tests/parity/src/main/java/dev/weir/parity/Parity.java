package dev.weir.parity;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.NullNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.databind.node.TextNode;

import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.TestInputTopic;
import org.apache.kafka.streams.TestOutputTopic;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.TopologyTestDriver;
import org.apache.kafka.streams.kstream.JoinWindows;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.KTable;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.GlobalKTable;
import org.apache.kafka.streams.kstream.KeyValueMapper;
import org.apache.kafka.streams.kstream.SessionWindows;
import org.apache.kafka.streams.kstream.SlidingWindows;
import org.apache.kafka.streams.kstream.StreamJoined;
import org.apache.kafka.streams.kstream.Suppressed;
import org.apache.kafka.streams.kstream.TimeWindows;
import org.apache.kafka.streams.kstream.ValueJoiner;
import org.apache.kafka.streams.kstream.Windowed;
import org.apache.kafka.streams.kstream.WindowedSerdes;
import org.apache.kafka.streams.processor.StateStore;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;
import org.apache.kafka.streams.state.SessionStore;
import org.apache.kafka.streams.state.ValueAndTimestamp;
import org.apache.kafka.streams.state.WindowStore;
import org.apache.kafka.streams.test.TestRecord;

import static dev.weir.parity.Topologies.*;

/**
 * Runs every scenario of tests/parity/ in Kafka Streams' TopologyTestDriver
 * and writes what it outputs as Weir's JSON lines.
 *
 * <pre>
 * java dev.weir.parity.Parity SCENARIOS_DIR OUT_DIR
 * </pre>
 *
 * Each scenario is a directory of SCENARIOS_DIR with its input topics
 * (TOPIC.jsonl, the record format of `weir produce`) and one Weir pipeline
 * per variant (VARIANT.toml); for each variant this program builds the
 * equivalent topology ({@link Topologies}: the two are kept in step by hand), pipes the
 * inputs in, and writes the records of the topic `out` to
 * OUT_DIR/SCENARIO/VARIANT.kafka-streams.jsonl, one
 * {"topic","key","value","headers","timestamp"} object a line, as
 * `weir test` prints them. Windowed keys become the key plus the headers
 * weir.window.start and weir.window.end. For a time-windowed count without
 * the record cache, a session count without it and an unwindowed count, it
 * also writes what the
 * store holds at the end to OUT_DIR/SCENARIO/VARIANT.kafka-streams-state.jsonl,
 * as `weir state scan` prints it.
 *
 * Inputs of several topics are piped in timestamp order (the smallest head
 * first, the join's other side first on equal timestamps), records of one
 * topic in their file's order: the order a Weir task reads them in. The
 * record cache is off (statestore.cache.max.bytes = 0), so every update is
 * forwarded, and a stream-stream outer join emits at every look (the
 * internal emit interval at 0).
 */
public final class Parity {
    static final ObjectMapper JSON = new ObjectMapper();
    static final String OUT = "out";

    /** One input record: a null key or value is a missing one. */
    record In(String topic, String key, String value, long timestamp, Map<String, String> headers) {
    }

    /** How an output key is read. */
    enum Keys { PLAIN, TIME_WINDOWED, SESSION_WINDOWED }

    /** A variant: its topology, its input topics (the left one first), how to read its output. */
    record Variant(String scenario, String name, Topology topology, List<String> inputs, Keys keys, long windowSize) {
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: Parity SCENARIOS_DIR OUT_DIR");
            System.exit(2);
        }
        Path scenarios = Path.of(args[0]);
        Path out = Path.of(args[1]);
        int n = 0;
        for (Variant v : variants()) {
            Path dir = scenarios.resolve(v.scenario());
            if (!Files.exists(dir.resolve(v.name() + ".toml"))) {
                throw new IllegalStateException(dir.resolve(v.name() + ".toml") + " is missing: every variant has its Weir pipeline");
            }
            List<List<In>> inputs = new ArrayList<>();
            for (String topic : v.inputs()) {
                inputs.add(read(dir.resolve(topic + ".jsonl"), topic));
            }
            List<String> state = new ArrayList<>();
            // A global table is read whole before the stream (Kafka
            // Streams bootstraps global stores before it processes; Weir
            // reads a global table ahead of the stream).
            List<In> piped = v.scenario().startsWith("global") || v.name().startsWith("global")
                ? java.util.stream.Stream.concat(inputs.get(1).stream(), inputs.get(0).stream()).toList()
                : merge(inputs);
            List<String> lines = run(v, piped, state);
            Path target = out.resolve(v.scenario()).resolve(v.name() + ".kafka-streams.jsonl");
            Files.createDirectories(target.getParent());
            Files.write(target, lines, StandardCharsets.UTF_8);
            if (windowStoreCompared(v) || countStoreCompared(v) || sessionStoreCompared(v)) {
                Files.write(out.resolve(v.scenario()).resolve(v.name() + ".kafka-streams-state.jsonl"),
                    state, StandardCharsets.UTF_8);
            }
            System.err.printf("%s/%s: %d records%n", v.scenario(), v.name(), lines.size());
            n++;
        }
        System.err.printf("%d variants%n", n);
    }

    // ---------------------------------------------------------------- variants

    static List<Variant> variants() {
        List<Variant> all = new ArrayList<>();
        all.add(new Variant("wordcount", "count", wordCount(), List.of("lines"), Keys.PLAIN, 0));
        // word count over two input topics merged in timestamp order
        for (String v : List.of("count", "count-cached")) {
            all.add(new Variant("merged-inputs", v, mergedWordCount(), List.of("lines", "more-lines"), Keys.PLAIN, 0));
        }

        // tumbling: size 10 s, grace 5 s
        all.add(new Variant("tumbling", "update", windowedCount(tumbling(), false), List.of("events"), Keys.TIME_WINDOWED, 10_000));
        all.add(new Variant("tumbling", "close", windowedCount(tumbling(), true), List.of("events"), Keys.TIME_WINDOWED, 10_000));

        // hopping: size 10 s, advance 3 s, grace 2 s
        for (String emit : List.of("update", "close")) {
            all.add(new Variant("hopping", emit, windowedCount(
                TimeWindows.ofSizeAndGrace(Duration.ofSeconds(10), Duration.ofSeconds(2)).advanceBy(Duration.ofSeconds(3)),
                emit.equals("close")),
                List.of("events"), Keys.TIME_WINDOWED, 10_000));
        }

        // sessions: gap 5 s, grace 2 s
        all.add(new Variant("session", "update", sessionCount(false), List.of("events"), Keys.SESSION_WINDOWED, 0));
        all.add(new Variant("session", "close", sessionCount(true), List.of("events"), Keys.SESSION_WINDOWED, 0));
        all.add(new Variant("session", "update-cached", sessionCount(false), List.of("events"), Keys.SESSION_WINDOWED, 0));
        all.add(new Variant("session", "close-cached", sessionCount(true), List.of("events"), Keys.SESSION_WINDOWED, 0));
        all.add(new Variant("random-aggregates", "session-close-cached", sessionCount(true),
            List.of("events"), Keys.SESSION_WINDOWED, 0));
        // a record bridging a closed session to the next one
        all.add(new Variant("session-bridge", "update", sessionCount(false), List.of("events"), Keys.SESSION_WINDOWED, 0));
        all.add(new Variant("session-bridge", "close", sessionCount(true), List.of("events"), Keys.SESSION_WINDOWED, 0));
        all.add(new Variant("session-bridge", "update-cached", sessionCount(false), List.of("events"), Keys.SESSION_WINDOWED, 0));
        all.add(new Variant("session-bridge", "close-cached", sessionCount(true), List.of("events"), Keys.SESSION_WINDOWED, 0));
        for (String v : List.of("update", "close", "update-cached", "close-cached")) {
            all.add(new Variant("session-stretch", v, sessionCount(v.startsWith("close")), List.of("events"), Keys.SESSION_WINDOWED, 0));
        }
        all.add(new Variant("tumbling", "close-cached", windowedCount(tumbling(), true), List.of("events"), Keys.TIME_WINDOWED, 10_000));
        // sliding: time difference 5 s, grace 2 s
        for (String v : List.of("update", "close", "update-cached", "close-cached")) {
            all.add(new Variant("sliding", v, slidingCount(v.startsWith("close")), List.of("events"), Keys.TIME_WINDOWED, 5_000));
        }

        all.add(new Variant("stream-table", "inner", streamTable(false), List.of("left", "right"), Keys.PLAIN, 0));
        all.add(new Variant("stream-table", "left", streamTable(true), List.of("left", "right"), Keys.PLAIN, 0));

        for (String kind : List.of("inner", "left", "outer")) {
            all.add(new Variant("table-table", kind, tableTable(kind), List.of("left", "right"), Keys.PLAIN, 0));
            all.add(new Variant("versioned-tables", kind, tableTableVersioned(kind, Duration.ofSeconds(5)), List.of("left", "right"), Keys.PLAIN, 0));
            all.add(new Variant("random-joins", "table-table-versioned-" + kind, tableTableVersioned(kind, Duration.ofSeconds(3)), List.of("left", "right"), Keys.PLAIN, 0));
        }
        // stream-stream: before 2 s, after 3 s, grace 1 s
        for (String kind : List.of("inner", "left", "outer")) {
            all.add(new Variant("stream-stream", kind,
                streamStream(kind, JoinWindows.ofTimeDifferenceAndGrace(Duration.ofSeconds(3), Duration.ofSeconds(1))
                    .before(Duration.ofSeconds(2))),
                List.of("left", "right"), Keys.PLAIN, 0));
        }
        // stream-stream at the edges: before 1 s, after 2 s, grace 500 ms
        for (String kind : List.of("inner", "left", "outer")) {
            all.add(new Variant("stream-stream-edges", kind,
                streamStream(kind, JoinWindows.ofTimeDifferenceAndGrace(Duration.ofSeconds(2), Duration.ofMillis(500))
                    .before(Duration.ofSeconds(1))),
                List.of("left", "right"), Keys.PLAIN, 0));
        }

        // random inputs: the windows and joins above, over random-aggregates/events.jsonl
        // and random-joins/{left,right}.jsonl
        for (String emit : List.of("update", "close")) {
            boolean close = emit.equals("close");
            all.add(new Variant("random-aggregates", "tumbling-" + emit, windowedCount(tumbling(), close),
                List.of("events"), Keys.TIME_WINDOWED, 10_000));
            all.add(new Variant("random-aggregates", "hopping-" + emit, windowedCount(
                TimeWindows.ofSizeAndGrace(Duration.ofSeconds(10), Duration.ofSeconds(2)).advanceBy(Duration.ofSeconds(3)), close),
                List.of("events"), Keys.TIME_WINDOWED, 10_000));
            all.add(new Variant("random-aggregates", "session-" + emit, sessionCount(close),
                List.of("events"), Keys.SESSION_WINDOWED, 0));
        }
        // results held 3 s of stream time (suppress(untilTimeLimit)), with and without the cache
        Duration limit = Duration.ofSeconds(3);
        for (String c : List.of("", "-cached")) {
            all.add(new Variant("random-aggregates", "count-after" + c, keyedCount(limit), List.of("events"), Keys.PLAIN, 0));
            all.add(new Variant("random-aggregates", "tumbling-after" + c, windowedCount(tumbling(), false, limit),
                List.of("events"), Keys.TIME_WINDOWED, 10_000));
            all.add(new Variant("random-aggregates", "session-after" + c, sessionCount(false, limit),
                List.of("events"), Keys.SESSION_WINDOWED, 0));
        }
        // ... in a buffer of at most 2 results (one per key and window), which
        // lets the oldest out early when a third comes (emitEarlyWhenFull)
        for (String c : List.of("", "-cached")) {
            Suppressed.BufferConfig<?> two = Suppressed.BufferConfig.maxRecords(2);
            all.add(new Variant("random-aggregates", "count-after-max2" + c, keyedCount(limit, two),
                List.of("events"), Keys.PLAIN, 0));
            all.add(new Variant("random-aggregates", "tumbling-after-max2" + c, windowedCount(tumbling(), false, limit, two),
                List.of("events"), Keys.TIME_WINDOWED, 10_000));
            all.add(new Variant("random-aggregates", "session-after-max2" + c, sessionCount(false, limit, two),
                List.of("events"), Keys.SESSION_WINDOWED, 0));
        }
        for (String v : List.of("update", "close", "update-cached")) {
            all.add(new Variant("random-aggregates", "sliding-" + v, slidingCount(v.startsWith("close")),
                List.of("events"), Keys.TIME_WINDOWED, 5_000));
        }
        all.add(new Variant("random-aggregates", "count", keyedCount(), List.of("events"), Keys.PLAIN, 0));
        // the record cache on
        all.add(new Variant("random-aggregates", "count-cached", keyedCount(), List.of("events"), Keys.PLAIN, 0));
        all.add(new Variant("random-aggregates", "tumbling-update-cached", windowedCount(tumbling(), false),
            List.of("events"), Keys.TIME_WINDOWED, 10_000));
        all.add(new Variant("random-aggregates", "hopping-update-cached", windowedCount(
            TimeWindows.ofSizeAndGrace(Duration.ofSeconds(10), Duration.ofSeconds(2)).advanceBy(Duration.ofSeconds(3)), false),
            List.of("events"), Keys.TIME_WINDOWED, 10_000));
        all.add(new Variant("random-aggregates", "session-update-cached", sessionCount(false),
            List.of("events"), Keys.SESSION_WINDOWED, 0));
        // stream-table joins over a versioned table (history 5 s)
        for (String kind : List.of("inner", "left")) {
            all.add(new Variant("versioned-table", kind, versionedStreamTable(kind.equals("left")), List.of("left", "right"), Keys.PLAIN, 0));
        }
        all.add(new Variant("versioned-table", "left-cached", versionedStreamTable(true), List.of("left", "right"), Keys.PLAIN, 0));
        // ... whose stream records wait 2 s for late table records (Joined.withGracePeriod)
        for (String kind : List.of("inner", "left")) {
            all.add(new Variant("versioned-grace", kind, versionedStreamTableGrace(kind.equals("left"),
                Duration.ofSeconds(5), Duration.ofSeconds(2)), List.of("left", "right"), Keys.PLAIN, 0));
        }
        // a table's rows counted per group (KGroupedTable)
        for (String v : List.of("per-region", "per-region-cached")) {
            all.add(new Variant("grouped-table", v, groupedTableCount(), List.of("users"), Keys.PLAIN, 0));
        }
        // a table's rows filtered and mapped (KTable.filter + mapValues), alone and before a join
        for (String c : List.of("", "-cached")) {
            all.add(new Variant("table-map", "filter-map" + c, tableFilterMap(), List.of("users"), Keys.PLAIN, 0));
            all.add(new Variant("table-map-grouped", "active-per-region" + c, groupedTableCount(true), List.of("users"), Keys.PLAIN, 0));
            for (String kind : List.of("inner", "left", "outer")) {
                all.add(new Variant("random-joins", "table-table-" + kind + "-filtered" + c, tableFilterNotJoin(kind), List.of("left", "right"), Keys.PLAIN, 0));
            }
            for (String kind : List.of("inner", "left")) {
                all.add(new Variant("table-map-fk", kind + c, fkJoin(kind.equals("left"), Topologies::merge, true), List.of("left", "right"), Keys.PLAIN, 0));
            }
            for (String kind : List.of("inner", "left", "outer")) {
                all.add(new Variant("table-map-join", "filter-join-" + kind + c, tableFilterJoin(kind), List.of("left", "right"), Keys.PLAIN, 0));
            }
        }
        // stream-global table joins: the table read whole before the stream
        for (String kind : List.of("inner", "left")) {
            all.add(new Variant("global-table", kind, globalJoin(kind.equals("left"), true), List.of("left", "right"), Keys.PLAIN, 0));
            all.add(new Variant("global-table", "key-" + kind, globalJoin(kind.equals("left"), false), List.of("left", "right"), Keys.PLAIN, 0));
        }
        // foreign-key table-table joins: orders meet the user their value names
        for (String kind : List.of("inner", "left")) {
            all.add(new Variant("fk-join", kind, fkJoin(kind.equals("left")), List.of("left", "right"), Keys.PLAIN, 0));
            all.add(new Variant("fk-join", kind + "-cached", fkJoin(kind.equals("left")), List.of("left", "right"), Keys.PLAIN, 0));
            all.add(new Variant("random-fk-join", kind, fkJoin(kind.equals("left")), List.of("left", "right"), Keys.PLAIN, 0));
            all.add(new Variant("random-fk-join", kind + "-cached", fkJoin(kind.equals("left")), List.of("left", "right"), Keys.PLAIN, 0));
        }
        List<String> sides = List.of("left", "right");
        all.add(new Variant("random-joins", "stream-table-inner", streamTable(false), sides, Keys.PLAIN, 0));
        all.add(new Variant("random-joins", "global-inner", globalJoin(false, false), sides, Keys.PLAIN, 0));
        all.add(new Variant("random-joins", "versioned-inner", versionedStreamTable(false, Duration.ofSeconds(3)), sides, Keys.PLAIN, 0));
        all.add(new Variant("random-joins", "versioned-left", versionedStreamTable(true, Duration.ofSeconds(3)), sides, Keys.PLAIN, 0));
        all.add(new Variant("random-joins", "versioned-grace-inner", versionedStreamTableGrace(false, Duration.ofSeconds(3), Duration.ofSeconds(1)), sides, Keys.PLAIN, 0));
        all.add(new Variant("random-joins", "global-left", globalJoin(true, false), sides, Keys.PLAIN, 0));
        all.add(new Variant("random-joins", "stream-table-left", streamTable(true), sides, Keys.PLAIN, 0));
        all.add(new Variant("random-joins", "stream-table-left-cached", streamTable(true), sides, Keys.PLAIN, 0));
        for (String kind : List.of("inner", "left", "outer")) {
            all.add(new Variant("random-joins", "table-table-" + kind, tableTable(kind), sides, Keys.PLAIN, 0));
            all.add(new Variant("random-joins", "table-table-" + kind + "-cached", tableTable(kind), sides, Keys.PLAIN, 0));
            all.add(new Variant("table-table", kind + "-cached", tableTable(kind), List.of("left", "right"), Keys.PLAIN, 0));
            all.add(new Variant("random-joins", "stream-stream-" + kind,
                streamStream(kind, JoinWindows.ofTimeDifferenceAndGrace(Duration.ofSeconds(3), Duration.ofSeconds(1))
                    .before(Duration.ofSeconds(2))),
                sides, Keys.PLAIN, 0));
        }
        // joiners that give no value for some pairs (merge_json's none_if):
        // Kafka Streams forwards null, a tombstone in the table joins
        all.add(new Variant("no-value-joins", "stream-table-inner", streamTable(false, Topologies::mergeOrNull), sides, Keys.PLAIN, 0));
        all.add(new Variant("no-value-joins", "stream-table-left", streamTable(true, Topologies::mergeOrNull), sides, Keys.PLAIN, 0));
        for (String kind : List.of("inner", "left", "outer")) {
            all.add(new Variant("no-value-joins", "table-table-" + kind, tableTable(kind, Topologies::mergeOrNull), sides, Keys.PLAIN, 0));
            all.add(new Variant("no-value-joins", "stream-stream-" + kind,
                streamStream(kind, JoinWindows.ofTimeDifferenceAndGrace(Duration.ofSeconds(3), Duration.ofSeconds(1))
                    .before(Duration.ofSeconds(2)), Topologies::mergeOrNull),
                sides, Keys.PLAIN, 0));
        }
        // the same over random-joins' inputs, whose left values have "drop" now and then
        all.add(new Variant("random-joins", "stream-table-left-none", streamTable(true, Topologies::mergeOrNull), sides, Keys.PLAIN, 0));
        for (String kind : List.of("inner", "outer")) {
            all.add(new Variant("random-joins", "table-table-" + kind + "-none", tableTable(kind, Topologies::mergeOrNull), sides, Keys.PLAIN, 0));
            all.add(new Variant("random-joins", "table-table-" + kind + "-none-cached", tableTable(kind, Topologies::mergeOrNull), sides, Keys.PLAIN, 0));
        }
        all.add(new Variant("random-joins", "stream-stream-outer-none",
            streamStream("outer", JoinWindows.ofTimeDifferenceAndGrace(Duration.ofSeconds(3), Duration.ofSeconds(1))
                .before(Duration.ofSeconds(2)), Topologies::mergeOrNull),
            sides, Keys.PLAIN, 0));
        for (String kind : List.of("inner", "left")) {
            all.add(new Variant("no-value-joins", "fk-" + kind, fkJoin(kind.equals("left"), Topologies::mergeOrNull), sides, Keys.PLAIN, 0));
        }
        return all;
    }

    // ---------------------------------------------------------------- running

    /**
     * Whether the variant's window store is compared too: a time-windowed
     * count with the record cache off, whose store (as an interactive query
     * reads it) keeps each window for its retention (size + grace) behind the
     * start of the newest window it has stored. With the cache on, a query
     * also returns what the cache still holds, however old.
     */
    static boolean windowStoreCompared(Variant v) {
        return v.keys() == Keys.TIME_WINDOWED && !v.name().endsWith("-cached");
    }

    /** Whether the variant is a session count without the record cache, whose session store is compared too. */
    static boolean sessionStoreCompared(Variant v) {
        return v.keys() == Keys.SESSION_WINDOWED && !v.name().endsWith("-cached");
    }

    /** Whether the variant is an unwindowed count, whose key-value store is compared too. */
    static boolean countStoreCompared(Variant v) {
        return v.keys() == Keys.PLAIN && v.name().startsWith("count");
    }

    static List<String> run(Variant v, List<In> inputs, List<String> stored) throws IOException {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, "parity-" + v.scenario() + "-" + v.name());
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, "unused:9092");
        p.put(StreamsConfig.DEFAULT_KEY_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        p.put(StreamsConfig.DEFAULT_VALUE_SERDE_CLASS_CONFIG, Serdes.StringSerde.class);
        // A variant named *-cached keeps Kafka Streams' record cache (10 MiB,
        // flushed after every record in TopologyTestDriver): Weir's cache
        // with a commit after every record (`weir test --batch 1`).
        p.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, v.name().endsWith("-cached") ? 10L * 1024 * 1024 : 0L);
        Path state = Files.createTempDirectory("weir-parity");
        p.put(StreamsConfig.STATE_DIR_CONFIG, state.toString());
        // Emit a stream-stream outer join's unmatched records at every look.
        p.put("__emit.interval.ms.kstreams.outer.join.spurious.results.fix__", 0L);
        List<String> lines = new ArrayList<>();
        try (TopologyTestDriver driver = new TopologyTestDriver(v.topology(), p, Instant.EPOCH)) {
            Map<String, TestInputTopic<String, String>> topics = new LinkedHashMap<>();
            for (String t : v.inputs()) {
                topics.put(t, driver.createInputTopic(t, new StringSerializer(), new StringSerializer()));
            }
            for (In r : inputs) {
                RecordHeaders h = new RecordHeaders();
                r.headers().forEach((k, val) -> h.add(k, val.getBytes(StandardCharsets.UTF_8)));
                topics.get(r.topic()).pipeInput(new TestRecord<>(r.key(), r.value(), h, r.timestamp()));
            }
            if (windowStoreCompared(v)) {
                dumpWindowStore(driver, stored);
            } else if (countStoreCompared(v)) {
                dumpCountStore(driver, stored);
            } else if (sessionStoreCompared(v)) {
                dumpSessionStore(driver, inputs, stored);
            }
            switch (v.keys()) {
                case PLAIN -> collect(driver, new StringDeserializer(), k -> k, k -> null, lines);
                case TIME_WINDOWED -> {
                    Serde<Windowed<String>> s = WindowedSerdes.timeWindowedSerdeFrom(String.class, v.windowSize());
                    collect(driver, s.deserializer(), Windowed::key, Windowed::window, lines);
                }
                case SESSION_WINDOWED -> {
                    Serde<Windowed<String>> s = WindowedSerdes.sessionWindowedSerdeFrom(String.class);
                    collect(driver, s.deserializer(), Windowed::key, Windowed::window, lines);
                }
            }
        }
        return lines;
    }

    /** The name of the topology's one store of `type`. */
    static String storeOf(TopologyTestDriver driver, Class<?> type) {
        String name = null;
        for (Map.Entry<String, StateStore> e : driver.getAllStateStores().entrySet()) {
            if (type.isInstance(e.getValue())) {
                if (name != null) {
                    throw new IllegalStateException("the topology has more than one " + type.getSimpleName());
                }
                name = e.getKey();
            }
        }
        if (name == null) {
            throw new IllegalStateException("the topology has no " + type.getSimpleName());
        }
        return name;
    }

    /**
     * The windows of the topology's one window store, as `weir state scan`
     * prints them ({"key","window":{"start","end"},"value"}), by key, then
     * window start.
     */
    static void dumpWindowStore(TopologyTestDriver driver, List<String> state) {
        WindowStore<String, ValueAndTimestamp<Long>> store =
            driver.getTimestampedWindowStore(storeOf(driver, WindowStore.class));
        List<ObjectNode> rows = new ArrayList<>();
        try (KeyValueIterator<Windowed<String>, ValueAndTimestamp<Long>> it = store.all()) {
            while (it.hasNext()) {
                KeyValue<Windowed<String>, ValueAndTimestamp<Long>> kv = it.next();
                ObjectNode o = JsonNodeFactory.instance.objectNode();
                o.put("key", kv.key.key());
                ObjectNode w = JsonNodeFactory.instance.objectNode();
                w.put("start", kv.key.window().start());
                w.put("end", kv.key.window().end());
                o.set("window", w);
                o.put("value", kv.value.value());
                rows.add(o);
            }
        }
        rows.sort(java.util.Comparator.<ObjectNode, String>comparing(o -> o.get("key").asText())
            .thenComparingLong(o -> o.get("window").get("start").asLong()));
        rows.forEach(o -> state.add(o.toString()));
    }

    /**
     * The sessions of the topology's one session store, of every key of the
     * inputs, as `weir state scan` prints them ({"key","window":{"start",
     * "end"},"value"}), by key, then session start.
     */
    static void dumpSessionStore(TopologyTestDriver driver, List<In> inputs, List<String> state) {
        SessionStore<String, Long> store = driver.getSessionStore(storeOf(driver, SessionStore.class));
        java.util.TreeSet<String> keys = new java.util.TreeSet<>();
        inputs.stream().map(In::key).filter(java.util.Objects::nonNull).forEach(keys::add);
        for (String key : keys) {
            try (KeyValueIterator<Windowed<String>, Long> it = store.fetch(key)) {
                while (it.hasNext()) {
                    KeyValue<Windowed<String>, Long> kv = it.next();
                    ObjectNode o = JsonNodeFactory.instance.objectNode();
                    o.put("key", kv.key.key());
                    ObjectNode w = JsonNodeFactory.instance.objectNode();
                    w.put("start", kv.key.window().start());
                    w.put("end", kv.key.window().end());
                    o.set("window", w);
                    o.put("value", kv.value);
                    state.add(o.toString());
                }
            }
        }
    }

    /** The counts of the topology's one key-value store, as `weir state scan` prints them ({"key","value"}), by key. */
    static void dumpCountStore(TopologyTestDriver driver, List<String> state) {
        KeyValueStore<String, ValueAndTimestamp<Long>> store =
            driver.getTimestampedKeyValueStore(storeOf(driver, KeyValueStore.class));
        try (KeyValueIterator<String, ValueAndTimestamp<Long>> it = store.all()) {
            while (it.hasNext()) {
                KeyValue<String, ValueAndTimestamp<Long>> kv = it.next();
                ObjectNode o = JsonNodeFactory.instance.objectNode();
                o.put("key", kv.key);
                o.put("value", kv.value.value());
                state.add(o.toString());
            }
        }
    }

    static <K> void collect(TopologyTestDriver driver, Deserializer<K> keys,
                            java.util.function.Function<K, String> key,
                            java.util.function.Function<K, org.apache.kafka.streams.kstream.Window> window,
                            List<String> lines) {
        TestOutputTopic<K, String> t = driver.createOutputTopic(OUT, keys, new StringDeserializer());
        for (TestRecord<K, String> r : t.readRecordsToList()) {
            ObjectNode o = JsonNodeFactory.instance.objectNode();
            o.put("topic", OUT);
            K k = r.key();
            String ks = k == null ? null : key.apply(k);
            if (ks == null) {
                o.putNull("key");
            } else {
                o.put("key", ks);
            }
            o.set("value", printed(r.value()));
            ObjectNode h = JsonNodeFactory.instance.objectNode();
            for (Header header : r.headers()) {
                h.put(header.key(), header.value() == null ? null : new String(header.value(), StandardCharsets.UTF_8));
            }
            if (k != null && window.apply(k) != null) {
                h.put("weir.window.start", Long.toString(window.apply(k).start()));
                h.put("weir.window.end", Long.toString(window.apply(k).end()));
            }
            if (!h.isEmpty()) {
                o.set("headers", h);
            }
            o.put("timestamp", r.timestamp());
            lines.add(o.toString());
        }
    }

    /** A value as `weir test` prints it: JSON other than a string as that JSON, anything else as a string. */
    static JsonNode printed(String value) {
        if (value == null) {
            return NullNode.getInstance();
        }
        try {
            JsonNode n = JSON.readTree(value);
            if (n != null && !n.isMissingNode() && !n.isTextual()) {
                return n;
            }
        } catch (IOException e) {
            // not JSON
        }
        return TextNode.valueOf(value);
    }

    // ---------------------------------------------------------------- inputs

    static List<In> read(Path file, String topic) throws IOException {
        List<In> out = new ArrayList<>();
        int line = 0;
        for (String l : Files.readAllLines(file, StandardCharsets.UTF_8)) {
            line++;
            if (l.isBlank()) {
                continue;
            }
            JsonNode n;
            try {
                n = JSON.readTree(l);
            } catch (IOException e) {
                throw new IOException(file + ":" + line + ": not JSON: " + e.getMessage(), e);
            }
            if (!n.has("timestamp")) {
                throw new IOException(file + ":" + line + ": no timestamp (every parity input has one)");
            }
            Map<String, String> headers = new LinkedHashMap<>();
            JsonNode h = n.get("headers");
            if (h != null) {
                Iterator<Map.Entry<String, JsonNode>> it = h.fields();
                while (it.hasNext()) {
                    Map.Entry<String, JsonNode> e = it.next();
                    headers.put(e.getKey(), e.getValue().asText());
                }
            }
            out.add(new In(topic, text(n.get("key")), text(n.get("value")), n.get("timestamp").asLong(), headers));
        }
        return out;
    }

    /** A key or value as `weir produce` writes it: a string as it is, other JSON as its text. */
    static String text(JsonNode n) {
        if (n == null || n.isNull()) {
            return null;
        }
        return n.isTextual() ? n.asText() : n.toString();
    }

    /** The order a Weir task reads its sources in: the smallest head timestamp, the later sources first on ties. */
    static List<In> merge(List<List<In>> sources) {
        List<In> out = new ArrayList<>();
        int[] next = new int[sources.size()];
        while (true) {
            int best = -1;
            for (int i = sources.size() - 1; i >= 0; i--) {
                if (next[i] < sources.get(i).size()) {
                    long ts = sources.get(i).get(next[i]).timestamp();
                    if (best < 0 || ts < sources.get(best).get(next[best]).timestamp()) {
                        best = i;
                    }
                }
            }
            if (best < 0) {
                return out;
            }
            out.add(sources.get(best).get(next[best]++));
        }
    }

    private Parity() {
    }
}
