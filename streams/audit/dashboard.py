"""The Grafana dashboard for the audit trail, generated from the same SQL the CLI and report use.

``python -m streams.audit.dashboard`` rewrites ``streams/audit/grafana/dashboards/pdx-audit.json``; a unit test
checks the committed file is current. Panels query the grafana-clickhouse-datasource (uid ``pdx-clickhouse``,
provisioned by ``grafana/provisioning/datasources/clickhouse.yaml``) and use the plugin's macros
``$__timeFilter(col)``, ``$__timeInterval(col)``, ``$__fromTime``, ``$__toTime`` and the dashboard variable
``${database}`` (default ``pdx``).
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from streams import config
from streams.audit.risk import RISK_SQL, risk_params

GRAFANA_DIR = Path(__file__).resolve().parent / "grafana"
DASHBOARD_FILE = GRAFANA_DIR / "dashboards" / "pdx-audit.json"
DATASOURCE_UID = "pdx-clickhouse"
DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": DATASOURCE_UID}

DB = "${database}"
AUDIT = f"{DB}.{config.AUDIT_TABLE}"
HOURLY = f"{DB}.audit_identity_hourly"
RULES = f"{DB}.audit_rule_daily"


def _risk_sql() -> str:
    """RISK_SQL with the formula constants inlined and the window bound to the dashboard time range."""
    sql = RISK_SQL.replace("{hourly}", HOURLY)
    sql = sql.replace("{since:T64}", "$__fromTime").replace("{until:T64}", "$__toTime").replace("{limit:UInt32}", "25")
    params = risk_params(datetime(2000, 1, 1), datetime(2000, 1, 2), 25)
    for name, value in params.items():
        sql = sql.replace(f"{{{name}:Float64}}", repr(float(value)) if isinstance(value, float) else str(value))
    assert "{" not in sql.replace("${database}", ""), sql
    return "\n".join(line for line in sql.strip().splitlines() if line.strip())


PANELS: list[dict[str, Any]] = [
    {
        "title": "Decisions over time by outcome",
        "type": "timeseries",
        "gridPos": {"h": 9, "w": 16, "x": 0, "y": 0},
        "format": 0,  # time series
        "sql": f"""SELECT $__timeInterval(hour) AS time,
       uniqMerge(allows) AS allow, uniqMerge(denies) AS deny, uniqMerge(step_ups) AS step_up
FROM {HOURLY}
WHERE $__timeFilter(hour)
GROUP BY time ORDER BY time""",
    },
    {
        "title": "Deny rate",
        "type": "stat",
        "gridPos": {"h": 9, "w": 8, "x": 16, "y": 0},
        "format": 1,
        "sql": f"""SELECT if(uniqMerge(requests) = 0, 0, uniqMerge(denies) / uniqMerge(requests)) AS deny_rate
FROM {HOURLY}
WHERE $__timeFilter(hour)""",
        "unit": "percentunit",
    },
    {
        "title": "Top risky identities (score 0-100, see streams/audit/risk.py)",
        "type": "table",
        "gridPos": {"h": 10, "w": 24, "x": 0, "y": 9},
        "format": 1,
        "sql": _risk_sql(),
    },
    {
        "title": "Denies by reason",
        "type": "barchart",
        "gridPos": {"h": 9, "w": 12, "x": 0, "y": 19},
        "format": 1,
        "sql": f"""SELECT code, count() AS denies
FROM (SELECT reason_codes FROM {AUDIT} FINAL WHERE decision = 'deny' AND $__timeFilter(decided_at))
ARRAY JOIN reason_codes AS code
GROUP BY code ORDER BY denies DESC LIMIT 15""",
    },
    {
        "title": "Rule hits by outcome",
        "type": "barchart",
        "gridPos": {"h": 9, "w": 12, "x": 12, "y": 19},
        "format": 1,
        "sql": f"""SELECT rule,
       uniqMergeIf(hits, decision = 'allow') AS allow,
       uniqMergeIf(hits, decision = 'deny') AS deny,
       uniqMergeIf(hits, decision = 'step_up') AS step_up
FROM {RULES}
WHERE day >= toDate($__fromTime) AND day <= toDate($__toTime)
GROUP BY rule ORDER BY allow + deny + step_up DESC LIMIT 20""",
    },
    {
        "title": "Stale credentials (oldest active credential > 90 days)",
        "type": "table",
        "gridPos": {"h": 9, "w": 12, "x": 0, "y": 28},
        "format": 1,
        "sql": f"""SELECT identity_id, anyLast(identity_kind) AS kind, anyLast(identity_owner) AS owner,
       round(argMaxMerge(credential_age_days), 1) AS credential_age_days, max(last_seen) AS last_seen
FROM {HOURLY}
WHERE $__timeFilter(hour)
GROUP BY identity_id HAVING credential_age_days > 90
ORDER BY credential_age_days DESC LIMIT 25""",
    },
    {
        "title": "Off-hours and restricted activity",
        "type": "table",
        "gridPos": {"h": 9, "w": 12, "x": 12, "y": 28},
        "format": 1,
        "sql": f"""SELECT identity_id, uniqMerge(off_hours) AS off_hours, uniqMerge(restricted_access) AS restricted,
       uniqMerge(confidential_access) AS confidential, uniqMerge(distinct_resources) AS resources
FROM {HOURLY}
WHERE $__timeFilter(hour)
GROUP BY identity_id ORDER BY off_hours + restricted DESC LIMIT 25""",
    },
    {
        "title": "Recent denies and step-ups",
        "type": "table",
        "gridPos": {"h": 10, "w": 24, "x": 0, "y": 37},
        "format": 1,
        "sql": f"""SELECT decided_at, request_id, identity_id, action, resource_id, decision,
       arrayStringConcat(reason_codes, ', ') AS reasons, arrayStringConcat(matched_rules, ', ') AS rules
FROM {AUDIT} FINAL
WHERE decision != 'allow' AND $__timeFilter(decided_at)
ORDER BY decided_at DESC LIMIT 100""",
    },
]


def build_dashboard() -> dict[str, Any]:
    panels = []
    for i, p in enumerate(PANELS, start=1):
        panel: dict[str, Any] = {
            "id": i,
            "title": p["title"],
            "type": p["type"],
            "gridPos": p["gridPos"],
            "datasource": DATASOURCE,
            "targets": [
                {
                    "refId": "A",
                    "datasource": DATASOURCE,
                    "editorType": "sql",
                    "format": p["format"],
                    "queryType": "timeseries" if p["format"] == 0 else "table",
                    "rawSql": p["sql"],
                }
            ],
            "fieldConfig": {"defaults": {"unit": p.get("unit", "short")}, "overrides": []},
            "options": {},
        }
        panels.append(panel)
    return {
        "uid": "pdx-audit",
        "title": "pdx — audit trail",
        "tags": ["pdx", "audit"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "1m",
        "time": {"from": "now-7d", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "database",
                    "label": "database",
                    "type": "textbox",
                    "query": config.CLICKHOUSE_DATABASE,
                    "current": {"text": config.CLICKHOUSE_DATABASE, "value": config.CLICKHOUSE_DATABASE},
                    "hide": 0,
                }
            ]
        },
        "panels": panels,
    }


def dashboard_queries(dashboard: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """(panel title, rawSql) of every query in the dashboard."""
    dash = dashboard or json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    return [(p["title"], t["rawSql"]) for p in dash["panels"] for t in p.get("targets", [])]


def expand_macros(sql: str, database: str, start: datetime, end: datetime, interval_s: int = 3600) -> str:
    """What the grafana-clickhouse-datasource does to the macros used here (for tests and ad-hoc runs)."""
    frm, to = int(start.timestamp()), int(end.timestamp())
    sql = sql.replace("${database}", database)
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 >= toDateTime({frm}) AND \1 <= toDateTime({to})", sql)
    sql = re.sub(
        r"\$__timeInterval\(([^)]+)\)", rf"toStartOfInterval(toDateTime(\1), INTERVAL {interval_s} second)", sql
    )
    return sql.replace("$__fromTime", f"toDateTime({frm})").replace("$__toTime", f"toDateTime({to})")


def render() -> str:
    return json.dumps(build_dashboard(), indent=2) + "\n"


if __name__ == "__main__":  # pragma: no cover
    DASHBOARD_FILE.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD_FILE.write_text(render(), encoding="utf-8")
    print(f"wrote {DASHBOARD_FILE}", file=sys.stderr)
