"""Avro object container files built from single-object encoded AuditRecords, without decoding them.

Why this exists: the audit sink used to decode every pdx.audit message with fastavro and map it to a row in
Python, which capped it near 9k rows/s. A single-object message is ``C3 01 | 8-byte fingerprint | body``
(streams.contracts.wire), and a data block of an Avro object container file (Avro spec, "Object Container
Files") is nothing but concatenated bodies of the file's schema. So when a message's fingerprint is the current
AuditRecord schema's, its bytes after the 10-byte header can be copied into a block as they are, and ClickHouse
reads the whole container with ``INSERT ... FORMAT Avro`` (sql/004_native_avro_ingest.sql maps it to rows)::

    "Obj" 01 | metadata map {avro.schema: <writer schema JSON>, avro.codec: "null"} | 16-byte sync marker
    then per block: count (long) | byte size (long) | bodies ... | sync marker

By default every body gets a block of its own (count 1, its size, the sync marker: ~20 bytes more per record,
no measurable cost to ClickHouse). Why: bodies are not self-delimiting, so in a block of many, one truncated or
corrupt body shifts every later record and may even parse "successfully" as wrong rows. ClickHouse's Avro reader
bounds each block by its byte size, so a body that is too short fails its own block with an error instead, and
the sink's bisect pins the rejection on it. The only per-message work left in Python is a header comparison, a
slice and a dict lookup for the size prefix. The writer schema in the metadata
is the self-contained JSON schema (``wire.schema("AuditRecord")``) without its ``doc`` strings: the Parsing
Canonical Form would not do, because it drops ``logicalType`` and ClickHouse would then read timestamps as
plain longs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any

from streams.contracts import wire

MAGIC = b"Obj\x01"
SCHEMA_NAME = "AuditRecord"
#: The header a message needs for its body to be copied as is (C3 01 + current AuditRecord fingerprint).
AUDIT_HEADER = wire.MAGIC + wire.fingerprint(SCHEMA_NAME)
#: Records per data block (see above for why one).
BLOCK_RECORDS = 1


def zigzag_long(n: int) -> bytes:
    """Avro ``long``: zig-zag, then base-128 varint, least significant group first."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def read_long(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode the Avro ``long`` at ``pos``; returns (value, position after it). IndexError if truncated."""
    shift = result = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("Avro long longer than 10 bytes")


def _strip_docs(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_docs(v) for k, v in node.items() if k != "doc"}
    if isinstance(node, list):
        return [_strip_docs(v) for v in node]
    return node


def writer_schema_json(schema_name: str = SCHEMA_NAME) -> str:
    """The schema text stored under ``avro.schema``: self-contained, logical types kept, docs dropped."""
    return json.dumps(_strip_docs(wire.schema(schema_name)), separators=(",", ":"))


def _avro_bytes(data: bytes) -> bytes:
    return zigzag_long(len(data)) + data


def file_header(schema_json: str, sync: bytes) -> bytes:
    """Magic, the metadata map (one block of two entries, then the 0 terminator) and the sync marker."""
    meta = [(b"avro.schema", schema_json.encode()), (b"avro.codec", b"null")]
    out = bytearray(MAGIC)
    out += zigzag_long(len(meta))
    for key, value in meta:
        out += _avro_bytes(key) + _avro_bytes(value)
    out += zigzag_long(0)
    out += sync
    return bytes(out)


_SCHEMA_JSON = writer_schema_json()
#: Any 16 bytes will do (the spec suggests random ones; readers only compare it after each block). Derived from
#: the schema so containers are reproducible, which keeps tests and retries byte-identical.
SYNC = hashlib.md5(_SCHEMA_JSON.encode(), usedforsecurity=False).digest()
HEADER = file_header(_SCHEMA_JSON, SYNC)


def is_current(message: bytes) -> bool:
    """Whether ``message`` carries the current AuditRecord header, so its body can go into a block unchanged."""
    return len(message) > len(AUDIT_HEADER) and message.startswith(AUDIT_HEADER)


_ONE_RECORD = zigzag_long(1)
_PREFIXES: dict[int, bytes] = {}


def _one_record_prefix(size: int) -> bytes:
    """Block count 1 + the body size, cached: bodies come in few distinct sizes."""
    prefix = _PREFIXES.get(size)
    if prefix is None:
        prefix = _PREFIXES[size] = _ONE_RECORD + zigzag_long(size)
    return prefix


def build(messages: Sequence[bytes], *, block_records: int = BLOCK_RECORDS) -> bytes:
    """An object container holding the bodies of ``messages``: single-object encoded AuditRecords that all
    carry :data:`AUDIT_HEADER` (check with :func:`is_current`; this function does not look inside)."""
    skip = len(AUDIT_HEADER)
    parts: list[bytes] = [HEADER]
    if block_records == 1:
        for m in messages:
            parts += (_one_record_prefix(len(m) - skip), m[skip:], SYNC)
        return b"".join(parts)
    for start in range(0, len(messages), block_records):
        bodies = b"".join([m[skip:] for m in messages[start : start + block_records]])
        count = min(block_records, len(messages) - start)
        parts += (zigzag_long(count), zigzag_long(len(bodies)), bodies, SYNC)
    return b"".join(parts)


def request_id(message: bytes) -> str:
    """The request id of a current-schema AuditRecord message, read without decoding the rest: it is the first
    field of the AccessRequest, which is the first field of the AuditRecord (a long length, then UTF-8 bytes).
    ValueError if the bytes are too short to hold it."""
    try:
        n, pos = read_long(message, len(AUDIT_HEADER))
    except IndexError:
        raise ValueError("truncated AuditRecord: no request_id") from None
    if n < 0 or pos + n > len(message):
        raise ValueError("truncated AuditRecord: request_id runs past the end")
    return message[pos : pos + n].decode("utf-8", "replace")


def dedup_token(ids: Iterable[str]) -> str:
    """Insert deduplication token of a block: the same set of request ids gives the same token, whatever the
    order (the same formula as streams.audit.store.dedup_token, so a batch keeps its token across the two
    paths)."""
    return "pdx-audit-" + hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
