"""The audit hash chain through the Decider and the request loop: every record links to the one before in its
partition's chain, hashes to what `pdx audit verify` recomputes from its stored row, and checkpoints cover only
durable records, signed with the worker's audit key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from streams import config
from streams.audit.store import COLUMNS, audit_row
from streams.audit.verify import StoredRow
from streams.contracts import audit_chain, signing, wire
from streams.model import AccessRequest, RequestContext, Resource
from streams.worker.chain import AuditChains
from streams.worker.decide import Decider, Incoming
from streams.worker.loop import ReplyRoutes, RequestLoop
from streams.worker.state import WorkerState
from tests.unit.worker.conftest import TEST_KEYS, TEST_TRUST, FakeMetadata, FakeProducer

KEY = TEST_KEYS[signing.AUDIT]
TIMES = ("occurred_at", "received_at", "decided_at", "evaluated_at")


def request(rid: str, identity: str = "agent-config-bot", **changes: Any) -> bytes:
    now = datetime.now(UTC)
    req = AccessRequest(
        request_id=rid, occurred_at=now, identity_id=identity, action="config:read",
        resource=Resource(id="feature-flags", type="config", environment="production", sensitivity="internal",
                          attributes={"ключ": "a/b \"q\" \u2028"}),
        context=RequestContext(requested_ttl_s=2**40, token_issued_at=now.replace(microsecond=0)),
        on_behalf_of=["alice"], reply_to=config.TOPIC_DECISIONS, reply_partition=3,
        deadline=now + timedelta(seconds=5),
    )  # fmt: skip
    for key, value in changes.items():
        setattr(req, key, value)
    return wire.encode("AccessRequest", req.to_dict())


def make_loop(state: WorkerState, producer: FakeProducer, chains: AuditChains, **kw: Any) -> RequestLoop:
    routes = ReplyRoutes(config.Settings.from_env({}), FakeMetadata())
    return RequestLoop(Decider(state, "w-test", routes, audit_on_request_partition=True, chains=chains, **kw),
                       producer)


def stored(record: dict[str, Any]) -> StoredRow:
    """The row the audit table holds for ``record`` (store.audit_row is the reference the ingest view is
    tested against), as verify reads it back."""
    columns = dict(zip(COLUMNS, audit_row(record), strict=True))
    return StoredRow(columns, {t: audit_chain.micros(columns[t]) for t in TIMES})


def batch() -> list[Incoming]:
    values = [
        request("r-0"),
        request("r-1", identity="nobody-known"),  # unknown identity: null snapshot
        request("r-2", deadline=datetime.now(UTC) - timedelta(seconds=1)),  # deadline passed
        request("r-3", resource=Resource(id="x" * 5000, type="config")),  # too large: shrunk, encoded (slow path)
        wire.encode("AccessRequest", {**AccessRequest.from_dict({  # invalid: sensitivity not allowed
            "request_id": "r-4", "occurred_at": datetime.now(UTC), "identity_id": "agent-config-bot",
            "action": "config:read", "resource": {"id": "f", "type": "config"}, "reply_to": config.TOPIC_DECISIONS,
            "reply_partition": 0}).to_dict(), "resource": {"id": "f", "type": "config", "sensitivity": "bogus",
            "attributes": {}}}),
        request("r-5"),
    ]  # fmt: skip
    msgs = [Incoming(config.TOPIC_REQUESTS, 1, 100 + i, b"k", v) for i, v in enumerate(values)]
    msgs.append(Incoming(config.TOPIC_REQUESTS, 2, 5, b"k", request("r-p2")))
    return msgs


async def test_each_record_links_to_the_last_and_hashes_to_what_its_stored_row_recomputes(
    loaded_state: WorkerState,
) -> None:
    producer = FakeProducer()
    chains = AuditChains("w-test", KEY)
    loop = make_loop(loaded_state, producer, chains)
    await loop.process(batch())
    records = [wire.decode_as("AuditRecord", r.value) for r in producer.on(config.TOPIC_AUDIT)]
    assert len(records) == 7
    heads: dict[str, bytes] = {}
    for rec in records:
        link = rec["chain"]
        assert link["chain_id"].startswith(f"w-test/{config.TOPIC_REQUESTS}/{rec['source_partition']}/")
        assert link["seq"] == (0 if link["chain_id"] not in heads else link["seq"])
        assert link["prev"] == heads.get(link["chain_id"], audit_chain.ZERO_HASH)
        heads[link["chain_id"]] = link["hash"]
        assert (link["request_digest"], link["body_digest"]) == audit_chain.record_digests(rec)
        assert link["hash"] == audit_chain.link_hash(
            link["chain_id"], link["seq"], link["prev"], link["request_digest"], link["body_digest"]
        )
        row = stored(rec)
        assert row.error == ""
        assert (row.request_digest, row.body_digest) == (link["request_digest"].hex(), link["body_digest"].hex())
        assert row.columns["record_hash"] == link["hash"].hex()
    assert [r["chain"]["seq"] for r in records if r["source_partition"] == 1] == list(range(6))
    assert len(heads) == 2  # one chain per request partition
    assert records[1]["identity"] is None and records[0]["identity"] is not None
    assert records[3]["request"]["context"]["attributes"].get("pdx.truncated") == "true"


async def test_a_changed_column_no_longer_matches_the_hashed_content(loaded_state: WorkerState) -> None:
    producer = FakeProducer()
    await make_loop(loaded_state, producer, AuditChains("w-test", KEY)).process(batch()[:1])
    rec = wire.decode_as("AuditRecord", producer.on(config.TOPIC_AUDIT)[0].value)
    good = stored(rec)
    rec["decision"]["decision"] = "allow" if rec["decision"]["decision"] != "allow" else "deny"
    assert stored(rec).body_digest != good.body_digest
    columns = dict(good.columns, action="secrets:read")  # a derived column changed alone
    changed = StoredRow(columns, {t: audit_chain.micros(good.columns[t]) for t in TIMES})
    assert changed.request_digest == good.request_digest and "column action" in changed.error


async def test_checkpoints_cover_durable_records_only_and_are_signed(loaded_state: WorkerState) -> None:
    fail_last = {"on": True}

    def fail(topic: str, value: bytes) -> str | None:  # the audit record of r-5 is not acknowledged
        if topic == config.TOPIC_AUDIT and fail_last["on"] and wire.decode_as("AuditRecord", value)["request"][
            "request_id"] == "r-5":
            return "broker says no"
        return None

    producer = FakeProducer(fail=fail)
    chains = AuditChains("w-test", KEY, every_s=3600)
    loop = make_loop(loaded_state, producer, chains)
    planned = await loop.process(batch())
    assert next(p for p in planned if p.request_id == "r-5").reply is not None  # planned, but...
    assert b"r-5" not in {r.key for r in producer.on(config.TOPIC_DECISIONS)}  # ...no reply: fail closed
    assert await loop.checkpoint() == 0  # not due yet
    assert await loop.checkpoint(force=True) == 2
    cps = {c["source_partition"]: c for c in (wire.decode_as("AuditCheckpoint", r.value)
                                              for r in producer.on(config.TOPIC_CHECKPOINTS))}  # fmt: skip
    audit = [wire.decode_as("AuditRecord", r.value) for r in producer.on(config.TOPIC_AUDIT)]
    p1 = [r for r in audit if r["source_partition"] == 1]
    assert cps[1]["seq"] == 4 and cps[1]["head_hash"] == p1[-1]["chain"]["hash"]  # r-5 (seq 5) is not durable
    assert cps[2]["seq"] == 0 and not cps[1]["final"]
    for cp in cps.values():
        value = audit_chain.checkpoint_value(cp["chain_id"], cp["seq"], cp["head_hash"], cp["final"], cp["worker_id"],
                                             cp["source_topic"], cp["source_partition"])  # fmt: skip
        signed_at_ms = audit_chain.micros(cp["signed_at"]) // 1000
        TEST_TRUST.verify_bytes(signing.AUDIT, signing.signed_payload(signing.AUDIT, cp["chain_id"].encode(), value,
                                                                      signed_at_ms), cp["signature"], KEY.key_id)
        assert cp["key_id"] == KEY.key_id
    assert await loop.checkpoint(force=True) == 0  # nothing new to anchor


async def test_a_revoked_partition_ends_its_chain_and_a_new_owner_starts_another(loaded_state: WorkerState) -> None:
    producer = FakeProducer()
    loop = make_loop(loaded_state, producer, AuditChains("w-test", None, every_s=3600))
    await loop.process(batch()[:2])
    await loop.end_chains([1])
    [final] = [wire.decode_as("AuditCheckpoint", r.value) for r in producer.on(config.TOPIC_CHECKPOINTS)]
    assert final["final"] and final["seq"] == 1 and final["key_id"] == "" and final["signature"] == b""  # unsigned
    await loop.process([Incoming(config.TOPIC_REQUESTS, 1, 200, b"k", request("again"))])
    audit = [wire.decode_as("AuditRecord", r.value) for r in producer.on(config.TOPIC_AUDIT)]
    assert audit[-1]["chain"]["seq"] == 0 and audit[-1]["chain"]["chain_id"] != final["chain_id"]
    assert audit[-1]["chain"]["prev"] == audit_chain.ZERO_HASH


def test_an_identity_digest_is_computed_once_per_inventory_message(loaded_state: WorkerState) -> None:
    chains = AuditChains("w")
    msg = loaded_state.identity_messages["agent-config-bot"]
    first = chains.identity_digest("agent-config-bot", msg)
    assert chains.identity_digest("agent-config-bot", msg) is first
    assert first == audit_chain.identity_digest(wire.decode_as("Identity", msg)).hex()


def test_the_canonical_json_is_the_stdlib_sorted_compact_utf8_form() -> None:
    import json

    obj = {"b": [1, None, True], "a": {"z": "ü\u2028\x01/\"\\", "y": 2**40},
           "t": datetime(2026, 6, 3, 10, 0, 0, 123000, tzinfo=UTC), "u": datetime(2026, 6, 3, tzinfo=UTC)}  # fmt: skip
    text = json.dumps({**obj, "t": "2026-06-03T10:00:00.123000+00:00", "u": "2026-06-03T00:00:00+00:00"},
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False)  # fmt: skip
    assert audit_chain.canonical_json(obj) == text.encode()


async def test_the_audit_record_carries_the_approval_and_principals_the_decision_relied_on(
    loaded_state: WorkerState,
) -> None:
    """What a replay needs is in the record, spliced byte-identical to an ordinary encoding, and hashed."""
    from streams.model import Approval
    from tests.unit.worker.conftest import apply_approval, apply_identity, identity_message

    now = datetime.now(UTC)
    start = now.replace(microsecond=0)
    approval = Approval("apr-9", "agent-config-bot", "config:write", "rate-limits", "carol",
                        start - timedelta(minutes=1), start + timedelta(hours=1))
    apply_approval(loaded_state, b"agent-config-bot/apr-9", wire.encode("Approval", approval.to_dict()))
    write = Resource(id="rate-limits", type="config", environment="production", sensitivity="internal")
    producer = FakeProducer()
    loop = make_loop(loaded_state, producer, AuditChains("w-test", KEY))
    await loop.process([Incoming(config.TOPIC_REQUESTS, 1, 1, b"k", request("w-1", action="config:write",
                                                                           resource=write))])
    alice = loaded_state.identities["alice"]
    alice_suspended = alice.to_dict() | {"status": "suspended", "updated_at": now}
    apply_identity(loaded_state, b"alice", identity_message(type(alice).from_dict(alice_suspended)))
    await loop.process([Incoming(config.TOPIC_REQUESTS, 1, 2, b"k", request("w-2", action="config:write",
                                                                           resource=write))])
    (first, second) = producer.on(config.TOPIC_AUDIT)
    rec = wire.decode_as("AuditRecord", first.value)
    assert rec["decision"]["decision"] == "allow"
    assert rec["relied_on"]["approvals"] == [{"approval_id": "apr-9", "approved_by": "carol",
                                              "granted_at": approval.granted_at, "expires_at": approval.expires_at}]
    assert [p["id"] for p in rec["relied_on"]["principals"]] == ["alice"]
    assert wire.encode("AuditRecord", rec) == first.value  # the spliced bytes are the ordinary encoding
    assert (rec["chain"]["request_digest"], rec["chain"]["body_digest"]) == audit_chain.record_digests(rec)
    row = stored(rec)
    assert row.error == "" and row.body_digest == rec["chain"]["body_digest"].hex()
    later = wire.decode_as("AuditRecord", second.value)
    assert later["decision"]["reasons"][0]["code"] == "delegator_suspended"
    assert later["relied_on"]["principals"][0]["status"] == "suspended"
    assert later["relied_on"]["approvals"] == []
    # a changed approver no longer matches the hashed content
    tampered = stored({**rec, "relied_on": {**rec["relied_on"], "approvals": [
        {**rec["relied_on"]["approvals"][0], "approved_by": "mallory"}]}})
    assert tampered.body_digest != rec["chain"]["body_digest"].hex()
