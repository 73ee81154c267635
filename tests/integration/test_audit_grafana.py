"""Every SQL query of the Grafana dashboard runs against the test ClickHouse (macros expanded as the plugin does)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from streams import config
from streams.audit.dashboard import dashboard_queries, expand_macros
from streams.bench import synthetic
from streams.bench.auditdb import AuditDB, fresh_database

pytestmark = pytest.mark.integration

END = datetime.now(UTC)
START = END - timedelta(days=7)


@pytest.fixture(scope="module")
def ch_url(request: pytest.FixtureRequest) -> str:
    return os.environ.get("PDX_TEST_CLICKHOUSE_URL") or str(request.getfixturevalue("clickhouse_url"))


@pytest.fixture(scope="module")
def db(ch_url: str) -> Iterator[AuditDB]:
    with fresh_database(ch_url, "pdx_t_grafana", cfg=config.load()) as handle:
        handle.writer.insert(list(synthetic.records(2000, seed=5, identities=30, start=START, end=END)))
        yield handle


QUERIES = dashboard_queries()


def test_dashboard_has_queries() -> None:
    assert len(QUERIES) >= 6


@pytest.mark.parametrize(("title", "sql"), QUERIES, ids=[t for t, _ in QUERIES])
def test_dashboard_query_runs(db: AuditDB, title: str, sql: str) -> None:
    result = db.client.query(expand_macros(sql, db.database, START, END))
    assert result.result_rows, f"panel {title!r} returned no rows on synthetic data"
