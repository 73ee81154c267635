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
    request_id            String,
    occurred_at           DateTime64(3, 'UTC'),
    received_at           DateTime64(6, 'UTC'),
    decided_at            DateTime64(6, 'UTC'),
    evaluated_at          DateTime64(6, 'UTC'),
    identity_id           String,
    identity_known        Bool,
    identity_kind         LowCardinality(String),
    identity_status       LowCardinality(String),
    identity_owner        LowCardinality(String),
    identity_risk_tier    LowCardinality(String),
    identity_tags         Array(LowCardinality(String)),
    credential_age_days   Nullable(Float64),
    on_behalf_of          Array(String),
    action                LowCardinality(String),
    resource_id           String,
    resource_type         LowCardinality(String),
    resource_environment  LowCardinality(String),
    resource_sensitivity  LowCardinality(String),
    source_ip             String,
    decision              LowCardinality(String),
    reason_codes          Array(LowCardinality(String)),
    reasons               Array(Tuple(code LowCardinality(String), message String, policy String, rule String)),
    matched_rules         Array(LowCardinality(String)),
    obligations           Map(LowCardinality(String), String),
    monitor               Array(Tuple(policy String, rule String, effect LowCardinality(String), reason_code LowCardinality(String))),
    bundle_version        LowCardinality(String),
    eval_us               UInt64,
    worker_id             LowCardinality(String),
    source_topic          LowCardinality(String),
    source_partition      Int32,
    source_offset         Int64,
    request_json          String CODEC(ZSTD(3)),
    identity_json         Nullable(String) CODEC(ZSTD(3)),
    inserted_at           DateTime64(6, 'UTC') DEFAULT now64(6),
    INDEX idx_request_id request_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_resource_id resource_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(decided_at)
ORDER BY (identity_id, decided_at, request_id)
TTL toDateTime(decided_at) + INTERVAL $ttl_days DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;
