"""The audit hash chain's canonical form: what a worker hashes, and what `pdx audit verify` recomputes.

Each worker chains its audit records per source partition (streams/worker/chain.py): record ``seq`` of chain
``chain_id`` carries ``prev`` (the hash of record ``seq - 1``, 32 zero bytes at seq 0) and its own ``hash``.
The hash must be recomputable from what ClickHouse stores, and the raw Avro bytes are not stored there (the
materialized view derives columns, some lossily), so a record is hashed in three parts:

* ``request_digest`` = SHA-256 of the canonical JSON of the request, with timestamps as ISO-8601 text
  exactly as ``request_json`` holds it (``2026-06-03T10:00:00.123000+00:00``, no fraction when it is zero:
  streams.audit.store.dumps and the view in sql/004 write the same text);
* ``body_digest`` = SHA-256 of the canonical JSON of the body: each hash-chain field of the audit record
  declared in streams/contracts/audit_fields.py (``chain=BODY``), in that table's order, as its ``hashed``
  says: the identity snapshot's digest (null when unknown), the decision as the audit table stores it (a
  reason's null policy/rule as ``""``, a negative ``eval_us`` as 0), evaluated/received/decided times as
  integer microseconds, the worker id as stored and the source topic/partition/offset; then, per migration
  that added hashed fields later, one nested list of them, left out while it and every later one are at their
  defaults (so ``relied_on``, added by 008, is ``[approvals as [approval_id, approved_by, granted_at µs,
  expires_at µs], principals' identity digests]`` and absent when the record relied on nothing);
* ``hash`` = SHA-256 over ``chain_id``, ``seq``, ``prev``, ``request_digest`` and ``body_digest`` (binary,
  length-prefixed: :func:`link_hash`).

The body is a JSON array in the declaration's order (audit_fields.body), the request a JSON object with sorted keys.

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
from collections.abc import Mapping, Sequence
from typing import Any

from streams.contracts import audit_fields
from streams.contracts.audit_fields import canonical_json as canonical_json  # re-exported: the chain's names
from streams.contracts.audit_fields import digest as digest
from streams.contracts.audit_fields import identity_digest as identity_digest
from streams.contracts.audit_fields import micros as micros
from streams.contracts.audit_fields import request_digest as request_digest

#: prev of a chain's first record.
ZERO_HASH = bytes(32)
_LINK_DOMAIN = b"pdx-audit-chain-v1\x00"
_sha256 = hashlib.sha256
#: What a decision relied on, as the worker hashes it: (approvals as (id, approved_by, granted_at, expires_at),
#: the principals' identity digests in hex).
ReliedOn = tuple[Sequence[tuple[str, str, _dt.datetime, _dt.datetime]], list[str]]


def relied_on_part(
    approvals: Sequence[tuple[str, str, _dt.datetime, _dt.datetime]], principal_digests: list[str]
) -> ReliedOn | None:
    """What :func:`body_digest` takes for ``relied_on``: None when the record relied on nothing."""
    if not approvals and not principal_digests:
        return None
    return approvals, principal_digests


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
    """(request_digest, body_digest) of a decoded AuditRecord dict (docs/contracts.md): what ``pdx audit verify``
    recomputes from a stored row, and the worker's path for a record it encoded rather than spliced."""
    return request_digest(record["request"]), digest(audit_fields.body(audit_fields.Rec(record)))


def body_digest(
    identity_digest: str | None,
    decision: Mapping[str, Any],
    received_at: _dt.datetime,
    decided_at: _dt.datetime,
    worker_id: str,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    relied_on: ReliedOn | None = None,
) -> bytes:
    """The body digest of a record the worker spliced and never decoded: from its Decision dict, the identity
    digest and principal digests it keeps per inventory message, and the record's other fields."""
    approvals, principals = relied_on if relied_on is not None else ((), [])
    rec = audit_fields.Rec(
        {"decision": decision, "received_at": received_at, "decided_at": decided_at, "worker_id": worker_id,
         "source_topic": source_topic, "source_partition": source_partition, "source_offset": source_offset},
        identity_digest=identity_digest, approvals=approvals, principal_digests=principals,
    )  # fmt: skip
    return digest(audit_fields.body(rec))


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
