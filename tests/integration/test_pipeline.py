"""The decision pipeline end to end through the real Kafka and ClickHouse: worker processes, the client SDK,
state changes without restarts, fail-closed paths, the dead-letter topic, the audit sink's guarantees."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams import config as settings
from streams.audit.store import connect, wait_for_audit_rows
from streams.client import Denied, PolicyClient, StepUpRequired
from streams.contracts import signing, wire
from streams.demo.runner import in_change_window, scenario_token, scenarios
from streams.devservices import procs
from streams.devservices.workers import spawn_worker
from streams.ops import grant_approval, publish_policies, update_identity
from streams.policy.testing import policy_dir_with

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
AUDIT = f"{settings.CLICKHOUSE_DATABASE}.{settings.AUDIT_TABLE}"



def audit_count(request_ids: list[str], timeout_s: float = 60.0) -> int:
    return wait_for_audit_rows(len(request_ids), request_ids=request_ids, cfg=settings.load(), timeout_s=timeout_s)


async def test_seed_scenarios_through_kafka(client: PolicyClient) -> None:
    await grant_approval("agent-config-bot", "config:write", "rate-limits", timedelta(hours=1), "tests",
                         cfg=settings.load())
    await asyncio.sleep(0.5)
    # cases approved by a second person while the client waits are the demo's own (and test_delegation's)
    items = [sc for sc in scenarios(in_change_window(datetime.now(UTC))) if sc.approve is None]
    assert len(items) >= 13
    cfg = settings.load()
    results = await asyncio.gather(*(client.check(sc.identity, sc.action, sc.resource, sc.context,
                                                  on_behalf_of=sc.on_behalf_of, token=scenario_token(cfg, sc))
                                     for sc in items))
    for sc, d in zip(items, results, strict=True):
        assert d.decision == sc.expected, (sc.name, d.decision, d.reason_codes)
        assert sc.expected_code in d.reason_codes, (sc.name, d.reason_codes)
        assert d.worker_id == "w1" and d.bundle_version
    allowed_prod = results[0]
    expires = datetime.fromisoformat(allowed_prod.obligations["expires_at"].replace("Z", "+00:00"))
    assert timedelta(minutes=14) < expires - datetime.now(UTC) <= timedelta(minutes=15)
    assert audit_count([d.request_id for d in results]) == len(results)


async def test_enforce_raises_and_guard_blocks(client: PolicyClient) -> None:
    db = {"id": "orders-db", "type": "database", "environment": "production"}
    with pytest.raises(Denied) as denied:
        await client.enforce("agent-intern", "db:connect", db, {"requested_ttl_s": 60})
    assert "agent_not_tagged_for_production" in str(denied.value)
    with pytest.raises(StepUpRequired):
        await client.enforce("agent-config-bot", "config:write", {"id": "feature-flags", "type": "config"})
    calls = []

    @client.guard("agent-config-bot", "config:read", {"id": "feature-flags", "type": "config"})
    async def read_flags() -> str:
        calls.append(1)
        return "flags"

    assert await read_flags() == "flags" and calls == [1]


async def test_suspend_takes_effect_without_restart(client: PolicyClient) -> None:
    ident = f"agent-kill-{uuid.uuid4().hex[:6]}"
    await _put_agent(ident)
    db = {"id": "orders-db", "type": "database", "environment": "production"}
    first = await _wait_for(client, ident, "db:connect", db, {"requested_ttl_s": 60}, "allow")
    assert first.decision == "allow"
    await update_identity(ident, lambda i: setattr(i, "status", "suspended"), cfg=settings.load())
    after = await _wait_for(client, ident, "db:connect", db, {"requested_ttl_s": 60}, "deny")
    assert after.decision == "deny" and after.reason_codes == ["identity_suspended"]


async def test_publish_new_bundle_takes_effect_without_restart(client: PolicyClient, tmp_path: Path) -> None:
    target = {"id": "wiki", "type": "document"}
    before = await client.check("alice", "docs:read", target)
    assert before.decision == "deny" and "no_matching_rule" in before.reason_codes
    candidate = policy_dir_with(tmp_path / "policies", {"docs.yaml": (
        "name: docs\ndescription: humans read docs\nowner: it\nmode: enforce\ncontrols: [SP800-207:PDP]\n"
        "rules:\n  - id: humans-read-docs\n    effect: allow\n    when:\n      - action: \"docs:read\"\n"
        "      - identity.kind: human\n    reason: {code: docs_read, message: Humans may read docs.}\n")})
    version = await publish_policies(str(candidate), "tests", cfg=settings.load())
    try:
        after = await _wait_for(client, "alice", "docs:read", target, {}, "allow")
        assert after.decision == "allow" and after.bundle_version == version
    finally:
        await publish_policies(str(settings.POLICIES_DIR), "tests", cfg=settings.load())
    restored = await _wait_for(client, "alice", "docs:read", target, {}, "deny")
    assert restored.decision == "deny"


async def test_bad_bundle_never_replaces_a_good_one(client: PolicyClient) -> None:
    good = (await client.check("alice", "docs:read", {"id": "x", "type": "document"})).bundle_version
    producer = AIOKafkaProducer(bootstrap_servers=settings.load().kafka_bootstrap)
    await producer.start()
    try:
        bad = wire.encode("PolicyBundle", {"version": "0" * 64, "created_at": datetime.now(UTC),
                                           "published_by": "tests", "content": '{"policies": "not a list"}',
                                           "serial": 2**62})
        # signed by the trusted policy key, and a high serial: it is refused because it does not compile
        headers = signing.signing_key(settings.load(), signing.POLICY).headers(signing.POLICY, b"current", bad, 1)
        await producer.send_and_wait(settings.TOPIC_POLICIES, bad, key=b"current", headers=headers)
    finally:
        await producer.stop()
    await asyncio.sleep(1.0)
    d = await client.check("agent-intern", "db:connect", {"id": "orders-db", "type": "database",
                                                           "environment": "production"}, {"requested_ttl_s": 60})
    assert d.bundle_version == good and d.decision == "deny"


async def test_unknown_identity_is_denied(client: PolicyClient) -> None:
    d = await client.check("nobody-" + uuid.uuid4().hex, "db:connect", {"id": "orders-db", "type": "database"})
    assert d.decision == "deny" and d.reason_codes == ["unknown_identity"]


async def test_malformed_bytes_go_to_dlq_and_worker_keeps_answering(client: PolicyClient) -> None:
    bootstrap = settings.load().kafka_bootstrap
    marker = f"garbage-{uuid.uuid4().hex}".encode()
    dlq = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await dlq.start()
    tp = TopicPartition(settings.TOPIC_DLQ, 0)
    dlq.assign([tp])
    await dlq.seek_to_end(tp)
    await dlq.position(tp)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(settings.TOPIC_REQUESTS, marker, key=b"agent-intern")
        truncated = wire.encode("AccessRequest", client.build_request(
            "agent-intern", "db:connect", {"id": "d", "type": "database"}).to_dict())[:-5]
        await producer.send_and_wait(settings.TOPIC_REQUESTS, truncated, key=b"agent-intern")
    finally:
        await producer.stop()
    found: dict[bytes, dict[str, bytes]] = {}
    try:
        async with asyncio.timeout(30):
            while len(found) < 2:
                msg = await dlq.getone()
                if msg.value in (marker, truncated):
                    found[msg.value] = dict(msg.headers)
    finally:
        await dlq.stop()
    assert b"not Avro single-object" in found[marker]["error"] or b"marker" in found[marker]["error"].lower()
    assert found[marker]["source_topic"] == settings.TOPIC_REQUESTS.encode()
    assert found[truncated]["error"]
    d = await client.check("agent-config-bot", "config:read", {"id": "feature-flags", "type": "config"})
    assert d.decision == "allow"


async def test_client_timeout_is_a_fail_closed_deny(pipeline: Path) -> None:
    blackhole = f"pdx.test.blackhole.{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.load().kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(blackhole, 1, 1)])
    finally:
        await admin.close()
    async with PolicyClient(request_topic=blackhole, timeout_s=0.5) as c:
        d = await c.check("agent-config-bot", "config:read", {"id": "feature-flags", "type": "config"})
        assert d.decision == "deny" and d.reason_codes == ["pdp_timeout"]
        with pytest.raises(Denied):
            await c.enforce("agent-config-bot", "config:read", {"id": "feature-flags", "type": "config"})


async def test_clickhouse_outage_loses_no_audit_record(services: Any, client: PolicyClient) -> None:
    stack = services.stack
    if stack is None:
        pytest.skip("needs the local dev services (PDX_TEST_SERVICES=local)")
    ports = stack.saved_ports()
    stack.down(("clickhouse",))
    try:
        results = await asyncio.gather(*(client.check("agent-config-bot", "config:read",
                                                      {"id": f"cfg-{i}", "type": "config"}) for i in range(50)))
        assert all(d.decision == "allow" for d in results)  # decisions continue while ClickHouse is down
        await asyncio.sleep(3)  # the sink retries meanwhile
    finally:
        stack.up(("clickhouse",), ports)
    ids = [d.request_id for d in results]
    assert audit_count(ids, timeout_s=90) == len(ids)


async def test_two_workers_share_partitions_and_answer_once(pipeline: Path, client: PolicyClient) -> None:
    _, log = spawn_worker(pipeline, "w2")
    idents = [f"agent-pair-{i}" for i in range(16)]
    for ident in idents:
        await _put_agent(ident)
    seen_workers: set[str] = set()
    end = time.monotonic() + 120
    while time.monotonic() < end and not {"w1", "w2"} <= seen_workers:
        ds = await asyncio.gather(*(client.check(i, "config:read", {"id": "f", "type": "config"}, timeout=5)
                                    for i in idents))
        seen_workers |= {d.worker_id for d in ds}
        await asyncio.sleep(0.5)
    assert {"w1", "w2"} <= seen_workers, f"second worker never took partitions; log: {procs.tail(log)}"

    bootstrap = settings.load().kafka_bootstrap
    raw = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await raw.start()
    tp = TopicPartition(settings.TOPIC_DECISIONS, client.reply_partition or 0)
    raw.assign([tp])
    await raw.seek_to_end(tp)
    await raw.position(tp)
    n = 200
    requests = [client.build_request(idents[i % len(idents)], "config:read", {"id": f"c{i}", "type": "config"})
                for i in range(n)]
    decisions = await asyncio.gather(*(client.send(r) for r in requests))
    assert all(d.decision == "allow" for d in decisions)
    assert {d.worker_id for d in decisions} == {"w1", "w2"}
    replies: collections.Counter[str] = collections.Counter()
    try:
        async with asyncio.timeout(5):
            while True:
                msg = await raw.getone()
                replies[dict(msg.headers)["correlation_id"].decode()] += 1
    except TimeoutError:
        pass
    finally:
        await raw.stop()
    ids = [r.request_id for r in requests]
    assert all(replies[i] == 1 for i in ids), "every request answered exactly once"
    assert audit_count(ids) == n
    ch = connect(cfg=settings.load())
    rows = ch.query(f"SELECT count() FROM {AUDIT} FINAL WHERE request_id IN {{ids:Array(String)}}",
                    parameters={"ids": ids}).result_rows[0][0]
    assert rows == n, "audited once"


async def _put_agent(ident: str) -> None:
    from streams.kafka.clients import start_producer
    from streams.kafka.state import put_identities

    producer = await start_producer(settings.load())
    try:
        await put_identities(producer, [{
            "id": ident, "kind": "agent", "owner": "tests", "status": "active", "environments": ["production"],
            "scopes": [], "tags": ["production"], "approved_repositories": [], "risk_tier": "low",
            "credentials": [], "attributes": {}, "updated_at": datetime.now(UTC)}],
            signing.signing_key(settings.load(), signing.INVENTORY))
    finally:
        await producer.stop()


async def _wait_for(client: PolicyClient, ident: str, action: str, resource: dict[str, Any], context: dict[str, Any],
                    outcome: str, timeout_s: float = 20.0) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        d = await client.check(ident, action, resource, context)
        if d.decision == outcome or loop.time() > end:
            return d
        await asyncio.sleep(0.1)


async def test_client_deadline_holds_when_the_request_cannot_even_be_sent(pipeline: Path) -> None:
    """A request topic without metadata makes the producer wait (40 s by default): check(timeout=T) still
    returns a pdp_timeout deny within T plus a small margin, never an exception."""
    missing = f"pdx.test.missing.{uuid.uuid4().hex[:6]}"  # never created; the broker does not auto-create
    async with PolicyClient(request_topic=missing, timeout_s=5.0) as c:
        started = time.monotonic()
        d = await c.check("agent-config-bot", "config:read", {"id": "feature-flags", "type": "config"}, timeout=1.0)
        elapsed = time.monotonic() - started
    assert d.decision == "deny" and d.reason_codes == ["pdp_timeout"]
    assert elapsed < 2.5, f"check(timeout=1.0) took {elapsed:.1f}s"
