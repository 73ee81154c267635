-- Native ingestion of AuditRecords: the sink sends the raw Avro bodies of the pdx.audit messages as one Avro
-- object container (INSERT INTO audit_ingest FORMAT Avro, see streams/audit/avro_container.py), and this
-- materialized view derives every column of the audit table in SQL, so the sink does no per-row Python work.
--
-- * audit_ingest mirrors schemas/audit_record.avsc field by field (ClickHouse matches Avro fields to columns and
--   record fields to Tuple elements by name; a ["null", T] union is Nullable(T), an enum is read as String,
--   timestamp-millis/-micros are DateTime64(3/6)). ENGINE = Null: nothing is stored here, the block only feeds
--   the view below.
-- * The view computes each column exactly as streams/audit/store.py audit_row does (tests/integration/
--   test_audit_native_ingest.py checks they agree row for row). request_json / identity_json are built by
--   hand rather than with toJSONString(tuple) so the result depends on no session setting: the same keys in
--   the same (schema) order and the same timestamp text (2026-06-03T10:00:00.123000+00:00, no fraction when
--   it is zero) as the Python encoder; string escaping differs only for control characters and U+2028/U+2029
--   (e.g. \u001F rather than \u001f), which every JSON parser reads back to the same value. toJSONString
--   escapes '/' as '\/' by default (output_format_json_escape_forward_slashes); replaceAll(json, '\\/', '/')
--   undoes exactly that whatever the setting (an escaped backslash before '/' is '\\\/', still matched right).
-- * Dedup: the sink passes insert_deduplication_token with deduplicate_blocks_in_dependent_materialized_views=1,
--   so a redelivered batch is dropped by the audit table (and the rollups fed from it) as before.
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
        deadline        Nullable(DateTime64(3, 'UTC'))),
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
        updated_at            DateTime64(3, 'UTC'))),
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
    worker_id        String
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
        '"}'), '\\/', '/'))                                                        AS identity_json
FROM (
    SELECT request AS req, identity AS idn, decision AS dec, received_at, decided_at, source_topic,
           source_partition, source_offset, worker_id AS rec_worker_id
    FROM $db.audit_ingest
);
