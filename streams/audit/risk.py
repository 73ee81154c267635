"""Risk score per identity, computed in ClickHouse from the hourly rollup (``audit_identity_hourly``).

The score is 0-100, a weighted sum of six components, each scaled to 0..1 over the chosen window:

=====================  ======  ============================================================================
component              weight  definition
=====================  ======  ============================================================================
deny_rate              30      denied requests / requests
step_up_rate           15      step-up decisions / requests
restricted_rate        20      (requests on ``restricted`` + 0.5 x on ``confidential``) / requests, capped at 1
off_hours_rate         10      requests decided on Sat/Sun or outside 07:00-19:00 UTC / requests
stale_credentials      15      age of the oldest active credential at the latest decision: 0 at <= 90 days,
                               rising linearly to 1 at >= 365 days; 0 when the identity has no active credential
resource_breadth       10      log2(1 + distinct resources) / log2(1 + 100), capped at 1 (100+ resources = 1)
=====================  ======  ============================================================================

``score = round(sum(weight x component), 1)``. Weights and thresholds are the constants below; they are passed
to ClickHouse as query parameters, so the SQL is the single place the formula is evaluated. Counts are
``uniq(request_id)``, so redelivered audit records do not inflate them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from streams.audit.queries import T64, Audit, ch_time
from streams.model.approval_request import DEFAULT_TTL

#: how long an approval request stays grantable (streams/model/approval_request.py)
APPROVAL_TTL_S = DEFAULT_TTL.total_seconds()

WEIGHTS: dict[str, float] = {
    "deny_rate": 30.0,
    "step_up_rate": 15.0,
    "restricted_rate": 20.0,
    "off_hours_rate": 10.0,
    "stale_credentials": 15.0,
    "resource_breadth": 10.0,
}
STALE_AFTER_DAYS = 90.0
STALE_MAX_DAYS = 365.0
BREADTH_FULL_AT = 100
CONFIDENTIAL_FACTOR = 0.5

RISK_SQL = """
SELECT
    identity_id, kind, owner, requests, allows, denies, step_ups, restricted, confidential, off_hours,
    resources, credential_age_days, last_seen,
    denies / requests                                                                 AS deny_rate,
    step_ups / requests                                                               AS step_up_rate,
    least((restricted + {conf_factor:Float64} * confidential) / requests, 1)          AS restricted_rate,
    off_hours / requests                                                              AS off_hours_rate,
    if(isNull(credential_age_days), 0,
       least(greatest(assumeNotNull(credential_age_days) - {stale_after:Float64}, 0)
             / ({stale_max:Float64} - {stale_after:Float64}), 1))                    AS stale_credentials,
    least(log2(1 + resources) / log2(1 + {breadth_full:Float64}), 1)                  AS resource_breadth,
    round({w_deny:Float64} * deny_rate + {w_step:Float64} * step_up_rate
          + {w_restricted:Float64} * restricted_rate + {w_off:Float64} * off_hours_rate
          + {w_stale:Float64} * stale_credentials + {w_breadth:Float64} * resource_breadth, 1) AS score
FROM
(
    SELECT
        identity_id,
        anyLast(identity_kind)            AS kind,
        anyLast(identity_owner)           AS owner,
        uniqMerge(requests)               AS requests,
        uniqMerge(allows)                 AS allows,
        uniqMerge(denies)                 AS denies,
        uniqMerge(step_ups)               AS step_ups,
        uniqMerge(restricted_access)      AS restricted,
        uniqMerge(confidential_access)    AS confidential,
        uniqMerge(off_hours)              AS off_hours,
        uniqMerge(distinct_resources)     AS resources,
        argMaxMerge(h.credential_age_days) AS credential_age_days,
        max(last_seen)                    AS last_seen
    FROM {hourly} AS h
    WHERE hour >= toStartOfHour({since:T64}) AND hour < {until:T64}
    GROUP BY identity_id
    HAVING requests > 0
)
ORDER BY score DESC, identity_id
LIMIT {limit:UInt32}
"""


def risk_params(since: datetime, until: datetime, limit: int) -> dict[str, Any]:
    return {
        "since": ch_time(since),
        "until": ch_time(until),
        "limit": int(limit),
        "conf_factor": CONFIDENTIAL_FACTOR,
        "stale_after": STALE_AFTER_DAYS,
        "stale_max": STALE_MAX_DAYS,
        "breadth_full": float(BREADTH_FULL_AT),
        "w_deny": WEIGHTS["deny_rate"],
        "w_step": WEIGHTS["step_up_rate"],
        "w_restricted": WEIGHTS["restricted_rate"],
        "w_off": WEIGHTS["off_hours_rate"],
        "w_stale": WEIGHTS["stale_credentials"],
        "w_breadth": WEIGHTS["resource_breadth"],
    }


def risk_sql(audit: Audit) -> str:
    return RISK_SQL.replace("{hourly}", audit.hourly).replace(":T64}", f":{T64}}}")


def risk_scores(audit: Audit, since: datetime, until: datetime, *, limit: int = 50) -> list[dict[str, Any]]:
    """Identities ordered by risk score (highest first) with every component, for the window [since, until)."""
    return audit.query(risk_sql(audit), risk_params(since, until, limit))


def stale_credentials(audit: Audit, since: datetime, until: datetime, *, limit: int = 20) -> list[dict[str, Any]]:
    """Identities seen in the window whose oldest active credential is older than STALE_AFTER_DAYS."""
    return audit.query(
        f"""SELECT identity_id, anyLast(identity_kind) AS kind, anyLast(identity_owner) AS owner,
                   argMaxMerge(credential_age_days) AS credential_age_days, max(last_seen) AS last_seen
            FROM {audit.hourly}
            WHERE hour >= toStartOfHour({{since:{T64}}}) AND hour < {{until:{T64}}}
            GROUP BY identity_id
            HAVING credential_age_days > {{stale_after:Float64}}
            ORDER BY credential_age_days DESC, identity_id LIMIT {{limit:UInt32}}""",
        {"since": ch_time(since), "until": ch_time(until), "stale_after": STALE_AFTER_DAYS, "limit": int(limit)},
    )


FORMULA_TEXT = (
    "score = 30·deny_rate + 15·step_up_rate + 20·restricted_rate + 10·off_hours_rate "
    "+ 15·stale_credentials + 10·resource_breadth (each component 0..1; see streams/audit/risk.py)"
)


def approval_requests_by_identity(
    audit: Audit, since: datetime, until: datetime, *, limit: int = 20
) -> list[dict[str, Any]]:
    """Per identity, the approval requests its step_ups opened in the window: how many, how many were approved
    (a later decision relied on the approval granted for it), how many are still awaiting a second person (no
    approval yet and opened within the request's time to live), and the time to approve (median, max, seconds).
    A denied request leaves no decision, so it counts as awaiting until it expires; `pdx approvals pending`
    has the live state."""
    t = audit.table
    return audit.query(
        f"""WITH opened AS (
                SELECT identity_id, obligations['approval_request_id'] AS aid, min(decided_at) AS opened_at
                FROM {t}
                WHERE decided_at >= {{since:{T64}}} AND decided_at < {{until:{T64}}}
                  AND obligations['approval_request_id'] != ''
                GROUP BY identity_id, aid),
            granted AS (
                SELECT a.approval_id AS aid, min(a.granted_at) AS granted_at
                FROM {t} ARRAY JOIN approvals AS a
                WHERE decided_at >= {{since:{T64}}} AND startsWith(a.approval_id, 'apq-')
                GROUP BY aid)
            SELECT o.identity_id AS identity_id, count() AS opened,
                   countIf(g.aid != '') AS approved,
                   countIf(g.aid = '' AND o.opened_at > now64(3) - INTERVAL {{ttl_s:UInt32}} SECOND) AS awaiting,
                   quantileIf(0.5)(dateDiff('millisecond', o.opened_at, g.granted_at) / 1000, g.aid != '')
                       AS median_time_to_approve_s,
                   maxIf(dateDiff('millisecond', o.opened_at, g.granted_at) / 1000, g.aid != '')
                       AS max_time_to_approve_s
            FROM opened AS o LEFT JOIN granted AS g ON o.aid = g.aid
            GROUP BY identity_id ORDER BY awaiting DESC, opened DESC, identity_id LIMIT {{limit:UInt32}}""",
        {"since": ch_time(since), "until": ch_time(until), "limit": int(limit),
         "ttl_s": int(APPROVAL_TTL_S)},
    )
