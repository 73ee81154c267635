-- Tamper-evident audit (issue 12): every AuditRecord carries its link in its worker's hash chain (schemas/
-- audit_record.avsc `chain`, streams/worker/chain.py), and workers publish signed checkpoints of the chain heads
-- (pdx.audit.checkpoints). `pdx audit verify` (streams/audit/verify.py) recomputes the chains from these tables.
--
-- * audit_decisions gets record_hash: the hash the record's chain link names (lowercase hex, '' for a record
--   written before chaining). verify finds each link's row by it and recomputes the hash from the row.
-- * audit_chain_links: one row per chained record (chain_id, seq, prev, the two digests, hash, and the
--   request it is about), fed by its own view from audit_ingest. A plain MergeTree and not the audit table:
--   the audit table collapses a redelivered request's second decision (005), whose link must stay so that its
--   chain is still contiguous; verify counts such a link as a collapsed duplicate when a surviving row of the
--   same request (same request_digest) verifies in another chain.
-- * audit_checkpoints: the signed checkpoints, inserted by the audit sink from pdx.audit.checkpoints.
-- * audit_ingest gains the `chain` column (Avro union null | ChainLink: Nullable(Tuple), fixed(32) is
--   FixedString(32)), audit_ingest_mv writes record_hash and audit_chain_links_mv fills audit_chain_links: all
--   three are built from the declarations and re-created after the migrations (see 004). The sink's
--   insert_deduplication_token with deduplicate_blocks_in_dependent_materialized_views drops a retried block in
--   both views' tables (non_replicated_deduplication_window on the links table).
-- * Retention: the links and checkpoints follow PDX_AUDIT_TTL_DAYS like the audit table (migrate.py TTL_TABLES).

-- only if: SELECT count() = 0 FROM system.columns WHERE database = '$db' AND table = '$audit_table' AND name = 'record_hash'
ALTER TABLE $db.$audit_table ADD COLUMN IF NOT EXISTS record_hash String DEFAULT '' AFTER identity_json;

CREATE TABLE IF NOT EXISTS $db.audit_chain_links
(
    chain_id          String,
    seq               Int64,
    prev              String,
    request_digest    String,
    body_digest       String,
    record_hash       String,
    request_id        String,
    identity_id       String,
    decided_at        DateTime64(6, 'UTC'),
    worker_id         LowCardinality(String),
    source_topic      LowCardinality(String),
    source_partition  Int32,
    source_offset     Int64,
    inserted_at       DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(decided_at)
ORDER BY (chain_id, seq)
TTL toDateTime(decided_at) + INTERVAL $ttl_days DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;

CREATE TABLE IF NOT EXISTS $db.audit_checkpoints
(
    chain_id          String,
    seq               Int64,
    head_hash         String,
    final             Bool,
    worker_id         LowCardinality(String),
    source_topic      LowCardinality(String),
    source_partition  Int32,
    signed_at         DateTime64(3, 'UTC'),
    key_id            LowCardinality(String),
    signature         String,
    kafka_partition   Int32,
    kafka_offset      Int64,
    inserted_at       DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(signed_at)
ORDER BY (chain_id, seq)
TTL toDateTime(signed_at) + INTERVAL $ttl_days DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;
