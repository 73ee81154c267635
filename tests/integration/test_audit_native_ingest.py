"""Native audit ingestion against a real ClickHouse: raw AuditRecord bytes → Avro container → audit_ingest (Null)
→ materialized view → audit table, proven equal column by column to the Python ``audit_row`` path."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams import config
from streams.audit import avro_container
from streams.audit.sink import AuditSink
from streams.audit.store import COLUMNS, AuditRejectedError
from streams.bench import synthetic
from streams.bench.auditdb import AuditDB, fresh_database
from streams.contracts import wire
from streams.model import AccessRequest, Identity

pytestmark = pytest.mark.integration

START = datetime(2026, 4, 28, 0, 0, tzinfo=UTC)
END = datetime(2026, 5, 3, 0, 0, tzinfo=UTC)  # spans a month boundary: two partitions per insert


@pytest.fixture(scope="module")
def ch_url(request: pytest.FixtureRequest) -> str:
    return os.environ.get("PDX_TEST_CLICKHOUSE_URL") or str(request.getfixturevalue("clickhouse_url"))


@pytest.fixture()
def dbs(ch_url: str) -> Iterator[tuple[AuditDB, AuditDB]]:
    """(rows written by audit_row, rows written by the view), two fresh databases."""
    cfg = config.load()
    with fresh_database(ch_url, "pdx_t_rows", cfg=cfg) as rows:
        with fresh_database(ch_url, "pdx_t_native", cfg=cfg) as native:
            yield rows, native


def edge_records() -> list[dict[str, Any]]:
    """Synthetic records, then one per edge case the view has to get right."""
    recs = list(synthetic.records(400, seed=21, identities=25, start=START, end=END))
    base = recs[0]

    def variant(rid: str) -> dict[str, Any]:
        r = copy.deepcopy(base)
        r["request"]["request_id"] = r["decision"]["request_id"] = rid
        return r

    unknown = variant("edge-unknown-identity")
    unknown["identity"] = None
    unknown["decision"].update(decision="deny", matched_rules=[], obligations={})
    unknown["decision"]["reasons"] = [{"code": "unknown_identity", "message": "no such", "policy": None, "rule": None}]
    empty = variant("edge-empty-arrays")
    empty["decision"].update(reasons=[], matched_rules=[], monitor=[], obligations={})
    empty["request"]["on_behalf_of"] = []
    assert empty["identity"] is not None
    empty["identity"].update(tags=[], environments=[], scopes=[], approved_repositories=[], attributes={})
    monitor = variant("edge-monitor")
    monitor["decision"]["monitor"] = [
        {"policy": "p1", "rule": "p1/r", "effect": "deny", "reason_code": "would_deny"},
        {"policy": "p2", "rule": "p2/s", "effect": "step_up", "reason_code": "approval_required"},
    ]
    text = variant("edge-unicode-✓")
    text["request"]["action"] = "db:connect"
    text["request"]["resource"].update(
        id='prod/db/"quoted"\\back\\/slash ünï 😀', environment=None, sensitivity=None, repository="org/r", owner="t"
    )
    text["request"]["resource"]["attributes"] = {"ключ": "значение/÷", "a/b": "c\\d"}
    text["request"]["context"].update(
        source_ip=None,
        token_issued_at=datetime(2026, 4, 30, 1, 2, 3, 456000, tzinfo=UTC),
        requested_ttl_s=2**40,
        approval_id="appr-1",
        change_ticket="CHG-ü",
        tool=None,
        attributes={"k": "v"},
    )
    text["request"]["deadline"] = datetime(2026, 4, 30, 1, 2, 4, tzinfo=UTC)  # no fraction
    text["decision"]["obligations"] = {"note": '漢字 and "quotes"', "expires_at": "2026-05-01T00:00:00+00:00"}
    text["decision"]["reasons"][0]["message"] = "línea\tcon tab"
    control = variant("edge-control-chars")
    control["request"]["resource"]["id"] = "a\nb\x01c\u2028d"
    creds = variant("edge-credentials")
    assert creds["identity"] is not None
    t = creds["decided_at"]
    creds["identity"]["credentials"] = [
        {"id": "old-revoked", "type": "api_key", "created_at": t - timedelta(days=900), "rotated_at": None,
         "expires_at": None, "status": "revoked"},
        {"id": "rotated", "type": "x509", "created_at": t - timedelta(days=500),
         "rotated_at": t - timedelta(days=12, microseconds=7000), "expires_at": t + timedelta(days=30),
         "status": "active"},
        {"id": "newer", "type": "token", "created_at": t - timedelta(days=3), "rotated_at": None,
         "expires_at": None, "status": "active"},
    ]  # fmt: skip
    future = variant("edge-future-credential")
    assert future["identity"] is not None
    future["identity"]["credentials"] = [
        {"id": "f", "type": "api_key", "created_at": future["decided_at"] + timedelta(days=1), "rotated_at": None,
         "expires_at": None, "status": "active"}
    ]  # fmt: skip
    revoked = variant("edge-no-active-credential")
    assert revoked["identity"] is not None
    for c in revoked["identity"]["credentials"]:
        c["status"] = "revoked"
    worker = variant("edge-worker-fallback")
    worker["worker_id"] = ""
    worker["decision"]["worker_id"] = "decision-worker"
    worker["decision"]["eval_us"] = -5
    whole = variant("edge-whole-seconds")
    whole["decided_at"] = whole["received_at"] = whole["decision"]["evaluated_at"] = datetime(2026, 5, 1, tzinfo=UTC)
    whole["request"]["occurred_at"] = datetime(2026, 4, 30, 23, 59, 59, tzinfo=UTC)
    chained = variant("edge-chained")
    chained["chain"] = {"chain_id": "w/pdx.requests/0/1-ab", "seq": 3, "prev": bytes(range(32)),
                        "request_digest": b"\x01" * 32, "body_digest": b"\x02" * 32, "hash": bytes(range(32, 64))}
    relied = variant("edge-relied-on")  # an approval and two delegating principals (sql/008)
    principal = copy.deepcopy(base["identity"])
    principal.update(id="alice", kind="human", scopes=["config:admin"], tags=["ünï"])
    relied["relied_on"] = {
        "approvals": [{"approval_id": "apr-1", "approved_by": "carol", "granted_at": START,
                       "expires_at": START + timedelta(hours=1, milliseconds=7)}],
        "principals": [principal, {**copy.deepcopy(principal), "id": "bob", "credentials": []}],
    }
    return [*recs, unknown, empty, monitor, text, control, creds, future, revoked, worker, whole, chained, relied]


def as_consumed(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """What the old sink mapped: the records as decoded from their Kafka bytes (timestamps at Avro precision)."""
    return [wire.decode_as("AuditRecord", wire.encode("AuditRecord", r)) for r in records]


def insert_native(db: AuditDB, records: Sequence[Mapping[str, Any]], *, token: str | None = None) -> None:
    msgs = [wire.encode("AuditRecord", r) for r in records]
    token = token or avro_container.dedup_token(avro_container.request_id(m) for m in msgs)
    db.writer.insert_avro(avro_container.build(msgs), token=token)


def table_rows(db: AuditDB) -> dict[str, dict[str, Any]]:
    cols = ", ".join(COLUMNS)
    result = db.client.query(f"SELECT {cols} FROM {db.database}.{config.AUDIT_TABLE} ORDER BY request_id")
    return {row[0]: dict(zip(COLUMNS, row, strict=True)) for row in result.result_rows}


def test_the_view_computes_every_column_like_audit_row(dbs: tuple[AuditDB, AuditDB]) -> None:
    by_rows, native = dbs
    recs = edge_records()
    by_rows.writer.insert(as_consumed(recs))
    insert_native(native, recs)
    expected, got = table_rows(by_rows), table_rows(native)
    assert len(got) == len(recs) and got.keys() == expected.keys()
    for rid, want in expected.items():
        have = got[rid]
        for col in COLUMNS:
            if col == "principals_json":  # the same JSON value (ClickHouse and orjson escape some text apart)
                assert json.loads(have[col]) == json.loads(want[col]), (rid, col)
                continue
            if col in ("request_json", "identity_json") and rid == "edge-control-chars":
                # ClickHouse escapes control characters as \u001F / U+2028 where orjson writes \u001f / raw:
                # different text, the same JSON value
                a, b = want[col], have[col]
                assert (json.loads(a) if a else a) == (json.loads(b) if b else b), (rid, col)
                continue
            assert have[col] == want[col], (rid, col, have[col], want[col])


def test_the_json_snapshots_rebuild_the_request_and_identity(dbs: tuple[AuditDB, AuditDB]) -> None:
    _, native = dbs
    recs = edge_records()
    insert_native(native, recs)
    for rec in as_consumed(recs):
        row = native.audit.explain(rec["request"]["request_id"])
        assert row is not None
        request = AccessRequest.from_dict(row["request"])
        assert request.to_dict() == AccessRequest.from_dict(rec["request"]).to_dict()
        if rec["identity"] is None:
            assert row["identity"] is None and row["identity_known"] is False
        else:
            assert Identity.from_dict(row["identity"]).to_dict() == Identity.from_dict(rec["identity"]).to_dict()


def test_rollups_fed_from_the_view_equal_those_of_the_row_path(dbs: tuple[AuditDB, AuditDB]) -> None:
    by_rows, native = dbs
    recs = edge_records()
    by_rows.writer.insert(as_consumed(recs))
    insert_native(native, recs)

    def rollups(db: AuditDB) -> tuple[list[Any], list[Any]]:
        hourly = db.client.query(
            "SELECT hour, identity_id, uniqMerge(requests), uniqMerge(denies), uniqMerge(off_hours), "
            "argMaxMerge(credential_age_days), max(last_seen) "
            f"FROM {db.database}.audit_identity_hourly GROUP BY hour, identity_id ORDER BY hour, identity_id"
        ).result_rows
        daily = db.client.query(
            "SELECT day, rule, policy, decision, uniqMerge(hits) "
            f"FROM {db.database}.audit_rule_daily GROUP BY day, rule, policy, decision ORDER BY ALL"
        ).result_rows
        return hourly, daily

    assert rollups(native) == rollups(by_rows)


def test_a_retried_block_is_deduplicated_through_the_null_table_and_view(ch_url: str) -> None:
    recs = list(synthetic.records(500, seed=23, identities=9, start=START, end=END))
    with fresh_database(ch_url, "pdx_t_native_dedup", cfg=config.load()) as db:
        insert_native(db, recs)
        insert_native(db, recs)  # the same batch again: same token, dropped in the audit table and rollups
        assert db.count(final=False) == 500
        requests = db.client.query(
            f"SELECT sum(c) FROM (SELECT uniqMerge(requests) AS c FROM {db.database}.audit_identity_hourly "
            "GROUP BY hour, identity_id)"
        ).result_rows[0][0]
        assert requests == 500
        multi = [wire.encode("AuditRecord", r) for r in recs[:100]]  # many bodies per block reads the same
        db.writer.insert_avro(avro_container.build(multi, block_records=33), token="another-token")
        assert db.count(final=True) == 500


def test_a_sink_of_an_older_release_keeps_inserting_after_a_migration(ch_url: str) -> None:
    """Records written without relied_on (the AuditRecord before 008), in a container of that schema, insert into
    a migrated table with the field's default: a sink upgraded after the migration loses no batch."""
    import io

    import fastavro

    # the first earlier version: everything current but relied_on (versions are listed newest first)
    older = next(v for v in wire._versions("AuditRecord") if v["fields"][-1]["name"] == "chain")
    recs = list(synthetic.records(20, seed=25, start=START, end=END))
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(older), recs)
    with fresh_database(ch_url, "pdx_t_native_older", cfg=config.load()) as db:
        db.writer.insert_avro(out.getvalue(), token="older-sink")
        assert db.count(final=True) == 20
        assert db.client.query(f"SELECT countIf(principals_json = '[]' AND empty(approvals)) FROM "
                               f"{db.database}.{config.AUDIT_TABLE}").result_rows[0][0] == 20


def test_clickhouse_rejects_a_corrupt_body_as_malformed_data(ch_url: str) -> None:
    recs = list(synthetic.records(3, seed=24, start=START, end=END))
    msgs = [wire.encode("AuditRecord", r) for r in recs]
    with fresh_database(ch_url, "pdx_t_native_bad", cfg=config.load()) as db:
        with pytest.raises(AuditRejectedError):
            db.writer.insert_avro(avro_container.build([msgs[0], msgs[1][:-7], msgs[2]]), token="t-bad")
        assert db.count(final=False) == 0


@dataclass
class Rec:
    value: bytes | None
    offset: int = 0
    topic: str = config.TOPIC_AUDIT
    partition: int = 0
    key: bytes | None = None


@dataclass
class ListSource:
    polls: list[list[Rec]]
    commits: int = 0

    async def getmany(self, *, timeout_ms: int, max_records: int) -> Mapping[Any, Sequence[Rec]]:
        return {0: self.polls.pop(0)} if self.polls else {}

    async def commit(self) -> None:
        self.commits += 1


@dataclass
class ListDlq:
    sent: list[tuple[bytes | None, dict[str, bytes]]] = field(default_factory=list)

    async def send_and_wait(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        self.sent.append((value, dict(headers or [])))


async def test_the_sink_dead_letters_what_clickhouse_rejects_and_inserts_the_rest(ch_url: str) -> None:
    recs = list(synthetic.records(40, seed=25, start=START, end=END))
    msgs = [wire.encode("AuditRecord", r) for r in recs]
    corrupt = msgs[17][:-7]  # a valid header and request id, a truncated body: only ClickHouse can tell
    polled = [Rec(m, offset=i) for i, m in enumerate(msgs)]
    polled[17] = Rec(corrupt, offset=17)
    cfg = config.load().replace(audit_batch_max=40, audit_batch_wait_ms=1000)
    with fresh_database(ch_url, "pdx_t_native_sink", cfg=config.load()) as db:
        sink = AuditSink(cfg, "sink-it")
        source, dlq = ListSource([polled]), ListDlq()
        assert await sink.step(source, db.writer, dlq)
        assert source.commits == 1 and sink.inserted == 39 and sink.dead_lettered == 1
        [(value, headers)] = dlq.sent
        assert value == corrupt and headers["source_offset"] == b"17"
        assert b"ClickHouse rejected the record" in headers["error"]
        stored = {r for (r,) in db.client.query(f"SELECT request_id FROM {db.database}.audit_decisions").result_rows}
        assert stored == {r["request"]["request_id"] for i, r in enumerate(recs) if i != 17}
