-- Faithful replay and delegation (issue 14): AuditRecord gains `relied_on` (schemas/audit_record.avsc): the
-- approvals a decision relied on and the snapshots of its delegation chain's principals. The audit table gets
-- them as `approvals` and `principals_json` (what `pdx policy impact` replays with, what `pdx report evidence`
-- counts, what `pdx audit verify` hashes). As in 007, audit_ingest's tuples must list every leaf of the Avro
-- record, so audit_ingest is created again with the field, and the two views that read it: audit_ingest_mv as in
-- 007 plus the two columns, audit_chain_links_mv exactly as in 007. An insert from a running sink between the
-- drops and the creates fails and is retried.

-- only if: SELECT count() = 0 FROM system.columns WHERE database = '$db' AND table = '$audit_table' AND name = 'approvals'
ALTER TABLE $db.$audit_table ADD COLUMN IF NOT EXISTS approvals Array(Tuple(approval_id String, approved_by String, granted_at DateTime64(3, 'UTC'), expires_at DateTime64(3, 'UTC'))) AFTER record_hash;

-- only if: SELECT count() = 0 FROM system.columns WHERE database = '$db' AND table = '$audit_table' AND name = 'principals_json'
ALTER TABLE $db.$audit_table ADD COLUMN IF NOT EXISTS principals_json String DEFAULT '[]' CODEC(ZSTD(3)) AFTER approvals;

-- `pdx audit timeline --identity HUMAN --include-delegated` finds the agents' requests by has(on_behalf_of, ...)
-- only if: SELECT count() = 0 FROM system.data_skipping_indices WHERE database = '$db' AND table = '$audit_table' AND name = 'idx_on_behalf_of'
ALTER TABLE $db.$audit_table ADD INDEX IF NOT EXISTS idx_on_behalf_of on_behalf_of TYPE bloom_filter(0.01) GRANULARITY 4;

-- only if: SELECT count() = 0 FROM system.columns WHERE database = '$db' AND table = 'audit_ingest' AND name = 'relied_on'
DROP TABLE IF EXISTS $db.audit_ingest_mv;

-- only if: SELECT count() = 0 FROM system.columns WHERE database = '$db' AND table = 'audit_ingest' AND name = 'relied_on'
DROP TABLE IF EXISTS $db.audit_chain_links_mv;

-- only if: SELECT count() = 0 FROM system.columns WHERE database = '$db' AND table = 'audit_ingest' AND name = 'relied_on'
DROP TABLE IF EXISTS $db.audit_ingest;

CREATE TABLE IF NOT EXISTS $db.audit_ingest
(
    request Tuple(
        request_id      String,
        occurred_at     DateTime64(3, 'UTC'),
        identity_id     String,
        on_behalf_of    Array(String),
        action          String,
        resource        Tuple(
            id          String,
            type        String,
            environment Nullable(String),
            sensitivity Nullable(String),
            repository  Nullable(String),
            owner       Nullable(String),
            attributes  Map(String, String)),
        context         Tuple(
            source_ip       Nullable(String),
            token_issued_at Nullable(DateTime64(3, 'UTC')),
            requested_ttl_s Nullable(Int64),
            approval_id     Nullable(String),
            change_ticket   Nullable(String),
            tool            Nullable(String),
            attributes      Map(String, String)),
        reply_to        String,
        reply_partition Int32,
        deadline        Nullable(DateTime64(3, 'UTC')),
        token           Nullable(String)),
    identity Nullable(Tuple(
        id                    String,
        kind                  String,
        owner                 String,
        status                String,
        environments          Array(String),
        scopes                Array(String),
        tags                  Array(String),
        approved_repositories Array(String),
        risk_tier             String,
        credentials           Array(Tuple(
            id         String,
            type       String,
            created_at DateTime64(3, 'UTC'),
            rotated_at Nullable(DateTime64(3, 'UTC')),
            expires_at Nullable(DateTime64(3, 'UTC')),
            status     String)),
        attributes            Map(String, String),
        updated_at            DateTime64(3, 'UTC'),
        workload_subjects     Array(String))),
    decision Tuple(
        request_id     String,
        decision       String,
        reasons        Array(Tuple(code String, message String, policy Nullable(String), rule Nullable(String))),
        matched_rules  Array(String),
        obligations    Map(String, String),
        monitor        Array(Tuple(policy String, rule String, effect String, reason_code String)),
        bundle_version String,
        evaluated_at   DateTime64(6, 'UTC'),
        eval_us        Int64,
        worker_id      String),
    received_at      DateTime64(6, 'UTC'),
    decided_at       DateTime64(6, 'UTC'),
    source_topic     String,
    source_partition Int32,
    source_offset    Int64,
    worker_id        String,
    chain            Nullable(Tuple(
        chain_id       String,
        seq            Int64,
        prev           FixedString(32),
        request_digest FixedString(32),
        body_digest    FixedString(32),
        hash           FixedString(32))),
    relied_on        Nullable(Tuple(
        approvals  Array(Tuple(approval_id String, approved_by String, granted_at DateTime64(3, 'UTC'), expires_at DateTime64(3, 'UTC'))),
        principals Array(Tuple(
        id                    String,
        kind                  String,
        owner                 String,
        status                String,
        environments          Array(String),
        scopes                Array(String),
        tags                  Array(String),
        approved_repositories Array(String),
        risk_tier             String,
        credentials           Array(Tuple(
            id         String,
            type       String,
            created_at DateTime64(3, 'UTC'),
            rotated_at Nullable(DateTime64(3, 'UTC')),
            expires_at Nullable(DateTime64(3, 'UTC')),
            status     String)),
        attributes            Map(String, String),
        updated_at            DateTime64(3, 'UTC'),
        workload_subjects     Array(String)))))
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.audit_ingest_mv TO $db.$audit_table AS
WITH
    assumeNotNull(idn) AS ident,
    arrayMap(c -> ifNull(c.rotated_at, c.created_at), arrayFilter(c -> c.status = 'active', ident.credentials))
        AS active_since,
    req.resource AS res,
    req.context AS ctx
SELECT
    req.request_id                                                              AS request_id,
    req.occurred_at                                                             AS occurred_at,
    received_at,
    decided_at,
    dec.evaluated_at                                                           AS evaluated_at,
    req.identity_id                                                             AS identity_id,
    idn IS NOT NULL                                                            AS identity_known,
    ident.kind                                                                      AS identity_kind,
    ident.status                                                                    AS identity_status,
    ident.owner                                                                     AS identity_owner,
    ident.risk_tier                                                                 AS identity_risk_tier,
    ident.tags                                                                      AS identity_tags,
    -- oldest active credential (rotated_at, else created_at), in days at decided_at, never negative; the
    -- two divisions in the same order as Python's timedelta.total_seconds() / 86400.0, so equal to the bit
    if(idn IS NULL OR empty(active_since), NULL,
       greatest((toUnixTimestamp64Micro(decided_at) - toUnixTimestamp64Milli(arrayMin(active_since)) * 1000)
                / 1000000 / 86400, 0.))                                             AS credential_age_days,
    req.on_behalf_of                                                            AS on_behalf_of,
    req.action                                                                  AS action,
    res.id                                                                          AS resource_id,
    res.type                                                                        AS resource_type,
    ifNull(res.environment, '')                                                     AS resource_environment,
    ifNull(res.sensitivity, '')                                                     AS resource_sensitivity,
    ifNull(ctx.source_ip, '')                                                       AS source_ip,
    dec.decision                                                               AS decision,
    arrayMap(r -> r.code, dec.reasons)                                         AS reason_codes,
    arrayMap(r -> (r.code, r.message, ifNull(r.policy, ''), ifNull(r.rule, '')), dec.reasons) AS reasons,
    dec.matched_rules                                                          AS matched_rules,
    dec.obligations                                                            AS obligations,
    arrayMap(m -> (m.policy, m.rule, m.effect, m.reason_code), dec.monitor)    AS monitor,
    dec.bundle_version                                                         AS bundle_version,
    toUInt64(greatest(dec.eval_us, 0))                                         AS eval_us,
    if(rec_worker_id != '', rec_worker_id, dec.worker_id)                              AS worker_id,
    source_topic,
    source_partition,
    source_offset,
    -- the request as JSON, keys in schema order (what dumps(request) writes)
    replaceAll(concat(
        '{"request_id":', toJSONString(req.request_id),
        ',"occurred_at":"',
        replaceOne(formatDateTime(toDateTime64(req.occurred_at, 6, 'UTC'), '%Y-%m-%dT%H:%i:%S.%f+00:00'), '.000000+', '+'),
        '","identity_id":', toJSONString(req.identity_id),
        ',"on_behalf_of":', toJSONString(req.on_behalf_of),
        ',"action":', toJSONString(req.action),
        ',"resource":{"id":', toJSONString(res.id),
        ',"type":', toJSONString(res.type),
        ',"environment":', if(isNull(res.environment), 'null', toJSONString(assumeNotNull(res.environment))),
        ',"sensitivity":', if(isNull(res.sensitivity), 'null', toJSONString(assumeNotNull(res.sensitivity))),
        ',"repository":', if(isNull(res.repository), 'null', toJSONString(assumeNotNull(res.repository))),
        ',"owner":', if(isNull(res.owner), 'null', toJSONString(assumeNotNull(res.owner))),
        ',"attributes":', toJSONString(res.attributes),
        '},"context":{"source_ip":', if(isNull(ctx.source_ip), 'null', toJSONString(assumeNotNull(ctx.source_ip))),
        ',"token_issued_at":',
        if(isNull(ctx.token_issued_at), 'null', concat('"',
            replaceOne(formatDateTime(toDateTime64(assumeNotNull(ctx.token_issued_at), 6, 'UTC'), '%Y-%m-%dT%H:%i:%S.%f+00:00'), '.000000+', '+'),
            '"')),
        ',"requested_ttl_s":', if(isNull(ctx.requested_ttl_s), 'null', toString(assumeNotNull(ctx.requested_ttl_s))),
        ',"approval_id":', if(isNull(ctx.approval_id), 'null', toJSONString(assumeNotNull(ctx.approval_id))),
        ',"change_ticket":', if(isNull(ctx.change_ticket), 'null', toJSONString(assumeNotNull(ctx.change_ticket))),
        ',"tool":', if(isNull(ctx.tool), 'null', toJSONString(assumeNotNull(ctx.tool))),
        ',"attributes":', toJSONString(ctx.attributes),
        '},"reply_to":', toJSONString(req.reply_to),
        ',"reply_partition":', toString(req.reply_partition),
        ',"deadline":',
        if(isNull(req.deadline), 'null', concat('"',
            replaceOne(formatDateTime(toDateTime64(assumeNotNull(req.deadline), 6, 'UTC'), '%Y-%m-%dT%H:%i:%S.%f+00:00'), '.000000+', '+'),
            '"')),
        ',"token":', if(isNull(req.token), 'null', toJSONString(assumeNotNull(req.token))),
        '}'), '\\/', '/')                                                          AS request_json,
    -- the identity snapshot as JSON (what dumps(identity) writes), NULL for an unknown identity
    if(idn IS NULL, NULL, replaceAll(concat(
        '{"id":', toJSONString(ident.id),
        ',"kind":', toJSONString(ident.kind),
        ',"owner":', toJSONString(ident.owner),
        ',"status":', toJSONString(ident.status),
        ',"environments":', toJSONString(ident.environments),
        ',"scopes":', toJSONString(ident.scopes),
        ',"tags":', toJSONString(ident.tags),
        ',"approved_repositories":', toJSONString(ident.approved_repositories),
        ',"risk_tier":', toJSONString(ident.risk_tier),
        ',"credentials":[',
        arrayStringConcat(arrayMap(c -> concat(
            '{"id":', toJSONString(c.id),
            ',"type":', toJSONString(c.type),
            ',"created_at":"',
            replaceOne(formatDateTime(toDateTime64(c.created_at, 6, 'UTC'), '%Y-%m-%dT%H:%i:%S.%f+00:00'), '.000000+', '+'),
            '","rotated_at":',
            if(isNull(c.rotated_at), 'null', concat('"',
                replaceOne(formatDateTime(toDateTime64(assumeNotNull(c.rotated_at), 6, 'UTC'), '%Y-%m-%dT%H:%i:%S.%f+00:00'), '.000000+', '+'),
                '"')),
            ',"expires_at":',
            if(isNull(c.expires_at), 'null', concat('"',
                replaceOne(formatDateTime(toDateTime64(assumeNotNull(c.expires_at), 6, 'UTC'), '%Y-%m-%dT%H:%i:%S.%f+00:00'), '.000000+', '+'),
                '"')),
            ',"status":', toJSONString(c.status),
            '}'), ident.credentials), ','),
        '],"attributes":', toJSONString(ident.attributes),
        ',"updated_at":"',
        replaceOne(formatDateTime(toDateTime64(ident.updated_at, 6, 'UTC'), '%Y-%m-%dT%H:%i:%S.%f+00:00'), '.000000+', '+'),
        '","workload_subjects":', toJSONString(ident.workload_subjects),
        '}'), '\\/', '/'))                                                        AS identity_json,
    -- the record's hash-chain hash (hex), '' for a record without a chain link
    if(chn IS NULL, '', lower(hex(assumeNotNull(chn).hash)))                   AS record_hash,
    -- what the decision relied on beyond the identity snapshot (empty / '[]' when relied_on is null)
    if(rel IS NULL, [], arrayMap(a -> (a.approval_id, a.approved_by, a.granted_at, a.expires_at),
                                 assumeNotNull(rel).approvals))                                  AS approvals,
    if(rel IS NULL, '[]', concat('[', arrayStringConcat(arrayMap(p -> replaceAll(concat(
        '{"id":', toJSONString(p.id),
        ',"kind":', toJSONString(p.kind),
        ',"owner":', toJSONString(p.owner),
        ',"status":', toJSONString(p.status),
        ',"environments":', toJSONString(p.environments),
        ',"scopes":', toJSONString(p.scopes),
        ',"tags":', toJSONString(p.tags),
        ',"approved_repositories":', toJSONString(p.approved_repositories),
        ',"risk_tier":', toJSONString(p.risk_tier),
        ',"credentials":[',
        arrayStringConcat(arrayMap(c -> concat(
            '{"id":', toJSONString(c.id),
            ',"type":', toJSONString(c.type),
            ',"created_at":"',
            replaceOne(formatDateTime(toDateTime64(c.created_at, 6, 'UTC'), '%Y-%m-%dT%H:%i:%S.%f+00:00'), '.000000+', '+'),
            '","rotated_at":',
            if(isNull(c.rotated_at), 'null', concat('"',
                replaceOne(formatDateTime(toDateTime64(assumeNotNull(c.rotated_at), 6, 'UTC'), '%Y-%m-%dT%H:%i:%S.%f+00:00'), '.000000+', '+'),
                '"')),
            ',"expires_at":',
            if(isNull(c.expires_at), 'null', concat('"',
                replaceOne(formatDateTime(toDateTime64(assumeNotNull(c.expires_at), 6, 'UTC'), '%Y-%m-%dT%H:%i:%S.%f+00:00'), '.000000+', '+'),
                '"')),
            ',"status":', toJSONString(c.status),
            '}'), p.credentials), ','),
        '],"attributes":', toJSONString(p.attributes),
        ',"updated_at":"',
        replaceOne(formatDateTime(toDateTime64(p.updated_at, 6, 'UTC'), '%Y-%m-%dT%H:%i:%S.%f+00:00'), '.000000+', '+'),
        '","workload_subjects":', toJSONString(p.workload_subjects),
        '}'), '\\/', '/'), assumeNotNull(rel).principals), ','), ']'))
                                                                                AS principals_json
FROM (
    SELECT request AS req, identity AS idn, decision AS dec, received_at, decided_at, source_topic,
           source_partition, source_offset, worker_id AS rec_worker_id, chain AS chn,
           relied_on AS rel
    FROM $db.audit_ingest
);

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.audit_chain_links_mv TO $db.audit_chain_links AS
SELECT
    link.chain_id                                          AS chain_id,
    link.seq                                               AS seq,
    lower(hex(link.prev))                                  AS prev,
    lower(hex(link.request_digest))                        AS request_digest,
    lower(hex(link.body_digest))                           AS body_digest,
    lower(hex(link.hash))                                  AS record_hash,
    request.request_id                                     AS request_id,
    request.identity_id                                    AS identity_id,
    decided_at,
    if(worker_id != '', worker_id, decision.worker_id)     AS worker_id,
    source_topic,
    source_partition,
    source_offset
FROM (SELECT *, assumeNotNull(chain) AS link FROM $db.audit_ingest WHERE chain IS NOT NULL);
