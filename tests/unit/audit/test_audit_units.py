"""Audit pieces that need no ClickHouse: row mapping, migration files, globs, time parsing, report, dashboard."""

from __future__ import annotations

import fnmatch
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from streams import config as settings
from streams.audit.dashboard import (
    DASHBOARD_FILE,
    DATASOURCE_UID,
    GRAFANA_DIR,
    dashboard_queries,
    expand_macros,
    render,
)
from streams.audit.migrate import discover, params
from streams.audit.queries import SearchFilters, glob_to_regex
from streams.audit.report import hbars, render_html, stacked_columns
from streams.audit.store import COLUMNS, AuditRecordError, audit_row, check_identifier, dedup_token
from streams.bench import synthetic
from streams.cli.audit import parse_when
from streams.contracts.audit_fields import credential_age_days
from streams.errors import UserError

T = datetime(2026, 5, 4, 12, 0, 0, 250000, tzinfo=UTC)


def test_audit_row_maps_every_column_in_order() -> None:
    rec = synthetic.make_record(
        "r1",
        "agent-a",
        T,
        decision="deny",
        obligations={"k": "v"},
        reasons=[("scope_missing", "no scope", "base", "base/deny")],
    )
    row = dict(zip(COLUMNS, audit_row(rec), strict=True))
    assert row["request_id"] == "r1" and row["identity_id"] == "agent-a"
    assert row["decided_at"] == T and row["decided_at"].tzinfo == UTC
    assert row["decision"] == "deny" and row["reason_codes"] == ["scope_missing"]
    assert row["reasons"] == [("scope_missing", "no scope", "base", "base/deny")]
    assert row["matched_rules"] == ["base/deny"] and row["obligations"] == {"k": "v"}
    assert row["resource_environment"] == "prod" and row["identity_kind"] == "agent"
    request = json.loads(row["request_json"])
    assert request["occurred_at"] == (T - timedelta(milliseconds=5)).isoformat()
    assert json.loads(row["identity_json"])["id"] == "agent-a"


def test_audit_row_accepts_iso_strings_and_converts_offsets_to_utc() -> None:
    rec = synthetic.make_record("r1", "a", T)
    rec["decided_at"] = "2026-05-04T14:00:00+02:00"
    row = dict(zip(COLUMNS, audit_row(rec), strict=True))
    assert row["decided_at"] == datetime(2026, 5, 4, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["request"].pop("action"), "missing field 'action'"),
        (lambda r: r.pop("decided_at"), "missing field 'decided_at'"),
        (lambda r: r["decision"].__setitem__("decision", "maybe"), "unknown outcome 'maybe'"),
        (lambda r: r.__setitem__("decided_at", "yesterday"), "not an ISO-8601"),
        (lambda r: r.__setitem__("decided_at", 12), "expected a timezone-aware datetime"),
    ],
)
def test_audit_row_errors_name_the_record_and_field(mutate: object, message: str) -> None:
    rec = synthetic.make_record("req-9", "a", T)
    mutate(rec)  # type: ignore[operator]
    with pytest.raises(AuditRecordError, match=re.escape(message)) as info:
        audit_row(rec)
    assert info.value.request_id == "req-9" and "req-9" in str(info.value)


def test_credential_age_uses_oldest_active_credential_and_rotation() -> None:
    ident = synthetic.make_identity("a", credential_created=T - timedelta(days=10))
    ident["credentials"] += [
        {
            "id": "old-revoked",
            "type": "api_key",
            "created_at": T - timedelta(days=900),
            "rotated_at": None,
            "expires_at": None,
            "status": "revoked",
        },
        {
            "id": "rotated",
            "type": "x509",
            "created_at": T - timedelta(days=500),
            "rotated_at": T - timedelta(days=30),
            "expires_at": None,
            "status": "active",
        },
    ]
    assert credential_age_days(ident, T) == pytest.approx(30.0)
    ident["credentials"] = [c for c in ident["credentials"] if c["status"] == "revoked"]
    assert credential_age_days(ident, T) is None
    assert credential_age_days(None, T) is None


def test_dedup_token_depends_on_the_set_of_request_ids() -> None:
    a, b = synthetic.make_record("r1", "x", T), synthetic.make_record("r2", "x", T)
    assert dedup_token([a, b]) == dedup_token([b, a]) != dedup_token([a])


@pytest.mark.parametrize("bad", ["pdx; DROP", "a-b", "", "1abc", "x y", "pdx`"])
def test_identifiers_are_checked(bad: str) -> None:
    with pytest.raises(UserError):
        check_identifier(bad)


def test_migration_files_are_versioned_templates() -> None:
    migs = discover()
    versions = [m.version for m in migs]
    assert versions[:8] == ["001", "002", "003", "004", "005", "006", "007", "008"]
    assert versions == [f"{i:03d}" for i in range(1, len(versions) + 1)]  # ordered, none skipped
    p = params("pdx_x", 30)
    stmts = [s for m in migs for s in m.statements(p)]
    # every statement can run again: IF [NOT] EXISTS, or guarded by `-- only if:` (tests/unit/audit/test_migrate.py)
    assert all("IF NOT EXISTS" in s.sql or s.only_if for m in migs for s in m.steps(p))
    assert all("$" not in s for s in stmts)
    assert any("INTERVAL 30 DAY" in s for s in stmts)
    assert any("pdx_x.audit_decisions" in s for s in stmts)
    with pytest.raises(UserError):
        params("pdx", 0)


def test_ttl_default_is_the_declared_default_never_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.ENV_AUDIT_TTL_DAYS, "12")  # read by the entry points, which pass ttl_days
    assert params("pdx")["ttl_days"] == str(settings.DEFAULT_AUDIT_TTL_DAYS)
    assert params("pdx", 12)["ttl_days"] == "12"


@given(st.text(alphabet="ab:*?.[]()+^$\\|{}x-", max_size=8), st.text(alphabet="ab:.[]()+^$\\|{}x-", max_size=8))
def test_glob_regex_agrees_with_fnmatch(pattern: str, value: str) -> None:
    """The audit search uses the one glob language of policies and approvals: ``[...]`` is a class."""
    expected = fnmatch.fnmatchcase(value, pattern)
    assert (re.fullmatch(glob_to_regex(pattern)[1:-1], value, flags=re.S) is not None) == expected


def test_search_filters_bind_values_as_parameters() -> None:
    evil = "x' OR 1=1 --"
    where, params_ = SearchFilters(
        decision=evil,
        reason_code=evil,
        action=evil,
        resource=evil,
        environment=evil,
        identity=evil,
        policy=evil,
        rule=evil,
    ).where()
    assert evil not in where and "'x" not in where
    assert params_["decision"] == evil and params_["identity"] == evil


def test_parse_when() -> None:
    now = datetime(2026, 1, 10, tzinfo=UTC)
    assert parse_when("7d", now=now) == now - timedelta(days=7)
    assert parse_when("90m", now=now) == now - timedelta(minutes=90)
    assert parse_when("now", now=now) == now
    assert parse_when("2026-01-02T03:04:05Z", now=now) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_when("2026-01-02 03:04", now=now) == datetime(2026, 1, 2, 3, 4, tzinfo=UTC)
    with pytest.raises(UserError, match="cannot read time"):
        parse_when("last tuesday", now=now)


def test_report_escapes_labels_and_draws_marks() -> None:
    svg = hbars("x", [("<script>alert(1)</script>", [("s", 3.0, "#000000")])])
    assert "<script>" not in svg and "&lt;script&gt;" in svg and 'data-marks="1"' in svg
    cols = stacked_columns([{"bucket": T, "allow": 3, "deny": 1, "step_up": 0}])
    assert 'data-marks="2"' in cols
    assert 'data-marks="0"' in stacked_columns([])


def test_report_renders_with_empty_data() -> None:
    html = render_html(
        {
            "since": T,
            "until": T + timedelta(days=1),
            "generated_at": T,
            "database": "pdx",
            "bucket_s": 3600,
            "totals": {},
            "over_time": [],
            "risk": [],
            "reasons": [],
            "rules": [],
            "stale": [],
        }
    )
    assert "no data in this window" in html and "$" not in re.sub(r"<script>.*?</script>", "", html, flags=re.S)


def test_dashboard_file_is_generated_and_provisioning_matches() -> None:
    assert DASHBOARD_FILE.read_text() == render(), "run: python -m streams.audit.dashboard"
    ds = yaml.safe_load((GRAFANA_DIR / "provisioning/datasources/clickhouse.yaml").read_text())["datasources"][0]
    assert ds["uid"] == DATASOURCE_UID and ds["type"] == "grafana-clickhouse-datasource"
    assert ds["jsonData"]["defaultDatabase"] == settings.CLICKHOUSE_DATABASE
    prov = yaml.safe_load((GRAFANA_DIR / "provisioning/dashboards/pdx.yaml").read_text())
    assert prov["providers"][0]["type"] == "file"
    for _title, sql in dashboard_queries():
        expanded = expand_macros(sql, "db1", T, T + timedelta(days=1))
        assert "$" not in expanded and "db1." in expanded
