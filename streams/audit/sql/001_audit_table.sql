-- The audit table: one row per decision (AuditRecord), written by the audit sink agent.
--
-- * ReplacingMergeTree deduplicates redelivered records: a redelivery of the same AuditRecord has the same
--   sorting key (identity_id, decided_at, request_id), so merges keep one row. Exact queries use FINAL.
-- * ORDER BY starts with identity_id, decided_at: per-identity time-range queries (timeline) read few granules.
-- * The request_id bloom filter lets `explain REQUEST_ID` skip granules without a full scan.
-- * non_replicated_deduplication_window: a retried INSERT with the same insert_deduplication_token is dropped.
-- Placeholders ($db, $audit_table, $ttl_days) are filled by streams/audit/migrate.py from streams/settings.py.
CREATE TABLE IF NOT EXISTS $db.$audit_table
(
-- include: audit_columns_001
    INDEX idx_request_id request_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_resource_id resource_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(decided_at)
ORDER BY (identity_id, decided_at, request_id)
TTL toDateTime(decided_at) + INTERVAL $ttl_days DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;
