-- The audit table deduplicates by request (issue 11). 001 sorted by (identity_id, decided_at, request_id): a
-- redelivered request that a worker decides again has another decided_at, so both rows survived merges and FINAL.
-- A sorting key cannot be changed in place, so this migration builds the table anew and swaps it in.
--
-- * ORDER BY (identity_id, decided_month, occurred_at, request_id, request_hash): a redelivery carries the same
--   request (the worker splices the consumed bytes into the AuditRecord), hence the same identity_id, occurred_at,
--   request_id and request_json, and collapses even when it was decided differently. A different request that
--   reuses a request_id has another request_json and stays visible as its own row: evidence is never overwritten.
--   request_hash is a MATERIALIZED column rather than cityHash64(request_json) in the key so that FINAL reads 8
--   bytes per row instead of the whole request_json (4-5x slower FINAL otherwise, measured).
-- * decided_month = toYYYYMM(decided_at), the partition key, is a column of the sorting key so that queries can
--   prune months under FINAL: ClickHouse only skips data under FINAL by conditions on sorting-key columns, so a
--   `decided_at` range alone reads every month of retention; streams/audit/queries.py adds
--   `decided_month BETWEEN toYYYYMM(since) AND toYYYYMM(until)`. It is a MATERIALIZED column and not the
--   expression toYYYYMM(decided_at) in the key: with the expression, ClickHouse also prunes parts by their
--   min/max decided_at under FINAL, which drops the first decision of a request whose redelivery is in the window
--   and returns the redelivery instead (checked on ClickHouse 26.9). It changes nothing about what collapses,
--   merges never cross partitions: a redelivery decided in another month than the first decision (decided_at of
--   a redelivery differs by seconds, so only at a month boundary) is not collapsed.
-- * occurred_at (set by the caller, part of the request) keeps one identity's rows in time order within a month,
--   and the minmax index on decided_at (which follows occurred_at within milliseconds) lets a timeline read only
--   the granules of its window however many requests the identity makes. Under FINAL, ClickHouse >= 25.6 uses
--   skip indexes in exact mode (use_skip_indexes_if_final[_exact_mode], on by default), which keeps FINAL exact.
-- * ReplacingMergeTree(ver), ver = 2^64 - 1 - microseconds of decided_at: of the rows that collapse, the one
--   with the earliest decided_at is kept (the first decision, the one the caller acted on).
-- * Partition (same month values as 001), TTL, skip indexes and settings as in 001.
--
-- The swap: create the new table as ${audit_table}_005, EXCHANGE it with the live table (atomic, Atomic database
-- engine), copy the old rows in, drop the old table. EXCHANGE rather than RENAME because the materialized views
-- follow the *name*: audit_ingest_mv (TO $audit_table) and the rollup views 002/003 (FROM $audit_table) use the
-- new table as soon as it is exchanged, whereas after RENAME the rollup views stay attached to the old table
-- until the server restarts (checked on ClickHouse 26.9). Exchanging before copying means no insert can land in
-- the old table after the copy read it, except one already running at the moment of the exchange: run this with
-- the audit sink stopped (it retries, Kafka keeps the records). The copy goes through the rollup views again;
-- they count uniq(request_id) and uniq(identity_id), so the rollups do not change.
--
-- Each statement runs only if its `-- only if:` conditions hold (streams/audit/migrate.py), so a run interrupted
-- anywhere can be repeated: whether the live table has request_hash yet tells before from after the exchange.
-- A copy interrupted half-way is repeated whole; rows copied twice are identical and collapse like redeliveries.

-- only if: SELECT count() = 0 FROM system.columns WHERE database = '$db' AND table = '$audit_table' AND name = 'request_hash'
CREATE TABLE IF NOT EXISTS $db.${audit_table}_005
(
-- include: audit_columns_001
    request_hash          UInt64 MATERIALIZED cityHash64(request_json),
    decided_month         UInt32 MATERIALIZED toYYYYMM(decided_at),
    ver                   UInt64 MATERIALIZED bitNot(toUInt64(toUnixTimestamp64Micro(decided_at))),
    INDEX idx_request_id request_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_resource_id resource_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_decided_at decided_at TYPE minmax GRANULARITY 1
)
ENGINE = ReplacingMergeTree(ver)
PARTITION BY decided_month
ORDER BY (identity_id, decided_month, occurred_at, request_id, request_hash)
TTL toDateTime(decided_at) + INTERVAL $ttl_days DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;

-- only if: SELECT count() = 0 FROM system.columns WHERE database = '$db' AND table = '$audit_table' AND name = 'request_hash'
-- only if: SELECT count() = 1 FROM system.columns WHERE database = '$db' AND table = '${audit_table}_005' AND name = 'request_hash'
EXCHANGE TABLES $db.$audit_table AND $db.${audit_table}_005;

-- only if: SELECT count() = 1 FROM system.tables WHERE database = '$db' AND name = '${audit_table}_005'
-- only if: SELECT count() = 0 FROM system.columns WHERE database = '$db' AND table = '${audit_table}_005' AND name = 'request_hash'
INSERT INTO $db.$audit_table
    (request_id, occurred_at, received_at, decided_at, evaluated_at, identity_id, identity_known, identity_kind,
     identity_status, identity_owner, identity_risk_tier, identity_tags, credential_age_days, on_behalf_of, action,
     resource_id, resource_type, resource_environment, resource_sensitivity, source_ip, decision, reason_codes,
     reasons, matched_rules, obligations, monitor, bundle_version, eval_us, worker_id, source_topic,
     source_partition, source_offset, request_json, identity_json, inserted_at)
SELECT
    request_id, occurred_at, received_at, decided_at, evaluated_at, identity_id, identity_known, identity_kind,
    identity_status, identity_owner, identity_risk_tier, identity_tags, credential_age_days, on_behalf_of, action,
    resource_id, resource_type, resource_environment, resource_sensitivity, source_ip, decision, reason_codes,
    reasons, matched_rules, obligations, monitor, bundle_version, eval_us, worker_id, source_topic,
    source_partition, source_offset, request_json, identity_json, inserted_at
FROM $db.${audit_table}_005;

-- only if: SELECT count() = 1 FROM system.columns WHERE database = '$db' AND table = '$audit_table' AND name = 'request_hash'
DROP TABLE IF EXISTS $db.${audit_table}_005 SYNC;
