"""Tamper-evident audit against the real local Kafka and ClickHouse: a running worker's chained records and signed
checkpoints verify clean with `pdx audit verify`, and an altered, a deleted and a forged row are each detected.

The worker (the ``pipeline`` fixture, w1 with its in-process audit sink) writes to the shared ``pdx`` database.
Each tampering test copies that trail into a database of its own, through the audit sink's own insert paths
(the raw pdx.audit and pdx.audit.checkpoints messages → Avro container → audit_ingest and its views;
checkpoint rows), so what is tampered with there is exactly what the sink stores, and other tests never see it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streams import config as settings
from streams.audit import avro_container
from streams.audit.sink import checkpoint_row
from streams.audit.store import wait_for_audit_rows
from streams.bench.auditdb import AuditDB, fresh_database
from streams.cli.main import main
from streams.client import PolicyClient
from streams.contracts import wire
from tests.integration.topic_reading import read_all

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

DB_RESOURCE = {"id": "orders-db", "type": "database", "environment": "production"}


@pytest.fixture(scope="module")
def trail(pipeline: Path) -> dict[str, Any]:
    """Decisions made by the running worker, audited and checkpointed: their ids and the window they are in."""
    since = datetime.now(UTC) - timedelta(seconds=1)

    async def ask() -> list[str]:
        async with PolicyClient(timeout_s=15.0) as client:
            asks = [client.check("agent-intern", "db:connect", DB_RESOURCE) for _ in range(12)]
            asks += [client.check("agent-config-bot", "config:read",
                                  {"id": "feature-flags", "type": "config", "environment": "production"})
                     for _ in range(12)]  # fmt: skip
            asks += [client.check("nobody-known", "db:connect", DB_RESOURCE) for _ in range(4)]
            return [d.request_id for d in await asyncio.gather(*asks)]

    ids = asyncio.run(ask())
    assert wait_for_audit_rows(len(ids), request_ids=ids, cfg=settings.load(), timeout_s=60) == len(ids)
    return {"ids": ids, "since": since}


def run_verify(capsys: pytest.CaptureFixture[str], database: str, since: datetime, *extra: str) -> tuple[int, Any]:
    code = main(["audit", "verify", "--database", database, "--since", since.isoformat(),
                 "--url", os.environ[settings.ENV_CLICKHOUSE_URL], "--json", *extra])  # fmt: skip
    return code, json.loads(capsys.readouterr().out)


def wait_anchored(capsys: pytest.CaptureFixture[str], database: str, since: datetime) -> Any:
    """Verify until every record is anchored by a signed checkpoint (the worker checkpoints every 2 s)."""
    deadline = time.monotonic() + 30
    while True:
        code, report = run_verify(capsys, database, since)
        if report["not_yet_anchored"] == 0 or time.monotonic() > deadline:
            return code, report
        time.sleep(1.0)


def test_the_workers_trail_verifies_clean(trail: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, report = wait_anchored(capsys, settings.CLICKHOUSE_DATABASE, trail["since"])
    assert code == 0 and report["ok"], json.dumps(report, indent=1)[:3000]
    assert report["verified"] >= len(trail["ids"]) and report["links"] >= len(trail["ids"])
    assert report["not_yet_anchored"] == 0 and report["checkpoints"]["signed"] >= 1
    assert report["checkpoints"]["unsigned"] == 0 and not report["first_problems"]
    chains = report["chain_summaries"]
    assert chains and all(c["chain_id"].startswith(f"w1/{settings.TOPIC_REQUESTS}/") for c in chains)


@pytest.fixture()
def copy_db(trail: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> Iterator[AuditDB]:
    """The trail copied into a fresh database through the sink's insert paths, verified clean there first."""
    wait_anchored(capsys, settings.CLICKHOUSE_DATABASE, trail["since"])
    audit = asyncio.run(read_all(settings.TOPIC_AUDIT))
    checkpoints = asyncio.run(read_all(settings.TOPIC_CHECKPOINTS))
    with fresh_database(os.environ[settings.ENV_CLICKHOUSE_URL], "pdx_t_verify", cfg=settings.load()) as db:
        msgs = [v for _, _, v, _ in audit if avro_container.is_current(v)]
        db.writer.insert_avro(avro_container.build(msgs), token=None)
        rows = [checkpoint_row(v) for _, _, v, _ in checkpoints]
        db.writer.insert_checkpoints(rows)
        code, report = run_verify(capsys, db.database, trail["since"])
        assert code == 0 and report["ok"] and report["verified"] >= len(trail["ids"]), report
        yield db


def stored(db: AuditDB, request_id: str) -> dict[str, Any]:
    [(record_hash, decision)] = db.client.query(
        f"SELECT record_hash, decision FROM {db.database}.audit_decisions WHERE request_id = {{r:String}}",
        parameters={"r": request_id},
    ).result_rows
    [(chain_id, seq)] = db.client.query(
        f"SELECT chain_id, seq FROM {db.database}.audit_chain_links WHERE record_hash = {{h:String}}",
        parameters={"h": record_hash},
    ).result_rows
    return {"record_hash": record_hash, "decision": decision, "chain_id": chain_id, "seq": seq}


def denied(db: AuditDB, trail: dict[str, Any]) -> str:
    rows = db.client.query(
        f"SELECT request_id FROM {db.database}.audit_decisions WHERE decision = 'deny' "
        "AND request_id IN {ids:Array(String)} ORDER BY decided_at LIMIT 1",
        parameters={"ids": trail["ids"]},
    ).result_rows
    assert rows, "the trail has a deny"
    return str(rows[0][0])


def test_an_updated_row_deny_to_allow_is_detected(
    copy_db: AuditDB, trail: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rid = denied(copy_db, trail)
    before = stored(copy_db, rid)
    copy_db.client.command(
        f"ALTER TABLE {copy_db.database}.audit_decisions UPDATE decision = 'allow' WHERE request_id = '{rid}' "
        "SETTINGS mutations_sync = 2"
    )
    code, report = run_verify(capsys, copy_db.database, trail["since"])
    assert code == 1 and not report["ok"] and report["problems"]["altered"] == 1
    [problem] = report["first_problems"]
    assert problem["kind"] == "altered" and problem["request_id"] == rid
    assert (problem["chain_id"], problem["seq"]) == (before["chain_id"], before["seq"])


def test_a_deleted_row_is_detected(
    copy_db: AuditDB, trail: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rid = trail["ids"][len(trail["ids"]) // 2]
    before = stored(copy_db, rid)
    copy_db.client.command(
        f"ALTER TABLE {copy_db.database}.audit_decisions DELETE WHERE request_id = '{rid}' SETTINGS mutations_sync = 2"
    )
    code, report = run_verify(capsys, copy_db.database, trail["since"])
    assert code == 1 and report["problems"]["missing"] == 1 and report["collapsed_duplicates"] == 0
    [problem] = report["first_problems"]
    assert (problem["kind"], problem["request_id"], problem["chain_id"], problem["seq"]) == (
        "missing", rid, before["chain_id"], before["seq"]
    )
    # deleting its chain link as well leaves a gap in the chain, which is detected as well
    copy_db.client.command(
        f"ALTER TABLE {copy_db.database}.audit_chain_links DELETE WHERE request_id = '{rid}' "
        "SETTINGS mutations_sync = 2"
    )
    code, report = run_verify(capsys, copy_db.database, trail["since"])
    assert code == 1 and report["problems"]["missing"] >= 1
    assert report["first_problems"][0]["seq"] == before["seq"]


def test_an_inserted_forged_row_is_detected(
    copy_db: AuditDB, trail: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    audit = [wire.decode_as("AuditRecord", v) for _, _, v, _ in asyncio.run(read_all(settings.TOPIC_AUDIT))]
    genuine = next(r for r in audit if r["request"]["request_id"] == denied(copy_db, trail))
    forged = copy.deepcopy(genuine)  # a new decision nobody made, without a chain link
    forged["request"]["request_id"] = forged["decision"]["request_id"] = "forged-" + genuine["request"]["request_id"]
    forged["decision"]["decision"] = "allow"
    forged["chain"] = None
    copy_db.writer.insert([forged])
    code, report = run_verify(capsys, copy_db.database, trail["since"])
    assert code == 1 and report["problems"]["forged"] == 1
    forged_id = forged["request"]["request_id"]
    assert [(p["kind"], p["request_id"]) for p in report["first_problems"]] == [("forged", forged_id)]

    # a forged copy that claims a genuine record's chain link: its content does not hash to the link
    claimed = copy.deepcopy(genuine)
    claimed["decision"]["decision"] = "allow"
    # 1 µs earlier: if the table collapses it with the genuine row (same request), the forged one is kept
    claimed["decided_at"] = claimed["decided_at"] - timedelta(microseconds=1)
    copy_db.writer.insert([claimed])
    code, report = run_verify(capsys, copy_db.database, trail["since"])
    assert code == 1 and report["problems"]["altered"] == 1
    assert any(p["kind"] == "altered" and p["request_id"] == genuine["request"]["request_id"]
               for p in report["first_problems"])  # fmt: skip


def test_a_forged_checkpoint_signature_is_detected(
    copy_db: AuditDB, trail: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    [(chain_id, seq, head)] = copy_db.client.query(
        f"SELECT chain_id, seq, head_hash FROM {copy_db.database}.audit_checkpoints ORDER BY signed_at DESC LIMIT 1"
    ).result_rows
    copy_db.client.command(
        f"INSERT INTO {copy_db.database}.audit_checkpoints (chain_id, seq, head_hash, final, worker_id, source_topic, "
        "source_partition, signed_at, key_id, signature, kafka_partition, kafka_offset) SELECT chain_id, seq, "
        "head_hash, NOT final, worker_id, source_topic, source_partition, signed_at, key_id, signature, -1, -1 "
        f"FROM {copy_db.database}.audit_checkpoints WHERE chain_id = '{chain_id}' AND seq = {seq} LIMIT 1"
    )  # the same signature over a checkpoint that now says otherwise about the chain's end: it no longer verifies
    code, report = run_verify(capsys, copy_db.database, trail["since"])
    assert code == 1 and report["problems"]["forged"] == 1
    assert "checkpoint" in report["first_problems"][-1]["detail"] and head


def test_a_redelivered_decision_collapsed_by_the_table_is_counted_not_reported(
    copy_db: AuditDB, trail: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Another worker decides a redelivered request again (a chain of its own); the audit table keeps only the
    first decision (sql/005), but the second chain's link stays and is proven a duplicate of a verified row."""
    from streams.contracts import audit_chain, splice
    from streams.worker.chain import AuditChains

    audit = [wire.decode_as("AuditRecord", v) for _, _, v, _ in asyncio.run(read_all(settings.TOPIC_AUDIT))]
    first = next(r for r in audit if r["request"]["request_id"] == trail["ids"][0])
    again = {**copy.deepcopy(first), "chain": None, "worker_id": "w9"}
    again["decided_at"] = again["received_at"] = first["decided_at"] + timedelta(seconds=3)
    request_digest, body_digest = audit_chain.record_digests(again)
    _, field = AuditChains("w9").link(settings.TOPIC_REQUESTS, first["source_partition"], request_digest, body_digest)
    copy_db.writer.insert_avro(avro_container.build([splice.with_chain(wire.encode("AuditRecord", again), field)]))
    code, report = run_verify(capsys, copy_db.database, trail["since"])
    assert code == 0 and report["ok"] and report["collapsed_duplicates"] == 0  # both rows still stored: both verify
    copy_db.client.command(f"OPTIMIZE TABLE {copy_db.database}.audit_decisions FINAL")
    kept = copy_db.client.query(
        f"SELECT worker_id FROM {copy_db.database}.audit_decisions WHERE request_id = {{r:String}}",
        parameters={"r": first["request"]["request_id"]},
    ).result_rows
    assert kept == [("w1",)]  # the first decision is kept
    code, report = run_verify(capsys, copy_db.database, trail["since"])
    assert code == 0 and report["ok"] and report["collapsed_duplicates"] == 1, report["first_problems"]
    assert report["not_yet_anchored"] == 1  # w9's chain has no checkpoint: counted, not a failure
    code, report = run_verify(capsys, copy_db.database, trail["since"], "--require-anchored")
    assert code == 1 and not report["ok"]
