"""Helpers for tests and benchmarks: a throw-away migrated database on a real ClickHouse."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from streams.audit.migrate import migrate
from streams.audit.queries import Audit
from streams.audit.store import AuditWriter, connect
from streams.config import Settings


@dataclass
class AuditDB:
    url: str
    database: str
    client: Any
    writer: AuditWriter
    audit: Audit

    def count(self, final: bool = True) -> int:
        fin = " FINAL" if final else ""
        return int(self.client.query(f"SELECT count() FROM {self.database}.audit_decisions{fin}").result_rows[0][0])


@contextmanager
def fresh_database(
    url: str, prefix: str = "pdx_test", *, ttl_days: int | None = None, keep: bool = False,
    cfg: Settings,
) -> Iterator[AuditDB]:
    """Create ``<prefix>_<random>``, migrate it, yield handles, drop it afterwards (unless keep). ``cfg``: the
    Settings of the entry point (the login and the default URL)."""
    database = f"{prefix}_{uuid.uuid4().hex[:10]}"
    client = connect(url, cfg=cfg)
    try:
        migrate(client, database, ttl_days=ttl_days)
        yield AuditDB(url, database, client, AuditWriter(client, database=database), Audit(client, database))
    finally:
        if not keep:
            client.command(f"DROP DATABASE IF EXISTS {database} SYNC")
        client.close()
