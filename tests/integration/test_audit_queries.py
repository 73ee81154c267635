"""Investigation queries and `pdx audit ...` against a real ClickHouse, including SQL-injection attempts."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from streams import config
from streams.audit.queries import SearchFilters
from streams.bench import synthetic
from streams.bench.auditdb import AuditDB, fresh_database
from streams.cli.main import main

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=6)
EVIL = "x' OR 1=1 --"
EVIL_ID = "agent-'; DROP TABLE audit_decisions; --"


def _rec(i: int, identity: str, minutes: float, **kw: object) -> dict[str, object]:
    return synthetic.make_record(f"req-{i:03d}", identity, T0 + timedelta(minutes=minutes), source_offset=i, **kw)  # type: ignore[arg-type]


DENY_SCOPE = [("scope_missing", "scope db:connect missing", "baseline", "baseline/deny-scope")]
DENY_ENV = [("environment_not_allowed", "prod not allowed", "envs", "envs/deny-prod")]
STEP = [("approval_required", "needs approval", "secrets", "secrets/step-up")]

RECORDS = [
    _rec(1, "agent-a", 1, action="db:connect", resource_id="prod/db/orders"),
    _rec(
        2,
        "agent-a",
        2,
        decision="deny",
        action="secrets:read",
        resource_id="prod/secrets/root",
        sensitivity="restricted",
        reasons=DENY_SCOPE,
    ),
    _rec(
        3,
        "agent-a",
        3,
        decision="step_up",
        action="secrets:read",
        resource_id="prod/secrets/api",
        sensitivity="restricted",
        reasons=STEP,
    ),
    _rec(
        4,
        "agent-a",
        4,
        decision="deny",
        action="config:write",
        resource_id="staging/config/app",
        environment="staging",
        reasons=DENY_ENV,
    ),
    _rec(5, "svc-b", 5, action="api:call", resource_id="dev/api/users", environment="dev"),
    _rec(6, "svc-b", 6, decision="deny", action="secrets:list", resource_id="prod/secrets/db", reasons=DENY_SCOPE),
    _rec(7, "svc-b", 7, decision="deny", action="db:connect", resource_id="prod/db/orders", reasons=DENY_ENV),
    _rec(8, "svc-b", 8, decision="deny", action="db:connect", resource_id="prod/db/orders", reasons=DENY_ENV),
    _rec(9, EVIL_ID, 9, action="db:connect", resource_id=EVIL),
    _rec(10, "agent-a", 60 * 24 * 3, action="db:connect"),  # three days later: outside a 24h window from T0
]


@pytest.fixture(scope="module")
def ch_url(request: pytest.FixtureRequest) -> str:
    return os.environ.get("PDX_TEST_CLICKHOUSE_URL") or str(request.getfixturevalue("clickhouse_url"))


@pytest.fixture(scope="module")
def db(ch_url: str) -> Iterator[AuditDB]:
    with fresh_database(ch_url, "pdx_t_queries", cfg=config.load()) as handle:
        handle.writer.insert(RECORDS[:5])
        handle.writer.insert(RECORDS[5:])
        handle.writer.insert(RECORDS[1:3])  # a redelivery must not show twice
        yield handle


def pdx(db: AuditDB, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--url", db.url, "--database", db.database])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_timeline_is_ordered_and_windowed(db: AuditDB) -> None:
    rows = db.audit.timeline("agent-a", T0, T0 + timedelta(hours=24))
    assert [r["request_id"] for r in rows] == ["req-001", "req-002", "req-003", "req-004"]
    assert [r["decision"] for r in rows] == ["allow", "deny", "step_up", "deny"]
    assert rows[1]["reasons"][0]["code"] == "scope_missing"
    assert rows[2]["matched_rules"] == ["secrets/step-up"]
    assert rows[0]["decided_at"].tzinfo is not None
    assert [
        r["request_id"] for r in db.audit.timeline("agent-a", T0 + timedelta(minutes=2), T0 + timedelta(minutes=4))
    ] == ["req-002", "req-003"]


def test_explain_returns_the_whole_record(db: AuditDB) -> None:
    row = db.audit.explain("req-003")
    assert row is not None
    assert row["request"]["action"] == "secrets:read"
    assert row["identity"]["id"] == "agent-a"
    assert row["reasons"] == [
        {"code": "approval_required", "message": "needs approval", "policy": "secrets", "rule": "secrets/step-up"}
    ]
    assert row["bundle_version"] == "v1" and row["worker_id"] == "w1"
    assert set(row["timings"]) == {"eval_us", "queue_ms", "worker_ms", "total_ms"}
    assert db.audit.explain("req-nope") is None


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (SearchFilters(decision="deny"), {"req-002", "req-004", "req-006", "req-007", "req-008"}),
        (SearchFilters(reason_code="environment_not_allowed"), {"req-004", "req-007", "req-008"}),
        (SearchFilters(action="secrets:*"), {"req-002", "req-003", "req-006"}),
        (SearchFilters(action="db:conn?ct", decision="deny"), {"req-007", "req-008"}),
        (SearchFilters(resource="prod/secrets/*"), {"req-002", "req-003", "req-006"}),
        (SearchFilters(resource="prod/db/orders", identity="svc-b"), {"req-007", "req-008"}),
        (SearchFilters(environment="staging"), {"req-004"}),
        (SearchFilters(policy="envs"), {"req-004", "req-007", "req-008"}),
        (SearchFilters(rule="secrets/step-up"), {"req-003"}),
        (SearchFilters(since=T0 + timedelta(minutes=5), until=T0 + timedelta(minutes=7)), {"req-005", "req-006"}),
    ],
)
def test_search_filters(db: AuditDB, filters: SearchFilters, expected: set[str]) -> None:
    assert {r["request_id"] for r in db.audit.search(filters)} == expected


def test_top_by_denies_step_ups_and_restricted(db: AuditDB) -> None:
    since, until = T0 - timedelta(hours=1), NOW + timedelta(days=4)
    top = db.audit.top("denies", since, until)
    assert [(r["identity_id"], r["denies"]) for r in top] == [("svc-b", 3), ("agent-a", 2)]
    assert [(r["identity_id"], r["step_ups"]) for r in db.audit.top("step_ups", since, until)] == [("agent-a", 1)]
    assert [(r["identity_id"], r["restricted_access"]) for r in db.audit.top("restricted_access", since, until)] == [
        ("agent-a", 2)
    ]
    with pytest.raises(ValueError):
        db.audit.top("denies; DROP TABLE x", since, until)


# ---- injection: values are data, never SQL ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [EVIL, "' OR '1'='1", "\\' OR 1=1 --", "}}{x:String}", "agent-a' --", "%", "*"])
def test_injection_attempts_match_nothing(db: AuditDB, value: str) -> None:
    far = (T0 - timedelta(days=30), NOW + timedelta(days=30))
    assert db.audit.timeline(value, *far) == []
    assert db.audit.explain(value) is None
    for f in (
        SearchFilters(identity=value),
        SearchFilters(reason_code=value),
        SearchFilters(decision=value),
        SearchFilters(environment=value),
        SearchFilters(policy=value),
        SearchFilters(rule=value),
    ):
        assert db.audit.search(f) == [], f
    assert db.count() == len(RECORDS)  # nothing was dropped or changed


def test_hostile_values_are_found_exactly_as_data(db: AuditDB) -> None:
    far = (T0 - timedelta(days=30), NOW + timedelta(days=30))
    assert [r["request_id"] for r in db.audit.timeline(EVIL_ID, *far)] == ["req-009"]
    assert [r["request_id"] for r in db.audit.search(SearchFilters(resource=EVIL))] == ["req-009"]
    assert [r["request_id"] for r in db.audit.search(SearchFilters(action="db:*", resource="x' OR *"))] == ["req-009"]


def test_cli_injection_value_is_data(db: AuditDB, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = pdx(db, capsys, "audit", "timeline", "--identity", EVIL, "--since", "30d", "--json")
    assert code == 0 and json.loads(out) == []
    code, out, _ = pdx(db, capsys, "audit", "search", "--reason", EVIL, "--since", "30d", "--json")
    assert code == 0 and json.loads(out) == []


# ---- CLI -------------------------------------------------------------------------------------------------------


def test_cli_timeline_json_csv_and_table(
    db: AuditDB, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    since = (T0 - timedelta(minutes=1)).isoformat()
    until = (T0 + timedelta(hours=1)).isoformat()
    code, out, _ = pdx(
        db, capsys, "audit", "timeline", "--identity", "agent-a", "--since", since, "--until", until, "--json"
    )
    assert code == 0
    rows = json.loads(out)
    assert [r["request_id"] for r in rows] == ["req-001", "req-002", "req-003", "req-004"]
    assert rows[1]["reasons"][0]["message"] == "scope db:connect missing"
    code, out, _ = pdx(
        db, capsys, "audit", "timeline", "--identity", "agent-a", "--since", since, "--until", until, "--csv"
    )
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert [r["decision"] for r in parsed] == ["allow", "deny", "step_up", "deny"]
    code, out, _ = pdx(db, capsys, "audit", "timeline", "--identity", "agent-a", "--since", since, "--until", until)
    assert code == 0 and "req-002" in out and "scope_missing" in out


def test_cli_explain_search_top_risk(db: AuditDB, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = pdx(db, capsys, "audit", "explain", "req-002", "--json")
    assert code == 0 and json.loads(out)["request"]["resource"]["id"] == "prod/secrets/root"
    code, out, _ = pdx(db, capsys, "audit", "explain", "req-002")
    assert code == 0 and "scope_missing" in out and "identity snapshot" in out
    code, _, err = pdx(db, capsys, "audit", "explain", "req-missing")
    assert code == 2 and "no audit record with request_id 'req-missing'" in err
    code, out, _ = pdx(
        db, capsys, "audit", "search", "--decision", "deny", "--action", "db:*", "--since", "2d", "--json"
    )
    assert {r["request_id"] for r in json.loads(out)} == {"req-007", "req-008"}
    code, out, _ = pdx(db, capsys, "audit", "top", "--by", "denies", "--since", "2d", "--json")
    assert [r["identity_id"] for r in json.loads(out)] == ["svc-b", "agent-a"]
    code, out, _ = pdx(db, capsys, "audit", "risk", "--since", "2d", "--json")
    assert code == 0 and {r["identity_id"] for r in json.loads(out)} == {"agent-a", "svc-b", EVIL_ID}


def test_cli_errors_are_one_clear_line(db: AuditDB, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["audit", "top", "--by", "denies", "--url", "http://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach ClickHouse at http://127.0.0.1:1" in err and "Traceback" not in err
    code = main(["audit", "top", "--by", "denies", "--url", db.url, "--database", "pdx_never_migrated"])
    err = capsys.readouterr().err
    assert code == 2 and "pdx audit migrate" in err
    code = main(["audit", "timeline", "--identity", "a", "--since", "yesterday-ish", "--url", db.url])
    assert code == 2 and "cannot read time" in capsys.readouterr().err
    code = main(["audit", "search", "--database", "pdx; DROP", "--url", db.url])
    assert code == 2 and "invalid ClickHouse database name" in capsys.readouterr().err
