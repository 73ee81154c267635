"""The Decider and the request loop through their public interfaces: request bytes in, records out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from streams import config
from streams.contracts import wire
from streams.model import AccessRequest, RequestContext, Resource
from streams.worker.decide import Decider, Incoming
from streams.worker.loop import ReplyRoutes, RequestLoop
from streams.worker.state import WorkerState
from tests.unit.worker.conftest import FakeMetadata, FakeProducer, apply_identity, trusted_state

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


def encoded(**changes: Any) -> bytes:
    return wire.encode("AccessRequest", request(**changes).to_dict())


def incoming(value: bytes, offset: int = 7) -> Incoming:
    return Incoming(config.TOPIC_REQUESTS, 1, offset, b"agent-config-bot", value)


def loop_for(state: WorkerState, producer: FakeProducer, metadata: FakeMetadata | None = None) -> RequestLoop:
    routes = ReplyRoutes(config.Settings.from_env({}), metadata or FakeMetadata())
    return RequestLoop(Decider(state, "w-test", routes), producer)


async def decide(state: WorkerState, *values: bytes, **kw: Any) -> FakeProducer:
    producer = FakeProducer(**kw)
    await loop_for(state, producer).process([incoming(v, offset=i) for i, v in enumerate(values)])
    return producer


def reason(out: FakeProducer, index: int = 0) -> tuple[str, str]:
    d = wire.decode_as("Decision", out.on(config.TOPIC_DECISIONS)[index].value)
    return d["decision"], d["reasons"][0]["code"]


def audited_reason(out: FakeProducer, index: int = 0) -> tuple[str, str]:
    d = wire.decode_as("AuditRecord", out.on(config.TOPIC_AUDIT)[index].value)["decision"]
    return d["decision"], d["reasons"][0]["code"]


async def test_allowed_request_is_replied_to_its_partition_and_audited(loaded_state: WorkerState) -> None:
    out = await decide(loaded_state, encoded())

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
        config.TOPIC_REQUESTS, 1, 0,
    )
    assert record["received_at"] <= record["decided_at"]
    assert out.on(config.TOPIC_DLQ) == []


async def test_a_reply_is_sent_only_after_its_audit_record_is_acknowledged(loaded_state: WorkerState) -> None:
    out = await decide(loaded_state, encoded(request_id="a"), encoded(request_id="b"))
    events = out.events
    first_reply = next(i for i, e in enumerate(events) if e.startswith(f"send {config.TOPIC_DECISIONS}"))
    assert {f"acked {config.TOPIC_AUDIT} b'a'", f"acked {config.TOPIC_AUDIT} b'b'"} <= set(events[:first_reply])


async def test_no_reply_when_the_audit_record_cannot_be_written(loaded_state: WorkerState) -> None:
    def audit_fails(topic: str, value: bytes) -> Exception | None:
        return MessageSizeTooLargeError() if topic == config.TOPIC_AUDIT else None

    out = await decide(loaded_state, encoded(), fail=audit_fails)
    assert out.on(config.TOPIC_DECISIONS) == []  # the caller times out into a pdp_timeout deny: fail closed


async def test_unknown_identity_is_denied_and_audited_without_identity(loaded_state: WorkerState) -> None:
    out = await decide(loaded_state, encoded(identity="agent-nobody"))
    assert reason(out) == ("deny", "unknown_identity")
    assert wire.decode_as("AuditRecord", out.on(config.TOPIC_AUDIT)[0].value)["identity"] is None


async def test_expired_deadline_fails_closed(loaded_state: WorkerState) -> None:
    out = await decide(loaded_state, encoded(deadline=datetime.now(UTC) - timedelta(seconds=1)))
    assert reason(out) == ("deny", "deadline_expired") == audited_reason(out)


async def test_no_policy_loaded_is_a_deny(demo_identities: Any) -> None:
    state = trusted_state()  # identities but no bundle
    ident = demo_identities["agent-config-bot"]
    apply_identity(state, ident.id.encode(), wire.encode("Identity", ident.to_dict()))
    assert reason(await decide(state, encoded())) == ("deny", "no_policy_loaded")


async def test_suspension_applies_to_the_next_request(loaded_state: WorkerState, demo_identities: Any) -> None:
    ident = demo_identities["agent-config-bot"]
    assert reason(await decide(loaded_state, encoded()))[0] == "allow"
    suspended = {**ident.to_dict(), "status": "suspended"}
    apply_identity(loaded_state, ident.id.encode(), wire.encode("Identity", suspended))
    assert reason(await decide(loaded_state, encoded())) == ("deny", "identity_suspended")


async def test_undecodable_bytes_are_dead_lettered_with_their_origin(loaded_state: WorkerState) -> None:
    out = await decide(loaded_state, b'{"not": "avro"}')
    assert out.on(config.TOPIC_DECISIONS) == [] and out.on(config.TOPIC_AUDIT) == []
    [dlq] = out.on(config.TOPIC_DLQ)
    assert dlq.value == b'{"not": "avro"}' and dlq.key == b"agent-config-bot"
    headers = dict(dlq.headers)
    assert b"not Avro single-object encoding" in headers["error"]
    assert (headers["source_topic"], headers["source_partition"], headers["source_offset"]) == (
        config.TOPIC_REQUESTS.encode(), b"1", b"0",
    )
    assert headers["worker_id"] == b"w-test"


async def test_invalid_request_is_answered_audited_and_dead_lettered(loaded_state: WorkerState) -> None:
    out = await decide(loaded_state, encoded(resource=Resource(id="x", type="config", sensitivity="top-secret")))
    assert reason(out) == ("deny", "invalid_request") == audited_reason(out)
    assert "top-secret" in wire.decode_as("Decision", out.on(config.TOPIC_DECISIONS)[0].value)["reasons"][0]["message"]
    [dlq] = out.on(config.TOPIC_DLQ)
    assert dict(dlq.headers)["error"].startswith(b"invalid AccessRequest")


@pytest.mark.parametrize(
    ("reply_to", "partition", "why"),
    [
        (config.TOPIC_POLICIES, 0, b"not an allowed reply topic"),
        (config.TOPIC_INVENTORY, 0, b"not an allowed reply topic"),
        (config.TOPIC_AUDIT, 0, b"not an allowed reply topic"),
        (config.TOPIC_DECISIONS, 99, b"does not exist"),
        (config.TOPIC_DECISIONS, -1, b"does not exist"),
        ("pdx.replies.never-created", 0, b"unknown to this worker"),
    ],
)
async def test_a_bad_reply_route_is_an_audited_deny_and_a_dlq_entry_never_a_reply(
    loaded_state: WorkerState, reply_to: str, partition: int, why: bytes
) -> None:
    out = await decide(loaded_state, encoded(reply_to=reply_to, reply_partition=partition))
    assert [r.topic for r in out.records if r.topic not in (config.TOPIC_AUDIT, config.TOPIC_DLQ)] == []
    assert audited_reason(out) == ("deny", "invalid_reply_route")
    [dlq] = out.on(config.TOPIC_DLQ)
    assert why in dict(dlq.headers)["error"]


async def test_a_batch_of_valid_invalid_and_undecodable_requests(loaded_state: WorkerState) -> None:
    batch = [
        encoded(request_id="ok-1"),
        b"\x00garbage",
        encoded(request_id="bad-1", resource=Resource(id="x", type="config", sensitivity="nope")),
        encoded(request_id="route-1", reply_to=config.TOPIC_POLICIES),
        encoded(request_id="ok-2", identity="agent-nobody"),
    ]
    out = await decide(loaded_state, *batch)
    replies = {r.key: wire.decode_as("Decision", r.value)["reasons"][0]["code"] for r in out.on(config.TOPIC_DECISIONS)}
    assert replies == {b"ok-1": "config_read", b"bad-1": "invalid_request", b"ok-2": "unknown_identity"}
    assert sorted(r.key for r in out.on(config.TOPIC_AUDIT)) == [b"bad-1", b"ok-1", b"ok-2", b"route-1"]
    assert len(out.on(config.TOPIC_DLQ)) == 3  # garbage, invalid, bad route


async def test_the_same_request_sent_twice_is_decided_the_same(loaded_state: WorkerState) -> None:
    """Two records with one request (a client that sent it twice): both replies say the same; the audit
    table collapses the two rows (same request)."""
    out = await decide(loaded_state, encoded(request_id="r"), encoded(request_id="r"))
    assert [reason(out, 0), reason(out, 1)] == [("allow", "config_read")] * 2
    assert [r.key for r in out.on(config.TOPIC_AUDIT)] == [b"r", b"r"]


async def test_a_decision_on_another_schema_version_part_is_still_audited(loaded_state: WorkerState) -> None:
    """When the identity arrived in another writer schema, the audit record is encoded the ordinary way."""
    ident_msg = loaded_state.identity_messages["agent-config-bot"]
    loaded_state.identity_messages["agent-config-bot"] = b"\xc3\x01" + b"\x00" * 8 + ident_msg[10:]
    out = await decide(loaded_state, encoded())
    record = wire.decode_as("AuditRecord", out.on(config.TOPIC_AUDIT)[0].value)
    assert record["identity"]["id"] == "agent-config-bot"


async def test_audit_records_go_to_their_request_partition_when_the_topics_are_co_partitioned(
    loaded_state: WorkerState,
) -> None:
    producer = FakeProducer()
    routes = ReplyRoutes(config.Settings.from_env({}), FakeMetadata())
    decider = Decider(loaded_state, "w-test", routes, audit_on_request_partition=True)
    await RequestLoop(decider, producer).process([incoming(encoded())])
    assert [r.partition for r in producer.on(config.TOPIC_AUDIT)] == [1]


def test_reply_topic_lookups_are_bounded() -> None:
    """An allowed prefix admits endless topic names: only so many are ever added to the producer's metadata."""
    asked: list[str] = []
    routes = ReplyRoutes(config.Settings.from_env({}), FakeMetadata(), request_lookup=asked.append, max_lookups=3)
    for i in range(10):
        assert routes(f"pdx.replies.svc-{i}", 0) is not None
        assert routes(f"pdx.replies.svc-{i}", 0) is not None  # asked once per topic
    assert asked == ["pdx.replies.svc-0", "pdx.replies.svc-1", "pdx.replies.svc-2"]
    assert "..." in str(routes("x" * 5000, 0)) and len(str(routes("x" * 5000, 0))) < 400


async def test_an_oversized_request_is_a_small_audited_deny_never_an_allow(loaded_state: WorkerState) -> None:
    """The issue's finding: a valid request with a 1,000,000-byte attribute was allowed and never audited."""
    big = Resource(id="feature-flags", type="config", environment="production", sensitivity="internal",
                   attributes={"blob": "x" * 1_000_000})
    out = await decide(loaded_state, encoded(request_id="big-1", resource=big))
    assert reason(out) == ("deny", "request_too_large")
    [reply] = out.on(config.TOPIC_DECISIONS)
    [audit] = out.on(config.TOPIC_AUDIT)
    assert len(reply.value) < 2_000 and len(audit.value) < 16_384
    record = wire.decode_as("AuditRecord", audit.value)
    assert record["request"]["request_id"] == "big-1"
    assert record["request"]["context"]["attributes"]["pdx.truncated"] == "true"
    assert record["decision"]["reasons"][0]["code"] == "request_too_large"
    assert record["decision"]["reasons"][0]["message"] == "request too large: request is 1000144 bytes (limit 65536)"


async def test_request_limits_come_from_the_settings(loaded_state: WorkerState) -> None:
    many = Resource(id="feature-flags", type="config", attributes={f"k{i}": "v" for i in range(5)})
    limits = config.RequestLimits(max_map_entries=4)
    producer = FakeProducer()
    routes = ReplyRoutes(config.Settings.from_env({}), FakeMetadata())
    loop = RequestLoop(Decider(loaded_state, "w-test", routes, request_limits=limits), producer)
    await loop.process([incoming(encoded(resource=many))])
    assert reason(producer) == ("deny", "request_too_large")


async def test_a_bug_while_deciding_one_request_fails_closed_audited_and_the_rest_are_decided(
    loaded_state: WorkerState,
) -> None:
    class Exploding(dict):  # type: ignore[type-arg]
        def get(self, key: Any, default: Any = None) -> Any:
            if key == "agent-intern":
                raise RuntimeError("boom")
            return super().get(key, default)

    loaded_state.identities = Exploding(loaded_state.identities)
    out = await decide(loaded_state, encoded(request_id="a", identity="agent-intern"), encoded(request_id="b"))
    assert [r.key for r in out.on(config.TOPIC_DECISIONS)] == [b"a", b"b"]
    assert reason(out, 0) == ("deny", "evaluation_failed")  # an answer, never an allow, and no wait for a deadline
    assert [r.key for r in out.on(config.TOPIC_AUDIT)] == [b"a", b"b"] and audited_reason(out, 0) == (
        "deny", "evaluation_failed")
    [dlq] = out.on(config.TOPIC_DLQ)
    assert dict(dlq.headers)["error"].startswith(b"internal error: RuntimeError: boom")


async def test_an_int_the_schema_cannot_re_encode_is_still_audited(loaded_state: WorkerState) -> None:
    """Avro ints are not range-checked on decode: a reply_partition of 2**48 is refused as a route, audited,
    and stops nothing."""
    raw = encoded(reply_partition=0, deadline=None)
    hostile = raw[:-3] + b"\x80" * 7 + b"\x01\x00\x00"
    request_dict = wire.decode_as("AccessRequest", hostile)
    assert request_dict["reply_partition"] == 2**48
    out = await decide(loaded_state, hostile)
    assert audited_reason(out) == ("deny", "invalid_reply_route")
    assert out.on(config.TOPIC_DECISIONS) == []
    # when the audit record has to be encoded from its parts (no splice), the shrunk copy is audited instead
    decider = Decider(loaded_state, "w-test", ReplyRoutes(config.Settings.from_env({}), FakeMetadata()))
    deny = decider._fail_closed("req-1", "invalid_reply_route", "x")
    now = datetime.now(UTC)
    audit = decider._encode_audit(request_dict, deny.to_dict(), None, now, now, incoming(hostile))
    assert wire.decode_as("AuditRecord", audit)["request"]["request_id"] == "req-1"


def test_dead_letter_logging_is_at_most_one_line_a_second(caplog: pytest.LogCaptureFixture) -> None:
    from streams.worker.decide import _EverySecond

    now = [100.0]
    limiter = _EverySecond(clock=lambda: now[0])
    msg = incoming(b"x")
    with caplog.at_level("WARNING", logger="pdx.decide"):
        for _ in range(500):
            limiter(msg, "bad")
        now[0] += 1.5
        limiter(msg, "bad")
    assert len(caplog.records) == 2
    assert "and 499 more" in caplog.records[1].getMessage()


async def test_secrets_in_attributes_are_redacted_in_the_audit_record_not_in_the_decision(
    loaded_state: WorkerState,
) -> None:
    secret = "Bearer abcdefghijklmnopqrstuvwxyz"
    ctx = RequestContext(attributes={"authorization": secret, "ticket": "CHG-1"})
    out = await decide(loaded_state, encoded(context=ctx))
    audited = wire.decode_as("AuditRecord", out.on(config.TOPIC_AUDIT)[0].value)
    attrs = audited["request"]["context"]["attributes"]
    assert attrs["ticket"] == "CHG-1" and attrs["authorization"].startswith("[redacted:sha256:")
    assert secret.encode() not in out.on(config.TOPIC_AUDIT)[0].value
    assert reason(out) == audited_reason(out) == ("allow", "config_read")
