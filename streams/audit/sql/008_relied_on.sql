-- Faithful replay and delegation (issue 14): AuditRecord gains `relied_on` (schemas/audit_record.avsc): the
-- approvals a decision relied on and the snapshots of its delegation chain's principals. The audit table gets
-- them as `approvals` and `principals_json` (what `pdx policy impact` replays with, what `pdx report evidence`
-- counts, what `pdx audit verify` hashes). The ingest objects that write them are re-created from the
-- declarations after the migrations (see 004).

-- only if: SELECT count() = 0 FROM system.columns WHERE database = '$db' AND table = '$audit_table' AND name = 'approvals'
ALTER TABLE $db.$audit_table ADD COLUMN IF NOT EXISTS approvals Array(Tuple(approval_id String, approved_by String, granted_at DateTime64(3, 'UTC'), expires_at DateTime64(3, 'UTC'))) AFTER record_hash;

-- only if: SELECT count() = 0 FROM system.columns WHERE database = '$db' AND table = '$audit_table' AND name = 'principals_json'
ALTER TABLE $db.$audit_table ADD COLUMN IF NOT EXISTS principals_json String DEFAULT '[]' CODEC(ZSTD(3)) AFTER approvals;

-- `pdx audit timeline --identity HUMAN --include-delegated` finds the agents' requests by has(on_behalf_of, ...)
-- only if: SELECT count() = 0 FROM system.data_skipping_indices WHERE database = '$db' AND table = '$audit_table' AND name = 'idx_on_behalf_of'
ALTER TABLE $db.$audit_table ADD INDEX IF NOT EXISTS idx_on_behalf_of on_behalf_of TYPE bloom_filter(0.01) GRANULARITY 4;
