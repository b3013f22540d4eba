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
import org.apache.kafka.streams.kstream.Joined;
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

import static dev.weir.parity.Parity.JSON;
import static dev.weir.parity.Parity.OUT;

/**
 * The Kafka Streams topologies of the parity variants ({@link Parity#variants()}),
 * each kept in step by hand with its scenario's Weir pipeline files, and the
 * functions they share with the guests (word splitting, merge_json's join,
 * select_key's and foreign keys' field lookups).
 */
final class Topologies {
    private Topologies() {
    }

    static TimeWindows tumbling() {
        return TimeWindows.ofSizeAndGrace(Duration.ofSeconds(10), Duration.ofSeconds(5));
    }

    /** split_words.wasm: lower-cased runs of letters and digits, keyed by the word, without "the". */
    static List<KeyValue<String, String>> words(String line) {
        List<KeyValue<String, String>> out = new ArrayList<>();
        if (line == null) {
            return out; // Weir: a dead letter (the value is not text); no output either way
        }
        for (String w : line.toLowerCase(Locale.ROOT).split("[^\\p{L}\\p{N}]+")) {
            if (!w.isEmpty() && !w.equals("the")) {
                out.add(KeyValue.pair(w, w));
            }
        }
        return out;
    }

    static Topology wordCount() {
        StreamsBuilder b = new StreamsBuilder();
        b.<String, String>stream("lines")
            .flatMap((k, v) -> words(v))
            .groupByKey()
            .count()
            .toStream()
            .mapValues(v -> v == null ? null : v.toString())
            .to(OUT);
        return b.build();
    }

    static Topology mergedWordCount() {
        StreamsBuilder b = new StreamsBuilder();
        b.<String, String>stream(List.of("lines", "more-lines"))
            .flatMap((k, v) -> words(v))
            .groupByKey()
            .count()
            .toStream()
            .mapValues(v -> v == null ? null : v.toString())
            .to(OUT);
        return b.build();
    }

    /** `t` held by suppress(untilTimeLimit(limit, unbounded)), or `t` when `limit` is null. */
    static <K> KTable<K, Long> after(KTable<K, Long> t, Duration limit) {
        return after(t, limit, Suppressed.BufferConfig.unbounded());
    }

    /** `t` held by suppress(untilTimeLimit(limit, buffer)), or `t` when `limit` is null. */
    static <K> KTable<K, Long> after(KTable<K, Long> t, Duration limit, Suppressed.BufferConfig<?> buffer) {
        return limit == null ? t : t.suppress(Suppressed.untilTimeLimit(limit, buffer));
    }

    static Topology keyedCount() {
        return keyedCount(null);
    }

    static Topology keyedCount(Duration limit) {
        return keyedCount(limit, Suppressed.BufferConfig.unbounded());
    }

    static Topology keyedCount(Duration limit, Suppressed.BufferConfig<?> buffer) {
        StreamsBuilder b = new StreamsBuilder();
        after(b.<String, String>stream("events")
            .groupByKey()
            .count(), limit, buffer)
            .toStream()
            .mapValues(v -> v == null ? null : v.toString())
            .to(OUT);
        return b.build();
    }

    static Topology windowedCount(TimeWindows windows, boolean close) {
        return windowedCount(windows, close, null);
    }

    static Topology windowedCount(TimeWindows windows, boolean close, Duration limit) {
        return windowedCount(windows, close, limit, Suppressed.BufferConfig.unbounded());
    }

    static Topology windowedCount(TimeWindows windows, boolean close, Duration limit, Suppressed.BufferConfig<?> buffer) {
        StreamsBuilder b = new StreamsBuilder();
        KTable<Windowed<String>, Long> counts = b.<String, String>stream("events")
            .groupByKey()
            .windowedBy(windows)
            .count(Materialized.with(Serdes.String(), Serdes.Long()));
        if (close) {
            counts = counts.suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()));
        }
        after(counts, limit, buffer).toStream()
            .mapValues(v -> v == null ? null : v.toString())
            .to(OUT, Produced.with(WindowedSerdes.timeWindowedSerdeFrom(String.class, windows.size()), Serdes.String()));
        return b.build();
    }

    static Topology slidingCount(boolean close) {
        SlidingWindows windows = SlidingWindows.ofTimeDifferenceAndGrace(Duration.ofSeconds(5), Duration.ofSeconds(2));
        StreamsBuilder b = new StreamsBuilder();
        KTable<Windowed<String>, Long> counts = b.<String, String>stream("events")
            .groupByKey()
            .windowedBy(windows)
            .count(Materialized.with(Serdes.String(), Serdes.Long()));
        if (close) {
            counts = counts.suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()));
        }
        counts.toStream()
            .mapValues(v -> v == null ? null : v.toString())
            .to(OUT, Produced.with(WindowedSerdes.timeWindowedSerdeFrom(String.class, 5_000), Serdes.String()));
        return b.build();
    }

    static Topology sessionCount(boolean close) {
        return sessionCount(close, null);
    }

    static Topology sessionCount(boolean close, Duration limit) {
        return sessionCount(close, limit, Suppressed.BufferConfig.unbounded());
    }

    static Topology sessionCount(boolean close, Duration limit, Suppressed.BufferConfig<?> buffer) {
        StreamsBuilder b = new StreamsBuilder();
        KTable<Windowed<String>, Long> counts = b.<String, String>stream("events")
            .groupByKey()
            .windowedBy(SessionWindows.ofInactivityGapAndGrace(Duration.ofSeconds(5), Duration.ofSeconds(2)))
            .count(Materialized.with(Serdes.String(), Serdes.Long()));
        if (close) {
            counts = counts.suppress(Suppressed.untilWindowCloses(Suppressed.BufferConfig.unbounded()));
        }
        after(counts, limit, buffer).toStream()
            .mapValues(v -> v == null ? null : v.toString())
            .to(OUT, Produced.with(WindowedSerdes.sessionWindowedSerdeFrom(String.class), Serdes.String()));
        return b.build();
    }

    /** merge_json.wasm with its default field: the right value goes into the left object under "right". */
    static String merge(String left, String right) {
        ObjectNode obj;
        try {
            obj = left == null ? JsonNodeFactory.instance.objectNode() : (ObjectNode) JSON.readTree(left);
        } catch (IOException | ClassCastException e) {
            throw new IllegalArgumentException("the left side is not a JSON object: " + left, e);
        }
        JsonNode r;
        if (right == null) {
            r = NullNode.getInstance();
        } else {
            try {
                r = JSON.readTree(right);
            } catch (IOException e) {
                r = TextNode.valueOf(right);
            }
        }
        obj.set("right", r);
        return obj.toString();
    }

    /**
     * merge_json.wasm with `none_if = "drop"`: no value (null) when either
     * side is a JSON object whose "drop" is true, else {@link #merge}.
     */
    static String mergeOrNull(String left, String right) {
        if (dropped(left) || dropped(right)) {
            return null;
        }
        return merge(left, right);
    }

    static boolean dropped(String value) {
        if (value == null) {
            return false;
        }
        try {
            JsonNode n = JSON.readTree(value);
            return n.isObject() && n.path("drop").isBoolean() && n.path("drop").asBoolean();
        } catch (IOException e) {
            return false;
        }
    }

    static Topology streamTable(boolean left) {
        return streamTable(left, Topologies::merge);
    }

    static Topology streamTable(boolean left, ValueJoiner<String, String, String> joiner) {
        StreamsBuilder b = new StreamsBuilder();
        KStream<String, String> s = b.stream("left");
        KTable<String, String> t = b.table("right");
        (left ? s.leftJoin(t, joiner) : s.join(t, joiner)).to(OUT);
        return b.build();
    }

    /** A stream-global table join looking up the user the value names (`byUser`) or the record's key. */
    static Topology globalJoin(boolean left, boolean byUser) {
        StreamsBuilder b = new StreamsBuilder();
        KStream<String, String> s = b.stream("left");
        GlobalKTable<String, String> g = b.globalTable("right");
        // Kafka Streams calls the selector before it drops a record without a value.
        KeyValueMapper<String, String, String> select = byUser ? (k, v) -> v == null ? null : userOf(v) : (k, v) -> k;
        (left ? s.leftJoin(g, select, Topologies::merge) : s.join(g, select, Topologies::merge)).to(OUT);
        return b.build();
    }

    static Topology versionedStreamTable(boolean left) {
        return versionedStreamTable(left, Duration.ofSeconds(5));
    }

    static Topology versionedStreamTable(boolean left, Duration history) {
        StreamsBuilder b = new StreamsBuilder();
        KStream<String, String> s = b.stream("left");
        KTable<String, String> t = versioned(b, "right", history);
        (left ? s.leftJoin(t, Topologies::merge) : s.join(t, Topologies::merge)).to(OUT);
        return b.build();
    }

    /** A versioned stream-table join whose stream records wait `grace` for late table records. */
    static Topology versionedStreamTableGrace(boolean left, Duration history, Duration grace) {
        StreamsBuilder b = new StreamsBuilder();
        KStream<String, String> s = b.stream("left");
        KTable<String, String> t = versioned(b, "right", history);
        Joined<String, String, String> j = Joined.<String, String, String>as("join").withGracePeriod(grace);
        (left ? s.leftJoin(t, Topologies::merge, j) : s.join(t, Topologies::merge, j)).to(OUT);
        return b.build();
    }

    /** Users counted per region: select_key.wasm with field "/region" groups them. */
    static Topology groupedTableCount() {
        return groupedTableCount(false);
    }

    /**
     * Users counted per region, only the active ones when `activeOnly`
     * (pick_field.wasm with only_if "/active" in front of the grouping).
     */
    static Topology groupedTableCount(boolean activeOnly) {
        StreamsBuilder b = new StreamsBuilder();
        KTable<String, String> users = b.table("users");
        (activeOnly ? users.filter((k, v) -> isTrue(v, "/active")) : users)
            .groupBy((k, v) -> KeyValue.pair(fieldOf(v, "/region"), v))
            .count()
            .toStream()
            .mapValues(v -> v == null ? null : v.toString())
            .to(OUT);
        return b.build();
    }

    /** A field of a JSON object (a string's text, another value's JSON), or null. */
    static String fieldOf(String value, String pointer) {
        JsonNode n;
        try {
            n = JSON.readTree(value).at(pointer);
        } catch (IOException e) {
            throw new IllegalArgumentException("the value is not JSON: " + value, e);
        }
        if (n.isMissingNode() || n.isNull()) {
            return null;
        }
        return n.isTextual() ? n.asText() : n.toString();
    }

    /** pick_field.wasm in a map step with `as_table`: KTable.filter + mapValues on a field. */
    static KTable<String, String> picked(KTable<String, String> t, String pointer) {
        return t.filter((k, v) -> fieldOf(v, pointer) != null).mapValues(v -> fieldOf(v, pointer));
    }

    /** Users' emails as a table: rows without one leave it. */
    static Topology tableFilterMap() {
        StreamsBuilder b = new StreamsBuilder();
        picked(b.<String, String>table("users"), "/email").toStream().to(OUT);
        return b.build();
    }

    /** Whether a JSON value has `true` at `pointer` (pick_field's only_if). */
    static boolean isTrue(String value, String pointer) {
        try {
            JsonNode n = JSON.readTree(value).at(pointer);
            return n.isBoolean() && n.booleanValue();
        } catch (IOException e) {
            throw new IllegalArgumentException("the value is not JSON: " + value, e);
        }
    }

    /** The left table without rows marked "drop" (pick_field's drop_if), then a table-table join of `kind`. */
    static Topology tableFilterNotJoin(String kind) {
        StreamsBuilder b = new StreamsBuilder();
        KTable<String, String> l = b.<String, String>table("left").filterNot((k, v) -> isTrue(v, "/drop"));
        joinTables(kind, l, b.table("right"), Topologies::merge).toStream().to(OUT);
        return b.build();
    }

    /** Profiles picked from the left table, then a table-table join of `kind`. */
    static Topology tableFilterJoin(String kind) {
        StreamsBuilder b = new StreamsBuilder();
        KTable<String, String> l = picked(b.<String, String>table("left"), "/profile");
        joinTables(kind, l, b.table("right"), Topologies::merge).toStream().to(OUT);
        return b.build();
    }

    static Topology tableTable(String kind) {
        return tableTable(kind, Topologies::merge);
    }

    static Topology tableTable(String kind, ValueJoiner<String, String, String> joiner) {
        StreamsBuilder b = new StreamsBuilder();
        KTable<String, String> l = b.table("left");
        KTable<String, String> r = b.table("right");
        joinTables(kind, l, r, joiner).toStream().to(OUT);
        return b.build();
    }

    /** Table `topic` in a versioned store keeping `history` (store TOPIC-versions). */
    static KTable<String, String> versioned(StreamsBuilder b, String topic, Duration history) {
        return b.table(topic, Materialized.<String, String>as(
            Stores.persistentVersionedKeyValueStore(topic + "-versions", history)));
    }

    /** The table-table join of `kind` ("inner", "left", "outer"). */
    static KTable<String, String> joinTables(String kind, KTable<String, String> l, KTable<String, String> r,
                                             ValueJoiner<String, String, String> joiner) {
        return switch (kind) {
            case "inner" -> l.join(r, joiner);
            case "left" -> l.leftJoin(r, joiner);
            default -> l.outerJoin(r, joiner);
        };
    }

    /** A table-table join of two versioned tables (KIP-914: out-of-order updates join nothing). */
    static Topology tableTableVersioned(String kind, Duration history) {
        StreamsBuilder b = new StreamsBuilder();
        KTable<String, String> l = versioned(b, "left", history);
        KTable<String, String> r = versioned(b, "right", history);
        joinTables(kind, l, r, Topologies::merge).toStream().to(OUT);
        return b.build();
    }

    /**
     * A foreign-key join of table "left" with table "right", keyed by the
     * left value's field "user" (Weir: `foreign_key = "/user"`).
     */
    static Topology fkJoin(boolean left) {
        return fkJoin(left, Topologies::merge);
    }

    static Topology fkJoin(boolean left, ValueJoiner<String, String, String> joiner) {
        return fkJoin(left, joiner, false);
    }

    /** The foreign-key join, its left table first filtered to open orders (pick_field's only_if "/open") when `open`. */
    static Topology fkJoin(boolean left, ValueJoiner<String, String, String> joiner, boolean open) {
        StreamsBuilder b = new StreamsBuilder();
        KTable<String, String> l = open
            ? b.<String, String>table("left").filter((k, v) -> isTrue(v, "/open"))
            : b.table("left");
        KTable<String, String> r = b.table("right");
        KTable<String, String> j = left
            ? l.leftJoin(r, Topologies::userOf, joiner)
            : l.join(r, Topologies::userOf, joiner);
        j.toStream().to(OUT);
        return b.build();
    }

    /** The field "user" of a JSON object (a string's text, another value's JSON), or null. */
    static String userOf(String value) {
        JsonNode n;
        try {
            n = JSON.readTree(value).at("/user");
        } catch (IOException e) {
            throw new IllegalArgumentException("the left value is not JSON: " + value, e);
        }
        if (n.isMissingNode() || n.isNull()) {
            return null;
        }
        return n.isTextual() ? n.asText() : n.toString();
    }

    static Topology streamStream(String kind, JoinWindows w) {
        return streamStream(kind, w, Topologies::merge);
    }

    static Topology streamStream(String kind, JoinWindows w, ValueJoiner<String, String, String> joiner) {
        StreamsBuilder b = new StreamsBuilder();
        KStream<String, String> l = b.stream("left");
        KStream<String, String> r = b.stream("right");
        StreamJoined<String, String, String> sj = StreamJoined.with(Serdes.String(), Serdes.String(), Serdes.String());
        KStream<String, String> j = switch (kind) {
            case "inner" -> l.join(r, joiner, w, sj);
            case "left" -> l.leftJoin(r, joiner, w, sj);
            default -> l.outerJoin(r, joiner, w, sj);
        };
        j.to(OUT);
        return b.build();
    }
}
