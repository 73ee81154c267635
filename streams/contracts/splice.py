"""An AuditRecord message from already-encoded parts: the worker's hot path.

Avro's binary encoding of a record is the concatenation of its fields' encodings, and the worker already
holds the request as received, the identity as it arrived from the inventory topic and the decision it just
encoded for the reply. Re-encoding them was the largest serialization cost per decision, so
:meth:`AuditSplicer.splice_audit_record` concatenates their bodies with the few fields of its own. The result
is byte-identical to ``wire.encode("AuditRecord", ...)`` (property-tested in tests/unit/test_wire_splice.py).

wire.py, which loads the schemas, makes the one splicer from their single-object headers and exports its
method as ``wire.splice_audit_record``; this module does not import wire (no import cycle).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter

from streams.contracts import WireError

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def _zigzag(n: int) -> bytes:
    """Avro int/long: zig-zag, then base-128 varint."""
    if 0 <= n < 64:  # one byte: most partitions, and the start of every chain
        return _SMALL[n]
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_SMALL = [bytes(((n << 1),)) for n in range(64)]


@lru_cache(maxsize=256)  # topic names and worker ids: a handful of values, encoded once each
def _avro_string(s: str) -> bytes:
    data = s.encode("utf-8")
    return _zigzag(len(data)) + data


#: Avro encoding of a long, and of a string (for streams/worker/chain.py, which splices chain links).
zigzag = _zigzag
avro_string = _avro_string


def _micros(dt: _dt.datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


#: The AuditRecord fields this module encodes, by name, in the order :meth:`AuditSplicer.splice_audit_record`
#: builds them (joined in the schema's order: ``field_order``).
SPLICED_FIELDS = (
    "request", "identity", "decision", "received_at", "decided_at", "source_topic", "source_partition",
    "source_offset", "worker_id", "chain", "relied_on",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuditSplicer:
    """Splices AuditRecord messages whose parts were written with the schemas these headers name (the
    CURRENT schemas: ``MAGIC + fingerprint``). ``field_order``: the AuditRecord schema's field names in order;
    the parts are joined by name in that order, so a field added to the schema without a part here fails at
    import (``__post_init__``) instead of shifting the bytes."""

    request_header: bytes
    identity_header: bytes
    decision_header: bytes
    audit_header: bytes
    field_order: tuple[str, ...]
    #: picks the built parts (SPLICED_FIELDS order) in the schema's order: one C call per record
    _in_schema_order: Callable[[tuple[bytes, ...]], tuple[bytes, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if sorted(self.field_order) != sorted(SPLICED_FIELDS):
            raise WireError(
                f"AuditRecord fields {sorted(self.field_order)} are not the spliced ones {sorted(SPLICED_FIELDS)}: "
                "teach streams/contracts/splice.py the new field"
            )
        object.__setattr__(self, "_in_schema_order", itemgetter(*(SPLICED_FIELDS.index(n) for n in self.field_order)))

    def splice_audit_record(
        self,
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
        chain: bytes = b"\x00",
        relied_on: bytes = b"\x00",
    ) -> bytes | None:
        """An AuditRecord message built by concatenating already-encoded parts.

        Returns None when a part was written with another schema version (the caller then encodes the record
        the ordinary way); the result is byte-identical to ``encode("AuditRecord", ...)``. Raises WireError
        for a naive ``received_at``/``decided_at``. ``chain`` is the encoded ``chain`` union
        (:func:`encode_chain`; the default is null); ``relied_on`` the encoded ``relied_on`` union
        (:func:`encode_relied_on`; default null), the record's last field.
        """
        request = _body_of(self.request_header, request_msg)
        decision = _body_of(self.decision_header, decision_msg)
        identity = _body_of(self.identity_header, identity_msg) if identity_msg is not None else b""
        if request is None or decision is None or identity is None:
            return None
        if received_at.tzinfo is None or decided_at.tzinfo is None:
            raise WireError("cannot encode AuditRecord: received_at/decided_at must be timezone-aware")
        parts = (  # in SPLICED_FIELDS order
            request,
            b"\x00" if identity_msg is None else b"\x02" + identity,  # union index 0 = null, 1 = Identity
            decision,
            _zigzag(_micros(received_at)),
            _zigzag(_micros(decided_at)),
            _avro_string(source_topic),
            _zigzag(source_partition),
            _zigzag(source_offset),
            _avro_string(worker_id),
            chain,
            relied_on,
        )
        return self.audit_header + b"".join(self._in_schema_order(parts))

    def identity_body(self, identity_msg: bytes) -> bytes | None:
        """The Avro body of an Identity message in the current schema (None: another version)."""
        return _body_of(self.identity_header, identity_msg)


#: The encoded ``chain`` field of a record without a chain link (union branch 0, null): the last byte of
#: every AuditRecord whose chain is null, which :func:`with_chain` replaces.
NO_CHAIN = b"\x00"


def encode_chain(
    chain_id: str, seq: int, prev: bytes, request_digest: bytes, body_digest: bytes, hash_: bytes
) -> bytes:
    """The AuditRecord ``chain`` field (union branch 1, a ChainLink; the digests are ``fixed`` 32 bytes)."""
    if len(prev) != 32 or len(request_digest) != 32 or len(body_digest) != 32 or len(hash_) != 32:
        raise WireError("cannot encode AuditRecord.chain: digests must be 32 bytes")
    return b"".join((b"\x02", _avro_string(chain_id), _zigzag(seq), prev, request_digest, body_digest, hash_))


#: The encoded ``relied_on`` field of a record that relied on nothing beyond its request and identity.
NOTHING_RELIED_ON = b"\x00"


def encode_relied_on(
    approvals: list[tuple[str, str, _dt.datetime, _dt.datetime]], principal_bodies: list[bytes]
) -> bytes:
    """The AuditRecord ``relied_on`` field: null when both lists are empty, else union branch 1, a ReliedOn of
    (approval_id, approved_by, granted_at, expires_at) tuples (timestamp-millis) and Identity bodies."""
    if not approvals and not principal_bodies:
        return NOTHING_RELIED_ON
    parts = [b"\x02"]
    if approvals:
        parts.append(_zigzag(len(approvals)))
        for approval_id, approved_by, granted_at, expires_at in approvals:
            parts += (_avro_string(approval_id), _avro_string(approved_by),
                      _zigzag(_micros(granted_at) // 1000), _zigzag(_micros(expires_at) // 1000))
    parts.append(b"\x00")
    if principal_bodies:
        parts.append(_zigzag(len(principal_bodies)))
        parts += principal_bodies
    parts.append(b"\x00")
    return b"".join(parts)


def with_chain(audit_msg: bytes, chain: bytes, relied_on: bytes = NOTHING_RELIED_ON) -> bytes:
    """An AuditRecord message whose chain is null, with ``chain`` instead. The chain is the last field but one:
    ``relied_on`` is the encoded field after it (what the message ends with)."""
    cut = len(audit_msg) - len(relied_on) - 1
    if audit_msg[cut : cut + 1] != NO_CHAIN or not audit_msg.endswith(relied_on):
        raise WireError("AuditRecord message does not end with a null chain and the given relied_on")
    return audit_msg[:cut] + chain + relied_on


def _body_of(header: bytes, message: bytes) -> bytes | None:
    """The Avro body of a single-object message that starts with ``header``, else None."""
    if message[: len(header)] != header:
        return None
    return message[len(header) :]
