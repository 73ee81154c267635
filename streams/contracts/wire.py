"""Avro single-object encoding of the pdx contracts (schemas/*.avsc, namespace ``dev.pdx``).

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

import datetime as _dt
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import parse_schema, to_parsing_canonical_form

from streams.config import SCHEMAS_DIR
from streams.errors import ContractError

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
    "known_schemas",
    "register_writer_schema",
    "schema",
]

#: Single-object encoding marker (Avro spec, "Single-object encoding").
MAGIC = b"\xc3\x01"
#: Marker + 8-byte fingerprint.
HEADER_LEN = 10
NAMESPACE = "dev.pdx"

#: Top-level schema name -> file in SCHEMAS_DIR, in load order: a file may only reference named types
#: defined by files before it (audit_record.avsc references AccessRequest, Identity and Decision).
SCHEMA_FILES: dict[str, str] = {
    "Identity": "identity.avsc",
    "AccessRequest": "access_request.avsc",
    "Decision": "decision.avsc",
    "Approval": "approval.avsc",
    "PolicyBundle": "policy_bundle.avsc",
    "AuditRecord": "audit_record.avsc",
}


class WireError(ContractError):
    """A message cannot be encoded or decoded; the message says which schema/field/bytes and why."""


# ---- CRC-64-AVRO (Rabin) fingerprint ----------------------------------------------------------------

_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return tuple(table)


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The 64-bit Rabin fingerprint "CRC-64-AVRO" exactly as in the Avro specification (empty input =
    0xc15d213aa4d7a795). Single-object encoding stores it little-endian."""
    fp = _CRC64_EMPTY
    table = _CRC64_TABLE
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


# ---- schema loading ---------------------------------------------------------------------------------

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = ("record", "enum", "fixed")


def _fullname(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _collect_named(node: Any, namespace: str, out: dict[str, dict[str, Any]]) -> None:
    """Record every named type defined in ``node`` under its full name."""
    if isinstance(node, list):
        for branch in node:
            _collect_named(branch, namespace, out)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in _NAMED:
            full = _fullname(node["name"], node.get("namespace", namespace))
            out[full] = node
            namespace = full.rpartition(".")[0]
            for field in node.get("fields", ()):
                _collect_named(field["type"], namespace, out)
        elif kind == "array":
            _collect_named(node["items"], namespace, out)
        elif kind == "map":
            _collect_named(node["values"], namespace, out)
        elif isinstance(kind, (dict, list)):
            _collect_named(kind, namespace, out)


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


# ---- encode-side checks -----------------------------------------------------------------------------
# fastavro's writer already rejects a missing required field, a non-str string, a value matching no union
# branch and an unknown enum symbol, but silently coerces floats/bools into int/long (1.5 -> 1), any value
# into boolean (None -> false), a str into array<string> ('ab' -> ['a','b']), a list into a map, naive
# datetimes (taken as UTC) and ints beyond 32 bits into "int". Two checkers are built per schema:
#
# * the *fast* check: straight-line Python generated from the schema that only looks at what fastavro would
#   coerce and answers True/False; it runs on every encode (a few µs);
# * the *explaining* check: closures that check every field and raise _CheckFailed with a field path; it
#   runs only when the fast check or the fastavro writer failed, to produce the WireError message.

_Check = Callable[[Any, str], None]
_MISSING = object()
_INT_RANGE = {"int": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_TIMESTAMP_TYPES = ("timestamp-millis", "timestamp-micros")


class _CheckFailed(Exception):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path or '<record>'} {problem}")


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _type_label(node: Any) -> str:
    if isinstance(node, str):
        return node.rpartition(".")[2]
    if isinstance(node, list):
        return " | ".join(_type_label(branch) for branch in node)
    logical = node.get("logicalType")
    if logical:
        return str(logical)
    kind = node["type"]
    if kind in _NAMED:
        return str(node["name"]).rpartition(".")[2]
    if kind == "array":
        return f"array<{_type_label(node['items'])}>"
    if kind == "map":
        return f"map<{_type_label(node['values'])}>"
    return _type_label(kind)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_aware(value: Any) -> bool:
    return isinstance(value, _dt.datetime) and value.utcoffset() is not None


def _compile(node: Any, named: dict[str, _Check]) -> _Check:
    """An explaining checker for values of schema ``node``: raises _CheckFailed naming the field path."""
    if isinstance(node, str) and node not in _PRIMITIVES:
        return named[node]  # a named type defined earlier in the self-contained schema
    if isinstance(node, list):
        checks = [(branch, _compile(branch, named)) for branch in node]
        label = _type_label(node)
        non_null = [check for branch, check in checks if branch != "null"]
        if len(node) == 2 and len(non_null) == 1:  # ["null", T]: T's own message, with its field path
            inner = non_null[0]

            def check_optional(value: Any, path: str) -> None:
                if value is not None:
                    inner(value, path)

            return check_optional

        def check_union(value: Any, path: str) -> None:
            for branch, check in checks:
                if branch == "null" and value is None:
                    return
                if branch != "null":
                    try:
                        check(value, path)
                        return
                    except _CheckFailed:
                        continue
            raise _CheckFailed(path, f"must be {label}, got {_describe(value)}")

        return check_union
    kind = node if isinstance(node, str) else node["type"]
    logical = None if isinstance(node, str) else node.get("logicalType")
    if logical in _TIMESTAMP_TYPES:

        def check_timestamp(value: Any, path: str, label: str = str(logical)) -> None:
            if not isinstance(value, _dt.datetime):
                raise _CheckFailed(path, f"must be a timezone-aware datetime ({label}), got {_describe(value)}")
            if value.utcoffset() is None:
                raise _CheckFailed(path, f"must be a timezone-aware datetime (UTC), got naive {value.isoformat()}")

        return check_timestamp
    if kind in ("int", "long"):
        low, high = _INT_RANGE[kind]

        def check_int(value: Any, path: str, low: int = low, high: int = high, kind: str = kind) -> None:
            if not _is_int(value):
                raise _CheckFailed(path, f"must be {kind}, got {_describe(value)}")
            if not low <= value <= high:
                raise _CheckFailed(path, f"is out of range for Avro {kind}: {value}")

        return check_int
    if kind == "boolean":

        def check_bool(value: Any, path: str) -> None:
            if value is not True and value is not False:
                raise _CheckFailed(path, f"must be boolean, got {_describe(value)}")

        return check_bool
    if kind == "string":

        def check_str(value: Any, path: str) -> None:
            if not isinstance(value, str):
                raise _CheckFailed(path, f"must be string, got {_describe(value)}")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise _CheckFailed(path, f"is not valid UTF-8 text: {exc.reason}") from None

        return check_str
    if kind == "enum":
        symbols = tuple(node["symbols"])

        def check_enum(value: Any, path: str, label: str = _type_label(node)) -> None:
            if not isinstance(value, str) or value not in symbols:
                raise _CheckFailed(path, f"must be one of {', '.join(symbols)} ({label}), got {_describe(value)}")

        return check_enum
    if kind == "array":
        items = _compile(node["items"], named)

        def check_array(value: Any, path: str, label: str = _type_label(node)) -> None:
            if not isinstance(value, (list, tuple)):
                raise _CheckFailed(path, f"must be a list ({label}), got {_describe(value)}")
            for index, item in enumerate(value):
                items(item, f"{path}[{index}]")

        return check_array
    if kind == "map":
        values = _compile(node["values"], named)

        def check_map(value: Any, path: str, label: str = _type_label(node)) -> None:
            if not isinstance(value, Mapping):
                raise _CheckFailed(path, f"must be a mapping ({label}), got {_describe(value)}")
            for key, item in value.items():
                if not isinstance(key, str):
                    raise _CheckFailed(path, f"keys must be strings, got {_describe(key)}")
                values(item, f"{path}[{key!r}]")

        return check_map
    if kind == "record":
        fields: list[tuple[str, _Check, bool, str]] = []

        def check_record(value: Any, path: str, label: str = _type_label(node)) -> None:
            if not isinstance(value, Mapping):
                raise _CheckFailed(path, f"must be a mapping ({label} record), got {_describe(value)}")
            for field_name, check, required, field_label in fields:
                item = value.get(field_name, _MISSING)
                if item is _MISSING:
                    if required:
                        raise _CheckFailed(_join(path, field_name), f"is missing (required {field_label})")
                    continue
                check(item, _join(path, field_name))

        named[node["name"]] = check_record  # before the fields, so a recursive reference resolves
        for field in node["fields"]:
            check = _compile(field["type"], named)
            fields.append((field["name"], check, "default" not in field, _type_label(field["type"])))
        return check_record

    def check_nothing(value: Any, path: str) -> None:  # null/float/double/bytes/fixed: fastavro checks them
        return None

    return check_nothing


def _generate_fast_check(root: dict[str, Any]) -> Callable[[Any], bool]:
    """Generate ``check(obj) -> bool``: False when a value would be silently coerced by fastavro."""
    definitions: dict[str, Any] = {}
    _collect_named(root, "", definitions)
    counter = iter(range(1_000_000))
    lines = ["def check(o):"]

    def emit(node: Any, var: str, depth: int, expanding: frozenset[str]) -> list[str]:
        pad = "    " * depth
        if isinstance(node, str) and node not in _PRIMITIVES:
            if node in expanding:  # recursive type: leave the rest to fastavro and the explaining check
                return []
            node = definitions[node]
        if isinstance(node, list):
            branches = [branch for branch in node if branch != "null"]
            if len(branches) != 1:
                return []
            inner = emit(branches[0], var, depth + 1, expanding)
            return [f"{pad}if {var} is not None:", *inner] if inner else []
        kind = node if isinstance(node, str) else node["type"]
        logical = None if isinstance(node, str) else node.get("logicalType")
        if logical in _TIMESTAMP_TYPES:
            return [
                f"{pad}if ({var}.__class__ is not datetime and not isinstance({var}, datetime))"
                f" or {var}.utcoffset() is None:",
                f"{pad}    return False",
            ]
        if kind in ("int", "long"):
            low, high = _INT_RANGE[kind]
            return [f"{pad}if {var}.__class__ is not int or not {low} <= {var} <= {high}:", f"{pad}    return False"]
        if kind == "boolean":
            return [f"{pad}if {var} is not True and {var} is not False:", f"{pad}    return False"]
        if kind == "array":
            item = f"i{next(counter)}"
            inner = emit(node["items"], item, depth + 1, expanding)
            out = [
                f"{pad}if {var}.__class__ is not list and not isinstance({var}, (list, tuple)):",
                f"{pad}    return False",
            ]
            return [*out, f"{pad}for {item} in {var}:", *inner] if inner else out
        if kind == "map":
            item = f"i{next(counter)}"
            inner = emit(node["values"], item, depth + 1, expanding)
            out = [f"{pad}if {var}.__class__ is not dict and not isinstance({var}, Mapping):", f"{pad}    return False"]
            return [*out, f"{pad}for {item} in {var}.values():", *inner] if inner else out
        if kind == "record":
            expanding = expanding | {node["name"]}
            out = [f"{pad}if {var}.__class__ is not dict and not isinstance({var}, Mapping):", f"{pad}    return False"]
            for field in node["fields"]:
                value = f"f{next(counter)}"
                inner = emit(field["type"], value, depth + 1, expanding)
                if inner:
                    out += [f"{pad}{value} = {var}.get({field['name']!r}, M)", f"{pad}if {value} is not M:", *inner]
            return out
        return []  # strings, enums, ...: fastavro rejects wrong values itself

    lines += emit(root, "o", 1, frozenset())
    lines.append("    return True")
    namespace: dict[str, Any] = {"datetime": _dt.datetime, "Mapping": Mapping, "M": _MISSING}
    exec(compile("\n".join(lines), f"<wire fast check {root['name']}>", "exec"), namespace)  # noqa: S102
    return namespace["check"]  # type: ignore[no-any-return]


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
    fp = crc64_avro(canonical.encode("utf-8")).to_bytes(8, "little")
    fast = _generate_fast_check(self_contained)
    explain = _compile(self_contained, {})
    return _Codec(name, parsed, self_contained, canonical, fp, MAGIC + fp, fast, explain)


def _load(schemas_dir: Path) -> None:
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


_load(SCHEMAS_DIR)


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


def encode(schema_name: str, obj: Mapping[str, Any]) -> bytes:
    """Single-object encode ``obj`` (a dict with the contract's field names) as ``schema_name``.

    Raises :class:`WireError` naming the field when a required field is missing or a value has the wrong
    type (including naive datetimes and floats for int/long fields)."""
    codec = _codec(schema_name)
    if not codec.fast_check(obj):
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
        "streams.wire.register_writer_schema)"
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
    body = BytesIO(data)
    body.seek(HEADER_LEN)
    try:
        obj = schemaless_reader(body, writer, reader)
    except Exception as exc:  # EOFError, StopIteration, UnicodeDecodeError, IndexError, ...
        detail = str(exc) or "unexpected end of data"
        raise WireError(f"corrupt {name} body: {type(exc).__name__}: {detail}") from exc
    end = body.tell()
    if end != len(data):
        raise WireError(f"corrupt {name} body: {len(data) - end} trailing bytes after the datum")
    if not isinstance(obj, dict):
        raise WireError(f"corrupt {name} body: decoded to {type(obj).__name__}, not a record")
    return name, obj


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
    fp = crc64_avro(canonical.encode("utf-8")).to_bytes(8, "little")
    if fp == codec.fingerprint:
        return fp
    _BY_FINGERPRINT[fp] = (schema_name, parsed, codec.parsed)
    return fp


def _fingerprint_table(names: Iterable[str] | None = None) -> str:
    rows = ["| Schema | CRC-64-AVRO (uint64 hex) | header bytes |", "|---|---|---|"]
    for name in names or _CODECS:
        rows.append(f"| {name} | `{fingerprint_hex(name)}` | `{_codec(name).header.hex(' ')}` |")
    return "\n".join(rows)


if __name__ == "__main__":  # python -m streams.contracts.wire: the fingerprints table for schemas/README.md
    print(_fingerprint_table())


# ---- AuditRecord from already-encoded parts (the worker's hot path) ------------------------------------

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def _zigzag(n: int) -> bytes:
    """Avro int/long: zig-zag, then base-128 varint."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _avro_string(s: str) -> bytes:
    data = s.encode("utf-8")
    return _zigzag(len(data)) + data


def _micros(dt: _dt.datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _body_of(schema_name: str, message: bytes) -> bytes | None:
    """The Avro body of a single-object message written with the CURRENT schema, else None."""
    if message[:HEADER_LEN] != _codec(schema_name).header:
        return None
    return message[HEADER_LEN:]


def splice_audit_record(
    request_msg: bytes,
    identity_msg: bytes | None,
    decision_msg: bytes,
    *,
    received_at: _dt.datetime,
    decided_at: _dt.datetime,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    worker_id: str,
) -> bytes | None:
    """An AuditRecord message built by concatenating already-encoded parts.

    Why: Avro's binary encoding of a record is the concatenation of its fields' encodings, and the worker
    already holds the request as received, the identity as it arrived from the inventory topic and the
    decision it just encoded for the reply. Re-encoding them was the largest serialization cost per
    decision. Returns None when a part was written with another schema version (the caller then encodes
    the record the ordinary way); the result is byte-identical to ``encode("AuditRecord", ...)``.
    """
    request = _body_of("AccessRequest", request_msg)
    decision = _body_of("Decision", decision_msg)
    identity = _body_of("Identity", identity_msg) if identity_msg is not None else b""
    if request is None or decision is None or identity is None:
        return None
    if received_at.tzinfo is None or decided_at.tzinfo is None:
        raise WireError("cannot encode AuditRecord: received_at/decided_at must be timezone-aware")
    return b"".join(
        (
            _codec("AuditRecord").header,
            request,
            b"\x00" if identity_msg is None else b"\x02" + identity,  # union index 0 = null, 1 = Identity
            decision,
            _zigzag(_micros(received_at)),
            _zigzag(_micros(decided_at)),
            _avro_string(source_topic),
            _zigzag(source_partition),
            _zigzag(source_offset),
            _avro_string(worker_id),
        )
    )
