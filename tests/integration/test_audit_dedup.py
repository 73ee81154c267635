"""Issue 11: the audit table deduplicates by request (sql/005_dedup_by_request.sql), against a real ClickHouse.

A redelivered request decided again (another decided_at, maybe another decision) collapses to the first decision;
a different request that reuses a request_id stays; migration 005 rebuilds an existing table without losing rows,
keeps native ingestion and the rollups working, and can be repeated after an interruption at any statement.
"""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streams import config as settings
from streams.audit import avro_container
from streams.audit.migrate import applied_versions, discover, migrate, params
from streams.audit.queries import Audit
from streams.audit.store import COLUMNS as ALL_COLUMNS
from streams.audit.store import AuditWriter, connect
from streams.bench import synthetic
from streams.bench.auditdb import AuditDB, fresh_database
from streams.contracts import wire

pytestmark = pytest.mark.integration

#: Times relative to now, so that the retention TTL never drops these rows at OPTIMIZE: T0 in the previous month.
MONTH = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
T0 = MONTH - timedelta(days=20) + timedelta(hours=9, minutes=30, microseconds=250000)
TABLE = settings.AUDIT_TABLE
NEW_KEY = "identity_id, decided_month, occurred_at, request_id, request_hash"
OLD_KEY = "identity_id, decided_at, request_id"
DENY: list[tuple[str, str, str | None, str | None]] = [
    ("scope_missing", "scope db:connect missing", "baseline", "baseline/deny-scope")
]


@pytest.fixture(scope="module")
def ch_url(request: pytest.FixtureRequest) -> str:
    return os.environ.get("PDX_TEST_CLICKHOUSE_URL") or str(request.getfixturevalue("clickhouse_url"))


@pytest.fixture()
def db(ch_url: str) -> Iterator[AuditDB]:
    with fresh_database(ch_url, "pdx_t_dedup", cfg=settings.load()) as handle:
        yield handle


@pytest.fixture()
def sql_001_004(tmp_path: Path) -> Path:
    """The migrations as they were before issue 11 (001..004)."""
    target = tmp_path / "sql"
    target.mkdir()
    for mig in discover():
        if mig.version <= "004":
            (target / mig.path.name).write_text(mig.template)  # with its includes pasted in
    return target


@contextmanager
def database(url: str, sql_dir: Path) -> Iterator[AuditDB]:
    """A throw-away database migrated with the files of ``sql_dir`` (fresh_database always takes them all)."""
    name = f"pdx_t_dedup_mig_{uuid.uuid4().hex[:10]}"
    client = connect(url, cfg=settings.load())
    try:
        migrate(client, name, sql_dir=sql_dir)
        yield AuditDB(url, name, client, AuditWriter(client, database=name), Audit(client, name))
    finally:
        client.command(f"DROP DATABASE IF EXISTS {name} SYNC")
        client.close()


# ---- records -----------------------------------------------------------------------------------------------


def redelivered(rec: Mapping[str, Any], *, after: timedelta, decision: str = "deny") -> dict[str, Any]:
    """The same request, consumed again and decided again ``after`` later by another worker, maybe differently."""
    again = copy.deepcopy(dict(rec))
    at = rec["decided_at"] + after
    again.update(decided_at=at, received_at=at - timedelta(milliseconds=2), source_offset=rec["source_offset"] + 1000)
    again["worker_id"] = "w2"
    reasons = DENY if decision == "deny" else [("rule_allow", "allowed", "baseline", "baseline/allow")]
    again["decision"].update(
        decision=decision,
        evaluated_at=at,
        worker_id="w2",
        eval_us=77,
        reasons=[{"code": c, "message": m, "policy": p, "rule": r} for c, m, p, r in reasons],
        matched_rules=[r for *_, r in reasons],
    )
    return again


def insert_native(db: AuditDB, records: Sequence[Mapping[str, Any]]) -> None:
    """What the audit sink does: the raw AuditRecord bytes as one Avro container into audit_ingest."""
    msgs = [wire.encode("AuditRecord", r) for r in records]
    token = avro_container.dedup_token(avro_container.request_id(m) for m in msgs)
    db.writer.insert_avro(avro_container.build(msgs), token=token)


def as_consumed(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The records as a consumer decodes them from their Kafka bytes (timestamps at Avro precision)."""
    return [wire.decode_as("AuditRecord", wire.encode("AuditRecord", r)) for r in records]


def insert_rows(db: AuditDB, records: Sequence[Mapping[str, Any]]) -> None:
    """The other way in (and the sink's before 004): rows mapped in Python by audit_row from consumed records.
    Without record_hash, which 006 adds (these records have no chain link, and the older tables no column)."""
    rows = [row[: len(COLUMNS)] for row in db.writer.rows(as_consumed(records))]
    db.client.insert(TABLE, rows, column_names=list(COLUMNS), database=db.database, settings={"async_insert": 0})


#: The audit table's columns as of 005 (006 appends record_hash, the hash-chain hash; 008 approvals and
#: principals_json, what a decision relied on).
COLUMNS = tuple(c for c in ALL_COLUMNS if c not in ("record_hash", "approvals", "principals_json"))
assert ALL_COLUMNS[: len(COLUMNS)] == COLUMNS


PATHS: dict[str, Callable[[AuditDB, Sequence[Mapping[str, Any]]], None]] = {
    "native": insert_native,
    "rows": insert_rows,
}


# ---- reading -----------------------------------------------------------------------------------------------


def final_rows(db: AuditDB, request_id: str) -> list[tuple[str, datetime, str]]:
    """(decision, decided_at, worker_id) of every row ``FINAL`` returns for a request id, by decided_at."""
    rows = db.client.query(
        f"SELECT decision, decided_at, worker_id FROM {db.database}.{TABLE} FINAL "
        "WHERE request_id = {rid:String} ORDER BY decided_at",
        parameters={"rid": request_id},
    ).result_rows
    return [(str(d), at.replace(tzinfo=UTC), str(w)) for d, at, w in rows]


def sorting_key(db: AuditDB) -> str:
    return str(
        db.client.query(
            "SELECT sorting_key FROM system.tables WHERE database = {d:String} AND name = {t:String}",
            parameters={"d": db.database, "t": TABLE},
        ).result_rows[0][0]
    )


def tables(db: AuditDB) -> set[str]:
    rows = db.client.query(
        "SELECT name FROM system.tables WHERE database = {d:String}", parameters={"d": db.database}
    ).result_rows
    return {str(n) for (n,) in rows}


def snapshot(db: AuditDB, final: bool) -> list[tuple[Any, ...]]:
    """Every stored column of every row (FINAL or not), in a stable order."""
    cols = ", ".join((*COLUMNS, "inserted_at"))
    fin = " FINAL" if final else ""
    return [
        tuple(r)
        for r in db.client.query(
            f"SELECT {cols} FROM {db.database}.{TABLE}{fin} ORDER BY request_id, request_json, decided_at"
        ).result_rows
    ]


def first_decisions(rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """What the table should keep of ``rows``: per (request_id, request_json), the earliest decided_at."""
    rid, decided, req = COLUMNS.index("request_id"), COLUMNS.index("decided_at"), COLUMNS.index("request_json")
    kept: dict[tuple[Any, Any], tuple[Any, ...]] = {}
    for row in rows:
        key = (row[rid], row[req])
        if key not in kept or row[decided] < kept[key][decided]:
            kept[key] = row
    return sorted(kept.values(), key=lambda r: (r[rid], r[req], r[decided]))


def partitions(db: AuditDB) -> set[str]:
    rows = db.client.query(
        "SELECT DISTINCT partition FROM system.parts WHERE database = {d:String} AND table = {t:String} AND active",
        parameters={"d": db.database, "t": TABLE},
    ).result_rows
    return {str(p) for (p,) in rows}


def hourly_requests(db: AuditDB, identity_id: str) -> int:
    return int(
        db.client.query(
            f"SELECT uniqMerge(requests) FROM {db.database}.audit_identity_hourly WHERE identity_id = {{i:String}}",
            parameters={"i": identity_id},
        ).result_rows[0][0]
    )


def rule_hits(db: AuditDB, rule: str) -> int:
    return int(
        db.client.query(
            f"SELECT uniqMerge(hits) FROM {db.database}.audit_rule_daily WHERE rule = {{r:String}}",
            parameters={"r": rule},
        ).result_rows[0][0]
    )


def assert_ingest_and_rollups_work(db: AuditDB, tag: str) -> None:
    """New records sent the sink's way land in the audit table (once) and feed both rollups."""
    ident, rule = f"after-{tag}", f"dedup/after-{tag}"
    recs = [
        synthetic.make_record(
            f"{tag}-{i}",
            ident,
            T0 + timedelta(minutes=i),
            reasons=[("rule_allow", "ok", "dedup", rule)],
            source_offset=i,
        )
        for i in range(5)
    ]
    insert_native(db, recs)
    insert_native(db, [redelivered(recs[0], after=timedelta(seconds=4)), *recs[3:]])  # redelivered in another batch
    got = db.client.query(
        f"SELECT request_id, decision FROM {db.database}.{TABLE} FINAL WHERE identity_id = {{i:String}} "
        "ORDER BY request_id",
        parameters={"i": ident},
    ).result_rows
    assert got == [(f"{tag}-{i}", "allow") for i in range(5)]
    assert hourly_requests(db, ident) == 5
    assert rule_hits(db, rule) == 5


# ---- (1) a redelivery collapses to the first decision ------------------------------------------------------


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("first_inserted_first", [True, False], ids=["in-order", "redelivery-stored-first"])
def test_a_redelivery_decided_again_collapses_to_the_first_decision(
    db: AuditDB, path: str, first_inserted_first: bool
) -> None:
    insert = PATHS[path]
    first = synthetic.make_record("req-redelivered", "agent-r", T0, source_offset=5)
    other = synthetic.make_record("req-other", "agent-r", T0 + timedelta(seconds=1), source_offset=6)
    later = synthetic.make_record("req-later", "agent-r", T0 + timedelta(seconds=9), source_offset=7)
    again = redelivered(first, after=timedelta(seconds=7), decision="deny")  # another batch: another token
    batches = [[first, other], [again, later]]
    for batch in batches if first_inserted_first else batches[::-1]:
        insert(db, batch)

    assert final_rows(db, "req-redelivered") == [("allow", T0, "w1")]
    assert db.count(final=True) == 3
    row = db.audit.explain("req-redelivered")  # before any merge: the first decision too
    assert row is not None and row["decision"] == "allow" and row["decided_at"] == T0
    assert row["reason_codes"] == ["rule_allow"] and row["worker_id"] == "w1"
    timeline = db.audit.timeline("agent-r", T0 - timedelta(minutes=1), T0 + timedelta(minutes=1))
    assert [(r["request_id"], r["decision"]) for r in timeline] == [
        ("req-redelivered", "allow"),
        ("req-other", "allow"),
        ("req-later", "allow"),
    ]
    # a window that holds only the redelivery's decided_at does not show the request: it was decided before
    assert db.audit.timeline("agent-r", T0 + timedelta(seconds=5), T0 + timedelta(seconds=8)) == []

    db.client.command(f"OPTIMIZE TABLE {db.database}.{TABLE} FINAL")
    assert db.count(final=False) == 3
    assert final_rows(db, "req-redelivered") == [("allow", T0, "w1")]


# ---- (2) a different request reusing a request_id is evidence of its own ------------------------------------


def test_a_different_request_reusing_a_request_id_is_kept(db: AuditDB) -> None:
    mine = synthetic.make_record("req-reused", "agent-a", T0, resource_id="prod/db/orders")
    same_identity = synthetic.make_record(
        "req-reused", "agent-a", T0 + timedelta(seconds=2), decision="deny", resource_id="prod/db/payroll", reasons=DENY
    )
    other_identity = synthetic.make_record("req-reused", "agent-b", T0 + timedelta(seconds=3), resource_id="x/y")
    insert_native(db, [mine])
    insert_native(db, [same_identity, synthetic.make_record("req-filler", "agent-a", T0)])
    insert_native(db, [other_identity, synthetic.make_record("req-filler-2", "agent-b", T0)])
    db.client.command(f"OPTIMIZE TABLE {db.database}.{TABLE} FINAL")
    kept = db.client.query(
        f"SELECT identity_id, resource_id, decision FROM {db.database}.{TABLE} FINAL "
        "WHERE request_id = 'req-reused' ORDER BY decided_at"
    ).result_rows
    assert kept == [
        ("agent-a", "prod/db/orders", "allow"),
        ("agent-a", "prod/db/payroll", "deny"),
        ("agent-b", "x/y", "allow"),
    ]
    timeline = db.audit.timeline("agent-a", T0 - timedelta(minutes=1), T0 + timedelta(minutes=1))
    assert [(r["request_id"], r["resource_id"]) for r in timeline if r["request_id"] == "req-reused"] == [
        ("req-reused", "prod/db/orders"),
        ("req-reused", "prod/db/payroll"),
    ]


# ---- (3) migrating an existing table -----------------------------------------------------------------------


def old_table_with_duplicates(db: AuditDB) -> tuple[list[dict[str, Any]], int]:
    """Rows as a 001..004 table collected them: synthetic records over two months, every tenth redelivered and
    decided again (in other batches, both insert paths), one request id reused by another request. Returns (the
    records redelivered, as first decided; the number of distinct requests)."""
    start, end = MONTH - timedelta(days=10), MONTH + timedelta(days=6)  # two partitions
    recs = list(synthetic.records(600, seed=31, identities=12, start=start, end=end))
    # rows, not the native Avro path: today's AuditRecords carry fields (the request's token, the identity's
    # workload subjects: 007) that a 001..004 audit_ingest cannot parse; the native path is checked after migrating
    insert_rows(db, recs[:400])
    insert_rows(db, recs[400:])
    firsts = recs[::10]
    again = [redelivered(r, after=timedelta(seconds=3 + i % 5), decision="deny") for i, r in enumerate(firsts)]
    insert_rows(db, again[:30])
    insert_rows(db, again[30:])
    reuse = synthetic.make_record(recs[5]["request"]["request_id"], "agent-reuser", T0, resource_id="other/thing")
    insert_rows(db, [reuse])
    assert db.count(final=True) == len(recs) + len(again) + 1  # the bug: FINAL keeps every redelivery
    return firsts, len(recs) + 1


def assert_first_decisions_kept(db: AuditDB, firsts: Sequence[Mapping[str, Any]]) -> None:
    for rec in firsts:
        expected = (rec["decision"]["decision"], rec["decided_at"], rec["worker_id"])
        assert final_rows(db, rec["request"]["request_id"]) == [expected]


def test_migrating_a_table_with_duplicates_collapses_them_and_keeps_every_request(
    ch_url: str, sql_001_004: Path
) -> None:
    with database(ch_url, sql_001_004) as db:
        firsts, distinct = old_table_with_duplicates(db)
        assert sorting_key(db) == OLD_KEY
        before, months = snapshot(db, final=False), partitions(db)
        assert len(months) == 2  # the records span a month boundary

        assert migrate(db.client, db.database) == ["005", "006", "007", "008"]

        assert sorting_key(db) == NEW_KEY
        assert partitions(db) == months  # the same partition ids (YYYYMM) as before
        assert sorted(applied_versions(db.client, db.database)) == [
            "001", "002", "003", "004", "005", "006", "007", "008"]
        assert f"{TABLE}_005" not in tables(db)
        assert db.count(final=True) == distinct
        assert snapshot(db, final=True) == first_decisions(before)  # every column, inserted_at included
        assert_first_decisions_kept(db, firsts)
        db.client.command(f"OPTIMIZE TABLE {db.database}.{TABLE} FINAL")
        assert db.count(final=False) == distinct
        assert_first_decisions_kept(db, firsts)
        assert_ingest_and_rollups_work(db, "migrated")
        assert migrate(db.client, db.database) == []


def test_a_fresh_database_gets_the_new_table_with_working_views(db: AuditDB) -> None:
    assert sorting_key(db) == NEW_KEY
    assert sorted(applied_versions(db.client, db.database)) == ["001", "002", "003", "004", "005", "006", "007", "008"]
    assert f"{TABLE}_005" not in tables(db)
    engine = db.client.query(
        "SELECT engine_full FROM system.tables WHERE database = {d:String} AND name = {t:String}",
        parameters={"d": db.database, "t": TABLE},
    ).result_rows[0][0]
    assert engine.startswith("ReplacingMergeTree(ver) PARTITION BY decided_month ORDER BY")
    assert_ingest_and_rollups_work(db, "fresh")


# ---- (4) re-running ----------------------------------------------------------------------------------------


def test_rerunning_migrate_applies_nothing(db: AuditDB) -> None:
    insert_native(db, list(synthetic.records(50, seed=5, start=T0, end=T0 + timedelta(hours=1))))
    assert migrate(db.client, db.database) == []
    assert migrate(db.client, db.database) == []
    assert db.count(final=True) == 50 and sorting_key(db) == NEW_KEY


def steps_005() -> int:
    return next((len(m.steps(params("x", 1))) for m in discover() if m.version == "005"), 0)


@pytest.mark.parametrize("done", range(steps_005() + 1))
def test_a_migration_interrupted_after_any_statement_can_be_repeated(ch_url: str, sql_001_004: Path, done: int) -> None:
    """Run the first ``done`` statements of 005 as an interrupted `pdx audit migrate` would have, then migrate."""
    with database(ch_url, sql_001_004) as db:
        firsts, distinct = old_table_with_duplicates(db)
        before = snapshot(db, final=False)
        mig = next(m for m in discover() if m.version == "005")
        for step in mig.steps(params(db.database))[:done]:
            if step.due(db.client):
                db.client.command(step.sql)
        assert "005" not in applied_versions(db.client, db.database)

        assert migrate(db.client, db.database) == ["005", "006", "007", "008"]

        assert sorting_key(db) == NEW_KEY and f"{TABLE}_005" not in tables(db)
        assert db.count(final=True) == distinct
        assert snapshot(db, final=True) == first_decisions(before)
        assert_first_decisions_kept(db, firsts)
        assert_ingest_and_rollups_work(db, "resumed")
        assert migrate(db.client, db.database) == []
