package dev.weir.bench;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Properties;
import java.util.Random;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.KStream;
import org.apache.kafka.streams.kstream.Produced;

/**
 * The Kafka Streams side of Weir's benchmark: the same two topologies as
 * Weir's examples, a stateless upper-case map and a word count.
 *
 * <pre>
 * produce BOOTSTRAP TOPIC map|lines|words:D N PARTITIONS   create TOPIC and write N records
 * run BOOTSTRAP map|wordcount|keyspace GUARANTEE INPUT N [COMMIT_MS]
 *                                                   process them; print one result line
 * </pre>
 *
 * GUARANTEE is exactly_once_v2 or at_least_once; COMMIT_MS is
 * commit.interval.ms (default 100). The map input is N records of a 12-byte
 * key and a 100-byte value; the word-count input is N lines of 8 words (from
 * 1,000 words). The key-space input ({@code words:D}) is the one of Weir's
 * {@code weir bench --one wordcount --words D}: N lines of 8 words drawn
 * uniformly from D distinct words, line i keyed {@code key-%08d} in partition
 * i % 2; the {@code keyspace} workload counts them with
 * {@code flatMapValues}, {@code groupBy} (a repartition) and {@code count()}
 * into the default RocksDB store. The result line gives records (lines) per
 * second from the first record seen to the last one processed, and the
 * process's peak resident memory (VmHWM); for {@code keyspace} also the
 * outputs emitted (until the end of {@code close}, which flushes the cache)
 * and the time until close returned.
 */
public final class StreamsBench {
    private static final int WORDS_PER_LINE = 8;

    public static void main(String[] args) throws Exception {
        if (args.length == 6 && args[0].equals("produce")) {
            produce(args[1], args[2], args[3], Long.parseLong(args[4]), Integer.parseInt(args[5]));
        } else if ((args.length == 6 || args.length == 7) && args[0].equals("run")) {
            long commitMs = args.length == 7 ? Long.parseLong(args[6]) : 100;
            run(args[1], args[2], args[3], args[4], Long.parseLong(args[5]), commitMs);
        } else {
            System.err.println("usage: produce BOOTSTRAP TOPIC map|lines|words:D N PARTITIONS"
                    + " | run BOOTSTRAP map|wordcount|keyspace exactly_once_v2|at_least_once INPUT N [COMMIT_MS]");
            System.exit(2);
        }
    }

    private static void createTopic(String bootstrap, String topic, int partitions) throws Exception {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(p)) {
            admin.createTopics(List.of(new NewTopic(topic, partitions, (short) -1))).all().get();
        }
    }

    private static String[] vocabulary() {
        Random r = new Random(7);
        String[] words = new String[1000];
        for (int i = 0; i < words.length; i++) {
            StringBuilder w = new StringBuilder();
            int len = 3 + r.nextInt(6);
            for (int j = 0; j < len; j++) {
                w.append((char) ('a' + r.nextInt(26)));
            }
            words[i] = w.toString();
        }
        return words;
    }

    /** splitmix64's finaliser, as {@code mix} in Weir's host/src/cli/bench_pipelines.rs. */
    public static long mix(long x) {
        x += 0x9e3779b97f4a7c15L;
        x = (x ^ (x >>> 30)) * 0xbf58476d1ce4e5b9L;
        x = (x ^ (x >>> 27)) * 0x94d049bb133111ebL;
        return x ^ (x >>> 31);
    }

    /**
     * Line i of {@code weir bench --one wordcount --words D}: word j is
     * "w" + mix(i * 8 + j) mod D (unsigned).
     */
    public static String uniformLine(long i, long distinct) {
        StringBuilder line = new StringBuilder();
        for (int j = 0; j < WORDS_PER_LINE; j++) {
            if (j > 0) {
                line.append(' ');
            }
            line.append('w').append(Long.remainderUnsigned(mix(i * WORDS_PER_LINE + j), Math.max(distinct, 1)));
        }
        return line.toString();
    }

    static void produce(String bootstrap, String topic, String kind, long n, int partitions) throws Exception {
        createTopic(bootstrap, topic, partitions);
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.LINGER_MS_CONFIG, 20);
        p.put(ProducerConfig.BATCH_SIZE_CONFIG, 256 * 1024);
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "none");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        Random r = new Random(42);
        String[] words = vocabulary();
        byte[] value = new byte[100];
        long now = System.currentTimeMillis();
        long distinct = kind.startsWith("words:") ? Long.parseLong(kind.substring("words:".length())) : 0;
        if (!kind.equals("map") && !kind.equals("lines") && distinct <= 0) {
            throw new IllegalArgumentException("kind is map, lines or words:D (D > 0), not " + kind);
        }
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            for (long i = 0; i < n; i++) {
                if (distinct > 0) {
                    // Weir's bench: key-%08d of the line's place, partition i % 2.
                    byte[] key = String.format(Locale.ROOT, "key-%08d", i).getBytes(StandardCharsets.UTF_8);
                    byte[] v = uniformLine(i, distinct).getBytes(StandardCharsets.UTF_8);
                    producer.send(new ProducerRecord<>(topic, (int) (i % partitions), now, key, v), (md, e) -> {
                        if (e != null) {
                            System.err.println("produce failed: " + e);
                            System.exit(1);
                        }
                    });
                    continue;
                }
                byte[] key = String.format(Locale.ROOT, "key-%08d", i % 100_000).getBytes(StandardCharsets.UTF_8);
                byte[] v;
                if (kind.equals("map")) {
                    for (int j = 0; j < value.length; j++) {
                        value[j] = (byte) ('a' + r.nextInt(26));
                    }
                    v = value.clone();
                } else {
                    StringBuilder line = new StringBuilder();
                    for (int j = 0; j < WORDS_PER_LINE; j++) {
                        if (j > 0) {
                            line.append(' ');
                        }
                        line.append(words[r.nextInt(words.length)]);
                    }
                    v = line.toString().getBytes(StandardCharsets.UTF_8);
                }
                producer.send(new ProducerRecord<>(topic, null, now, key, v), (md, e) -> {
                    if (e != null) {
                        System.err.println("produce failed: " + e);
                        System.exit(1);
                    }
                });
            }
            producer.flush();
        }
    }

    private static long peakRssKb() throws Exception {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("VmHWM:")) {
                return Long.parseLong(line.replaceAll("[^0-9]", ""));
            }
        }
        return -1;
    }

    static void run(String bootstrap, String workload, String guarantee, String input, long n, long commitMs)
            throws Exception {
        String app = "streams-bench-" + workload + "-" + guarantee.replace('_', '-') + "-" + System.nanoTime();
        String output = app + "-out";
        createTopic(bootstrap, output, 2);

        AtomicLong firstSeenNanos = new AtomicLong();
        AtomicLong done = new AtomicLong();
        AtomicLong lastNanos = new AtomicLong();
        AtomicLong outputs = new AtomicLong();
        long target = workload.equals("map") ? n : n * WORDS_PER_LINE;

        StreamsBuilder b = new StreamsBuilder();
        KStream<byte[], byte[]> in = b.stream(input, Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
                .peek((k, v) -> firstSeenNanos.compareAndSet(0, System.nanoTime()));
        if (workload.equals("map")) {
            in.mapValues(v -> new String(v, StandardCharsets.UTF_8).toUpperCase(Locale.ROOT)
                            .getBytes(StandardCharsets.UTF_8))
                    .peek((k, v) -> {
                        if (done.incrementAndGet() == target) {
                            lastNanos.set(System.nanoTime());
                        }
                    })
                    .to(output, Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));
        } else if (workload.equals("wordcount")) {
            in.flatMap((k, v) -> Arrays.stream(new String(v, StandardCharsets.UTF_8).toLowerCase(Locale.ROOT)
                            .split("\\W+"))
                            .filter(w -> !w.isEmpty())
                            .map(w -> KeyValue.pair(w, w))
                            .toList())
                    .groupByKey(Grouped.with(Serdes.String(), Serdes.String()))
                    .aggregate(() -> 0L, (word, w, count) -> {
                        if (done.incrementAndGet() == target) {
                            lastNanos.set(System.nanoTime());
                        }
                        return count + 1;
                    }, org.apache.kafka.streams.kstream.Materialized.with(Serdes.String(), Serdes.Long()))
                    .toStream()
                    .to(output, Produced.with(Serdes.String(), Serdes.Long()));
        } else if (workload.equals("keyspace")) {
            // The words are counted as the count's input is read back from
            // the repartition topic: its value deserializer sees each word
            // once, just before count() adds it.
            Deserializer<String> countingWords = (topic, data) -> {
                if (done.incrementAndGet() == target) {
                    lastNanos.set(System.nanoTime());
                }
                return data == null ? null : new String(data, StandardCharsets.UTF_8);
            };
            in.flatMapValues(v -> Arrays.stream(new String(v, StandardCharsets.UTF_8).toLowerCase(Locale.ROOT)
                            .split("\\W+"))
                            .filter(w -> !w.isEmpty())
                            .toList())
                    .groupBy((k, w) -> w, Grouped.with(Serdes.String(),
                            Serdes.serdeFrom(new StringSerializer(), countingWords)))
                    .count()
                    .toStream()
                    .peek((w, c) -> outputs.incrementAndGet())
                    .to(output, Produced.with(Serdes.String(), Serdes.Long()));
        } else {
            throw new IllegalArgumentException("workload is map, wordcount or keyspace, not " + workload);
        }

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, app);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 2);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, commitMs);
        p.put(StreamsConfig.STATE_DIR_CONFIG, Files.createTempDirectory("streams-bench").toString());
        p.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");

        long started = System.nanoTime();
        KafkaStreams streams = new KafkaStreams(b.build(), p);
        streams.start();
        long deadline = started + Duration.ofMinutes(20).toNanos();
        while (lastNanos.get() == 0) {
            if (System.nanoTime() > deadline) {
                System.err.println("timed out: " + done.get() + " of " + target + " processed");
                System.exit(1);
            }
            Thread.sleep(20);
        }
        streams.close(Duration.ofSeconds(60));
        long closedNanos = System.nanoTime();
        double seconds = (lastNanos.get() - firstSeenNanos.get()) / 1e9;
        if (workload.equals("keyspace")) {
            System.out.printf(Locale.ROOT, "kafka-streams keyspace %s commit %d ms: %d lines in %.2f s = %.0f lines/s"
                            + " (%.2f s from start, %.2f s more to close), %d outputs, peak RSS %d MB%n",
                    guarantee, commitMs, n, seconds, n / seconds, (lastNanos.get() - started) / 1e9,
                    (closedNanos - lastNanos.get()) / 1e9, outputs.get(), peakRssKb() / 1024);
            return;
        }
        System.out.printf(Locale.ROOT, "kafka-streams %s %s: %d %s in %.2f s = %.0f %s/s (%.2f s from start), peak RSS %d MB%n",
                workload, guarantee, n, workload.equals("map") ? "records" : "lines", seconds, n / seconds,
                workload.equals("map") ? "records" : "lines",
                (lastNanos.get() - started) / 1e9, peakRssKb() / 1024);
    }
}
