package dev.pdx.example;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ThreadLocalRandom;
import org.apache.avro.Schema;
import org.apache.avro.data.TimeConversions;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.generic.GenericRecordBuilder;
import org.apache.avro.message.BinaryMessageDecoder;
import org.apache.avro.message.BinaryMessageEncoder;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Asks pdx for one decision over Kafka, following the reply protocol of docs/contracts.md, and prints it
 * as one line of JSON. No pdx code: kafka-clients and Avro single-object encoding only.
 *
 * <pre>
 * java -jar target/pdx-java-example.jar [--bootstrap HOST:PORT] [--env ENV] [--sensitivity S]
 *     [--ttl SECONDS] [--on-behalf-of P1,P2] [--timeout SECONDS] IDENTITY ACTION RESOURCE_ID RESOURCE_TYPE
 * </pre>
 *
 * Exit status: 0 when pdx answered (whatever the decision), 3 when it did not answer in time (the
 * printed decision is then a client-side fail-closed deny, pdp_timeout), 2 for a usage error.
 */
public final class PdxCheck {
    static final String REQUEST_TOPIC = "pdx.requests";
    static final String REPLY_TOPIC = "pdx.decisions";
    /** Load order of schemas/README.md: one parser, each file may use types of the files before it. */
    static final String[] SCHEMA_FILES = {
        "identity.avsc", "access_request.avsc", "decision.avsc",
        "approval.avsc", "policy_bundle.avsc", "audit_record.avsc",
    };

    static final String USAGE = "usage: PdxCheck [--bootstrap HOST:PORT] [--env ENV] [--sensitivity S] [--ttl SECONDS]"
            + " [--on-behalf-of P1,P2] [--timeout SECONDS] IDENTITY ACTION RESOURCE_ID RESOURCE_TYPE";
    static final Set<String> OPTIONS = Set.of("bootstrap", "env", "sensitivity", "ttl", "on-behalf-of", "timeout");

    public static void main(String[] argv) throws Exception {
        Map<String, String> opt = new HashMap<>();
        List<String> positional = new ArrayList<>();
        for (int i = 0; i < argv.length; i++) {
            if (!argv[i].startsWith("--")) {
                positional.add(argv[i]);
            } else if (OPTIONS.contains(argv[i].substring(2)) && i + 1 < argv.length) {
                opt.put(argv[i].substring(2), argv[++i]);
            } else {
                usage("unknown option or missing value: " + argv[i]);
            }
        }
        String bootstrap = opt.getOrDefault("bootstrap",
                System.getenv().getOrDefault("PDX_KAFKA_BOOTSTRAP", "127.0.0.1:9092"));
        if (positional.size() != 4) usage("expected 4 arguments, got " + positional.size());
        Duration timeout = Duration.ofMillis((long) (Double.parseDouble(opt.getOrDefault("timeout", "5")) * 1000));
        Long ttl = opt.containsKey("ttl") ? Long.valueOf(opt.get("ttl")) : null;
        List<String> onBehalfOf = opt.containsKey("on-behalf-of")
                ? List.of(opt.get("on-behalf-of").split(",")) : List.of();

        // Schemas and the data model. Timestamps are logical types: register the conversions, so
        // timestamp-millis / timestamp-micros fields take and give java.time.Instant.
        Schema.Parser parser = new Schema.Parser();
        Map<String, Schema> schemas = new HashMap<>();
        for (String file : SCHEMA_FILES) {
            try (InputStream in = PdxCheck.class.getResourceAsStream("/schemas/" + file)) {
                if (in == null) throw new IOException("schemas/" + file + " not on the classpath: run mvn package");
                schemas.put(file, parser.parse(in));
            }
        }
        Schema requestSchema = schemas.get("access_request.avsc");
        Schema decisionSchema = schemas.get("decision.avsc");
        GenericData model = new GenericData();
        model.addLogicalTypeConversion(new TimeConversions.TimestampMillisConversion());
        model.addLogicalTypeConversion(new TimeConversions.TimestampMicrosConversion());
        BinaryMessageEncoder<GenericRecord> encoder = new BinaryMessageEncoder<>(model, requestSchema);
        BinaryMessageDecoder<GenericRecord> decoder = new BinaryMessageDecoder<>(model, decisionSchema);

        Properties common = new Properties();
        common.put("bootstrap.servers", bootstrap);
        Properties cprops = (Properties) common.clone();
        cprops.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false"); // no group.id: assign, never subscribe
        cprops.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, "20");
        Properties pprops = (Properties) common.clone();
        pprops.put(ProducerConfig.LINGER_MS_CONFIG, "0");

        int status = 0;
        try (var consumer = new KafkaConsumer<>(cprops, new StringDeserializer(), new ByteArrayDeserializer());
             var producer = new KafkaProducer<>(pprops, new StringSerializer(), new ByteArraySerializer())) {
            // 1. Own one reply partition: pick one that exists, assign it, and seek to its end BEFORE sending.
            List<PartitionInfo> parts = consumer.partitionsFor(REPLY_TOPIC, Duration.ofSeconds(10));
            if (parts == null || parts.isEmpty()) throw new IllegalStateException("no topic " + REPLY_TOPIC);
            int replyPartition = parts.get(ThreadLocalRandom.current().nextInt(parts.size())).partition();
            TopicPartition tp = new TopicPartition(REPLY_TOPIC, replyPartition);
            consumer.assign(List.of(tp));
            consumer.seekToEnd(List.of(tp));
            consumer.position(tp); // seekToEnd is lazy: resolve the end offset now, so no reply can be missed

            // 2. The request: key = identity_id (one identity's requests stay in order on one partition).
            String requestId = UUID.randomUUID().toString().replace("-", "");
            Instant now = Instant.now();
            GenericRecordBuilder resource = new GenericRecordBuilder(requestSchema.getField("resource").schema())
                    .set("id", positional.get(2)).set("type", positional.get(3))
                    .set("environment", opt.get("env")).set("sensitivity", opt.get("sensitivity"));
            GenericRecordBuilder context = new GenericRecordBuilder(requestSchema.getField("context").schema())
                    .set("requested_ttl_s", ttl);
            GenericRecord request = new GenericRecordBuilder(requestSchema)
                    .set("request_id", requestId)
                    .set("occurred_at", now)
                    .set("identity_id", positional.get(0))
                    .set("on_behalf_of", onBehalfOf)
                    .set("action", positional.get(1))
                    .set("resource", resource.build())
                    .set("context", context.build())
                    .set("reply_to", REPLY_TOPIC)
                    .set("reply_partition", replyPartition)
                    .set("deadline", now.plus(timeout)) // the worker denies (deadline_expired) after this
                    .build();
            ByteArrayOutputStream value = new ByteArrayOutputStream();
            encoder.encode(request, value);
            producer.send(new ProducerRecord<>(REQUEST_TOPIC, positional.get(0), value.toByteArray())).get();

            // 3. Wait for the Decision whose correlation_id header is our request_id; skip other clients' replies.
            Instant giveUp = now.plus(timeout);
            while (Instant.now().isBefore(giveUp)) {
                for (ConsumerRecord<String, byte[]> rec : consumer.poll(Duration.ofMillis(100))) {
                    Header h = rec.headers().lastHeader("correlation_id");
                    if (h == null || !requestId.equals(new String(h.value(), StandardCharsets.UTF_8))) continue;
                    GenericRecord d = decoder.decode(rec.value());
                    List<String> codes = new ArrayList<>();
                    for (Object r : (List<?>) d.get("reasons")) codes.add(((GenericRecord) r).get("code").toString());
                    print(d.get("request_id").toString(), d.get("decision").toString(), codes, replyPartition,
                            d.get("worker_id").toString());
                    return;
                }
            }
            print(requestId, "deny", List.of("pdp_timeout"), replyPartition, ""); // fail closed, as the Python client
            status = 3;
        }
        System.exit(status);
    }

    static void usage(String problem) {
        System.err.println(problem + "\n" + USAGE);
        System.exit(2);
    }

    static void print(String requestId, String decision, List<String> codes, int partition, String worker) {
        StringBuilder reasons = new StringBuilder();
        for (String c : codes) reasons.append(reasons.length() == 0 ? "" : ",").append(json(c));
        System.out.println("{\"request_id\":" + json(requestId) + ",\"decision\":" + json(decision)
                + ",\"reason_codes\":[" + reasons + "],\"reply_partition\":" + partition
                + ",\"worker_id\":" + json(worker) + "}");
    }

    static String json(String s) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') out.append('\\').append(c);
            else if (c < 0x20) out.append(String.format("\\u%04x", (int) c));
            else out.append(c);
        }
        return out.append('"').toString();
    }
}
