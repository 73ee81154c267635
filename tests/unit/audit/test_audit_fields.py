"""The audit record's single declaration (streams/contracts/audit_fields.py): consistent with the Avro schema,
and hashing exactly as the chain always did (golden digests computed by the code before the declaration)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from streams.audit import ingest
from streams.audit.migrate import Migration, MigrationError, discover
from streams.bench import synthetic
from streams.contracts import WireError, audit_chain, audit_fields, splice, wire

START = datetime(2026, 4, 28, tzinfo=UTC)
END = datetime(2026, 5, 3, tzinfo=UTC)
#: (request_id, request_digest, body_digest) of :func:`golden_records`, as streams/contracts/audit_chain.py
#: computed them at commit b34d556, before the body was derived from the declaration.
GOLDEN = Path(__file__).parent / "data" / "chain_digests_v1.json"


def golden_records() -> list[dict[str, Any]]:
    """Deterministic records covering the body's edge cases (unknown identity, relied_on in every shape, a
    negative eval_us, no evaluated_at, a worker id only in the decision)."""
    recs = list(synthetic.records(40, seed=27, identities=7, start=START, end=END))
    base = recs[0]

    def variant(rid: str) -> dict[str, Any]:
        r = copy.deepcopy(base)
        r["request"]["request_id"] = rid
        return r

    unknown = variant("g-unknown")
    unknown["identity"] = None
    relied = variant("g-relied")
    relied["relied_on"] = {
        "approvals": [{"approval_id": "a1", "approved_by": "alice",
                       "granted_at": datetime(2026, 4, 29, 1, 2, 3, 456789, tzinfo=UTC),
                       "expires_at": datetime(2026, 4, 29, 9, 0, tzinfo=UTC)}],
        "principals": [copy.deepcopy(base["identity"])],
    }  # fmt: skip
    principals_only = variant("g-principals")
    principals_only["relied_on"] = {"approvals": [], "principals": [copy.deepcopy(base["identity"])]}
    empty_relied = variant("g-empty-relied")
    empty_relied["relied_on"] = {"approvals": [], "principals": []}
    negative = variant("g-negative")
    negative["decision"].update(eval_us=-5, evaluated_at=None, worker_id="w-from-decision")
    negative["decision"]["reasons"] = [{"code": "c", "message": "m ✓", "policy": None, "rule": None}]
    negative["decision"]["monitor"] = [{"policy": "p", "rule": "p/r", "effect": "deny", "reason_code": "x"}]
    negative["worker_id"] = ""
    return [*recs, unknown, relied, principals_only, empty_relied, negative]


def test_the_chain_hashes_every_record_exactly_as_before_the_declaration() -> None:
    want = json.loads(GOLDEN.read_text())
    records = golden_records()
    assert [w[0] for w in want] == [r["request"]["request_id"] for r in records]
    for record, (rid, request_hex, body_hex) in zip(records, want, strict=True):
        request_digest, body_digest = audit_chain.record_digests(record)
        assert (request_digest.hex(), body_digest.hex()) == (request_hex, body_hex), rid


def test_the_worker_path_and_the_record_path_hash_alike() -> None:
    for record in golden_records():
        relied = record.get("relied_on") or {}
        approvals = [(a["approval_id"], a["approved_by"], a["granted_at"], a["expires_at"])
                     for a in relied.get("approvals") or ()]  # fmt: skip
        digests = [audit_chain.identity_digest(p).hex() for p in relied.get("principals") or ()]
        identity = record["identity"]
        worker = audit_chain.body_digest(
            audit_chain.identity_digest(identity).hex() if identity is not None else None,
            record["decision"], record["received_at"], record["decided_at"],
            str(record["worker_id"] or record["decision"]["worker_id"]), record["source_topic"],
            record["source_partition"], record["source_offset"], audit_chain.relied_on_part(approvals, digests),
        )  # fmt: skip
        assert worker == audit_chain.record_digests(record)[1]


def test_a_stored_row_rebuilds_the_record_it_came_from() -> None:
    for record in golden_records():
        row = dict(zip(audit_fields.COLUMNS, audit_fields.audit_row(record), strict=True))
        rebuilt = audit_fields.record_of_columns(row)
        assert audit_chain.record_digests(rebuilt) == audit_chain.record_digests(record)
        assert audit_fields.audit_row(rebuilt) == list(row.values())


def test_every_field_names_an_avro_path_of_its_declared_type() -> None:
    schema = ingest._schema()
    for f in audit_fields.FIELDS:
        assert schema.notation(schema.field(f.source)) == f.avro, f.name


def test_every_field_is_documented_and_hashed_fields_say_how() -> None:
    for f in audit_fields.FIELDS:
        assert f.doc.strip(), f.name
        assert (f.chain == audit_fields.BODY) == bool(f.hashed), f.name
        assert f.chain in (None, audit_fields.BODY, audit_fields.REQUEST), f.name
    assert len(set(audit_fields.COLUMNS)) == len(audit_fields.COLUMNS)


def test_the_ingest_table_has_every_leaf_of_the_avro_record() -> None:
    sql = ingest.ingest_table()
    for top in wire.schema("AuditRecord")["fields"]:
        assert f"    {top['name']} " in sql
    for leaf in ("workload_subjects Array(String)", "token Nullable(String)", "prev FixedString(32)",
                 "granted_at DateTime64(3, 'UTC')", "received_at DateTime64(6, 'UTC')"):  # fmt: skip
        assert leaf in sql


def test_the_view_writes_every_declared_column() -> None:
    view = ingest.ingest_view()
    for name in audit_fields.COLUMNS:
        assert f" AS {name}," in view or f" AS {name}\n" in view, name


def test_an_add_column_directive_expands_from_the_declaration(tmp_path: Path) -> None:
    path = tmp_path / "009_example.sql"
    path.write_text("-- add column: principals_json\n")
    (step,) = Migration("009", "example", path).steps({"db": "pdx", "audit_table": "audit_decisions", "ttl_days": "1"})
    assert step.sql == (
        "ALTER TABLE pdx.audit_decisions ADD COLUMN IF NOT EXISTS principals_json String DEFAULT '[]' CODEC(ZSTD(3))"
    )
    assert step.only_if and "name = 'principals_json'" in step.only_if[0]
    path.write_text("-- add column: no_such_field\n")
    with pytest.raises(MigrationError, match="names no audit field"):
        Migration("009", "example", path).steps({"db": "pdx", "audit_table": "t", "ttl_days": "1"})


def test_the_splicer_joins_the_parts_in_the_schemas_order_and_refuses_a_field_it_cannot_build() -> None:
    order = tuple(f["name"] for f in wire.schema("AuditRecord")["fields"])
    assert sorted(order) == sorted(splice.SPLICED_FIELDS)
    with pytest.raises(WireError, match=r"teach streams/contracts/splice\.py"):
        splice.AuditSplicer(b"a", b"b", b"c", b"d", field_order=(*order, "new_field"))


def test_the_docs_list_the_declared_columns() -> None:
    docs = (Path(__file__).resolve().parents[3] / "docs" / "contracts.md").read_text()
    start, end = docs.index(ingest.DOC_BEGIN), docs.index(ingest.DOC_END) + len(ingest.DOC_END)
    assert docs[start:end] == ingest.fields_markdown(), "regenerate with streams.audit.ingest.fields_markdown()"


def test_shared_migration_text_is_included_byte_for_byte() -> None:
    """001 and 005 include the audit columns (sql/include/audit_columns_001.sql): their checksums are still those
    of the released files, so databases that applied them stay up to date."""
    checksums = {m.version: m.checksum for m in discover()}
    assert checksums["001"] == "74edfacc7c45962bd021b2bd93d8b93a12b5ce16639c9c6c0fa8cdd34dddfcf4"
    assert checksums["005"] == "5ebd328feb39579fdaef1d93ac2c05403d6cc450a96553bc5e4791e6a84dec0e"
