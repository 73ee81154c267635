"""A database at any earlier migration version upgrades to the newest, on a real ClickHouse.

Each earlier state is made the way a deployment made it: by the migration texts as they were released (004,
006, 007 and 008 created the ingest view themselves before it was built from the declarations; their released
texts come from git history at :data:`RELEASED`). Rows written at that version survive the upgrade, the schema
ends equal to a fresh database's, the ingest objects are the ones the code builds, and the native path then
writes rows equal to ``audit_row``'s.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams import config
from streams.audit import avro_container, ingest
from streams.audit.migrate import SUPERSEDED, applied_versions, discover, ingest_is_current, migrate
from streams.audit.store import AuditWriter, audit_row, connect
from streams.bench import synthetic
from streams.contracts import audit_fields, wire

pytestmark = pytest.mark.integration

#: The last commit before 004/006/007/008 were rewritten: their released texts.
RELEASED = "b34d556"
ROOT = Path(__file__).resolve().parents[2]
VERSIONS = [m.version for m in discover()]


def released_text(path: Path) -> str:
    rel = path.relative_to(ROOT).as_posix()
    return subprocess.run(["git", "-C", str(ROOT), "show", f"{RELEASED}:{rel}"], check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


@pytest.fixture(scope="module")
def client(clickhouse_url: str) -> Iterator[Any]:
    c = connect(clickhouse_url, cfg=config.load())
    yield c
    c.close()


@pytest.fixture()
def database(client: Any) -> Iterator[str]:
    db = f"pdx_up_{uuid.uuid4().hex[:8]}"
    yield db
    client.command(f"DROP DATABASE IF EXISTS {db} SYNC")


def migrate_as_released(client: Any, db: str, upto: str, tmp: Path) -> None:
    """Bring ``db`` to version ``upto`` with the migration texts as released."""
    tmp.mkdir(exist_ok=True)
    for mig in discover():
        if mig.version > upto:
            break
        text = released_text(mig.path) if mig.version in SUPERSEDED else mig.template
        (tmp / mig.path.name).write_text(text)
    migrate(client, db, ttl_days=30, sql_dir=tmp)


def schema(client: Any, db: str) -> list[tuple[str, ...]]:
    cols = client.query(
        "SELECT table, name, type, default_kind, default_expression, compression_codec FROM system.columns "
        "WHERE database = {db:String} AND table NOT LIKE '%_mv' ORDER BY table, position", parameters={"db": db}
    ).result_rows
    idx = client.query(
        "SELECT table, name, expr, type FROM system.data_skipping_indices WHERE database = {db:String} "
        "ORDER BY table, name", parameters={"db": db}
    ).result_rows
    return [tuple(str(v) for v in r) for r in [*cols, *idx]]


def insert_at_old_version(client: Any, db: str, records: list[dict[str, Any]]) -> None:
    """Rows as that version's table takes them (only the columns it has)."""
    have = {str(r[0]) for r in client.query(
        "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String}",
        parameters={"db": db, "t": config.AUDIT_TABLE}).result_rows}  # fmt: skip
    names = [c for c in audit_fields.COLUMNS if c in have]
    rows = [[v for c, v in zip(audit_fields.COLUMNS, audit_row(r), strict=True) if c in have] for r in records]
    client.insert(config.AUDIT_TABLE, rows, column_names=names, database=db)


@pytest.mark.parametrize("start", ["000", *VERSIONS[:-1]])
def test_a_database_at_each_earlier_version_upgrades_to_the_newest(
    client: Any, database: str, tmp_path: Path, start: str
) -> None:
    fresh = f"{database}_fresh"
    try:
        migrate(client, fresh, ttl_days=30)
        old = [wire.decode_as("AuditRecord", wire.encode("AuditRecord", r))
               for r in synthetic.records(50, seed=int(start) + 1, identities=5)]  # fmt: skip
        if start != "000":
            migrate_as_released(client, database, start, tmp_path / "sql")
            assert sorted(applied_versions(client, database)) == [v for v in VERSIONS if v <= start]
            insert_at_old_version(client, database, old)

        assert migrate(client, database, ttl_days=30) == [v for v in VERSIONS if v > start]
        assert sorted(applied_versions(client, database)) == VERSIONS
        assert ingest_is_current(client, database)
        assert schema(client, database) == schema(client, fresh)
        assert migrate(client, database, ttl_days=30) == []  # and a second run does nothing

        ids = client.query(f"SELECT request_id FROM {database}.{config.AUDIT_TABLE} FINAL").result_rows
        assert {r[0] for r in ids} == ({str(r["request"]["request_id"]) for r in old} if start != "000" else set())

        new = list(synthetic.records(30, seed=99, identities=5))
        msgs = [wire.encode("AuditRecord", r) for r in new]
        AuditWriter(client, database=database).insert_avro(avro_container.build(msgs), token=f"t-{start}")
        cols = ", ".join(audit_fields.COLUMNS)
        got = client.query(
            f"SELECT {cols} FROM {database}.{config.AUDIT_TABLE} WHERE request_id IN {{ids:Array(String)}}",
            parameters={"ids": [str(r["request"]["request_id"]) for r in new]},
        ).result_rows
        assert len(got) == len(new)
        stored = {row[0]: dict(zip(audit_fields.COLUMNS, row, strict=True)) for row in got}
        for record in new:
            want = dict(zip(audit_fields.COLUMNS, audit_row(wire.decode_as("AuditRecord", wire.encode(
                "AuditRecord", record))), strict=True))  # fmt: skip
            have = stored[str(record["request"]["request_id"])]
            for name in ("request_json", "identity_json", "decision", "reason_codes", "record_hash", "worker_id"):
                assert have[name] == want[name], (start, name)
    finally:
        client.command(f"DROP DATABASE IF EXISTS {fresh} SYNC")


def test_an_edited_ingest_object_is_rebuilt_by_the_next_migrate(client: Any, database: str) -> None:
    migrate(client, database, ttl_days=30)
    client.command(f"DROP TABLE {database}.{ingest.LINKS_VIEW}")
    assert not ingest_is_current(client, database)
    migrate(client, database, ttl_days=30)
    assert ingest_is_current(client, database)
