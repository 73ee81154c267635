"""Versioned, idempotent ClickHouse migrations for the audit trail (``pdx audit migrate``).

Migration files live in ``streams/audit/sql`` (config.AUDIT_SQL_DIR) and are named ``NNN_description.sql``.
They are templates: ``$db``, ``$audit_table`` and ``$ttl_days`` are filled from settings (``$ttl_days`` from
PDX_AUDIT_TTL_DAYS). Applied versions are recorded in ``<db>.schema_migrations`` with a checksum of the template,
so a second run applies nothing and an edited, already-applied migration is reported instead of silently skipped.

A version is recorded only after all its statements ran, so a run interrupted half-way is repeated from the first
statement of that version: every statement must be safe to run again. Most are ``IF [NOT] EXISTS``; one that is
not (an ``EXCHANGE TABLES``, an ``INSERT ... SELECT``) is preceded by one or more condition lines::

    -- only if: SELECT count() = 0 FROM system.columns WHERE database = '$db' AND name = 'new_column'
    EXCHANGE TABLES ...;

and runs only when every condition's query returns a true (non-zero) first value; otherwise it is skipped.

After the versions, the retention TTL of the audit and rollup tables is reconciled with the configured number
of days (``ALTER TABLE ... MODIFY TTL``) so changing PDX_AUDIT_TTL_DAYS takes effect on the next migrate.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from streams import config
from streams.audit.store import check_identifier
from streams.errors import UserError

_FILE = re.compile(r"^(\d{3,})_([A-Za-z0-9_]+)\.sql$")
_STATEMENT_END = re.compile(r";[ \t]*(?:\n|$)")
#: ``-- only if: <query>``: a condition of the statement that follows (see the module docstring).
_CONDITION = re.compile(r"^\s*--\s*only if:\s*(.*?)\s*;?\s*$", re.I)
#: How a condition line is carried through statement splitting (cannot occur in SQL text read from a file).
_MARK = "\0only if:"

#: Tables whose TTL follows the configured retention, with the expression their TTL is on.
TTL_TABLES: dict[str, str] = {
    "$audit_table": "toDateTime(decided_at)",
    "audit_identity_hourly": "hour",
    "audit_rule_daily": "day",
    "audit_chain_links": "toDateTime(decided_at)",
    "audit_checkpoints": "toDateTime(signed_at)",
}


class MigrationError(UserError):
    """A migration cannot be applied (changed after being applied, or ClickHouse rejected it)."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def template(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()

    def statements(self, params: dict[str, str]) -> list[str]:
        return [step.sql for step in self.steps(params)]

    def steps(self, params: dict[str, str]) -> list[Step]:
        """The statements with their ``-- only if:`` conditions, in file order."""
        sql = Template(self.template).substitute(params)
        lines = []
        for line in sql.splitlines():
            cond = _CONDITION.match(line)
            if cond:
                if not cond.group(1):
                    raise MigrationError(f"migration {self.path.name}: empty condition: {line.strip()!r}")
                lines.append(_MARK + cond.group(1))
            elif not line.lstrip().startswith("--"):
                lines.append(line)
        steps = []
        for chunk in _STATEMENT_END.split("\n".join(lines)):
            conditions: list[str] = []
            body: list[str] = []
            for line in chunk.splitlines():
                if line.startswith(_MARK):
                    if any(b.strip() for b in body):
                        raise MigrationError(
                            f"migration {self.path.name}: an `-- only if:` line must come before its statement"
                        )
                    conditions.append(line[len(_MARK) :])
                else:
                    body.append(line)
            statement = "\n".join(body).strip()
            if statement:
                steps.append(Step(statement, tuple(conditions)))
            elif conditions:
                raise MigrationError(f"migration {self.path.name}: `-- only if:` with no statement after it")
        return steps


@dataclass(frozen=True)
class Step:
    """One statement of a migration and the conditions (queries) that must all be true for it to run."""

    sql: str
    only_if: tuple[str, ...] = ()

    def due(self, client: Any) -> bool:
        for cond in self.only_if:
            rows = client.query(cond).result_rows
            if not (rows and rows[0] and rows[0][0]):
                return False
        return True


def discover(sql_dir: Path = config.AUDIT_SQL_DIR) -> list[Migration]:
    found = []
    for path in sorted(sql_dir.glob("*.sql")):
        m = _FILE.match(path.name)
        if not m:
            raise MigrationError(f"migration file {path} must be named NNN_description.sql")
        found.append(Migration(m.group(1), m.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in {sql_dir}: {versions}")
    return found


def params(database: str, ttl_days: int | None = None, table: str = config.AUDIT_TABLE) -> dict[str, str]:
    days = config.load().audit_ttl_days if ttl_days is None else ttl_days
    if int(days) <= 0:
        raise UserError(f"{config.ENV_AUDIT_TTL_DAYS} must be a positive number of days, not {days}")
    return {
        "db": check_identifier(database, "database name"),
        "audit_table": check_identifier(table, "table name"),
        "ttl_days": str(int(days)),
    }


def applied_versions(client: Any, database: str = config.CLICKHOUSE_DATABASE) -> dict[str, str]:
    """version -> checksum of the migrations recorded as applied (empty if the database is new)."""
    db = check_identifier(database, "database name")
    exists = client.query(
        "SELECT count() FROM system.tables WHERE database = {db:String} AND name = 'schema_migrations'",
        parameters={"db": db},
    ).result_rows[0][0]
    if not exists:
        return {}
    rows = client.query(
        f"SELECT version, argMax(checksum, applied_at) FROM {db}.schema_migrations GROUP BY version"
    ).result_rows
    return {str(v): str(c) for v, c in rows}


def migrate(
    client: Any,
    database: str = config.CLICKHOUSE_DATABASE,
    *,
    ttl_days: int | None = None,
    sql_dir: Path = config.AUDIT_SQL_DIR,
) -> list[str]:
    """Apply the pending migrations; return the versions applied by this call (``[]`` when up to date)."""
    p = params(database, ttl_days)
    db = p["db"]
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.command(
        f"""CREATE TABLE IF NOT EXISTS {db}.schema_migrations (
            version String, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
        ) ENGINE = ReplacingMergeTree(applied_at) ORDER BY version"""
    )
    done = applied_versions(client, db)
    applied: list[str] = []
    for mig in discover(sql_dir):
        if mig.version in done:
            if done[mig.version] != mig.checksum:
                raise MigrationError(
                    f"migration {mig.path.name} changed after it was applied to {db}; add a new migration file instead"
                )
            continue
        for step in mig.steps(p):
            try:
                if step.due(client):
                    client.command(step.sql)
            except Exception as exc:
                raise MigrationError(f"migration {mig.path.name} failed: {exc}") from exc
        client.insert(
            "schema_migrations",
            [[mig.version, mig.name, mig.checksum]],
            column_names=["version", "name", "checksum"],
            database=db,
        )
        applied.append(mig.version)
    reconcile_ttl(client, db, int(p["ttl_days"]), p["audit_table"])
    return applied


def current_ttl_days(client: Any, database: str, table: str) -> int | None:
    rows = client.query(
        "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = {t:String}",
        parameters={"db": database, "t": table},
    ).result_rows
    if not rows:
        return None
    m = re.search(r"\bTTL\b.*?(?:INTERVAL\s+(\d+)\s+DAY|toIntervalDay\((\d+)\))", rows[0][0], flags=re.S | re.I)
    return int(m.group(1) or m.group(2)) if m else None


def reconcile_ttl(client: Any, database: str, ttl_days: int, audit_table: str = config.AUDIT_TABLE) -> list[str]:
    """Make every retention TTL equal ``ttl_days``; returns the tables changed."""
    changed = []
    for name, expr in TTL_TABLES.items():
        table = audit_table if name == "$audit_table" else name
        current = current_ttl_days(client, database, table)
        if current is None or current == ttl_days:
            continue
        client.command(f"ALTER TABLE {database}.{table} MODIFY TTL {expr} + INTERVAL {int(ttl_days)} DAY")
        changed.append(table)
    return changed


def migrate_schema(url: str | None = None, *, ttl_days: int | None = None) -> list[str]:
    """Apply pending audit migrations as the ``admin`` role (what the audit sink does before inserting as the
    ``sink`` role). When the admin login is missing or lacks the privileges (a least-privilege deployment that gives
    the sink only its own login and runs ``pdx audit migrate`` separately), nothing is migrated and ``[]`` is
    returned: the sink's inserts then tell whether the schema is there. Unreachable servers still raise."""
    import logging

    from streams.audit.store import ClickHouseError, connect, denies_access, refuses_login

    try:
        client = connect(url, role="admin")
    except UserError as exc:
        if not isinstance(exc.__cause__, ClickHouseError) or not refuses_login(exc.__cause__):
            raise
        logging.getLogger(__name__).warning("not migrating the audit schema: %s", exc)
        return []
    try:
        return migrate(client, ttl_days=ttl_days)
    except Exception as exc:
        if not denies_access(exc):
            raise
        logging.getLogger(__name__).warning("not migrating the audit schema (the admin login may not): %s", exc)
        return []
    finally:
        client.close()
