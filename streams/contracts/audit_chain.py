"""The audit hash chain's canonical form: what a worker hashes, and what `pdx audit verify` recomputes.

Each worker chains its audit records per source partition (streams/worker/chain.py): record ``seq`` of chain
``chain_id`` carries ``prev`` (the hash of record ``seq - 1``, 32 zero bytes at seq 0) and its own ``hash``.
The hash must be recomputable from what ClickHouse stores, and the raw Avro bytes are not stored there (the
materialized view derives columns, some lossily), so a record is hashed in three parts:

* ``request_digest`` = SHA-256 of the canonical JSON of the request, with timestamps as ISO-8601 text
  exactly as ``request_json`` holds it (``2026-06-03T10:00:00.123000+00:00``, no fraction when it is zero:
  streams.audit.store.dumps and the view in sql/004 write the same text);
* ``body_digest`` = SHA-256 of the canonical JSON of :func:`body`: the identity snapshot's digest (null when
  unknown), the decision as the audit table stores it (a reason's null policy/rule as ``""``, a negative
  ``eval_us`` as 0), received/decided/evaluated times as integer microseconds, the worker id as stored and the
  source topic/partition/offset; and, only when the record relied on state beyond its identity
  (``relied_on`` not null), that state: its approvals as ``[approval_id, approved_by, granted_at µs,
  expires_at µs]`` and its principals' identity digests (:func:`relied_on_part`);
* ``hash`` = SHA-256 over ``chain_id``, ``seq``, ``prev``, ``request_digest`` and ``body_digest`` (binary,
  length-prefixed: :func:`link_hash`).

The body is a JSON array in a fixed order (:func:`body`), the request a JSON object with sorted keys.

Hashing the two digests rather than the record itself lets a verifier check a chain from its links alone (a
link whose record collapsed as a redelivered duplicate in the ReplacingMergeTree still proves what it
chained), and lets the worker hash an identity snapshot once per inventory message rather than per decision.

Canonical JSON: keys sorted, no whitespace, UTF-8 (non-ASCII characters unescaped), i.e. Python's
``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()``; orjson with
``OPT_SORT_KEYS`` writes the same bytes, faster. JSON escaping differences between ClickHouse's and Python's
encoders vanish because the verifier parses ``request_json`` / ``identity_json`` and re-encodes canonically.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; the stdlib writes the same bytes
    orjson = None  # type: ignore[assignment,unused-ignore]

#: prev of a chain's first record.
ZERO_HASH = bytes(32)
_LINK_DOMAIN = b"pdx-audit-chain-v1\x00"
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_sha256 = hashlib.sha256


def _default(value: Any) -> Any:
    if isinstance(value, _dt.datetime):  # aware UTC datetimes, as fastavro decodes them: orjson's native text
        return value.isoformat()
    raise TypeError(f"cannot hash {type(value).__name__} as canonical JSON")


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, compact, UTF-8; datetimes as ISO-8601 text (they must be aware UTC)."""
    if orjson is not None:
        try:
            return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            pass  # e.g. an int beyond 64 bits: the stdlib writes the same canonical form
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default).encode()


def digest(obj: Any) -> bytes:
    """SHA-256 of the canonical JSON of ``obj``."""
    return _sha256(canonical_json(obj)).digest()


#: Fields added to the request / identity after the chain was defined, with their defaults. A field at its
#: default is left out of the canonical form, so a record hashes alike whether it was written before the field
#: existed (its ClickHouse JSON lacks it) or after (the decoded dict holds the default).
_ADDED_REQUEST_DEFAULTS: dict[str, Any] = {"token": None}
_ADDED_IDENTITY_DEFAULTS: dict[str, Any] = {"workload_subjects": []}


def _without_defaults(obj: Mapping[str, Any], added: Mapping[str, Any]) -> Mapping[str, Any]:
    drop = [k for k, default in added.items() if k in obj and obj[k] == default]
    if not drop:
        return obj
    return {k: v for k, v in obj.items() if k not in drop}


def request_digest(request: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical JSON of an AccessRequest dict (fields added later left out at their default)."""
    return digest(_without_defaults(request, _ADDED_REQUEST_DEFAULTS))


def identity_digest(identity: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical JSON of an Identity dict (fields added later left out at their default)."""
    return digest(_without_defaults(identity, _ADDED_IDENTITY_DEFAULTS))


def micros(value: _dt.datetime) -> int:
    """Microseconds since the epoch of an aware datetime (what DateTime64(6) and timestamp-micros hold)."""
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def body(
    identity_digest: str | None,
    decision: str,
    reasons: list[list[str]],
    matched_rules: list[str],
    obligations: Mapping[str, str],
    monitor: list[list[str]],
    bundle_version: str,
    eval_us: int,
    evaluated_at_us: int,
    received_at_us: int,
    decided_at_us: int,
    worker_id: str,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    relied_on: list[Any] | None = None,
    /,
) -> list[Any]:
    """Everything of an audit record but its request, normalised the way the audit table stores it, as one JSON
    array in this order: identity digest (hex, null when the identity was unknown), outcome, reasons as
    ``[code, message, policy or "", rule or ""]``, matched rules, obligations, monitor outcomes as ``[policy,
    rule, effect, reason_code]``, bundle version, eval_us (negative as 0), evaluated_at, received_at,
    decided_at (integer µs), worker id as stored, source topic, partition and offset. An array, not an
    object: the worker builds one per decision, and positions cost less than sorted keys."""
    out = [
        identity_digest, decision, reasons, matched_rules, obligations, monitor, bundle_version,
        eval_us if eval_us > 0 else 0, evaluated_at_us, received_at_us, decided_at_us, worker_id, source_topic,
        source_partition, source_offset,
    ]  # fmt: skip
    if relied_on is not None:  # left out when null: records from before relied_on hash as they always did
        out.append(relied_on)
    return out


def relied_on_part(
    approvals: Sequence[tuple[str, str, _dt.datetime, _dt.datetime]], principal_digests: list[str]
) -> list[Any] | None:
    """The body's ``relied_on`` element: ``[approvals, principal identity digests (hex)]``, None when both are
    empty (the record's relied_on is null). ``approvals`` are (approval_id, approved_by, granted_at, expires_at),
    hashed as ``[approval_id, approved_by, granted_at µs, expires_at µs]`` at millisecond precision (what
    timestamp-millis and the column keep)."""
    if not approvals and not principal_digests:
        return None
    return [[[a, b, micros(g) // 1000 * 1000, micros(e) // 1000 * 1000] for a, b, g, e in approvals],
            principal_digests]


def relied_on_of(record_relied_on: Mapping[str, Any] | None) -> list[Any] | None:
    """:func:`relied_on_part` of a decoded AuditRecord ``relied_on`` (a dict or None)."""
    if not record_relied_on:
        return None
    return relied_on_part(
        [(a["approval_id"], a["approved_by"], a["granted_at"], a["expires_at"])
         for a in record_relied_on.get("approvals") or ()],
        [identity_digest(p).hex() for p in record_relied_on.get("principals") or ()],
    )


def link_prefix(chain_id: str) -> bytes:
    """What every link hash of a chain starts with (the worker keeps it per chain)."""
    cid = chain_id.encode()
    return _LINK_DOMAIN + len(cid).to_bytes(4, "big") + cid


def link_hash(chain_id: str, seq: int, prev: bytes, request_digest: bytes, body_digest: bytes) -> bytes:
    """The record's hash: SHA-256 over the domain, the length-prefixed chain id, seq (8 bytes, big-endian),
    prev, request_digest and body_digest. What the next record's ``prev`` and the checkpoints name."""
    return hash_link(link_prefix(chain_id), seq, prev, request_digest, body_digest)


def hash_link(prefix: bytes, seq: int, prev: bytes, request_digest: bytes, body_digest: bytes) -> bytes:
    """:func:`link_hash` from the chain's :func:`link_prefix`."""
    return _sha256(b"".join((prefix, seq.to_bytes(8, "big", signed=True), prev, request_digest, body_digest))).digest()


def record_digests(record: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(request_digest, body_digest) of a decoded AuditRecord dict (docs/contracts.md): the slow path, used
    where the record was encoded from its parts rather than spliced, and by tests."""
    decision = record["decision"]
    identity = record.get("identity")
    return request_digest(record["request"]), body_digest(
        identity_digest(identity).hex() if identity is not None else None,
        decision,
        record.get("received_at") or record["decided_at"],
        record["decided_at"],
        str(record.get("worker_id") or decision.get("worker_id") or ""),
        str(record.get("source_topic") or ""),
        int(record.get("source_partition") or 0),
        int(record.get("source_offset") or 0),
        relied_on_of(record.get("relied_on")),
    )


def body_digest(
    identity_digest: str | None,
    decision: Mapping[str, Any],
    received_at: _dt.datetime,
    decided_at: _dt.datetime,
    worker_id: str,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    relied_on: list[Any] | None = None,
) -> bytes:
    """SHA-256 of :func:`body` from a Decision dict (``Decision.to_dict()`` or decoded) and the record's other
    fields: the one mapping of a decision to its hashed form, for the worker and for verification alike."""
    return digest(
        body(
            identity_digest,
            str(decision["decision"]),
            [[r["code"], r["message"], r.get("policy") or "", r.get("rule") or ""]
             for r in decision.get("reasons") or ()],
            list(decision.get("matched_rules") or ()),
            decision.get("obligations") or {},
            [[m["policy"], m["rule"], m["effect"], m["reason_code"]] for m in decision.get("monitor") or ()],
            str(decision.get("bundle_version") or ""),
            int(decision.get("eval_us") or 0),
            micros(decision.get("evaluated_at") or decided_at),
            micros(received_at),
            micros(decided_at),
            worker_id,
            source_topic,
            source_partition,
            source_offset,
            relied_on,
        )
    )


def checkpoint_value(
    chain_id: str, seq: int, head_hash: bytes, final: bool, worker_id: str, source_topic: str, source_partition: int
) -> bytes:
    """The canonical bytes a checkpoint's signature covers (with kind ``audit``, key ``chain_id`` and the
    signing time: streams.contracts.signing.signed_payload)."""
    return canonical_json(
        {
            "chain_id": chain_id,
            "seq": seq,
            "head_hash": head_hash.hex(),
            "final": final,
            "worker_id": worker_id,
            "source_topic": source_topic,
            "source_partition": source_partition,
        }
    )
