-- Daily hits per matched policy rule and outcome (one row per element of matched_rules).
-- `policy` is the policy named by the decision reason that cites the rule, else the part of a qualified rule id
-- before the first '/' or '.', else ''.
CREATE TABLE IF NOT EXISTS $db.audit_rule_daily
(
    day         Date,
    rule        LowCardinality(String),
    policy      LowCardinality(String),
    decision    LowCardinality(String),
    hits        AggregateFunction(uniq, String),
    identities  AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (day, rule, decision, policy)
TTL day + INTERVAL $ttl_days DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS $db.audit_rule_daily_mv TO $db.audit_rule_daily AS
SELECT
    toDate(decided_at)                                                       AS day,
    arrayJoin(matched_rules)                                                 AS rule,
    if(arrayExists(r -> tupleElement(r, 'rule') = rule AND tupleElement(r, 'policy') != '', reasons),
       tupleElement(arrayFirst(r -> tupleElement(r, 'rule') = rule AND tupleElement(r, 'policy') != '', reasons), 'policy'),
       extract(rule, '^([^/.]+)[/.]'))                                       AS policy,
    decision,
    uniqState(request_id)                                                    AS hits,
    uniqState(identity_id)                                                   AS identities
FROM $db.$audit_table
GROUP BY day, rule, policy, decision;
