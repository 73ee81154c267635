"""The attacker's findings of the failure issue, through the real Kafka, worker and ClickHouse: replies aimed
at state topics, partitions that do not exist, topics that do not exist, a 600 KB attribute. Each gets an
audited deny (never an allow, never a write to a state topic), and the worker keeps answering at once."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from streams import config as settings
from streams.audit.store import connect, wait_for_audit_rows
from streams.client import PolicyClient
from streams.contracts import wire
from streams.kafka import clients
from tests.integration.topic_reading import end_offsets

pytestmark = [pytest.mark.integration, pytest.mark.e2e]



async def test_hostile_requests_are_audited_denies_and_stall_nothing(client: PolicyClient) -> None:
    run = uuid.uuid4().hex[:8]
    resource = {"id": "feature-flags", "type": "config"}
    hostile: dict[str, tuple[dict[str, object], str]] = {
        f"{run}-policies": ({"reply_to": settings.TOPIC_POLICIES}, "invalid_reply_route"),
        f"{run}-inventory": ({"reply_to": settings.TOPIC_INVENTORY}, "invalid_reply_route"),
        f"{run}-part99": ({"reply_partition": 99}, "invalid_reply_route"),
        f"{run}-part-1": ({"reply_partition": -1}, "invalid_reply_route"),
        f"{run}-missing": ({"reply_to": f"pdx.replies.never-created-{run}"}, "invalid_reply_route"),
        f"{run}-big": ({"resource": {**resource, "attributes": {"blob": "x" * 600_000}}}, "request_too_large"),
    }
    state_before = {t: await end_offsets(t) for t in (settings.TOPIC_POLICIES, settings.TOPIC_INVENTORY)}
    producer = await clients.start_producer(settings.load(), max_request_size=2_000_000)
    try:
        for rid, (changes, _) in hostile.items():
            request = client.build_request("agent-config-bot", "config:read", resource).to_dict()
            request["request_id"] = rid
            for key, value in changes.items():
                request[key] = value
            await producer.send_and_wait(settings.TOPIC_REQUESTS, wire.encode("AccessRequest", request),
                                         key=b"agent-config-bot")
    finally:
        await producer.stop()
    started = time.monotonic()
    d = await client.check("agent-config-bot", "config:read", resource, timeout=10)
    assert d.decision == "allow" and time.monotonic() - started < 10, "the worker went on at once"

    audited = wait_for_audit_rows(len(hostile), request_ids=list(hostile), cfg=settings.load(), timeout_s=60)
    assert audited == len(hostile)
    ch = connect(cfg=settings.load())
    rows = dict(ch.query(
        f"SELECT request_id, reason_codes[1] FROM {settings.CLICKHOUSE_DATABASE}.{settings.AUDIT_TABLE} FINAL "
        "WHERE request_id IN {ids:Array(String)} AND decision = 'deny'",
        parameters={"ids": list(hostile)}).result_rows)
    assert rows == {rid: code for rid, (_, code) in hostile.items()}
    await asyncio.sleep(0.5)
    for topic, before in state_before.items():
        assert await end_offsets(topic) == before, f"nothing was written to {topic}"
