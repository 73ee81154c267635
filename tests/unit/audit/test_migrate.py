"""The migration runner without ClickHouse: `-- only if:` conditions, statement splitting, and that every statement
of every shipped migration can be run again after an interruption."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import pytest

from streams.audit.migrate import Migration, MigrationError, Step, discover, migrate, params

P = params("pdx_x", 30)


def migration(tmp_path: Path, text: str, name: str = "001_test.sql") -> Migration:
    path = tmp_path / name
    path.write_text(text)
    return Migration(name[:3], name[4:-4], path)


def test_conditions_belong_to_the_statement_after_them(tmp_path: Path) -> None:
    mig = migration(
        tmp_path,
        """-- a comment; with a semicolon at the end;
CREATE TABLE IF NOT EXISTS $db.a (x UInt8) ENGINE = Memory;

-- only if: SELECT count() = 0 FROM system.tables WHERE database = '$db' AND name = 'b'
--   only if:   SELECT 1;
-- why: an ordinary comment between the conditions and the statement
EXCHANGE TABLES $db.a
    AND $db.b;
-- Only If: SELECT 2
DROP TABLE IF EXISTS $db.a;
""",
    )
    assert mig.steps(P) == [
        Step("CREATE TABLE IF NOT EXISTS pdx_x.a (x UInt8) ENGINE = Memory"),
        Step(
            "EXCHANGE TABLES pdx_x.a\n    AND pdx_x.b",
            ("SELECT count() = 0 FROM system.tables WHERE database = 'pdx_x' AND name = 'b'", "SELECT 1"),
        ),
        Step("DROP TABLE IF EXISTS pdx_x.a", ("SELECT 2",)),
    ]
    assert mig.statements(P) == [s.sql for s in mig.steps(P)]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("SELECT 1;\n-- only if: SELECT 1\n", "no statement after it"),
        ("SELECT\n-- only if: SELECT 1\n1;\n", "must come before its statement"),
        ("-- only if:\nSELECT 1;\n", "empty condition"),
    ],
)
def test_misplaced_conditions_are_errors(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(MigrationError, match=error):
        migration(tmp_path, text).steps(P)


def test_the_shipped_migrations_split_as_before() -> None:
    """The runner learnt conditions: 001..004 (checksummed, applied) must still give exactly the same statements."""
    end = re.compile(r";[ \t]*(?:\n|$)")
    for mig in discover():
        if mig.version > "004":
            continue
        body = "\n".join(
            line for line in Template(mig.template).substitute(P).splitlines() if not line.lstrip().startswith("--")
        )
        assert mig.steps(P) == [Step(s.strip()) for s in end.split(body) if s.strip()]


SAFE_AGAIN = re.compile(r"^(CREATE (TABLE|MATERIALIZED VIEW|DATABASE) IF NOT EXISTS|DROP TABLE IF EXISTS)\b")


def test_every_statement_can_run_again() -> None:
    """A version is recorded only after all its statements: each must be IF [NOT] EXISTS or guarded by a condition."""
    for mig in discover():
        for step in mig.steps(P):
            assert step.only_if or SAFE_AGAIN.match(step.sql), (mig.path.name, step.sql[:80])
            assert "$" not in step.sql and all("$" not in c for c in step.only_if)


def test_005_rebuilds_the_audit_table_under_its_name() -> None:
    [mig] = [m for m in discover() if m.version == "005"]
    steps = mig.steps(P)
    assert [s.sql.split("(")[0].split("\n")[0].strip() for s in steps] == [
        "CREATE TABLE IF NOT EXISTS pdx_x.audit_decisions_005",
        "EXCHANGE TABLES pdx_x.audit_decisions AND pdx_x.audit_decisions_005",
        "INSERT INTO pdx_x.audit_decisions",
        "DROP TABLE IF EXISTS pdx_x.audit_decisions_005 SYNC",
    ]
    assert all(s.only_if for s in steps)
    create = steps[0].sql
    assert "ENGINE = ReplacingMergeTree(ver)" in create
    assert "ORDER BY (identity_id, decided_month, occurred_at, request_id, request_hash)" in create
    assert "PARTITION BY decided_month" in create and "INTERVAL 30 DAY" in create
    # the copy names the same ordinary columns on both sides, the MATERIALIZED ones on neither
    insert = steps[2].sql
    into, select = insert.split("SELECT")
    columns = [c.strip() for c in into.split("(", 1)[1].rsplit(")", 1)[0].split(",")]
    assert [c.strip() for c in select.split("FROM")[0].split(",")] == columns
    assert "request_hash" not in columns and "ver" not in columns and "decided_month" not in columns
    assert len(columns) == 35 and columns[-1] == "inserted_at"


# ---- the runner --------------------------------------------------------------------------------------------


@dataclass
class _Result:
    result_rows: list[tuple[Any, ...]]


@dataclass
class FakeClient:
    """Answers the runner's bookkeeping queries; condition queries are answered from ``answers``."""

    answers: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)
    fail_on: str | None = None

    def command(self, sql: str) -> None:
        if self.fail_on and self.fail_on in sql:
            raise RuntimeError("Code: 999. boom")
        self.commands.append(sql)

    def query(self, sql: str, parameters: dict[str, Any] | None = None) -> _Result:
        if "name = 'schema_migrations'" in sql:
            return _Result([(0,)])
        if "create_table_query" in sql:
            return _Result([])
        self.queries.append(sql)
        answer = self.answers[sql]
        if isinstance(answer, Exception):
            raise answer
        return _Result([(answer,)])

    def insert(self, table: str, rows: list[list[Any]], column_names: list[str], database: str) -> None:
        self.recorded += [r[0] for r in rows]


def test_a_statement_runs_only_when_all_its_conditions_hold(tmp_path: Path) -> None:
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "001_one.sql").write_text(
        "-- only if: SELECT 'yes'\n-- only if: SELECT 'also'\nCREATE TABLE t1;\n"
        "-- only if: SELECT 'yes'\n-- only if: SELECT 'no'\nCREATE TABLE t2;\n"
        "-- only if: SELECT 'zero'\nCREATE TABLE t3;\n"
        "CREATE TABLE t4;\n"
    )
    client = FakeClient({"SELECT 'yes'": 1, "SELECT 'also'": True, "SELECT 'no'": 0, "SELECT 'zero'": False})
    assert migrate(client, "pdx_x", ttl_days=30, sql_dir=sql) == ["001"]
    assert [c for c in client.commands if c.startswith("CREATE TABLE t")] == ["CREATE TABLE t1", "CREATE TABLE t4"]
    assert client.recorded == ["001"]


def test_a_failing_condition_or_statement_stops_the_version_unrecorded(tmp_path: Path) -> None:
    sql = tmp_path / "sql"
    sql.mkdir()
    (sql / "001_one.sql").write_text("-- only if: SELECT broken\nCREATE TABLE t1;\n")
    client = FakeClient({"SELECT broken": RuntimeError("Code: 47. Unknown identifier")})
    with pytest.raises(MigrationError, match=r"001_one\.sql failed: Code: 47"):
        migrate(client, "pdx_x", ttl_days=30, sql_dir=sql)
    assert client.recorded == []
    (sql / "001_one.sql").write_text("CREATE TABLE t0;\nCREATE TABLE t1;\n")
    client = FakeClient(fail_on="t1")
    with pytest.raises(MigrationError, match="boom"):
        migrate(client, "pdx_x", ttl_days=30, sql_dir=sql)
    assert client.recorded == [] and client.commands[-1] == "CREATE TABLE t0"
