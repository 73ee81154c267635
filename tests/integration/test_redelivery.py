"""Redelivery through the real Kafka and worker: requests decided but redelivered (the group's offsets went
back, as after a crash before the commit) are answered with the decisions already recorded in pdx.audit, not
decided again, and audited once — even though a second evaluation would now give another answer."""

from __future__ import annotations

import asyncio
import collections
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from streams import config as settings
from streams.audit.store import connect, wait_for_audit_rows
from streams.client import PolicyClient
from streams.contracts import signing, wire
from streams.devservices import procs
from streams.devservices.workers import spawn_worker, wait_until_ready
from streams.kafka import clients
from streams.kafka.state import put_identities
from streams.model import Identity
from tests.integration.topic_reading import read_all

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
IDENT = "agent-redelivered"



async def _put(status: str) -> None:
    producer = await clients.start_producer(settings.load())
    try:
        await put_identities(producer, [Identity(
            id=IDENT, kind="agent", owner="tests", status=status, environments=["production"], tags=["production"],
            updated_at=datetime.now(UTC)).to_dict()], signing.signing_key(settings.load(), signing.INVENTORY))
    finally:
        await producer.stop()


def _request_id(value: bytes) -> str | None:
    """The request id of an AccessRequest or AuditRecord; None for anything else (other tests write malformed
    requests to the same topic)."""
    try:
        name, obj = wire.decode(value)
    except wire.WireError:
        return None
    if name == "AuditRecord":
        return str(obj["request"]["request_id"])
    return str(obj["request_id"]) if name == "AccessRequest" else None


async def test_redelivered_requests_repeat_the_recorded_decision_and_are_audited_once(
    pipeline: Path, client: PolicyClient
) -> None:
    await _put("active")
    await asyncio.sleep(1.0)  # the worker's inventory replica applies it
    requests = [client.build_request(IDENT, "config:read", {"id": f"flags-{i}", "type": "config"}) for i in range(20)]
    first = await asyncio.gather(*(client.send(r) for r in requests))
    assert [d.decision for d in first] == ["allow"] * 20
    ids = {r.request_id for r in requests}

    # the worker goes away; the identity is suspended, so deciding again would now deny
    procs.stop(pipeline / "workers" / "w1.pid")
    await _put("suspended")
    # rewind the group to before these requests, with no audit mark (as if the first commit never happened)
    mine = [(p, o) for p, o, v, _ in await read_all(settings.TOPIC_REQUESTS) if _request_id(v) in ids]
    partition = {p for p, _ in mine}
    assert len(partition) == 1, "one identity, one request partition"
    tp = TopicPartition(settings.TOPIC_REQUESTS, partition.pop())
    group = clients.consumer(settings.load(), group_id=settings.load().app_id)
    await group.start()
    try:
        group.assign([tp])
        await group.commit({tp: (min(o for _, o in mine), "")})
    finally:
        await group.stop()

    _, log = spawn_worker(pipeline, "w1")
    wait_until_ready(log)
    replies: dict[str, list[bytes]] = collections.defaultdict(list)
    loop = asyncio.get_running_loop()
    end = loop.time() + 60
    while loop.time() < end:
        replies.clear()
        for _, _, value, headers in await read_all(settings.TOPIC_DECISIONS):
            rid = headers.get("correlation_id", b"").decode()
            if rid in ids:
                replies[rid].append(value)
        if len(replies) == 20 and all(len(v) == 2 for v in replies.values()):
            break
        await asyncio.sleep(0.5)
    assert sorted(len(v) for v in replies.values()) == [2] * 20, "each request answered again after redelivery"
    for values in replies.values():
        decided = [wire.decode_as("Decision", v)["decision"] for v in values]
        assert decided == ["allow", "allow"], "the redelivery repeats the recorded decision, not a new one"
    audited = [v for _, _, v, _ in await read_all(settings.TOPIC_AUDIT) if _request_id(v) in ids]
    assert len(audited) == 20, "audited once"
    assert wait_for_audit_rows(20, request_ids=sorted(ids), cfg=settings.load(), timeout_s=60) == 20
    ch = connect(cfg=settings.load())
    rows = ch.query(
        f"SELECT decision, count() FROM {settings.CLICKHOUSE_DATABASE}.{settings.AUDIT_TABLE} FINAL "
        "WHERE request_id IN {ids:Array(String)} GROUP BY decision", parameters={"ids": sorted(ids)}).result_rows
    assert rows == [("allow", 20)]
    await _put("active")
