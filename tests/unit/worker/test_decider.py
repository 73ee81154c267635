"""The Decider through its public interface: request bytes in, reply / audit / dead-letter records out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from streams import config
from streams.contracts import wire
from streams.model import AccessRequest, RequestContext, Resource
from streams.worker.decide import Decider, Incoming
from streams.worker.state import WorkerState
from tests.unit.worker.conftest import ListProducer

CONFIG_READ = Resource(id="feature-flags", type="config", environment="production", sensitivity="internal")


def request(identity: str = "agent-config-bot", action: str = "config:read", **changes: Any) -> AccessRequest:
    now = datetime.now(UTC)
    req = AccessRequest(
        request_id=changes.pop("request_id", "req-1"),
        occurred_at=now,
        identity_id=identity,
        action=action,
        resource=changes.pop("resource", CONFIG_READ),
        context=RequestContext(),
        on_behalf_of=["alice"],
        reply_to=config.TOPIC_DECISIONS,
        reply_partition=3,
        deadline=now + timedelta(seconds=5),
    )
    for key, value in changes.items():
        setattr(req, key, value)
    return req


def incoming(value: bytes, offset: int = 7) -> Incoming:
    return Incoming(config.TOPIC_REQUESTS, 1, offset, b"agent-config-bot", value)


async def decide(state: WorkerState, value: bytes) -> ListProducer:
    producer = ListProducer()
    await Decider(state, producer, "w-test").handle(incoming(value))
    return producer


async def test_allowed_request_is_replied_to_its_partition_and_audited(loaded_state: WorkerState) -> None:
    raw = wire.encode("AccessRequest", request().to_dict())
    out = await decide(loaded_state, raw)

    [reply] = out.on(config.TOPIC_DECISIONS)
    assert reply.partition == 3 and reply.key == b"req-1"
    assert ("correlation_id", b"req-1") in reply.headers
    decision = wire.decode_as("Decision", reply.value)
    assert decision["decision"] == "allow" and decision["worker_id"] == "w-test"

    [audit] = out.on(config.TOPIC_AUDIT)
    assert audit.key == b"req-1"
    record = wire.decode_as("AuditRecord", audit.value)
    assert record["decision"] == decision
    assert record["identity"]["id"] == "agent-config-bot"
    assert (record["source_topic"], record["source_partition"], record["source_offset"]) == (
        config.TOPIC_REQUESTS, 1, 7,
    )
    assert record["received_at"] <= record["decided_at"]
    assert out.on(config.TOPIC_DLQ) == []


async def test_unknown_identity_is_denied_and_audited_without_identity(loaded_state: WorkerState) -> None:
    out = await decide(loaded_state, wire.encode("AccessRequest", request("agent-nobody").to_dict()))
    [reply] = out.on(config.TOPIC_DECISIONS)
    assert wire.decode_as("Decision", reply.value)["reasons"][0]["code"] == "unknown_identity"
    [audit] = out.on(config.TOPIC_AUDIT)
    assert wire.decode_as("AuditRecord", audit.value)["identity"] is None


async def test_expired_deadline_fails_closed(loaded_state: WorkerState) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    out = await decide(loaded_state, wire.encode("AccessRequest", request(deadline=past).to_dict()))
    d = wire.decode_as("Decision", out.on(config.TOPIC_DECISIONS)[0].value)
    assert (d["decision"], d["reasons"][0]["code"]) == ("deny", "deadline_expired")
    assert len(out.on(config.TOPIC_AUDIT)) == 1


async def test_no_policy_loaded_is_a_deny(demo_identities: Any) -> None:
    state = WorkerState()  # identities but no bundle
    ident = demo_identities["agent-config-bot"]
    state.apply_identity(ident.id.encode(), wire.encode("Identity", ident.to_dict()))
    out = await decide(state, wire.encode("AccessRequest", request().to_dict()))
    d = wire.decode_as("Decision", out.on(config.TOPIC_DECISIONS)[0].value)
    assert (d["decision"], d["reasons"][0]["code"]) == ("deny", "no_policy_loaded")


async def test_suspension_applies_to_the_next_request(loaded_state: WorkerState, demo_identities: Any) -> None:
    ident = demo_identities["agent-config-bot"]
    raw = wire.encode("AccessRequest", request().to_dict())
    assert wire.decode_as("Decision", (await decide(loaded_state, raw)).records[0].value)["decision"] == "allow"
    suspended = {**ident.to_dict(), "status": "suspended"}
    loaded_state.apply_identity(ident.id.encode(), wire.encode("Identity", suspended))
    d = wire.decode_as("Decision", (await decide(loaded_state, raw)).on(config.TOPIC_DECISIONS)[0].value)
    assert (d["decision"], d["reasons"][0]["code"]) == ("deny", "identity_suspended")


async def test_undecodable_bytes_are_dead_lettered_with_their_origin(loaded_state: WorkerState) -> None:
    out = await decide(loaded_state, b'{"not": "avro"}')
    assert out.on(config.TOPIC_DECISIONS) == [] and out.on(config.TOPIC_AUDIT) == []
    [dlq] = out.on(config.TOPIC_DLQ)
    assert dlq.value == b'{"not": "avro"}' and dlq.key == b"agent-config-bot"
    headers = dict(dlq.headers)
    assert b"not Avro single-object encoding" in headers["error"]
    assert (headers["source_topic"], headers["source_partition"], headers["source_offset"]) == (
        config.TOPIC_REQUESTS.encode(), b"1", b"7",
    )
    assert headers["worker_id"] == b"w-test"


async def test_invalid_request_is_answered_and_dead_lettered(loaded_state: WorkerState) -> None:
    bad = request(resource=Resource(id="x", type="config", sensitivity="top-secret")).to_dict()
    out = await decide(loaded_state, wire.encode("AccessRequest", bad))
    [reply] = out.on(config.TOPIC_DECISIONS)
    d = wire.decode_as("Decision", reply.value)
    assert (d["decision"], d["reasons"][0]["code"]) == ("deny", "invalid_request")
    assert "top-secret" in d["reasons"][0]["message"]
    [dlq] = out.on(config.TOPIC_DLQ)
    assert dict(dlq.headers)["error"].startswith(b"invalid AccessRequest")


async def test_a_decision_on_another_schema_version_part_is_still_audited(loaded_state: WorkerState) -> None:
    """When the identity arrived in another writer schema, the audit record is encoded the ordinary way."""
    ident_msg = loaded_state.identity_messages["agent-config-bot"]
    loaded_state.identity_messages["agent-config-bot"] = b"\xc3\x01" + b"\x00" * 8 + ident_msg[10:]
    out = await decide(loaded_state, wire.encode("AccessRequest", request().to_dict()))
    record = wire.decode_as("AuditRecord", out.on(config.TOPIC_AUDIT)[0].value)
    assert record["identity"]["id"] == "agent-config-bot"
