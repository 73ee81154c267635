"""The worker's spliced AuditRecord is byte-identical to encoding the record the ordinary way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config import REPO_ROOT
from streams.contracts import wire
from streams.model import AccessRequest, Decision, Reason, RequestContext, Resource
from streams.model.inventory_file import read_inventory

IDENTITY = read_inventory(REPO_ROOT / "examples" / "inventory.yaml")[0]


def _parts(req_id: str, offset: int, partition: int, micros: int, with_identity: bool) -> tuple:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC) + timedelta(microseconds=micros)
    request = AccessRequest(request_id=req_id, occurred_at=now.replace(microsecond=now.microsecond // 1000 * 1000),
                            identity_id=IDENTITY.id, action="db:connect",
                            resource=Resource(id="orders-db", type="database", attributes={"k": "v"}),
                            context=RequestContext(requested_ttl_s=60), reply_to="pdx.decisions", reply_partition=3)
    decision = Decision(request_id=req_id, decision="deny", reasons=[Reason("c", "m", "p", "r")],
                        matched_rules=["r"], obligations={"a": "b"}, monitor=[], bundle_version="v",
                        evaluated_at=now, eval_us=7, worker_id="w-é")
    identity = IDENTITY if with_identity else None
    record = {"request": request.to_dict(), "identity": identity.to_dict() if identity else None,
              "decision": decision.to_dict(), "received_at": now, "decided_at": now + timedelta(microseconds=3),
              "source_topic": "pdx.requests", "source_partition": partition, "source_offset": offset,
              "worker_id": "w-é"}
    return request, identity, decision, record


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=40), st.integers(0, 2**62), st.integers(0, 2**31 - 1),
       st.integers(0, 10**12), st.booleans())
def test_splice_equals_encode(req_id: str, offset: int, partition: int, micros: int, with_identity: bool) -> None:
    request, identity, decision, record = _parts(req_id, offset, partition, micros, with_identity)
    spliced = wire.splice_audit_record(
        wire.encode("AccessRequest", request.to_dict()),
        wire.encode("Identity", identity.to_dict()) if identity else None,
        wire.encode("Decision", decision.to_dict()),
        received_at=record["received_at"], decided_at=record["decided_at"], source_topic=record["source_topic"],
        source_partition=partition, source_offset=offset, worker_id=record["worker_id"])
    assert spliced == wire.encode("AuditRecord", record)
    assert wire.decode_as("AuditRecord", spliced)["source_offset"] == offset


def test_splice_declines_parts_of_another_schema() -> None:
    _, _, decision, record = _parts("x", 1, 0, 0, False)
    foreign = b"\xc3\x01" + b"\x00" * 8 + b"body"
    assert wire.splice_audit_record(foreign, None, wire.encode("Decision", decision.to_dict()),
                                    received_at=record["received_at"], decided_at=record["decided_at"],
                                    source_topic="t", source_partition=0, source_offset=0, worker_id="w") is None


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=60), st.integers(0, 2**62), st.binary(min_size=32, max_size=32),
       st.binary(min_size=32, max_size=32), st.booleans())
def test_splice_with_a_chain_link_equals_encode(chain_id: str, seq: int, digest: bytes, prev: bytes,
                                                with_identity: bool) -> None:
    from streams.contracts import splice

    request, identity, decision, record = _parts("rid", 5, 1, 123, with_identity)
    link = {"chain_id": chain_id, "seq": seq, "prev": prev, "request_digest": digest, "body_digest": digest[::-1],
            "hash": bytes(b ^ 0x5A for b in digest)}
    encoded_link = splice.encode_chain(chain_id, seq, prev, link["request_digest"], link["body_digest"], link["hash"])
    parts = (wire.encode("AccessRequest", request.to_dict()),
             wire.encode("Identity", identity.to_dict()) if identity else None,
             wire.encode("Decision", decision.to_dict()))
    kw = dict(received_at=record["received_at"], decided_at=record["decided_at"], source_topic=record["source_topic"],
              source_partition=1, source_offset=5, worker_id=record["worker_id"])
    spliced = wire.splice_audit_record(*parts, **kw, chain=encoded_link)  # type: ignore[arg-type]
    assert spliced == wire.encode("AuditRecord", {**record, "chain": link})
    unchained = wire.splice_audit_record(*parts, **kw)  # type: ignore[arg-type]
    assert unchained == wire.encode("AuditRecord", record)
    assert splice.with_chain(unchained, encoded_link) == spliced  # type: ignore[arg-type]


def test_audit_records_written_before_the_chain_still_decode() -> None:
    """AuditRecord before the `chain` field (fingerprint 0x7429417d465beffc) is a registered writer schema."""
    import io

    import fastavro

    _, _, _, record = _parts("old", 1, 0, 0, True)
    current = wire.encode("AuditRecord", record)
    assert current.endswith(b"\x00\x00")  # chain and relied_on: null, the last fields
    # the first AuditRecord: no chain, and its request and identity without token / workload_subjects
    old_header = b"\xc3\x01" + (0x7429417d465beffc).to_bytes(8, "little")
    (oldest,) = [v for v in wire._versions("AuditRecord") if wire._fingerprint_bytes(
        fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(v))) == old_header[2:]]
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(oldest), record)
    old = old_header + body.getvalue()
    before = wire.decode_as("AuditRecord", current)
    assert wire.decode_as("AuditRecord", old) == {**before, "chain": None, "relied_on": None}
