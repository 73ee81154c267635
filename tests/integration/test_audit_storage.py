"""Audit storage against a real ClickHouse: migrations, the sink's AuditWriter, dedup and rollups."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streams import config as settings
from streams.audit.migrate import MigrationError, applied_versions, current_ttl_days, migrate
from streams.audit.store import AuditRecordError, AuditWriteError, AuditWriter, connect
from streams.bench import synthetic
from streams.bench.auditdb import AuditDB, fresh_database

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 10, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(scope="module")
def ch_url(request: pytest.FixtureRequest) -> str:
    return os.environ.get("PDX_TEST_CLICKHOUSE_URL") or str(request.getfixturevalue("clickhouse_url"))


@pytest.fixture()
def db(ch_url: str) -> Iterator[AuditDB]:
    with fresh_database(ch_url, "pdx_t_storage", cfg=settings.load()) as handle:
        yield handle


def _tables(db: AuditDB) -> dict[str, str]:
    rows = db.client.query(
        "SELECT name, engine FROM system.tables WHERE database = {d:String}", parameters={"d": db.database}
    ).result_rows
    return {str(n): str(e) for n, e in rows}


def test_migrate_creates_versioned_schema_and_is_idempotent(db: AuditDB) -> None:
    tables = _tables(db)
    assert tables[settings.AUDIT_TABLE] == "ReplacingMergeTree"
    assert tables["audit_identity_hourly"] == "AggregatingMergeTree"
    assert tables["audit_rule_daily"] == "AggregatingMergeTree"
    assert tables["audit_identity_hourly_mv"] == "MaterializedView"
    assert tables["audit_rule_daily_mv"] == "MaterializedView"
    assert sorted(applied_versions(db.client, db.database)) == ["001", "002", "003", "004", "005", "006", "007", "008"]
    assert migrate(db.client, db.database) == []  # second run applies nothing
    assert migrate(db.client, db.database) == []
    ddl = db.client.query(
        "SELECT partition_key, sorting_key FROM system.tables WHERE database = {d:String} AND name = {t:String}",
        parameters={"d": db.database, "t": settings.AUDIT_TABLE},
    ).result_rows[0]
    assert ddl == ("decided_month", "identity_id, decided_month, occurred_at, request_id, request_hash")
    cols = dict(
        db.client.query(
            "SELECT name, type FROM system.columns WHERE database = {d:String} AND table = {t:String}",
            parameters={"d": db.database, "t": settings.AUDIT_TABLE},
        ).result_rows
    )
    assert cols["decision"] == "LowCardinality(String)"
    assert cols["decided_at"] == "DateTime64(6, 'UTC')"
    assert cols["obligations"].startswith("Map(")
    assert cols["credential_age_days"] == "Nullable(Float64)"


def test_ttl_comes_from_settings_and_follows_changes(ch_url: str) -> None:
    with fresh_database(ch_url, "pdx_t_ttl", ttl_days=33, cfg=settings.load()) as db:
        assert current_ttl_days(db.client, db.database, settings.AUDIT_TABLE) == 33
        assert current_ttl_days(db.client, db.database, "audit_identity_hourly") == 33
        assert migrate(db.client, db.database, ttl_days=90) == []
        assert current_ttl_days(db.client, db.database, settings.AUDIT_TABLE) == 90
        assert current_ttl_days(db.client, db.database, "audit_rule_daily") == 90


def test_edited_applied_migration_is_reported(db: AuditDB, tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(settings.AUDIT_SQL_DIR, sql_dir)
    first = sorted(sql_dir.glob("001_*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(db.client, db.database, sql_dir=sql_dir)


def test_new_migration_file_is_applied_once(db: AuditDB, tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(settings.AUDIT_SQL_DIR, sql_dir)
    (sql_dir / "999_extra.sql").write_text(
        "CREATE TABLE IF NOT EXISTS $db.extra (x UInt8) ENGINE = MergeTree ORDER BY x;\n"
    )
    assert migrate(db.client, db.database, sql_dir=sql_dir) == ["999"]
    assert migrate(db.client, db.database, sql_dir=sql_dir) == []
    assert "extra" in _tables(db)


def test_writer_round_trips_a_record_with_microseconds_and_snapshot(db: AuditDB) -> None:
    ident = synthetic.make_identity("agent-rt", credential_created=T0 - timedelta(days=100))
    rec = synthetic.make_record(
        "req-rt-1",
        "agent-rt",
        T0,
        decision="step_up",
        sensitivity="restricted",
        reasons=[("approval_required", "needs approval", "secrets", "secrets/step-up")],
        obligations={"require_approval": "platform-oncall,security"},
        identity=ident,
    )
    db.writer.insert([rec])
    row = db.audit.explain("req-rt-1")
    assert row is not None
    assert row["decided_at"] == T0
    assert row["decision"] == "step_up"
    assert row["reason_codes"] == ["approval_required"]
    assert row["reasons"][0]["rule"] == "secrets/step-up"
    assert row["matched_rules"] == ["secrets/step-up"]
    assert row["obligations"] == {"require_approval": "platform-oncall,security"}
    assert row["credential_age_days"] == pytest.approx(100.0)
    assert row["identity_kind"] == "agent" and row["identity_known"] is True
    assert row["request"]["resource"]["sensitivity"] == "restricted"
    assert row["request"]["occurred_at"] == (T0 - timedelta(milliseconds=5)).isoformat()
    assert row["identity"]["credentials"][0]["created_at"] == (T0 - timedelta(days=100)).isoformat()
    assert row["timings"]["eval_us"] == 42
    assert row["timings"]["total_ms"] == pytest.approx(5.456)  # occurred_at is timestamp-millis


def test_unknown_identity_is_stored_without_snapshot(db: AuditDB) -> None:
    rec = synthetic.make_record(
        "req-unknown",
        "ghost",
        T0,
        decision="deny",
        reasons=[("unknown_identity", "no such identity", None, None)],
        identity=None,
    )
    db.writer.insert([rec])
    row = db.audit.explain("req-unknown")
    assert row is not None and row["identity"] is None and row["identity_known"] is False
    assert row["credential_age_days"] is None and row["matched_rules"] == []


def test_redelivery_is_deduplicated_in_table_and_rollups(db: AuditDB) -> None:
    recs = list(synthetic.records(300, seed=11, identities=7, start=T0, end=T0 + timedelta(hours=5)))
    db.writer.insert(recs)
    db.writer.insert(recs)  # a retried batch: same dedup token, dropped at insert
    assert db.count(final=False) == 300
    # a redelivery in different batches (the sink restarted mid-way): collapsed by request_id
    db.writer.insert(recs[100:250])
    db.writer.insert(recs[:10] + recs[290:])
    assert db.count(final=True) == 300
    hourly = db.client.query(
        f"SELECT uniqMerge(requests), uniqMerge(denies) FROM {db.database}.audit_identity_hourly"
    ).result_rows[0]
    denies = sum(1 for r in recs if r["decision"]["decision"] == "deny")
    assert hourly == (300, denies)
    db.client.command(f"OPTIMIZE TABLE {db.database}.{settings.AUDIT_TABLE} FINAL")
    assert db.count(final=False) == 300


def test_malformed_record_is_rejected_before_anything_is_written(db: AuditDB) -> None:
    good = synthetic.make_record("req-good", "agent-a", T0)
    bad = synthetic.make_record("req-bad", "agent-a", T0)
    del bad["request"]["action"]
    with pytest.raises(AuditRecordError) as info:
        db.writer.insert([good, bad])
    assert info.value.request_id == "req-bad" and info.value.index == 1
    assert "action" in str(info.value)
    assert db.count() == 0


def test_writer_raises_when_clickhouse_does_not_acknowledge(db: AuditDB) -> None:
    writer = AuditWriter(db.client, database=db.database + "_missing")
    with pytest.raises(AuditWriteError, match="failed"):
        writer.insert([synthetic.make_record("req-x", "agent-a", T0)])


def test_connect_to_nothing_says_how_to_fix_it() -> None:
    from streams.errors import UserError

    with pytest.raises(UserError, match=r"cannot reach ClickHouse at http://127\.0\.0\.1:1.*pdx dev up clickhouse"):
        connect("http://127.0.0.1:1", cfg=settings.load())
