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

A column of the audit table is declared once, in streams/contracts/audit_fields.py; the migration that adds it
names it and the declaration gives its type, codec and default::

    -- add column: new_column

(expanded to a guarded ``ALTER TABLE $db.$audit_table ADD COLUMN IF NOT EXISTS ...``). Text two migrations share
lives once in ``sql/include/NAME.sql`` and is pasted by ``-- include: NAME``; the checksum covers the pasted text.

After the versions, two things that hold no data are reconciled with the code:

* the ingest objects (audit_ingest, audit_ingest_mv, audit_chain_links_mv), built from the Avro schema and the
  audit fields by streams/audit/ingest.py, are re-created when their fingerprint (the ingest table's comment)
  differs from what the code builds, so a migration that adds a field never repeats the view;
* the retention TTL of the audit and rollup tables is made equal to the configured number of days
  (``ALTER TABLE ... MODIFY TTL``) so changing PDX_AUDIT_TTL_DAYS takes effect on the next migrate.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from streams import config
from streams.audit import ingest
from streams.audit.store import check_identifier
from streams.contracts import audit_fields
from streams.errors import UserError

_FILE = re.compile(r"^(\d{3,})_([A-Za-z0-9_]+)\.sql$")
_STATEMENT_END = re.compile(r";[ \t]*(?:\n|$)")
#: ``-- only if: <query>``: a condition of the statement that follows (see the module docstring).
_CONDITION = re.compile(r"^\s*--\s*only if:\s*(.*?)\s*;?\s*$", re.I)
#: How a condition line is carried through statement splitting (cannot occur in SQL text read from a file).
_MARK = "\0only if:"
#: ``-- include: <name>``: the lines of include/<name>.sql, shared by migrations (001 and 005: the audit columns).
_INCLUDE = re.compile(r"^[ \t]*--[ \t]*include:[ \t]*(\w+)[ \t]*$", re.M)
#: ``-- add column: <name>``: add the audit table column the audit fields declare (see the module docstring).
_ADD_COLUMN = re.compile(r"^\s*--\s*add column:\s*(\w+)\s*$", re.I | re.M)

#: Earlier texts of migrations that were rewritten without changing the tables they leave: 004, 006, 007 and 008
#: each created the ingest view again, which is now built from the declarations and reconciled after the
#: versions (:func:`reconcile_ingest`). A database that ran an earlier text is up to date with the new one.
SUPERSEDED: dict[str, frozenset[str]] = {
    "004": frozenset({"0e7153aeed2905f0f7c654ed7ce67ca5a7ebd03ab59176bac96a369d81461c66"}),
    "006": frozenset({"d70cba287faaf6c5953b0182128a8f23dced5d4e39688e0659b8b6d21d096eee"}),
    "007": frozenset({"952091c2c3a18ad42ada0ad98a5c0ddb2fd37f33497bdf1f86fceb038d83fb7a"}),
    "008": frozenset({"8acdd0d75f4882d7a2fea0420d99e1c32ab739c59040145a09475258706f9ddf"}),
}

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
        """The file's text with each ``-- include: NAME`` line replaced by ``include/NAME.sql`` (its leading
        comment lines left out): what the statements come from and what the checksum covers."""
        return _INCLUDE.sub(lambda m: self._include(m.group(1)), self.path.read_text(encoding="utf-8"))

    def _include(self, name: str) -> str:
        path = self.path.parent / "include" / f"{name}.sql"
        if not path.is_file():
            raise MigrationError(f"migration {self.path.name}: `-- include: {name}` names no file {path}")
        lines = path.read_text(encoding="utf-8").split("\n")
        while lines and lines[0].lstrip().startswith("--"):
            lines.pop(0)
        return "\n".join(lines).rstrip("\n")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()

    def statements(self, params: dict[str, str]) -> list[str]:
        return [step.sql for step in self.steps(params)]

    def steps(self, params: dict[str, str]) -> list[Step]:
        """The statements with their ``-- only if:`` conditions, in file order."""
        sql = Template(_ADD_COLUMN.sub(lambda m: self._add_column(m.group(1)), self.template)).substitute(params)
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


    def _add_column(self, name: str) -> str:
        field = audit_fields.BY_NAME.get(name)
        if field is None:
            raise MigrationError(f"migration {self.path.name}: `-- add column: {name}` names no audit field "
                                 "(declare it in streams/contracts/audit_fields.py FIELDS)")
        return (f"-- only if: SELECT count() = 0 FROM system.columns WHERE database = '$db' AND table = "
                f"'$audit_table' AND name = '{name}'\n"
                f"ALTER TABLE $db.$audit_table ADD COLUMN IF NOT EXISTS {field.ddl()};")


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
    days = config.DEFAULT_AUDIT_TTL_DAYS if ttl_days is None else ttl_days  # callers pass Settings.audit_ttl_days
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
    cluster: Cluster | str | None = None,
) -> list[str]:
    """Apply the pending migrations; return the versions applied by this call (``[]`` when up to date).

    ``cluster``: a cluster name (the entry points pass Settings.clickhouse_cluster, PDX_CLICKHOUSE_CLUSTER) or
    :class:`Cluster` migrates ON CLUSTER with Replicated engines (see :func:`migrate_cluster`); ``None`` (or ``""``):
    one node. Without a cluster the statements run exactly as in the files."""
    if cluster == "":
        cluster = None
    if isinstance(cluster, str):
        cluster = Cluster(cluster)
    if cluster is not None:
        return migrate_cluster(client, cluster, database, ttl_days=ttl_days, sql_dir=sql_dir)
    p = params(database, ttl_days)
    db = p["db"]
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.command(_bookkeeping_table(db))
    applied = _apply(client, db, discover(sql_dir), p, client.command, "")
    if sql_dir == config.AUDIT_SQL_DIR:  # the shipped migrations make the tables the ingest objects write
        reconcile_ingest(client, db, p, client.command)
    reconcile_ttl(client, db, int(p["ttl_days"]), p["audit_table"])
    return applied


def _bookkeeping_table(db: str, engine: str = "ReplacingMergeTree(applied_at)", clause: str = "") -> str:
    """The DDL of ``schema_migrations``: which migrations a database has, with their checksums."""
    return f"""CREATE TABLE IF NOT EXISTS {db}.schema_migrations{clause} (
            version String, name String, checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
        ) ENGINE = {engine} ORDER BY version"""


def _apply(
    client: Any, db: str, migrations: list[Migration], p: dict[str, str], execute: Callable[[str], Any], where: str
) -> list[str]:
    """Run the steps of each migration ``db`` has not had (``execute(sql)``; conditions checked on ``client``),
    recording each as applied; a migration changed after it was applied is an error. Returns the versions."""
    done = applied_versions(client, db)
    applied: list[str] = []
    for mig in migrations:
        if mig.version in done:
            if done[mig.version] != mig.checksum and done[mig.version] not in SUPERSEDED.get(mig.version, ()):
                raise MigrationError(
                    f"migration {mig.path.name} changed after it was applied to {db}; add a new migration file instead"
                )
            continue
        for step in mig.steps(p):
            try:
                if step.due(client):
                    execute(step.sql)
            except MigrationError:
                raise
            except Exception as exc:
                raise MigrationError(f"migration {mig.path.name} failed{where}: {exc}") from exc
        client.insert(
            "schema_migrations",
            [[mig.version, mig.name, mig.checksum]],
            column_names=["version", "name", "checksum"],
            database=db,
        )
        applied.append(mig.version)
    return applied


def ingest_is_current(client: Any, database: str, ingest_table: str = ingest.INGEST_TABLE) -> bool:
    """Whether the database's ingest objects are the ones the code builds: the ingest table carries the current
    fingerprint as its comment and both views exist."""
    rows = client.query(
        "SELECT name, comment FROM system.tables WHERE database = {db:String} AND name IN {names:Array(String)}",
        parameters={"db": database, "names": [ingest_table, *ingest.VIEWS]},
    ).result_rows
    found = {str(name): str(comment) for name, comment in rows}
    return found.get(ingest_table) == ingest.fingerprint() and all(v in found for v in ingest.VIEWS)


def reconcile_ingest(
    client: Any,
    database: str,
    p: dict[str, str],
    execute: Callable[[str], Any],
    ingest_table: str = ingest.INGEST_TABLE,
) -> bool:
    """Re-create the ingest objects (streams/audit/ingest.py) unless they are current; True when it did. They
    hold no data: an insert from a running sink in between fails and is retried."""
    if ingest_is_current(client, database, ingest_table):
        return False
    for sql in ingest.statements():
        try:
            execute(Template(sql).substitute(p))
        except Exception as exc:
            raise MigrationError(f"re-creating the audit ingest objects in {database} failed: {exc}") from exc
    return True


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


def migrate_schema(
    url: str | None = None,
    *,
    cfg: config.Settings,
    ttl_days: int | None = None,
    cluster: str | None = None,
) -> list[str]:
    """Apply pending audit migrations as the ``admin`` role (what the audit sink does before inserting as the
    ``sink`` role). When the admin login is missing or lacks the privileges (a least-privilege deployment that gives
    the sink only its own login and runs ``pdx audit migrate`` separately), nothing is migrated and ``[]`` is
    returned: the sink's inserts then tell whether the schema is there. Unreachable servers still raise."""
    import logging

    from streams.audit.store import ClickHouseError, connect, denies_access, refuses_login

    try:
        client = connect(url, cfg=cfg, role="admin")
    except UserError as exc:
        if not isinstance(exc.__cause__, ClickHouseError) or not refuses_login(exc.__cause__):
            raise
        logging.getLogger(__name__).warning("not migrating the audit schema: %s", exc)
        return []
    try:
        return migrate(client, ttl_days=ttl_days, cluster=cluster)
    except Exception as exc:
        if not denies_access(exc):
            raise
        logging.getLogger(__name__).warning("not migrating the audit schema (the admin login may not): %s", exc)
        return []
    finally:
        client.close()


# ---- cluster ---------------------------------------------------------------------------------------------------
#
# With a cluster (PDX_CLICKHOUSE_CLUSTER), the migration files stay the single-node SQL above and each statement is
# transformed here, generically, so a new migration needs no cluster-specific text:
#
# * every table a migration creates (``CREATE TABLE $db.X``) lives on each node as ``$db.X_local``, with
#   ``ENGINE = Replicated<Engine>('/clickhouse/tables/{uuid}/{shard}', '{replica}', <args>)`` for the MergeTree
#   family (a Null table stays Null), and ``$db.X`` becomes a Distributed table over it. Queries, the sink and the
#   INSERT ... SELECT of a migration keep using ``$db.X``, so they read and write the whole cluster;
# * every DDL statement (CREATE, ALTER, DROP, EXCHANGE, RENAME, TRUNCATE) gets ``ON CLUSTER <name>`` and names the
#   ``_local`` tables; a materialized view keeps its name and reads and writes the ``_local`` tables of its own
#   shard, so the rows an insert into the Distributed ``audit_ingest`` sends to one shard fill that shard's audit
#   table, chain links and rollups;
# * after each DDL statement the Distributed tables over the tables it touched are brought in line: created when
#   missing, created again when their columns differ from the local table's (after ALTER ... ADD COLUMN or an
#   EXCHANGE), dropped with their local table. A Distributed table holds no data (the sink inserts in the
#   foreground: distributed_foreground_insert), so re-creating it loses nothing; an insert in that instant fails
#   and the sink retries it.
#
# Sharding: all versions of one request must be on one shard, or ReplacingMergeTree + FINAL (which collapses per
# shard) would keep a redelivery next to the first decision. So the ingest table is sharded by
# cityHash64(request.request_id), and so is the audit table's own Distributed table (the key its rows already have
# on their shard); the chain links follow their record; checkpoints by chain; the rollups by identity (their
# uniq states merge exactly across shards under GROUP BY).
#
# ON CLUSTER needs a Keeper (the distributed DDL queue) and so do Replicated engines. A sharded cluster without a
# Keeper (one replica per shard, plain MergeTree) is also supported: ``Cluster(name, replicated=False)`` with
# ``nodes`` given to :func:`migrate_cluster` runs each DDL statement, without ON CLUSTER, on every node.

#: The Distributed tables' sharding keys, by table; a table not listed is sharded by the first of
#: :data:`SHARD_BY_COLUMN` it has, else at random.
SHARDING_KEYS: dict[str, str] = {
    "audit_ingest": "cityHash64(tupleElement(request, 'request_id'))",
    "audit_checkpoints": "cityHash64(chain_id)",
}
SHARD_BY_COLUMN: tuple[str, ...] = ("request_id", "chain_id", "identity_id")
LOCAL_SUFFIX = "_local"
#: Where Replicated tables keep their metadata in Keeper: {uuid} is the same on every node of an ON CLUSTER create,
#: so a table dropped and created again (an EXCHANGE, 006-008's audit_ingest) never meets its old replica path.
REPLICA_PATH = "/clickhouse/tables/{uuid}/{shard}"
REPLICA_NAME = "{replica}"

_DDL = re.compile(r"^\s*(CREATE|ALTER|DROP|EXCHANGE|RENAME|TRUNCATE)\b", re.I)
_CREATE_TABLE = re.compile(r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\.(\w+)", re.I)
_CREATE_VIEW = re.compile(r"^\s*CREATE\s+MATERIALIZED\s+VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?(\w+)\.(\w+)", re.I)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(\w*MergeTree)\b(\s*\(([^()]*)\))?", re.I)
#: where ON CLUSTER goes: after the (last) object name of the statement's head
_HEADS = [
    re.compile(r"^(\s*CREATE\s+(?:MATERIALIZED\s+VIEW|TABLE)\s+(?:IF\s+NOT\s+EXISTS\s+)?[\w.]+)", re.I),
    re.compile(r"^(\s*(?:ALTER|TRUNCATE)\s+TABLE\s+(?:IF\s+EXISTS\s+)?[\w.]+)", re.I),
    re.compile(r"^(\s*DROP\s+(?:TABLE|VIEW|DICTIONARY)\s+(?:IF\s+EXISTS\s+)?[\w.]+)", re.I),
    re.compile(r"^(\s*EXCHANGE\s+TABLES\s+[\w.]+\s+AND\s+[\w.]+)", re.I),
    re.compile(r"^(\s*RENAME\s+TABLE\s+[\w.]+\s+TO\s+[\w.]+(?:\s*,\s*[\w.]+\s+TO\s+[\w.]+)*)", re.I),
]


@dataclass(frozen=True)
class Cluster:
    """Where and how to migrate a cluster: ``name`` as in the servers' ``remote_servers``; ``replicated``: use
    Replicated* engines (needs a Keeper); ``on_cluster``: run DDL once with ON CLUSTER (needs a Keeper), else on
    every node given to :func:`migrate_cluster`."""

    name: str
    replicated: bool = True
    on_cluster: bool = True

    def __post_init__(self) -> None:
        check_identifier(self.name, "cluster name")

    @property
    def clause(self) -> str:
        return f" ON CLUSTER {self.name}" if self.on_cluster else ""


@dataclass(frozen=True)
class ClusterPlan:
    """The tables and views of the migrations (from their CREATE statements), to tell data tables from views."""

    db: str
    tables: frozenset[str]
    views: frozenset[str]

    @classmethod
    def of(cls, migrations: list[Migration], p: dict[str, str]) -> ClusterPlan:
        tables, views = set(), set()
        built = [Template(sql).substitute(p) for sql in ingest.statements()]  # the ingest objects (reconciled)
        for sql in [step.sql for mig in migrations for step in mig.steps(p)] + built:
            if m := _CREATE_TABLE.match(sql):
                tables.add(m.group(2))
            elif m := _CREATE_VIEW.match(sql):
                views.add(m.group(2))
        tables |= {name for name in (p["audit_table"], *TTL_TABLES) if not name.startswith("$")}
        return cls(p["db"], frozenset(tables), frozenset(views))

    def local(self, table: str) -> str:
        return table + LOCAL_SUFFIX if table in self.tables else table

    def touched(self, sql: str) -> list[str]:
        """The data tables a statement names (``$db.X``), in order of appearance."""
        seen: list[str] = []
        for name in re.findall(rf"\b{re.escape(self.db)}\.(\w+)\b", sql):
            if name in self.tables and name not in seen:
                seen.append(name)
        return seen

    def transform(self, sql: str, cluster: Cluster) -> str:
        """One DDL statement for the cluster: ``_local`` names, ON CLUSTER, Replicated engine. Other statements
        (INSERT ... SELECT, queries) are returned unchanged: they go through the Distributed tables."""
        if not _DDL.match(sql):
            return sql
        out = re.sub(
            rf"\b({re.escape(self.db)})\.(\w+)\b",
            lambda m: f"{m.group(1)}.{self.local(m.group(2))}",
            sql,
        )
        for head in _HEADS:
            if head.match(out):
                out = head.sub(lambda m: m.group(1) + cluster.clause, out, count=1)
                break
        else:
            raise MigrationError(f"cannot run this statement on a cluster (unknown DDL form): {sql[:120]!r}")
        if cluster.replicated and _CREATE_TABLE.match(out):
            out = _ENGINE.sub(_replicated_engine, out, count=1)
        return out

    def distributed_ddl(self, table: str, cluster: Cluster, key: str) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {self.db}.{table}{cluster.clause} AS {self.db}.{self.local(table)} "
            f"ENGINE = Distributed({cluster.name}, {self.db}, {self.local(table)}, {key})"
        )


def _replicated_engine(m: re.Match[str]) -> str:
    engine = m.group(1)
    if engine.lower().startswith("replicated"):
        return m.group(0)
    args = [f"'{REPLICA_PATH}'", f"'{REPLICA_NAME}'"]
    if m.group(3) and m.group(3).strip():
        args.append(m.group(3).strip())
    return f"ENGINE = Replicated{engine}({', '.join(args)})"


def sharding_key(table: str, columns: list[str]) -> str:
    if table in SHARDING_KEYS:
        return SHARDING_KEYS[table]
    for col in SHARD_BY_COLUMN:
        if col in columns:
            return f"cityHash64({col})"
    return "rand()"


class _ClusterRun:
    """Runs the transformed statements: DDL once ON CLUSTER, or on every node; the rest on the first client."""

    def __init__(self, client: Any, cluster: Cluster, nodes: list[Any], plan: ClusterPlan) -> None:
        self.client, self.cluster, self.plan = client, cluster, plan
        self.nodes = nodes if not cluster.on_cluster else [client]

    def ddl(self, sql: str) -> None:
        for node in self.nodes:
            node.command(sql)

    def step(self, sql: str) -> None:
        if not _DDL.match(sql):
            self.client.command(sql)
            return
        self.ddl(self.plan.transform(sql, self.cluster))
        self.sync_distributed(self.plan.touched(sql))

    def _columns(self, table: str) -> list[tuple[str, ...]]:
        rows = self.client.query(
            "SELECT name, type, default_kind, default_expression, compression_codec FROM system.columns"
            " WHERE database = {db:String} AND table = {t:String} ORDER BY position",
            parameters={"db": self.plan.db, "t": table},
        ).result_rows
        return [tuple(str(v) for v in r) for r in rows]

    def _engine(self, table: str) -> str | None:
        rows = self.client.query(
            "SELECT engine FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            parameters={"db": self.plan.db, "t": table},
        ).result_rows
        return str(rows[0][0]) if rows else None

    def sync_distributed(self, tables: list[str]) -> None:
        """Make ``$db.X`` a Distributed table with exactly the columns of ``$db.X_local`` (or absent with it)."""
        db, clause = self.plan.db, self.cluster.clause
        for table in tables:
            local = self._columns(self.plan.local(table))
            engine = self._engine(table)
            if engine is not None and engine != "Distributed":
                raise MigrationError(
                    f"{db}.{table} is a {engine} table, not the Distributed table the cluster layout needs: "
                    "migrate a new database, or move the data to the cluster tables first"
                )
            if engine is not None and (not local or self._columns(table) != local):
                self.ddl(f"DROP TABLE IF EXISTS {db}.{table}{clause} SYNC")
                engine = None
            if local and engine is None:
                self.ddl(self.plan.distributed_ddl(table, self.cluster, sharding_key(table, [c[0] for c in local])))


def migrate_cluster(
    client: Any,
    cluster: Cluster,
    database: str = config.CLICKHOUSE_DATABASE,
    *,
    nodes: list[Any] | None = None,
    ttl_days: int | None = None,
    sql_dir: Path = config.AUDIT_SQL_DIR,
) -> list[str]:
    """Apply the pending migrations to a cluster (see the comment above :data:`SHARDING_KEYS`); ``client`` is the
    node that runs ON CLUSTER DDL, checks conditions and records the versions; ``nodes`` (every node, ``client``
    included) only when ``cluster.on_cluster`` is false. Returns the versions applied."""
    if not cluster.on_cluster and not nodes:
        raise UserError(f"migrating cluster {cluster.name} without ON CLUSTER needs the list of its nodes")
    p = params(database, ttl_days)
    db = p["db"]
    migrations = discover(sql_dir)
    plan = ClusterPlan.of(migrations, p)
    run = _ClusterRun(client, cluster, list(nodes or []), plan)
    engine = run._engine(p["audit_table"])
    if engine is not None and engine != "Distributed":
        raise MigrationError(
            f"{db}.{p['audit_table']} is a single-node {engine} table: cluster {cluster.name} needs its own database "
            "(migrate a new one, then copy the rows in with INSERT ... SELECT), "
            f"or unset {config.ENV_CLICKHOUSE_CLUSTER}"
        )
    run.ddl(f"CREATE DATABASE IF NOT EXISTS {db}{cluster.clause}")
    # the bookkeeping: one table every node shares when replicated, else on the node that migrates
    if cluster.replicated:
        engine = f"ReplicatedReplacingMergeTree('/clickhouse/tables/{{uuid}}/all', '{REPLICA_NAME}', applied_at)"
        client.command(_bookkeeping_table(db, engine, cluster.clause))
    else:
        client.command(_bookkeeping_table(db))
    applied = _apply(client, db, migrations, p, run.step, f" on cluster {cluster.name}")
    if sql_dir == config.AUDIT_SQL_DIR:
        reconcile_ingest(client, db, p, run.step, plan.local(ingest.INGEST_TABLE))
    days = int(p["ttl_days"])
    for name, expr in TTL_TABLES.items():
        table = p["audit_table"] if name == "$audit_table" else name
        current = current_ttl_days(client, db, plan.local(table))
        if current is not None and current != days:
            run.step(f"ALTER TABLE {db}.{table} MODIFY TTL {expr} + INTERVAL {days} DAY")
    return applied
