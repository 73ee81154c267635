"""Avro object containers built from raw single-object AuditRecords (streams.audit.avro_container)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from streams.audit import avro_container as ac
from streams.audit.store import rejects_data
from streams.bench import synthetic
from streams.contracts import wire

END = datetime(2026, 6, 3, 12, 0, tzinfo=UTC)


def edge_records() -> list[dict[str, Any]]:
    """Synthetic records plus the shapes the view must handle: no identity, empty arrays, monitor outcomes,
    unicode and JSON-special characters."""
    recs = list(synthetic.records(20, seed=11, end=END))
    recs[1]["identity"] = None
    recs[2]["decision"]["reasons"] = []
    recs[2]["decision"]["matched_rules"] = []
    recs[3]["decision"]["monitor"] = [
        {"policy": "p", "rule": "p/r", "effect": "deny", "reason_code": "would_deny"},
        {"policy": "q", "rule": "q/s", "effect": "step_up", "reason_code": "approval_required"},
    ]
    recs[4]["request"]["resource"]["id"] = 'prod/db/"ünïcode"\\ ✓ 😀\n\t'
    return recs


@pytest.mark.parametrize("block_records", [1, 7])  # one body per block (the default), or 7 + 7 + 6
def test_a_container_holds_exactly_the_messages_records_in_order(block_records: int) -> None:
    recs = edge_records()
    msgs = [wire.encode("AuditRecord", r) for r in recs]
    container = ac.build(msgs, block_records=block_records)
    reader = fastavro.reader(io.BytesIO(container))
    assert reader.metadata["avro.codec"] == "null"
    back = list(reader)
    assert back == [wire.decode_as("AuditRecord", m) for m in msgs]
    assert [r["request"]["request_id"] for r in back] == [r["request"]["request_id"] for r in recs]
    assert back[1]["identity"] is None and back[3]["decision"]["monitor"][1]["effect"] == "step_up"


def test_the_writer_schema_keeps_logical_types_and_matches_the_fingerprint() -> None:
    reader = fastavro.reader(io.BytesIO(ac.build([wire.encode("AuditRecord", r) for r in edge_records()[:1]])))
    schema = fastavro.parse_schema(reader.writer_schema)
    assert fastavro.schema.to_parsing_canonical_form(schema) == wire.canonical_form("AuditRecord")
    assert '"timestamp-micros"' in reader.metadata["avro.schema"]
    assert '"doc"' not in reader.metadata["avro.schema"]


def test_an_empty_container_is_a_valid_file() -> None:
    assert list(fastavro.reader(io.BytesIO(ac.build([])))) == []


def test_containers_are_reproducible() -> None:
    msgs = [wire.encode("AuditRecord", r) for r in edge_records()]
    assert ac.build(msgs) == ac.build(list(msgs))


def test_only_current_audit_headers_are_copied_as_is() -> None:
    rec = edge_records()[0]
    assert ac.is_current(wire.encode("AuditRecord", rec))
    assert not ac.is_current(wire.encode("Decision", rec["decision"]))
    assert not ac.is_current(ac.AUDIT_HEADER)  # a header without a body
    assert not ac.is_current(b"garbage")


@pytest.mark.parametrize("request_id", ["r1", "x" * 200, "ünïcode-✓", ""])
def test_the_request_id_is_read_from_the_body_without_decoding(request_id: str) -> None:
    rec = edge_records()[0]
    rec["request"]["request_id"] = request_id
    assert ac.request_id(wire.encode("AuditRecord", rec)) == request_id


def test_a_truncated_body_has_no_request_id() -> None:
    msg = wire.encode("AuditRecord", edge_records()[0])
    with pytest.raises(ValueError):
        ac.request_id(msg[:12])
    with pytest.raises(ValueError):
        ac.request_id(ac.AUDIT_HEADER)


@pytest.mark.parametrize("n", [0, 1, -1, 63, 64, -65, 2**31, -(2**63), 2**63 - 1])
def test_avro_longs_round_trip(n: int) -> None:
    encoded = ac.zigzag_long(n)
    assert ac.read_long(encoded, 0) == (n, len(encoded))
    out = io.BytesIO()
    fastavro.schemaless_writer(out, "long", n)
    assert out.getvalue() == encoded


def test_the_dedup_token_depends_on_the_set_of_ids_only() -> None:
    assert ac.dedup_token(["a", "b"]) == ac.dedup_token(["b", "a"]) != ac.dedup_token(["a"])


class FakeServerError(Exception):
    def __init__(self, message: str, code: int | None) -> None:
        super().__init__(message)
        self.code = code


@pytest.mark.parametrize(
    ("message", "code", "rejected"),
    [
        ("std::exception. Code: 1001, type: avro::Exception, e.what() = Cannot have negative length", 1001, True),
        ("Code: 1001. type: std::bad_alloc", 1001, False),
        ("Code: 117. DB::Exception: Incorrect data", None, True),
        ("Code: 241. DB::Exception: Memory limit exceeded", 241, False),
        ("Code: 60. DB::Exception: Unknown table audit_ingest", 60, False),
        ("Connection refused", None, False),
    ],
)
def test_only_malformed_data_counts_as_a_rejection(message: str, code: int | None, rejected: bool) -> None:
    assert rejects_data(FakeServerError(message, code)) is rejected
