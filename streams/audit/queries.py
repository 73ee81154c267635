"""Investigation queries over the audit table and its rollups.

Every value a user supplies (identity ids, request ids, globs, codes, times, limits) is sent as a ClickHouse
*query parameter* (``{name:Type}`` placeholders bound server-side), never spliced into SQL text, so input such as
``x' OR 1=1 --`` is matched as data. Only the database and table names are part of the SQL text, and those are
checked to be plain identifiers (:func:`streams.audit.store.check_identifier`).

Exactness: the audit table is a ReplacingMergeTree that collapses the records of one request (a redelivery,
even one decided differently) to the first decision (sql/005_dedup_by_request.sql); until a merge, both rows can
exist. Row queries therefore read with ``FINAL`` (or take the earliest decision, ``explain``), and rollups count
``uniq(request_id)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from streams import config
from streams.audit.store import check_identifier
from streams.model.glob import glob_to_re2, has_wildcards

TOP_BY = ("denies", "step_ups", "restricted_access")

TIMELINE_COLUMNS = (
    "decided_at",
    "request_id",
    "action",
    "resource_id",
    "resource_environment",
    "resource_sensitivity",
    "on_behalf_of",
    "decision",
    "reason_codes",
    "reasons",
    "matched_rules",
    "obligations",
    "bundle_version",
    "eval_us",
)

SEARCH_COLUMNS = (
    "decided_at",
    "request_id",
    "identity_id",
    "action",
    "resource_id",
    "resource_environment",
    "decision",
    "reason_codes",
    "matched_rules",
    "bundle_version",
)


def ch_time(value: datetime) -> str:
    """A UTC datetime as the text a ``{p:DateTime64(6, 'UTC')}`` parameter expects."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


T64 = "DateTime64(6, 'UTC')"


#: What a ``decided_at`` range in [{since}, {until}) implies for ``decided_month`` (= toYYYYMM(decided_at)), a
#: sorting-key column. Under FINAL, ClickHouse prunes partitions only by conditions on sorting-key columns, so a
#: FINAL query with a time range adds these, or it reads every month of retention (sql/005_dedup_by_request.sql).
MONTH_FROM = f"decided_month >= toYYYYMM({{since:{T64}}})"
MONTH_TO = f"decided_month <= toYYYYMM({{until:{T64}}})"


#: A search glob (``*``, ``?``, ``[...]``: streams.model.glob, the same language as policies and approvals) as the
#: anchored RE2 regular expression ClickHouse ``match()`` takes.
glob_to_regex = glob_to_re2


def _fix(value: Any) -> Any:
    """ClickHouse returns naive datetimes for UTC columns; make them aware. Recurse into containers."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value
    if isinstance(value, list):
        return [_fix(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_fix(v) for v in value)
    if isinstance(value, dict):
        return {k: _fix(v) for k, v in value.items()}
    return value


def rows_as_dicts(result: Any) -> list[dict[str, Any]]:
    names = result.column_names
    return [{n: _fix(v) for n, v in zip(names, row, strict=True)} for row in result.result_rows]


def jsonable(value: Any) -> Any:
    """JSON-ready copy of a query result value (datetimes as ISO-8601)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN
        return None
    return value


class Audit:
    """Queries against one database (default config.CLICKHOUSE_DATABASE)."""

    def __init__(self, client: Any, database: str = config.CLICKHOUSE_DATABASE, table: str = config.AUDIT_TABLE):
        self.client = client
        self.db = check_identifier(database, "database name")
        self.table = f"{self.db}.{check_identifier(table, 'table name')}"
        self.hourly = f"{self.db}.audit_identity_hourly"
        self.rules = f"{self.db}.audit_rule_daily"

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return rows_as_dicts(self.client.query(sql, parameters=params or {}))

    # ---- incident response ---------------------------------------------------------------------------------

    def timeline(
        self, identity_id: str, since: datetime, until: datetime, *, limit: int = 1000,
        include_delegated: bool = False,
    ) -> list[dict[str, Any]]:
        """What ``identity_id`` asked, what was decided and why, oldest first. ``include_delegated``: also what
        others (agents) asked on its behalf, i.e. with ``identity_id`` in their delegation chain; each row's
        ``identity_id`` says who asked."""
        cols = ", ".join(("identity_id", *TIMELINE_COLUMNS) if include_delegated else TIMELINE_COLUMNS)
        who = ("(identity_id = {identity:String} OR has(on_behalf_of, {identity:String}))" if include_delegated
               else "identity_id = {identity:String}")
        return self.query(
            f"SELECT {cols} FROM {self.table} FINAL "
            f"WHERE {who} "
            f"AND decided_at >= {{since:{T64}}} AND decided_at < {{until:{T64}}} "
            f"AND {MONTH_FROM} AND {MONTH_TO} "
            "ORDER BY decided_at, request_id LIMIT {limit:UInt32}",
            {"identity": identity_id, "since": ch_time(since), "until": ch_time(until), "limit": int(limit)},
        )

    def explain(self, request_id: str) -> dict[str, Any] | None:
        """The whole record of one decision, with the request and identity snapshot parsed; None if unknown.

        A redelivered request has been decided more than once: this is the first decision, the row the table keeps
        (the one ``FINAL`` reads), whether or not the duplicates are merged away yet.
        """
        rows = self.query(
            f"SELECT * EXCEPT (inserted_at) FROM {self.table} WHERE request_id = {{rid:String}} "
            "ORDER BY decided_at, inserted_at LIMIT 1",
            {"rid": request_id},
        )
        if not rows:
            return None
        row = rows[0]
        row["request"] = json.loads(row.pop("request_json") or "{}")
        raw_identity = row.pop("identity_json")
        row["identity"] = json.loads(raw_identity) if raw_identity else None
        row["principals"] = json.loads(row.pop("principals_json", None) or "[]")
        row["timings"] = {
            "eval_us": row["eval_us"],
            "queue_ms": round((row["received_at"] - row["occurred_at"]).total_seconds() * 1000, 3),
            "worker_ms": round((row["decided_at"] - row["received_at"]).total_seconds() * 1000, 3),
            "total_ms": round((row["decided_at"] - row["occurred_at"]).total_seconds() * 1000, 3),
        }
        return row

    def search(self, filters: SearchFilters, *, limit: int = 200) -> list[dict[str, Any]]:
        where, params = filters.where()
        params["limit"] = int(limit)
        cols = ", ".join(SEARCH_COLUMNS)
        return self.query(
            f"SELECT {cols} FROM {self.table} FINAL WHERE {where} "
            "ORDER BY decided_at DESC, request_id LIMIT {limit:UInt32}",
            params,
        )

    def top(self, by: str, since: datetime, until: datetime, *, limit: int = 20) -> list[dict[str, Any]]:
        """Identities with the most denies / step-ups / restricted-resource requests (hourly rollup)."""
        if by not in TOP_BY:
            raise ValueError(f"top --by must be one of {', '.join(TOP_BY)}, not {by!r}")
        return self.query(
            f"""SELECT identity_id, anyLast(identity_kind) AS kind, anyLast(identity_owner) AS owner,
                       uniqMerge({by}) AS {by}, uniqMerge(requests) AS requests, round({by} / requests, 4) AS share
                FROM {self.hourly}
                WHERE hour >= toStartOfHour({{since:{T64}}}) AND hour < {{until:{T64}}}
                GROUP BY identity_id HAVING {by} > 0
                ORDER BY {by} DESC, identity_id LIMIT {{limit:UInt32}}""",
            {"since": ch_time(since), "until": ch_time(until), "limit": int(limit)},
        )

    # ---- analyst aggregates (report, dashboard) -------------------------------------------------------------

    def decisions_over_time(self, since: datetime, until: datetime, *, bucket_s: int = 3600) -> list[dict[str, Any]]:
        return self.query(
            f"""SELECT toStartOfInterval(hour, toIntervalSecond({{bucket:UInt32}})) AS bucket,
                       uniqMerge(allows) AS allow, uniqMerge(denies) AS deny, uniqMerge(step_ups) AS step_up
                FROM {self.hourly}
                WHERE hour >= toStartOfHour({{since:{T64}}}) AND hour < {{until:{T64}}}
                GROUP BY bucket ORDER BY bucket""",
            {"since": ch_time(since), "until": ch_time(until), "bucket": max(int(bucket_s), 3600)},
        )

    def denies_by_reason(self, since: datetime, until: datetime, *, limit: int = 15) -> list[dict[str, Any]]:
        return self.query(
            f"""SELECT code, count() AS denies, uniqExact(identity_id) AS identities
                FROM (SELECT request_id, identity_id, reason_codes FROM {self.table} FINAL
                      WHERE decision = 'deny' AND decided_at >= {{since:{T64}}} AND decided_at < {{until:{T64}}}
                            AND {MONTH_FROM} AND {MONTH_TO})
                ARRAY JOIN reason_codes AS code
                GROUP BY code ORDER BY denies DESC, code LIMIT {{limit:UInt32}}""",
            {"since": ch_time(since), "until": ch_time(until), "limit": int(limit)},
        )

    def rule_hits(self, since: datetime, until: datetime, *, limit: int = 20) -> list[dict[str, Any]]:
        return self.query(
            f"""SELECT rule, anyLast(policy) AS policy,
                       uniqMergeIf(hits, decision = 'allow') AS allow,
                       uniqMergeIf(hits, decision = 'deny') AS deny,
                       uniqMergeIf(hits, decision = 'step_up') AS step_up,
                       allow + deny + step_up AS total
                FROM {self.rules}
                WHERE day >= toDate({{since:{T64}}}) AND day <= toDate({{until:{T64}}})
                GROUP BY rule ORDER BY total DESC, rule LIMIT {{limit:UInt32}}""",
            {"since": ch_time(since), "until": ch_time(until), "limit": int(limit)},
        )

    def totals(self, since: datetime, until: datetime) -> dict[str, Any]:
        rows = self.query(
            f"""SELECT uniqMerge(requests) AS requests, uniqMerge(allows) AS allow, uniqMerge(denies) AS deny,
                       uniqMerge(step_ups) AS step_up, uniq(identity_id) AS identities
                FROM {self.hourly}
                WHERE hour >= toStartOfHour({{since:{T64}}}) AND hour < {{until:{T64}}}""",
            {"since": ch_time(since), "until": ch_time(until)},
        )
        return rows[0] if rows else {}


@dataclass
class SearchFilters:
    """Filters of ``pdx audit search``; all optional, combined with AND."""

    since: datetime | None = None
    until: datetime | None = None
    decision: str | None = None
    reason_code: str | None = None
    action: str | None = None  # glob
    resource: str | None = None  # glob on resource id
    environment: str | None = None
    identity: str | None = None
    policy: str | None = None
    rule: str | None = None

    def where(self) -> tuple[str, dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if self.since is not None:
            clauses += [f"decided_at >= {{since:{T64}}}", MONTH_FROM]
            params["since"] = ch_time(self.since)
        if self.until is not None:
            clauses += [f"decided_at < {{until:{T64}}}", MONTH_TO]
            params["until"] = ch_time(self.until)
        if self.decision:
            clauses.append("decision = {decision:String}")
            params["decision"] = self.decision
        if self.reason_code:
            clauses.append("has(reason_codes, {reason_code:String})")
            params["reason_code"] = self.reason_code
        if self.action:
            clauses.append("match(action, {action_re:String})")
            params["action_re"] = glob_to_regex(self.action)
        if self.resource:
            if has_wildcards(self.resource):
                clauses.append("match(resource_id, {resource_re:String})")
                params["resource_re"] = glob_to_regex(self.resource)
            else:
                clauses.append("resource_id = {resource:String}")
                params["resource"] = self.resource
        if self.environment:
            clauses.append("resource_environment = {environment:String}")
            params["environment"] = self.environment
        if self.identity:
            clauses.append("identity_id = {identity:String}")
            params["identity"] = self.identity
        if self.policy:
            clauses.append(
                "(arrayExists(r -> tupleElement(r, 'policy') = {policy:String}, reasons)"
                " OR arrayExists(m -> startsWith(m, concat({policy:String}, '/'))"
                " OR startsWith(m, concat({policy:String}, '.')), matched_rules))"
            )
            params["policy"] = self.policy
        if self.rule:
            clauses.append(
                "(has(matched_rules, {rule:String})"
                " OR arrayExists(r -> tupleElement(r, 'rule') = {rule:String}, reasons))"
            )
            params["rule"] = self.rule
        return (" AND ".join(clauses) or "1"), params
