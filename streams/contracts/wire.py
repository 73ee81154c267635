"""Avro single-object encoding of the pdx contracts (schemas/*.avsc, namespace ``dev.pdx``).

The schemas are package data (``streams.contracts.schemas``, which pyproject.toml maps to the top-level
``schemas/`` directory) read with importlib.resources, so an installed wheel and a checkout load the same
files. This module holds the loading, the codecs and the public encode/decode API; the encode-side type
checks are in :mod:`streams.contracts.checks` and the AuditRecord splice in :mod:`streams.contracts.splice`
(:data:`splice_audit_record` here is bound to the loaded schemas' headers).

Every message pdx puts on Kafka is one Avro *single-object encoded* datum::

    C3 01 | 8-byte little-endian CRC-64-AVRO fingerprint of the schema's Parsing Canonical Form | Avro binary body

Why single-object encoding rather than bare Avro binary or a schema registry:

* **No registry needed.** The 10-byte header names the exact writer schema, so any consumer holding the
  ``.avsc`` files (in any language: Java ``BinaryMessageDecoder``, Rust ``apache-avro``, Go, ...) can decode
  a message; nothing extra has to run next to Kafka.
* **Schema evolution is detectable.** A producer on a different schema version yields a different
  fingerprint; the decoder refuses it with a :class:`WireError` naming the fingerprint instead of silently
  mis-reading bytes. Known older/newer writer versions can be registered with
  :func:`register_writer_schema` and are resolved to the current reader schema by Avro's rules.
* **Self-identifying bytes.** A message on the wrong topic (a Decision where an AccessRequest was expected,
  JSON, garbage) is recognised from its first bytes, which makes dead-lettering precise.

Hot path: schemas are parsed once at import; :func:`encode` runs a cheap pre-compiled type check (the things
fastavro would otherwise coerce silently: floats in int/long fields, strings where arrays are expected,
naive datetimes, out-of-range ints) and then ``fastavro.schemaless_writer``; :func:`decode` reads the header,
looks the fingerprint up in a dict and runs ``fastavro.schemaless_reader``. Timestamps are timezone-aware
``datetime`` in and aware UTC ``datetime`` out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from io import BytesIO
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import parse_schema, to_parsing_canonical_form

from streams.contracts import SCHEMAS_PACKAGE, WireError, schema_dir
from streams.contracts.checks import (
    _NAMED,
    _PRIMITIVES,
    _Check,
    _CheckFailed,
    _collect_named,
    _compile,
    _fullname,
    _generate_fast_check,
)
from streams.contracts.splice import AuditSplicer

__all__ = [
    "HEADER_LEN",
    "MAGIC",
    "SCHEMA_FILES",
    "WireError",
    "canonical_form",
    "crc64_avro",
    "decode",
    "decode_as",
    "encode",
    "fingerprint",
    "fingerprint_hex",
    "identity_body",
    "known_schemas",
    "register_writer_schema",
    "schema",
    "splice_audit_record",
]

#: Single-object encoding marker (Avro spec, "Single-object encoding").
MAGIC = b"\xc3\x01"
#: Marker + 8-byte fingerprint.
HEADER_LEN = 10
NAMESPACE = "dev.pdx"

#: Top-level schema name -> file in schemas/ (the streams.contracts.schemas package), in load order: a file
#: may only reference named types defined by files before it (audit_record.avsc references AccessRequest,
#: Identity and Decision).
SCHEMA_FILES: dict[str, str] = {
    "Identity": "identity.avsc",
    "AccessRequest": "access_request.avsc",
    "Decision": "decision.avsc",
    "Approval": "approval.avsc",
    "PolicyBundle": "policy_bundle.avsc",
    "AuditRecord": "audit_record.avsc",
    "AuditCheckpoint": "audit_checkpoint.avsc",
    "DelegationGrant": "delegation_grant.avsc",
    "ApprovalRequest": "approval_request.avsc",
}

#: Fields added to a schema since it was first published, oldest first (always at the end, with a default:
#: schemas/README.md, "Evolution rules"). The versions without them are registered as writer schemas at load,
#: so messages written before an addition (e.g. AuditRecords from before the hash chain) still decode.
ADDED_FIELDS: dict[str, tuple[str, ...]] = {
    "AuditRecord": ("chain", "relied_on"),
    "AccessRequest": ("token",),
    "Identity": ("workload_subjects",),
}
#: Records nested in another schema whose added fields make earlier versions of that schema too: an AuditRecord
#: written before ``token`` / ``workload_subjects`` holds the earlier AccessRequest / Identity.
_NESTED: dict[str, dict[str, str]] = {"AuditRecord": {"request": "AccessRequest", "identity": "Identity"}}


# ---- CRC-64-AVRO (Rabin) fingerprint ----------------------------------------------------------------


def crc64_avro(data: bytes) -> int:
    """The 64-bit Rabin fingerprint "CRC-64-AVRO" of the Avro specification (empty input =
    0xc15d213aa4d7a795), computed by fastavro, as an unsigned number. ``data`` is UTF-8 text (a Parsing
    Canonical Form). Single-object encoding stores it little-endian (see :func:`_fingerprint_bytes`)."""
    return int.from_bytes(_fingerprint_bytes(data.decode("utf-8")), "little")


def _fingerprint_bytes(canonical: str) -> bytes:
    """The 8 header bytes: fastavro returns CRC-64-AVRO as the hex of its little-endian bytes."""
    return bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))


# ---- schema loading ---------------------------------------------------------------------------------


def _inline(node: Any, namespace: str, known: Mapping[str, dict[str, Any]], defined: set[str]) -> Any:
    """Self-contained copy of ``node``: a reference to a named type defined in another file is replaced by
    that type's full definition at its first use (later uses stay references), as the Parsing Canonical
    Form requires."""
    if isinstance(node, str):
        if node in _PRIMITIVES:
            return node
        full = _fullname(node, namespace)
        if full in defined:
            return full
        if full not in known:
            raise WireError(f"schema references unknown type {full!r}; check the load order in schemas/README.md")
        definition = dict(known[full])
        definition.pop("namespace", None)
        definition["name"] = full
        return _inline(definition, namespace, known, defined)
    if isinstance(node, list):
        return [_inline(branch, namespace, known, defined) for branch in node]
    if not isinstance(node, dict):
        return node
    out = dict(node)
    kind = node.get("type")
    if kind in _NAMED:
        full = _fullname(node["name"], node.get("namespace", namespace))
        defined.add(full)
        namespace = full.rpartition(".")[0]
        out.pop("namespace", None)
        out["name"] = full
        if kind == "record":
            out["fields"] = [
                {**field, "type": _inline(field["type"], namespace, known, defined)} for field in node["fields"]
            ]
    elif kind == "array":
        out["items"] = _inline(node["items"], namespace, known, defined)
    elif kind == "map":
        out["values"] = _inline(node["values"], namespace, known, defined)
    elif isinstance(kind, (dict, list, str)) and kind not in _PRIMITIVES:
        out["type"] = _inline(kind, namespace, known, defined)
    return out


# ---- codecs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Codec:
    name: str
    parsed: Any  # fastavro parsed schema (self-contained)
    schema: dict[str, Any]  # self-contained JSON schema (named types inlined at first use)
    canonical: str
    fingerprint: bytes  # 8 bytes, little-endian
    header: bytes
    fast_check: Callable[[Any], bool]
    explain: _Check


_CODECS: dict[str, _Codec] = {}
#: fingerprint bytes -> (schema name, writer parsed schema, reader parsed schema or None when identical)
_BY_FINGERPRINT: dict[bytes, tuple[str, Any, Any]] = {}


def _make_codec(name: str, self_contained: dict[str, Any]) -> _Codec:
    parsed = parse_schema(self_contained, {})
    canonical = to_parsing_canonical_form(parsed)
    fp = _fingerprint_bytes(canonical)
    fast = _generate_fast_check(self_contained)
    explain = _compile(self_contained, {})
    return _Codec(name, parsed, self_contained, canonical, fp, MAGIC + fp, fast, explain)


def _schema_dir() -> Traversable:
    try:
        return schema_dir()
    except ModuleNotFoundError as exc:
        raise WireError(
            f"cannot load the Avro schemas: no package {SCHEMAS_PACKAGE} ({exc}); install pdx "
            "(`pip install .`, or `pip install -e .` in a checkout) rather than running it from a bare source tree"
        ) from exc


def _load(schemas_dir: Traversable) -> None:
    raw: dict[str, dict[str, Any]] = {}
    known: dict[str, dict[str, Any]] = {}
    for name, filename in SCHEMA_FILES.items():
        path = schemas_dir / filename
        try:
            raw[name] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise WireError(f"cannot load Avro schema {path}: {exc}") from exc
        _collect_named(raw[name], "", known)
    for name, node in raw.items():
        full = _fullname(node["name"], node.get("namespace", ""))
        if full != f"{NAMESPACE}.{name}":
            raise WireError(f"{SCHEMA_FILES[name]} defines {full}, expected {NAMESPACE}.{name}")
        codec = _make_codec(name, _inline(node, "", known, set()))
        _CODECS[name] = codec
        _BY_FINGERPRINT[codec.fingerprint] = (name, codec.parsed, None)


_load(_schema_dir())


def _versions(name: str) -> list[dict[str, Any]]:
    """Every version of ``name``'s self-contained schema, current first: each prefix of its added fields dropped,
    combined with every version of the records nested in it (see :data:`_NESTED`)."""
    current = _CODECS[name].schema
    added = ADDED_FIELDS.get(name, ())
    tops = [current] + [
        {**current, "fields": [f for f in current["fields"] if f["name"] not in set(added[k:])]}
        for k in range(len(added))
    ]
    out: list[dict[str, Any]] = []
    for top in tops:
        variants = [top]
        for field_name, nested in _NESTED.get(name, {}).items():
            expanded = []
            for variant in variants:
                for inner in _versions(nested):
                    fields = []
                    for f in variant["fields"]:
                        if f["name"] == field_name:
                            ftype = f["type"]
                            if isinstance(ftype, list):  # ["null", record]
                                ftype = [inner if isinstance(t, dict) else t for t in ftype]
                            else:
                                ftype = inner
                            f = {**f, "type": ftype}
                        fields.append(f)
                    expanded.append({**variant, "fields": fields})
            variants = expanded
        out.extend(variants)
    return out


def _register_earlier_versions() -> None:
    for name in ADDED_FIELDS:
        for earlier in _versions(name)[1:]:
            register_writer_schema(name, earlier)

#: The worker's hot path: an AuditRecord from the already-encoded request, identity and decision
#: (see streams.contracts.splice; byte-identical to ``encode("AuditRecord", ...)``).
_SPLICER = AuditSplicer(
    request_header=_CODECS["AccessRequest"].header,
    identity_header=_CODECS["Identity"].header,
    decision_header=_CODECS["Decision"].header,
    audit_header=_CODECS["AuditRecord"].header,
    field_order=tuple(f["name"] for f in _CODECS["AuditRecord"].schema["fields"]),
)
splice_audit_record = _SPLICER.splice_audit_record
#: The Avro body of an Identity message in the current schema, None for another version (relied_on principals).
identity_body = _SPLICER.identity_body


def _codec(schema_name: str) -> _Codec:
    try:
        return _CODECS[schema_name]
    except KeyError:
        raise WireError(f"unknown schema name {schema_name!r} (known: {', '.join(_CODECS)})") from None


# ---- public API -------------------------------------------------------------------------------------


def known_schemas() -> tuple[str, ...]:
    """Names of the schemas this module encodes/decodes, in load order."""
    return tuple(_CODECS)


def fingerprint(schema_name: str) -> bytes:
    """The 8-byte CRC-64-AVRO fingerprint (little-endian, as written in the header) of the schema's
    Parsing Canonical Form."""
    return _codec(schema_name).fingerprint


def fingerprint_hex(schema_name: str) -> str:
    """The fingerprint as the unsigned 64-bit number in hex (``0x...``), the form other tools print."""
    return f"0x{int.from_bytes(_codec(schema_name).fingerprint, 'little'):016x}"


def canonical_form(schema_name: str) -> str:
    """The Parsing Canonical Form the fingerprint is computed from (self-contained)."""
    return _codec(schema_name).canonical


def schema(schema_name: str) -> dict[str, Any]:
    """The self-contained JSON schema (shared named types inlined at first use). Do not mutate."""
    return _codec(schema_name).schema


def encode(schema_name: str, obj: Mapping[str, Any], *, trusted: bool = False) -> bytes:
    """Single-object encode ``obj`` (a dict with the contract's field names) as ``schema_name``.

    Raises :class:`WireError` naming the field when a required field is missing or a value has the wrong
    type (including naive datetimes and floats for int/long fields). ``trusted=True`` skips the pre-check of
    values fastavro would silently coerce: only for dicts pdx built itself from typed objects (the worker's
    Decisions); fastavro still rejects missing fields and wrong strings."""
    codec = _codec(schema_name)
    if not trusted and not codec.fast_check(obj):
        try:
            codec.explain(obj, "")
        except _CheckFailed as exc:
            raise WireError(f"cannot encode {schema_name}: {exc}") from None
        # the explaining check accepts it (e.g. an IntEnum for an int field): let fastavro write it
    out = BytesIO()
    out.write(codec.header)
    try:
        schemaless_writer(out, codec.parsed, obj)
    except Exception as exc:  # fastavro raises TypeError/ValueError/KeyError/...; explain with a field path
        try:
            codec.explain(obj, "")
        except _CheckFailed as detail:
            raise WireError(f"cannot encode {schema_name}: {detail}") from exc
        raise WireError(f"cannot encode {schema_name}: {type(exc).__name__}: {exc}") from exc
    return out.getvalue()


def _unknown_fingerprint(fp: bytes) -> WireError:
    number = int.from_bytes(fp, "little")
    return WireError(
        f"unknown schema fingerprint 0x{number:016x} (known: {', '.join(_CODECS)}): the producer uses a schema "
        "this worker does not know (another version of a pdx schema? register it with "
        "streams.contracts.wire.register_writer_schema)"
    )


def decode(data: bytes) -> tuple[str, dict[str, Any]]:
    """Decode one single-object encoded message into ``(schema_name, dict)``.

    Raises :class:`WireError` for a missing marker, an unknown fingerprint, a truncated or corrupt body, or
    bytes left over after the datum."""
    if not data:
        raise WireError("empty message: nothing to decode (a Kafka tombstone must be handled before decode)")
    if data[:2] != MAGIC:
        head = bytes(data[:8]).hex(" ") or "<empty>"
        raise WireError(f"not Avro single-object encoding (first bytes {head}); expected c3 01 + fingerprint")
    if len(data) < HEADER_LEN:
        raise WireError(f"truncated single-object header: {len(data)} bytes, need {HEADER_LEN}")
    entry = _BY_FINGERPRINT.get(bytes(data[2:HEADER_LEN]))
    if entry is None:
        raise _unknown_fingerprint(bytes(data[2:HEADER_LEN]))
    name, writer, reader = entry
    return name, _read_body(name, data, writer, reader)


def _read_body(name: str, data: bytes, writer: Any, reader: Any) -> dict[str, Any]:
    """The record after the single-object header, read with ``reader`` (None: the writer schema); WireError for a
    truncated or corrupt body, or one that does not end where the message does."""
    body = BytesIO(data)
    body.seek(HEADER_LEN)
    try:
        obj = schemaless_reader(body, writer, reader)
    except Exception as exc:  # EOFError, StopIteration, UnicodeDecodeError, IndexError, ...
        detail = str(exc) or "unexpected end of data"
        raise WireError(f"corrupt {name} body: {type(exc).__name__}: {detail}") from exc
    end = body.tell()
    if end < len(data):
        raise WireError(f"corrupt {name} body: {len(data) - end} trailing bytes after the datum")
    if end > len(data):  # a skipped value (a projecting reader) claimed more bytes than there are
        raise WireError(f"corrupt {name} body: the datum ends at byte {end} of {len(data)}")
    if not isinstance(obj, dict):
        raise WireError(f"corrupt {name} body: decoded to {type(obj).__name__}, not a record")
    return obj


def decode_as(schema_name: str, data: bytes) -> dict[str, Any]:
    """Decode a message that must be ``schema_name``; a message of another (known) schema is a WireError."""
    _codec(schema_name)
    name, obj = decode(data)
    if name != schema_name:
        raise WireError(f"expected a {schema_name} message, got {name} (fingerprint {fingerprint_hex(name)})")
    return obj


def register_writer_schema(schema_name: str, writer_schema: Mapping[str, Any] | str) -> bytes:
    """Accept messages written with another version of ``schema_name`` (e.g. one with an added optional
    field): they are resolved to the current schema by Avro's schema-resolution rules. ``writer_schema`` must
    be self-contained (JSON text or dict). Returns its fingerprint. A writer schema that cannot be resolved
    to the current one makes :func:`decode` raise WireError for its messages."""
    codec = _codec(schema_name)
    node = json.loads(writer_schema) if isinstance(writer_schema, str) else dict(writer_schema)
    try:
        parsed = parse_schema(node, {})
        canonical = to_parsing_canonical_form(parsed)
    except Exception as exc:
        raise WireError(f"invalid writer schema for {schema_name}: {exc}") from exc
    fp = _fingerprint_bytes(canonical)
    if fp == codec.fingerprint:
        return fp
    _BY_FINGERPRINT[fp] = (schema_name, parsed, codec.parsed)
    return fp


_register_earlier_versions()


def _fingerprint_table(names: Iterable[str] | None = None) -> str:
    rows = ["| Schema | CRC-64-AVRO (uint64 hex) | header bytes |", "|---|---|---|"]
    for name in names or _CODECS:
        rows.append(f"| {name} | `{fingerprint_hex(name)}` | `{_codec(name).header.hex(' ')}` |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m streams.contracts.wire: the fingerprints table for schemas/README.md
    print(_fingerprint_table())


# ---- the head of an oversized request -----------------------------------------------------------------------

#: What an oversized AccessRequest is read for: who asked for what, and where the deny goes. The rest (the
#: attribute maps, on_behalf_of, the token) is skipped by the decoder without building Python objects.
_HEAD_DROPPED = {"AccessRequest": ("on_behalf_of", "token"), "Resource": ("attributes",),
                 "RequestContext": ("attributes",)}
_HEADS: dict[bytes, Any] = {}


def _head_reader(schema: dict[str, Any]) -> dict[str, Any]:
    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("type") == "record":
                dropped = _HEAD_DROPPED.get(str(node.get("name", "")).rpartition(".")[2], ())
                return {**node, "fields": [{**f, "type": strip(f["type"])} for f in node["fields"]
                                           if f["name"] not in dropped]}
            return {k: strip(v) for k, v in node.items()}
        if isinstance(node, list):
            return [strip(x) for x in node]
        return node

    return strip(schema)  # type: ignore[no-any-return]


def decode_request_head(data: bytes) -> dict[str, Any]:
    """An AccessRequest too large to decode whole, read only for its head: every field but the attribute maps,
    ``on_behalf_of`` and ``token``, which come back empty. Skipping costs a fraction of decoding (no Python
    objects are built for the skipped values), so an oversized request cannot buy a worker's time with its
    size. WireError as :func:`decode` for bytes that are not an AccessRequest. A body cut inside a skipped value
    may go unnoticed: harmless, since the head is only read to deny the request ``request_too_large``."""
    if data[:2] != MAGIC or len(data) < HEADER_LEN:
        return decode_as("AccessRequest", data)  # the precise error
    fp = bytes(data[2:HEADER_LEN])
    entry = _BY_FINGERPRINT.get(fp)
    if entry is None or entry[0] != "AccessRequest":
        return decode_as("AccessRequest", data)
    reader = _HEADS.get(fp)
    if reader is None:
        reader = _HEADS[fp] = parse_schema(_head_reader(_CODECS["AccessRequest"].schema), {})
    obj = _read_body("AccessRequest", data, entry[1], reader)
    obj["on_behalf_of"], obj["token"] = [], None
    obj["resource"]["attributes"] = {}
    obj["context"]["attributes"] = {}
    return obj
