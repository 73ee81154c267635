"""streams.contracts.wire: Avro single-object encoding of the pdx contracts."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
from collections.abc import Callable
from typing import Any

import fastavro
import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import parse_schema, to_parsing_canonical_form
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.contracts import wire
from streams.contracts.wire import WireError

UTC = dt.UTC
T_MS = dt.datetime(2026, 3, 1, 9, 30, 15, 123000, tzinfo=dt.UTC)  # millisecond precision (timestamp-millis)
T_US = dt.datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=dt.UTC)  # microsecond precision (timestamp-micros)


# ---- sample objects -----------------------------------------------------------------------------------


def full_credential() -> dict[str, Any]:
    return {
        "id": "cred-1",
        "type": "api_key",
        "created_at": T_MS,
        "rotated_at": T_MS + dt.timedelta(days=1),
        "expires_at": T_MS + dt.timedelta(days=90),
        "status": "active",
    }


def full_identity() -> dict[str, Any]:
    return {
        "id": "svc-billing",
        "kind": "service_account",
        "owner": "team-billing",
        "status": "active",
        "environments": ["staging", "prod"],
        "scopes": ["db:connect", "secrets:read"],
        "tags": ["pci"],
        "approved_repositories": ["acme/billing"],
        "risk_tier": "high",
        "credentials": [full_credential(), {**full_credential(), "id": "cred-2", "status": "revoked"}],
        "attributes": {"cost_center": "42", "région": "eu-west-1 ✓"},
        "updated_at": T_MS,
        "workload_subjects": ["spiffe://acme/ns/billing/sa/svc-billing"],
    }


def minimal_identity() -> dict[str, Any]:
    return {
        "id": "agent-7",
        "kind": "agent",
        "owner": "ml-platform",
        "status": "suspended",
        "risk_tier": "low",
        "updated_at": T_MS,
    }


def full_request() -> dict[str, Any]:
    return {
        "request_id": "4f1c2e0a9b8d4c7e8f6a5b4c3d2e1f00",
        "occurred_at": T_MS,
        "identity_id": "svc-billing",
        "on_behalf_of": ["alice@example.com", "deploy-bot"],
        "action": "db:connect",
        "resource": {
            "id": "db/orders",
            "type": "database",
            "environment": "prod",
            "sensitivity": "restricted",
            "repository": "acme/orders",
            "owner": "team-orders",
            "attributes": {"engine": "postgres"},
        },
        "context": {
            "source_ip": "10.1.2.3",
            "token_issued_at": T_MS - dt.timedelta(minutes=5),
            "requested_ttl_s": 900,
            "approval_id": "appr-9",
            "change_ticket": "CHG-1234",
            "tool": "terraform",
            "attributes": {"session": "s-1"},
        },
        "reply_to": "pdx.decisions",
        "reply_partition": 5,
        "deadline": T_MS + dt.timedelta(seconds=2),
        "token": "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzdmMtYmlsbGluZyJ9.c2ln",
    }


def minimal_request() -> dict[str, Any]:
    return {
        "request_id": "r1",
        "occurred_at": T_MS,
        "identity_id": "svc-billing",
        "action": "api:call",
        "resource": {"id": "api/x", "type": "api"},
        "context": {},
        "reply_to": "pdx.decisions",
        "reply_partition": 0,
    }


def full_decision() -> dict[str, Any]:
    return {
        "request_id": "4f1c2e0a9b8d4c7e8f6a5b4c3d2e1f00",
        "decision": "step_up",
        "reasons": [
            {"code": "prod_write_needs_approval", "message": "config:write in prod", "policy": "prod", "rule": "r7"},
            {"code": "credential_old", "message": "oldest credential is 120 days old", "policy": None, "rule": None},
        ],
        "matched_rules": ["prod/r7", "hygiene/r2"],
        "obligations": {"expires_at": "2026-03-01T10:30:15Z", "require_approval": "platform-oncall,security"},
        "monitor": [{"policy": "new", "rule": "n1", "effect": "deny", "reason_code": "no_ticket"}],
        "bundle_version": "9f" * 32,
        "evaluated_at": T_US,
        "eval_us": 37,
        "worker_id": "worker-1",
    }


def minimal_decision() -> dict[str, Any]:
    return {
        "request_id": "r1",
        "decision": "deny",
        "bundle_version": "",
        "evaluated_at": T_US,
        "eval_us": 0,
        "worker_id": "",
    }


def full_audit() -> dict[str, Any]:
    return {
        "request": full_request(),
        "identity": full_identity(),
        "decision": full_decision(),
        "received_at": T_US,
        "decided_at": T_US + dt.timedelta(microseconds=41),
        "source_topic": "pdx.requests",
        "source_partition": 3,
        "source_offset": 2**40,
        "worker_id": "worker-1",
        "chain": {
            "chain_id": "worker-1/pdx.requests/3/1764672000000-0a1b2c3d",
            "seq": 2**33,
            "prev": bytes(range(32)),
            "request_digest": b"\x01" * 32,
            "body_digest": b"\x02" * 32,
            "hash": b"\xff" * 32,
        },
        "relied_on": {
            "approvals": [{"approval_id": "apr-1", "approved_by": "carol", "granted_at": T_MS,
                           "expires_at": T_MS + dt.timedelta(hours=1)}],
            "principals": [full_identity()],
        },
    }


def full_checkpoint() -> dict[str, Any]:
    return {
        "chain_id": "worker-1/pdx.requests/3/1764672000000-0a1b2c3d",
        "seq": 41,
        "head_hash": b"\xab" * 32,
        "final": True,
        "worker_id": "worker-1",
        "source_topic": "pdx.requests",
        "source_partition": 3,
        "signed_at": T_MS,
        "key_id": "0123456789abcdef",
        "signature": b"\x07" * 64,
    }


def minimal_audit() -> dict[str, Any]:
    return {
        "request": minimal_request(),
        "decision": minimal_decision(),
        "received_at": T_US,
        "decided_at": T_US,
        "source_topic": "pdx.requests",
        "source_partition": 0,
        "source_offset": 0,
        "worker_id": "w",
    }


def full_approval() -> dict[str, Any]:
    return {
        "approval_id": "appr-9",
        "identity_id": "svc-billing",
        "action": "config:*",
        "resource_id": "config/prod/*",
        "approved_by": "bob",
        "granted_at": T_MS,
        "expires_at": T_MS + dt.timedelta(hours=4),
        "revoked": True,
    }


def minimal_approval() -> dict[str, Any]:
    obj = full_approval()
    del obj["revoked"]
    return obj


def full_bundle() -> dict[str, Any]:
    return {"version": "ab" * 32, "created_at": T_MS, "published_by": "ci", "content": '{"policies": []}',
            "serial": 1_700_000_000_000}


# What decoding the minimal objects must give: every omitted field at its schema default.
REQUEST_DEFAULTS: dict[str, Any] = {"on_behalf_of": [], "deadline": None, "token": None}
RESOURCE_DEFAULTS: dict[str, Any] = {
    "environment": None,
    "sensitivity": None,
    "repository": None,
    "owner": None,
    "attributes": {},
}
CONTEXT_DEFAULTS: dict[str, Any] = {
    "source_ip": None,
    "token_issued_at": None,
    "requested_ttl_s": None,
    "approval_id": None,
    "change_ticket": None,
    "tool": None,
    "attributes": {},
}
IDENTITY_DEFAULTS: dict[str, Any] = {
    "environments": [],
    "scopes": [],
    "tags": [],
    "approved_repositories": [],
    "credentials": [],
    "attributes": {},
    "workload_subjects": [],
}
DECISION_DEFAULTS: dict[str, Any] = {"reasons": [], "matched_rules": [], "obligations": {}, "monitor": []}


def expected_minimal_request() -> dict[str, Any]:
    obj = {**minimal_request(), **REQUEST_DEFAULTS}
    obj["resource"] = {**obj["resource"], **RESOURCE_DEFAULTS}
    obj["context"] = dict(CONTEXT_DEFAULTS)
    return obj


def expected_minimal_decision() -> dict[str, Any]:
    return {**minimal_decision(), **DECISION_DEFAULTS}


def full_grant() -> dict[str, Any]:
    return {"grant_id": "dlg-1", "delegator": "alice", "delegate": "agent-config-bot", "action": "config:*",
            "resource_id": "*", "granted_by": "ops", "granted_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            "expires_at": dt.datetime(2026, 1, 2, tzinfo=dt.UTC)}


def full_approval_request() -> dict[str, Any]:
    return {"approval_request_id": "apq-1", "request_id": "r-1", "identity_id": "agent-config-bot",
            "action": "config:write", "resource_type": "config", "resource_id": "cfg/prod/app",
            "on_behalf_of": ["alice"], "reasons": ["needs_approval"], "rules": ["config/write"],
            "opened_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
            "expires_at": dt.datetime(2026, 1, 1, 1, tzinfo=dt.UTC),
            "status": "granted", "resolved_by": "bob", "resolved_at": dt.datetime(2026, 1, 1, 0, 5, tzinfo=dt.UTC),
            "resolution": None, "approval_expires_at": dt.datetime(2026, 1, 1, 0, 35, tzinfo=dt.UTC)}


FULL: dict[str, Callable[[], dict[str, Any]]] = {
    "Identity": full_identity,
    "AccessRequest": full_request,
    "Decision": full_decision,
    "Approval": full_approval,
    "PolicyBundle": full_bundle,
    "AuditRecord": full_audit,
    "AuditCheckpoint": full_checkpoint,
    "DelegationGrant": full_grant,
    "ApprovalRequest": full_approval_request,
}
MINIMAL: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[], dict[str, Any]]]] = {
    "Identity": (minimal_identity, lambda: {**minimal_identity(), **IDENTITY_DEFAULTS}),
    "AccessRequest": (minimal_request, expected_minimal_request),
    "Decision": (minimal_decision, expected_minimal_decision),
    "Approval": (minimal_approval, lambda: {**minimal_approval(), "revoked": False}),
    "PolicyBundle": (full_bundle, full_bundle),
    "AuditRecord": (
        minimal_audit,
        lambda: {
            **minimal_audit(),
            "request": expected_minimal_request(),
            "identity": None,
            "decision": expected_minimal_decision(),
            "chain": None,
            "relied_on": None,
        },
    ),
    "AuditCheckpoint": (
        lambda: {k: v for k, v in full_checkpoint().items() if k != "final"},
        lambda: {**full_checkpoint(), "final": False},
    ),
}


# ---- round trips --------------------------------------------------------------------------------------


def test_known_schemas_are_the_nine_contracts() -> None:
    assert set(wire.known_schemas()) == set(FULL)


@pytest.mark.parametrize("name", sorted(FULL))
def test_full_object_round_trips(name: str) -> None:
    obj = FULL[name]()
    data = wire.encode(name, obj)
    assert wire.decode(data) == (name, obj)
    assert wire.decode_as(name, data) == obj


@pytest.mark.parametrize("name", sorted(MINIMAL))
def test_minimal_object_round_trips_with_defaults(name: str) -> None:
    make, expected = MINIMAL[name]
    assert wire.decode_as(name, wire.encode(name, make())) == expected()


def test_encode_does_not_mutate_input() -> None:
    obj = full_audit()
    before = copy.deepcopy(obj)
    wire.encode("AuditRecord", obj)
    assert obj == before


def test_datetimes_come_back_aware_utc() -> None:
    cet = dt.timezone(dt.timedelta(hours=1))
    obj = full_request()
    obj["occurred_at"] = T_MS.astimezone(cet)
    got = wire.decode_as("AccessRequest", wire.encode("AccessRequest", obj))
    assert got["occurred_at"] == T_MS
    assert got["occurred_at"].tzinfo == UTC
    assert got["context"]["token_issued_at"].utcoffset() == dt.timedelta(0)


def test_timestamp_millis_truncates_and_micros_keeps_precision() -> None:
    request = full_request()
    request["occurred_at"] = T_US
    assert wire.decode_as("AccessRequest", wire.encode("AccessRequest", request))["occurred_at"] == T_MS
    decision = full_decision()
    assert wire.decode_as("Decision", wire.encode("Decision", decision))["evaluated_at"] == T_US


def test_decision_outcomes_all_encode() -> None:
    for outcome in ("allow", "deny", "step_up"):
        obj = {**minimal_decision(), "decision": outcome}
        assert wire.decode_as("Decision", wire.encode("Decision", obj))["decision"] == outcome


def test_audit_identity_may_be_null() -> None:
    obj = {**full_audit(), "identity": None}
    assert wire.decode_as("AuditRecord", wire.encode("AuditRecord", obj))["identity"] is None


# ---- header and fingerprints --------------------------------------------------------------------------


def test_crc64_avro_matches_spec_test_vectors() -> None:
    assert wire.crc64_avro(b"") == 0xC15D213AA4D7A795  # the spec's EMPTY value
    # Java SchemaNormalization.parsingFingerprint64 of "null" (avro share/test/data/schema-tests.txt)
    assert wire.crc64_avro(b'"null"') == 7195948357588979594
    assert wire.crc64_avro(b'"int"') != wire.crc64_avro(b'"long"')


@pytest.mark.parametrize("name", sorted(FULL))
def test_header_is_marker_plus_little_endian_fingerprint_of_canonical_form(name: str) -> None:
    data = wire.encode(name, FULL[name]())
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == wire.fingerprint(name)
    canonical = wire.canonical_form(name).encode("utf-8")
    assert data[2:10] == wire.crc64_avro(canonical).to_bytes(8, "little")
    # the independent implementation in fastavro agrees (it prints the little-endian bytes as hex)
    assert fastavro_fingerprint(wire.canonical_form(name), "CRC-64-AVRO") == data[2:10].hex()
    assert wire.fingerprint_hex(name) == f"0x{int.from_bytes(data[2:10], 'little'):016x}"
    # the body after the header is plain Avro binary of the (self-contained) schema
    body = fastavro.schemaless_reader(io.BytesIO(data[10:]), parse_schema(wire.schema(name), {}), None)
    assert body == FULL[name]()


def test_fingerprints_are_distinct() -> None:
    assert len({wire.fingerprint(name) for name in wire.known_schemas()}) == len(wire.known_schemas())


def test_audit_record_canonical_form_is_self_contained() -> None:
    canonical = wire.canonical_form("AuditRecord")
    for name in ("AccessRequest", "Identity", "Decision", "Resource", "Credential", "DecisionOutcome"):
        assert f'"name":"dev.pdx.{name}"' in canonical
    reparsed = parse_schema(json.loads(canonical), {})  # no other schema needed
    assert to_parsing_canonical_form(reparsed) == canonical


def test_canonical_form_strips_docs_defaults_and_logical_types() -> None:
    canonical = wire.canonical_form("AccessRequest")
    assert '"doc"' not in canonical and '"default"' not in canonical and "logicalType" not in canonical
    assert canonical.startswith('{"name":"dev.pdx.AccessRequest","type":"record","fields":[')


# ---- decode errors ------------------------------------------------------------------------------------


def test_unknown_fingerprint_is_named() -> None:
    data = b"\xc3\x01" + (0x1234ABCD5678EF90).to_bytes(8, "little") + b"\x00"
    with pytest.raises(WireError, match=r"unknown schema fingerprint 0x1234abcd5678ef90 \(known: .*AccessRequest"):
        wire.decode(data)


def test_non_single_object_bytes_are_rejected() -> None:
    with pytest.raises(WireError, match=r"not Avro single-object encoding \(first bytes 7b 22"):
        wire.decode(b'{"request_id": "x"}')
    with pytest.raises(WireError, match="empty message"):
        wire.decode(b"")


def test_truncated_header() -> None:
    with pytest.raises(WireError, match="truncated single-object header"):
        wire.decode(b"\xc3\x01" + wire.fingerprint("Decision")[:3])


@pytest.mark.parametrize("name", sorted(FULL))
def test_every_truncation_is_rejected(name: str) -> None:
    data = wire.encode(name, FULL[name]())
    for cut in range(len(data)):
        with pytest.raises(WireError):
            wire.decode(data[:cut])


def test_truncated_body_names_the_schema() -> None:
    data = wire.encode("AccessRequest", full_request())
    with pytest.raises(WireError, match="corrupt AccessRequest body"):
        wire.decode(data[:-3])


def test_trailing_garbage_is_rejected() -> None:
    data = wire.encode("Decision", full_decision())
    with pytest.raises(WireError, match=r"corrupt Decision body: 2 trailing bytes"):
        wire.decode(data + b"\x00\x00")


def test_corrupt_body_is_rejected() -> None:
    # request_id "r" then enum index 9 (zig-zag 18): DecisionOutcome only has 3 symbols
    data = wire.fingerprint("Decision").join([b"\xc3\x01", b"\x02r\x12"]) + b"\x00" * 20
    with pytest.raises(WireError, match="corrupt Decision body"):
        wire.decode(data)
    # a string whose UTF-8 is invalid
    data = wire.fingerprint("PolicyBundle").join([b"\xc3\x01", b"\x04\xff\xfe"])
    with pytest.raises(WireError, match="corrupt PolicyBundle body"):
        wire.decode(data)


def test_decode_as_rejects_another_schema() -> None:
    data = wire.encode("Decision", full_decision())
    with pytest.raises(WireError, match="expected a AccessRequest message, got Decision"):
        wire.decode_as("AccessRequest", data)


def test_unknown_schema_name() -> None:
    with pytest.raises(WireError, match="unknown schema name 'Nope'"):
        wire.encode("Nope", {})
    with pytest.raises(WireError, match="unknown schema name"):
        wire.fingerprint("Nope")


def test_wire_error_is_a_value_error() -> None:
    assert issubclass(WireError, ValueError)


# ---- encode validation --------------------------------------------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            obj = obj[int(key)] if key.isdigit() else obj[key]  # type: ignore[index]
        obj[last] = value

    return mutate


def _del(path: str) -> Callable[[dict[str, Any]], None]:
    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for key in parents:
            obj = obj[int(key)] if key.isdigit() else obj[key]  # type: ignore[index]
        del obj[last]

    return mutate


BAD_OBJECTS = [
    ("AccessRequest", _del("request_id"), r"request_id is missing \(required string\)"),
    ("AccessRequest", _del("resource.id"), r"resource\.id is missing"),
    ("AccessRequest", _del("context"), r"context is missing \(required RequestContext\)"),
    ("AccessRequest", _set("request_id", None), r"request_id must be string, got NoneType"),
    ("AccessRequest", _set("identity_id", 42), r"identity_id must be string, got int 42"),
    ("AccessRequest", _set("reply_partition", 1.5), r"reply_partition must be int, got float 1\.5"),
    ("AccessRequest", _set("reply_partition", True), r"reply_partition must be int, got bool"),
    ("AccessRequest", _set("reply_partition", 2**31), r"reply_partition is out of range for Avro int"),
    ("AccessRequest", _set("reply_partition", "3"), r"reply_partition must be int, got str"),
    ("AccessRequest", _set("occurred_at", dt.datetime(2026, 1, 1)), r"occurred_at must be a timezone-aware .*naive"),
    ("AccessRequest", _set("occurred_at", 1700000000000), r"occurred_at must be a timezone-aware datetime"),
    ("AccessRequest", _set("deadline", "soon"), r"deadline must be a timezone-aware datetime"),
    ("AccessRequest", _set("on_behalf_of", "alice"), r"on_behalf_of must be a list \(array<string>\), got str"),
    ("AccessRequest", _set("on_behalf_of", [1]), r"on_behalf_of\[0\] must be string"),
    ("AccessRequest", _set("resource.environment", 5), r"resource\.environment must be string, got int"),
    ("AccessRequest", _set("resource.attributes", ["a"]), r"resource\.attributes must be a mapping"),
    ("AccessRequest", _set("context.attributes", {"k": 1}), r"context\.attributes\['k'\] must be string"),
    ("AccessRequest", _set("context.requested_ttl_s", 1.0), r"context\.requested_ttl_s must be long, got float"),
    ("AccessRequest", _set("resource", "db/orders"), r"resource must be a mapping \(Resource record\)"),
    ("Decision", _set("decision", "maybe"), r"decision must be one of allow, deny, step_up"),
    ("Decision", _set("decision", None), r"decision must be one of"),
    ("Decision", _set("eval_us", 12.7), r"eval_us must be long, got float 12\.7"),
    ("Decision", _del("reasons.0.code"), r"reasons\[0\]\.code is missing \(required string\)"),
    ("Decision", _set("monitor.0.effect", None), r"monitor\[0\]\.effect must be string"),
    ("Decision", _set("evaluated_at", dt.datetime(2026, 1, 1)), r"evaluated_at must be a timezone-aware"),
    ("Decision", _del("worker_id"), r"worker_id is missing"),
    ("Approval", _set("revoked", None), r"revoked must be boolean, got NoneType"),
    ("Approval", _set("revoked", "no"), r"revoked must be boolean, got str"),
    ("Identity", _set("credentials.0.created_at", 5), r"credentials\[0\]\.created_at must be a timezone-aware"),
    ("Identity", _set("tags", {"a": "b"}), r"tags must be a list"),
    ("PolicyBundle", _set("content", "\ud800"), r"content is not valid UTF-8"),
    ("AuditRecord", _set("identity.credentials.1.expires_at", dt.datetime(2030, 1, 1)), r"identity\.credentials\[1\]"),
    ("AuditRecord", _del("decision.request_id"), r"decision\.request_id is missing"),
    ("AuditRecord", _set("source_offset", 2**63), r"source_offset is out of range for Avro long"),
]


@pytest.mark.parametrize(("name", "mutate", "message"), BAD_OBJECTS)
def test_bad_objects_raise_wire_error_naming_the_field(
    name: str, mutate: Callable[[dict[str, Any]], None], message: str
) -> None:
    obj = FULL[name]()
    mutate(obj)
    with pytest.raises(WireError, match=rf"cannot encode {name}: {message}"):
        wire.encode(name, obj)


def test_non_mapping_object_is_rejected() -> None:
    with pytest.raises(WireError, match="must be a mapping"):
        wire.encode("Decision", ["not", "a", "dict"])  # type: ignore[arg-type]


def test_int_subclasses_other_than_bool_are_accepted() -> None:
    import enum

    class Partition(enum.IntEnum):
        P3 = 3

    obj = {**full_request(), "reply_partition": Partition.P3}
    assert wire.decode_as("AccessRequest", wire.encode("AccessRequest", obj))["reply_partition"] == 3


def test_extra_keys_are_ignored() -> None:
    obj = {**full_decision(), "not_in_schema": object()}
    assert wire.decode_as("Decision", wire.encode("Decision", obj)) == full_decision()


# ---- schema evolution ---------------------------------------------------------------------------------


def _single_object(writer: dict[str, Any], obj: dict[str, Any]) -> bytes:
    parsed = parse_schema(writer, {})
    fp = wire.crc64_avro(to_parsing_canonical_form(parsed).encode("utf-8")).to_bytes(8, "little")
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, obj)
    return b"\xc3\x01" + fp + out.getvalue()


def test_newer_writer_schema_is_detected_then_resolved_once_registered() -> None:
    newer = copy.deepcopy(wire.schema("AccessRequest"))
    newer["fields"].append({"name": "priority", "type": ["null", "int"], "default": None})
    data = _single_object(newer, {**full_request(), "priority": 7})
    with pytest.raises(WireError, match="unknown schema fingerprint"):
        wire.decode(data)
    fp = wire.register_writer_schema("AccessRequest", json.dumps(newer))
    assert fp == data[2:10]
    assert wire.decode(data) == ("AccessRequest", full_request())  # the reader's (current) view


def test_new_decision_outcome_resolves_to_deny() -> None:
    newer = copy.deepcopy(wire.schema("Decision"))
    newer["fields"][1]["type"]["symbols"] = ["allow", "deny", "step_up", "escalate"]
    data = _single_object(newer, {**full_decision(), "decision": "escalate"})
    wire.register_writer_schema("Decision", newer)
    assert wire.decode_as("Decision", data)["decision"] == "deny"  # fail closed


def test_registering_the_current_schema_changes_nothing() -> None:
    assert wire.register_writer_schema("PolicyBundle", wire.schema("PolicyBundle")) == wire.fingerprint("PolicyBundle")
    assert wire.decode_as("PolicyBundle", wire.encode("PolicyBundle", full_bundle())) == full_bundle()


# ---- property: AccessRequest round-trips --------------------------------------------------------------

texts = st.text(max_size=20)
optional_texts = st.none() | texts
string_maps = st.dictionaries(texts, texts, max_size=3)
millis = st.datetimes(
    min_value=dt.datetime(1970, 1, 1),
    max_value=dt.datetime(2200, 1, 1),
    timezones=st.just(UTC),
).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))

requests = st.fixed_dictionaries(
    {
        "request_id": texts,
        "occurred_at": millis,
        "identity_id": texts,
        "on_behalf_of": st.lists(texts, max_size=3),
        "action": texts,
        "resource": st.fixed_dictionaries(
            {
                "id": texts,
                "type": texts,
                "environment": optional_texts,
                "sensitivity": optional_texts,
                "repository": optional_texts,
                "owner": optional_texts,
                "attributes": string_maps,
            }
        ),
        "context": st.fixed_dictionaries(
            {
                "source_ip": optional_texts,
                "token_issued_at": st.none() | millis,
                "requested_ttl_s": st.none() | st.integers(-(2**63), 2**63 - 1),
                "approval_id": optional_texts,
                "change_ticket": optional_texts,
                "tool": optional_texts,
                "attributes": string_maps,
            }
        ),
        "reply_to": texts,
        "reply_partition": st.integers(-(2**31), 2**31 - 1),
        "deadline": st.none() | millis,
        "token": st.none() | texts,
    }
)


@settings(max_examples=200, deadline=None)
@given(requests)
def test_access_request_property_round_trip(obj: dict[str, Any]) -> None:
    data = wire.encode("AccessRequest", obj)
    assert data[:10] == b"\xc3\x01" + wire.fingerprint("AccessRequest")
    assert wire.decode(data) == ("AccessRequest", obj)


def test_the_head_of_an_oversized_request_skips_its_bulk() -> None:
    """Issue 24: an oversized request is read only for who asked for what and where the deny goes."""
    req = full_request()
    req["resource"]["attributes"] = {f"k{i}": "v" for i in range(1000)}
    req["context"]["attributes"] = {"a": "b"}
    raw = wire.encode("AccessRequest", req)
    head = wire.decode_request_head(raw)
    assert head["request_id"] == req["request_id"] and head["reply_to"] == req["reply_to"]
    assert head["resource"]["id"] == req["resource"]["id"] and head["resource"]["attributes"] == {}
    assert head["context"]["attributes"] == {} and head["on_behalf_of"] == [] and head["token"] is None
    with pytest.raises(wire.WireError):  # cut inside the fields it reads
        wire.decode_request_head(raw[:HEADER_CUT])
    with pytest.raises(wire.WireError):
        wire.decode_request_head(wire.encode("Approval", minimal_approval()))


HEADER_CUT = 14  # the marker, the fingerprint and a few bytes of request_id
