"""Least privilege on the dev ClickHouse server: pdx_admin migrates, pdx_sink only inserts audit records, pdx_reader
only reads, and the password-less ``default`` (chdb's own engine login) can touch no pdx data."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest
from clickhouse_connect.driver.exceptions import ClickHouseError

from streams import config as settings
from streams.audit import avro_container
from streams.audit.migrate import migrate
from streams.audit.store import AuditWriter, connect, denies_access
from streams.bench import synthetic
from streams.bench.auditdb import AuditDB, fresh_database
from streams.contracts import wire
from streams.errors import UserError

pytestmark = pytest.mark.integration

TABLE = settings.AUDIT_TABLE


@pytest.fixture(scope="module")
def db(clickhouse_url: str) -> Iterator[AuditDB]:
    with fresh_database(clickhouse_url, "pdx_test_users", cfg=settings.load()) as handle:  # migrated by the admin role
        yield handle


def _denied(client: object, sql: str) -> None:
    with pytest.raises(ClickHouseError) as err:
        client.command(sql)  # type: ignore[attr-defined]
    assert denies_access(err.value), str(err.value)[:300]


def _records(n: int) -> list[bytes]:
    now = datetime.now(UTC)
    recs = synthetic.records(n, seed=7, identities=4, start=now - timedelta(hours=1), end=now)
    out = []
    for rec in recs:
        rid = f"users-{uuid.uuid4().hex}"
        rec["request"]["request_id"] = rec["decision"]["request_id"] = rid
        out.append(wire.encode("AuditRecord", rec))
    return out


def test_credentials_are_generated_private_and_found_without_setup(clickhouse_url: str) -> None:
    path = Path(os.environ[settings.ENV_CLICKHOUSE_CREDENTIALS])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    users = json.loads(path.read_text())["users"]
    assert {r: users[r]["user"] for r in settings.CLICKHOUSE_ROLES} == settings.CLICKHOUSE_DEV_USERS
    for role, user in settings.CLICKHOUSE_DEV_USERS.items():
        client = connect(clickhouse_url, cfg=settings.load(), role=role)
        assert client.query("SELECT currentUser()").result_rows[0][0] == user


def test_sink_inserts_audit_records_and_nothing_else(db: AuditDB, clickhouse_url: str) -> None:
    """The sink writes the pdx database (the one AuditSink uses), through audit_ingest and its views."""
    admin = connect(clickhouse_url, cfg=settings.load(), role="admin")
    migrate(admin)
    sink = connect(clickhouse_url, cfg=settings.load(), role="sink")
    msgs = _records(12)
    AuditWriter(sink).insert_avro(avro_container.build(msgs), token=uuid.uuid4().hex)
    reader = connect(clickhouse_url, cfg=settings.load(), role="reader")
    ids = [avro_container.request_id(m) for m in msgs]
    count = reader.query(
        f"SELECT uniqExact(request_id) FROM {settings.CLICKHOUSE_DATABASE}.{TABLE} "
        "WHERE request_id IN {ids:Array(String)}",
        parameters={"ids": ids},
    ).result_rows[0][0]
    assert count == len(msgs)  # the views filled the audit table as their definer
    for database in (settings.CLICKHOUSE_DATABASE, db.database):
        _denied(sink, f"SELECT count() FROM {database}.{TABLE}")
        _denied(sink, f"ALTER TABLE {database}.{TABLE} UPDATE decision = 'allow' WHERE 1")
        _denied(sink, f"ALTER TABLE {database}.{TABLE} DELETE WHERE 1")
        _denied(sink, f"DELETE FROM {database}.{TABLE} WHERE 1")
        _denied(sink, f"TRUNCATE TABLE {database}.{TABLE}")
        _denied(sink, f"DROP TABLE {database}.{TABLE}")
        _denied(sink, f"INSERT INTO {database}.{TABLE} (request_id) VALUES ('forged')")
    _denied(sink, f"CREATE DATABASE pdx_test_sink_{uuid.uuid4().hex[:8]}")


def test_reader_reads_and_cannot_change_anything(db: AuditDB, clickhouse_url: str) -> None:
    reader = connect(clickhouse_url, cfg=settings.load(), role="reader")
    reader.query(f"SELECT count() FROM {db.database}.{TABLE}")
    _denied(reader, f"INSERT INTO {db.database}.{TABLE} (request_id) VALUES ('forged')")
    _denied(reader, f"INSERT INTO {db.database}.audit_ingest FORMAT Avro")
    _denied(reader, f"ALTER TABLE {db.database}.{TABLE} UPDATE decision = 'allow' WHERE 1")
    _denied(reader, f"ALTER TABLE {db.database}.{TABLE} DELETE WHERE 1")
    _denied(reader, f"DELETE FROM {db.database}.{TABLE} WHERE 1")
    _denied(reader, f"TRUNCATE TABLE {db.database}.{TABLE}")
    _denied(reader, f"DROP DATABASE {db.database}")


def test_default_user_without_password_gets_nothing(db: AuditDB, clickhouse_url: str) -> None:
    # explicit user: no role lookup
    anonymous = connect(clickhouse_url.replace("http://", "http://default@"), cfg=settings.load())
    assert anonymous.query("SELECT currentUser()").result_rows[0][0] == "default"
    _denied(anonymous, f"SELECT count() FROM {db.database}.{TABLE}")
    _denied(anonymous, f"INSERT INTO {db.database}.{TABLE} (request_id) VALUES ('forged')")
    _denied(anonymous, f"CREATE DATABASE pdx_test_anon_{uuid.uuid4().hex[:8]}")
    _denied(anonymous, "SELECT count() FROM system.users")


def test_wrong_password_is_refused_with_a_clear_error(clickhouse_url: str) -> None:
    port = urlparse(clickhouse_url).port
    with pytest.raises(UserError, match="refused the login of user 'pdx_reader'"):
        connect(f"http://pdx_reader:wrong@127.0.0.1:{port}", cfg=settings.load(), role="reader")


def test_admin_migrates_a_new_database_from_the_cli(clickhouse_url: str) -> None:
    name = f"pdx_test_users_cli_{uuid.uuid4().hex[:8]}"
    try:
        out = subprocess.run(
            [sys.executable, "-m", "streams.cli.main", "audit", "migrate", "--database", name, "--json"],
            capture_output=True,
            text=True,
            env=os.environ.copy(),
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["applied"]
        reader = connect(clickhouse_url, cfg=settings.load(), role="reader")
        assert reader.query(f"SELECT count() FROM {name}.{TABLE}").result_rows[0][0] == 0
    finally:
        connect(clickhouse_url, cfg=settings.load(), role="admin").command(f"DROP DATABASE IF EXISTS {name} SYNC")
