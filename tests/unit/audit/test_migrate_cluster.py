"""The cluster transformation of the migrations (streams/audit/migrate.py), without ClickHouse: what each kind of
statement becomes, and that every shipped migration (008 and later included) can be transformed."""

from __future__ import annotations

import re
from string import Template

import pytest

from streams.audit import ingest
from streams.audit.migrate import (
    Cluster,
    ClusterPlan,
    MigrationError,
    discover,
    migrate,
    params,
    sharding_key,
)

P = params("pdx_x", 30)
PLAN = ClusterPlan.of(discover(), P)
ON = Cluster("c1")
PLAIN = Cluster("c1", replicated=False, on_cluster=False)


def test_the_plan_knows_tables_from_views() -> None:
    assert {"audit_decisions", "audit_ingest", "audit_identity_hourly", "audit_rule_daily", "audit_chain_links",
            "audit_checkpoints"} <= PLAN.tables
    assert {"audit_ingest_mv", "audit_identity_hourly_mv", "audit_rule_daily_mv", "audit_chain_links_mv"} <= PLAN.views
    assert not PLAN.tables & PLAN.views


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "CREATE TABLE IF NOT EXISTS pdx_x.audit_decisions (x UInt8) ENGINE = ReplacingMergeTree(ver) ORDER BY x",
            "CREATE TABLE IF NOT EXISTS pdx_x.audit_decisions_local ON CLUSTER c1 (x UInt8) ENGINE = "
            "ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}', ver) ORDER BY x",
        ),
        (
            "CREATE TABLE IF NOT EXISTS pdx_x.audit_rule_daily (x UInt8)\nENGINE = AggregatingMergeTree\nORDER BY x",
            "CREATE TABLE IF NOT EXISTS pdx_x.audit_rule_daily_local ON CLUSTER c1 (x UInt8)\nENGINE = "
            "ReplicatedAggregatingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}')\nORDER BY x",
        ),
        (
            "CREATE TABLE IF NOT EXISTS pdx_x.audit_ingest (x UInt8) ENGINE = Null",
            "CREATE TABLE IF NOT EXISTS pdx_x.audit_ingest_local ON CLUSTER c1 (x UInt8) ENGINE = Null",
        ),
        (
            "CREATE MATERIALIZED VIEW IF NOT EXISTS pdx_x.audit_ingest_mv TO pdx_x.audit_decisions AS\n"
            "SELECT x FROM (SELECT x FROM pdx_x.audit_ingest)",
            "CREATE MATERIALIZED VIEW IF NOT EXISTS pdx_x.audit_ingest_mv ON CLUSTER c1 TO pdx_x.audit_decisions_local"
            " AS\nSELECT x FROM (SELECT x FROM pdx_x.audit_ingest_local)",
        ),
        (
            "ALTER TABLE pdx_x.audit_decisions ADD COLUMN IF NOT EXISTS y String",
            "ALTER TABLE pdx_x.audit_decisions_local ON CLUSTER c1 ADD COLUMN IF NOT EXISTS y String",
        ),
        ("DROP TABLE IF EXISTS pdx_x.audit_ingest_mv", "DROP TABLE IF EXISTS pdx_x.audit_ingest_mv ON CLUSTER c1"),
        (
            "DROP TABLE IF EXISTS pdx_x.audit_decisions_005 SYNC",
            "DROP TABLE IF EXISTS pdx_x.audit_decisions_005_local ON CLUSTER c1 SYNC",
        ),
        (
            "EXCHANGE TABLES pdx_x.audit_decisions AND pdx_x.audit_decisions_005",
            "EXCHANGE TABLES pdx_x.audit_decisions_local AND pdx_x.audit_decisions_005_local ON CLUSTER c1",
        ),
        # DML goes through the Distributed tables, untouched
        ("INSERT INTO pdx_x.audit_decisions SELECT * FROM pdx_x.audit_decisions_005",
         "INSERT INTO pdx_x.audit_decisions SELECT * FROM pdx_x.audit_decisions_005"),
    ],
)
def test_statements_become_on_cluster_ddl_of_local_tables(sql: str, expected: str) -> None:
    assert PLAN.transform(sql, ON) == expected


def test_without_on_cluster_and_replication_only_the_names_change() -> None:
    sql = "CREATE TABLE IF NOT EXISTS pdx_x.audit_decisions (x UInt8) ENGINE = ReplacingMergeTree(ver) ORDER BY x"
    assert PLAN.transform(sql, PLAIN) == sql.replace("audit_decisions", "audit_decisions_local")


def test_every_shipped_statement_transforms_and_ddl_names_only_local_tables() -> None:
    """Generic over the files: a new migration (008, ...) is covered without cluster-specific text."""
    seen = 0
    built = [("ingest", Template(sql).substitute(P)) for sql in ingest.statements()]  # reconciled after them
    for where, sql in [(mig.path.name, step.sql) for mig in discover() for step in mig.steps(P)] + built:
        out = PLAN.transform(sql, ON)
        if out == sql:
            assert not re.match(r"\s*(CREATE|ALTER|DROP|EXCHANGE|RENAME)", sql, re.I)
            continue
        seen += 1
        assert " ON CLUSTER c1" in out
        for name in re.findall(r"\bpdx_x\.(\w+)\b", out):
            assert name.endswith("_local") or name in PLAN.views, (where, name)
        if re.match(r"\s*CREATE TABLE", out) and "MergeTree" in out:
            assert re.search(r"ENGINE = Replicated\w*MergeTree\('/clickhouse/tables/\{uuid\}/\{shard\}'", out)
    assert seen >= 15  # 001-008 and the ingest objects: far fewer would mean statements went unseen


def test_an_unknown_ddl_form_is_refused_with_the_statement() -> None:
    with pytest.raises(MigrationError, match="unknown DDL form"):
        PLAN.transform("CREATE DICTIONARY pdx_x.d (x UInt8) PRIMARY KEY x", ON)


def test_sharding_keeps_every_version_of_a_request_on_one_shard() -> None:
    assert sharding_key("audit_ingest", ["request", "decision"]) == "cityHash64(tupleElement(request, 'request_id'))"
    assert sharding_key("audit_decisions", ["request_id", "identity_id"]) == "cityHash64(request_id)"
    assert sharding_key("audit_chain_links", ["chain_id", "request_id"]) == "cityHash64(request_id)"
    assert sharding_key("audit_checkpoints", ["chain_id"]) == "cityHash64(chain_id)"
    assert sharding_key("audit_rule_daily", ["day", "rule"]) == "rand()"


def test_bad_cluster_names_are_refused() -> None:
    with pytest.raises(Exception, match="cluster name"):
        Cluster("c1; DROP DATABASE pdx")


def test_without_nodes_a_cluster_without_on_cluster_cannot_be_migrated() -> None:
    with pytest.raises(Exception, match="needs the list of its nodes"):
        migrate(object(), "pdx_x", ttl_days=30, cluster=PLAIN)


def test_the_cluster_setting_is_an_identifier_or_unset() -> None:
    from streams import config
    from streams.errors import ConfigError

    assert config.Settings.from_env({}).clickhouse_cluster is None
    assert config.Settings.from_env({config.ENV_CLICKHOUSE_CLUSTER: "pdx_cluster"}).clickhouse_cluster == "pdx_cluster"
    with pytest.raises(ConfigError, match="PDX_CLICKHOUSE_CLUSTER"):
        config.Settings.from_env({config.ENV_CLICKHOUSE_CLUSTER: "c1 SETTINGS x=1"})
