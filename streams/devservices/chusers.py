"""Least-privilege users of the local ClickHouse server (``pdx dev up clickhouse``).

=============  =========================================================================================
pdx_admin      migrations: every privilege on the ``pdx`` database and on every database named ``pdx*``
               (the tests' and benchmarks' ``pdx_test_*`` ones), table engines, and reading ``system.*``
               (parts, mutations); nothing on other databases
pdx_sink       INSERT into ``pdx.audit_ingest`` and ``pdx.audit_checkpoints`` only (the sink writes the pdx
               database only): the materialized views behind
               audit_ingest write the audit table, the chain links and the rollups as their definer (the
               admin who migrated; the dev server is configured so views default to SQL SECURITY DEFINER).
               No SELECT, no ALTER, no DELETE, no DDL
pdx_reader     SELECT on ``pdx*.*``, for investigators, reports and Grafana
default        no password, but no privilege either, only SYSTEM LISTEN; see below
=============  =========================================================================================

Why the grants are static (users.xml) rather than SQL ``GRANT``: chdb-core's server has only the read-only
``users_xml`` access storage (``CREATE USER`` fails with ACCESS_STORAGE_FOR_INSERTION_NOT_FOUND; tested), so
``pdx audit migrate`` cannot grant per database. ClickHouse's wildcard grants (``ON pdx*.*``) cover every
``pdx``-prefixed database instead.

Why ``default`` exists without a password: chdb's in-process engine logs in as ``default`` with an empty
password, and nothing (connection-string options, CLICKHOUSE_USER/PASSWORD, config keys) changes that
(tested). ``<networks>`` cannot keep it to the engine either, because ClickHouse treats every loopback address
alike. So ``default`` keeps only what the serving query needs (SYSTEM LISTEN) and can read, write or create
nothing. The production compose file has no password-less user at all.

Passwords are generated once and kept 0600 in ``<state_dir>/clickhouse/credentials.json``, which
:meth:`streams.config.Settings.clickhouse_login` finds by itself (so the quick start needs no setup).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from streams import config
from streams.devservices.secure import write_private

#: wildcard grant target: the pdx database and every database whose name starts with pdx
DATABASES = f"{config.CLICKHOUSE_DATABASE}*"

GRANTS: dict[str, tuple[str, ...]] = {
    "admin": (f"GRANT ALL ON {DATABASES}.*", "GRANT TABLE ENGINE ON *", "GRANT SELECT ON system.*"),
    # the materialized views behind audit_ingest write the audit table, chain links and rollups as their definer
    # (the sink always writes the pdx database; a wildcard database with a table name matches nothing else: tested)
    "sink": tuple(f"GRANT INSERT ON {config.CLICKHOUSE_DATABASE}.{t}" for t in ("audit_ingest", "audit_checkpoints")),
    "reader": (f"GRANT SELECT ON {DATABASES}.*",),
}


def credentials_path(state_dir: Path) -> Path:
    return state_dir / config.CLICKHOUSE_CREDENTIALS_FILE


def ensure_credentials(state_dir: Path, url: str) -> dict[str, dict[str, str]]:
    """The dev users and passwords (generated on first use), recorded with the URL of the server they are for."""
    path = credentials_path(state_dir)
    users: dict[str, dict[str, str]] = {}
    try:
        users = json.loads(path.read_text())["users"]
    except (OSError, ValueError, KeyError, TypeError):
        users = {}
    for role in config.CLICKHOUSE_ROLES:
        entry = users.get(role) or {}
        users[role] = {
            "user": config.CLICKHOUSE_DEV_USERS[role],
            "password": entry.get("password") or secrets.token_urlsafe(24),
        }
    write_private(path, json.dumps({"url": url, "users": users}, indent=2) + "\n")
    return users


def users_xml(users: dict[str, dict[str, str]]) -> str:
    """users.xml for the dev server: the three pdx users (sha256 passwords) and a privilege-less default."""
    parts = [
        "<clickhouse>",
        "  <!-- written by pdx dev up from credentials.json; regenerated on every start -->",
        "  <profiles><default/></profiles>",
        "  <quotas><default/></quotas>",
        "  <users>",
        "    <default>",
        "      <!-- chdb's in-process engine logs in as default without a password: give it nothing else -->",
        "      <password></password>",
        "      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>",
        "      <profile>default</profile><quota>default</quota>",
        "      <grants><query>GRANT SYSTEM LISTEN ON *.*</query></grants>",
        "    </default>",
    ]
    for role in config.CLICKHOUSE_ROLES:
        entry = users[role]
        digest = hashlib.sha256(entry["password"].encode()).hexdigest()
        grants = "".join(f"<query>{escape(q)}</query>" for q in GRANTS[role])
        parts += [
            f"    <{entry['user']}>",
            f"      <password_sha256_hex>{digest}</password_sha256_hex>",
            "      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>",
            "      <profile>default</profile><quota>default</quota>",
            f"      <grants>{grants}</grants>",
            f"    </{entry['user']}>",
        ]
    parts += ["  </users>", "</clickhouse>", ""]
    return "\n".join(parts)


def upgrade_views(client: Any) -> list[str]:
    """Make the materialized views of every ``pdx*`` database run as their definer (``ALTER TABLE ... MODIFY SQL
    SECURITY DEFINER``): views migrated before the dev server defaulted to it run as the inserting user, which
    would need SELECT on their sources, i.e. the sink reading the audit table. Returns the views changed."""
    rows = client.query(
        "SELECT database, name FROM system.tables WHERE engine = 'MaterializedView'"
        " AND startsWith(database, {p:String}) AND NOT match(create_table_query, 'SQL SECURITY DEFINER')",
        parameters={"p": config.CLICKHOUSE_DATABASE},
    ).result_rows
    changed = []
    for database, name in rows:
        client.command(f"ALTER TABLE `{database}`.`{name}` MODIFY SQL SECURITY DEFINER DEFINER = CURRENT_USER")
        changed.append(f"{database}.{name}")
    return changed
