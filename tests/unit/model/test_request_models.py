from datetime import UTC, datetime

import pytest

from streams.policy import AccessRequest, Decision, MonitorOutcome, Reason

NOW = datetime(2025, 6, 3, 10, 0, tzinfo=UTC)


def test_access_request_round_trip_with_contract_keys():
    req = AccessRequest.from_dict({
        "request_id": "r1", "occurred_at": "2025-06-03T10:00:00Z", "identity_id": "agent-1",
        "on_behalf_of": ["alice"], "action": "db:connect",
        "resource": {"id": "db", "type": "database", "environment": "production", "sensitivity": "restricted"},
        "context": {"source_ip": "10.0.0.1", "token_issued_at": "2025-06-03T09:59:00Z", "requested_ttl_s": 60},
        "reply_to": "pdx.decisions", "reply_partition": 3,
    })
    d = req.to_dict()
    assert list(d) == ["request_id", "occurred_at", "identity_id", "on_behalf_of", "action", "resource", "context",
                       "reply_to", "reply_partition", "deadline", "token"]
    assert list(d["resource"]) == ["id", "type", "environment", "sensitivity", "repository", "owner", "attributes"]
    assert list(d["context"]) == ["source_ip", "token_issued_at", "requested_ttl_s", "approval_id",
                                  "change_ticket", "tool", "attributes"]
    assert d["occurred_at"] == NOW
    assert AccessRequest.from_dict(d) == req


@pytest.mark.parametrize("patch,needle", [
    ({"resource": {"id": "x", "type": "db", "sensitivity": "secret"}}, "sensitivity"),
    ({"context": {"requested_ttl_s": "1h"}}, "requested_ttl_s"),
    ({"action": None}, "action"),
    ({"occurred_at": "now"}, "occurred_at"),
])
def test_access_request_rejects_bad_values(patch, needle):
    base = {"occurred_at": NOW, "identity_id": "a", "action": "x:y", "resource": {"id": "r", "type": "t"}}
    base.update(patch)
    with pytest.raises(ValueError, match=needle):
        AccessRequest.from_dict(base)


def test_decision_round_trip():
    d = Decision("r1", "step_up", [Reason("approval_required", "ask", "p", "r")], ["r"],
                 {"require_approval": "a,b"}, [MonitorOutcome("m", "mr", "deny", "x")], "v1", NOW, 7, "w1")
    out = d.to_dict()
    assert list(out) == ["request_id", "decision", "reasons", "matched_rules", "obligations", "monitor",
                         "bundle_version", "evaluated_at", "eval_us", "worker_id"]
    assert list(out["reasons"][0]) == ["code", "message", "policy", "rule"]
    assert list(out["monitor"][0]) == ["policy", "rule", "effect", "reason_code"]
    assert Decision.from_dict(out) == d


def test_decision_rejects_unknown_outcome():
    with pytest.raises(ValueError, match="decision"):
        Decision.from_dict({"request_id": "r", "decision": "maybe", "evaluated_at": NOW})


def test_from_avro_builds_what_from_dict_builds_for_decoded_requests() -> None:
    """The worker's fast constructor trusts Avro's types, and must agree with the checking one."""
    from datetime import UTC, datetime, timedelta

    import pytest as _pytest

    from streams.contracts import wire
    from streams.model import AccessRequest, RequestContext, Resource

    now = datetime.now(UTC).replace(microsecond=0)
    full = AccessRequest(
        "r1", now, "agent-a", "db:connect",
        Resource("orders", "database", "production", "restricted", "repo", "team", {"k": "v"}),
        RequestContext("10.0.0.1", now - timedelta(minutes=2), 900, "apr-1", "CHG-1", "langchain", {"a": "b"}),
        ["alice"], "pdx.decisions", 3, now + timedelta(seconds=5),
    )
    minimal = AccessRequest("r2", now, "agent-b", "config:read", Resource("flags", "config"))
    for req in (full, minimal):
        decoded = wire.decode_as("AccessRequest", wire.encode("AccessRequest", req.to_dict()))
        assert AccessRequest.from_avro(decoded) == AccessRequest.from_dict(decoded) == req
    bad_resource = {"id": "x", "type": "t", "sensitivity": "nope"}
    bad = wire.decode_as("AccessRequest", wire.encode("AccessRequest", {**minimal.to_dict(), "resource": bad_resource}))
    with _pytest.raises(ValueError, match="sensitivity"):
        AccessRequest.from_avro(bad)


def test_extreme_and_huge_timestamps_are_short_value_errors() -> None:
    import pytest as _pytest

    from streams.model import parse_timestamp

    for text in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        with _pytest.raises(ValueError, match="outside the representable range"):
            parse_timestamp(text, "request.occurred_at")
    with _pytest.raises(ValueError) as err:
        parse_timestamp("x" * 1_000_000, "request.occurred_at")
    assert len(str(err.value)) < 400


def _with_reply_partition(partition: int) -> bytes:
    """An AccessRequest whose reply_partition varint holds ``partition``, even outside an Avro int's range (no
    encoder writes that, but the decoder reads it)."""
    from streams.contracts import wire

    d = {"request_id": "r", "occurred_at": NOW, "identity_id": "a", "action": "x:y",
         "resource": {"id": "r", "type": "t"}, "context": {}, "reply_to": "pdx.decisions", "reply_partition": 0}
    raw = wire.encode("AccessRequest", d)
    assert raw.endswith(b"\x00\x00\x00")  # reply_partition 0, deadline null, token null
    z = (partition << 1) ^ (partition >> 63)
    varint = bytearray()
    while z & ~0x7F:
        varint.append((z & 0x7F) | 0x80)
        z >>= 7
    varint.append(z)
    return raw[:-3] + bytes(varint) + b"\x00\x00"


@pytest.mark.parametrize("partition", [2**31, -(2**31) - 1, 2**40, -(2**62)])
def test_from_avro_rejects_a_reply_partition_outside_the_avro_int_range(partition: int) -> None:
    from streams.contracts import wire
    from streams.model import AccessRequest

    decoded = wire.decode_as("AccessRequest", _with_reply_partition(partition))
    assert decoded["reply_partition"] == partition  # the decoder does not check an int's range
    with pytest.raises(ValueError, match=r"reply_partition: .* is outside the range of an Avro int"):
        AccessRequest.from_avro(decoded)
    with pytest.raises(ValueError, match="outside the range of an Avro int"):
        AccessRequest.from_dict(decoded)
    edge = wire.decode_as("AccessRequest", _with_reply_partition(2**31 - 1))
    assert AccessRequest.from_avro(edge).reply_partition == 2**31 - 1


def test_model_errors_quote_huge_values_briefly() -> None:
    from streams.model import Approval, Decision, Resource

    huge = "x" * 1_000_000
    base = {"occurred_at": NOW, "identity_id": "a", "action": "x:y", "resource": {"id": "r", "type": "t"}}
    attempts = [
        lambda: AccessRequest.from_dict({**base, "resource": {"id": "r", "type": "t", "sensitivity": huge}}),
        lambda: AccessRequest.from_dict({**base, "context": {"requested_ttl_s": huge}}),
        lambda: AccessRequest.from_dict({**base, "reply_partition": huge}),
        lambda: AccessRequest.from_dict({**base, "reply_partition": 10**5000}),
        lambda: Resource.from_dict({"id": "r", "type": "t", "attributes": {huge: [1]}}),
        lambda: Decision.from_dict({"request_id": "r", "decision": huge, "evaluated_at": NOW}),
        lambda: Approval.from_dict({"approval_id": huge, "revoked": huge}),
    ]
    for attempt in attempts:
        with pytest.raises(ValueError) as err:
            attempt()
        assert len(str(err.value)) < 300, str(err.value)[:300]
        assert "Exceeds the limit" not in str(err.value)  # our message, not int-to-str's
