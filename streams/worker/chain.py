"""Tamper-evident audit: each worker hash-chains its audit records per source partition and signs checkpoints.

A *chain* is one worker's run over one request partition: ``chain_id = <worker_id>/<topic>/<partition>/<nonce>``
(the nonce is the chain's start time in ms and 8 random hex digits), ``seq`` from 0, ``prev`` of record 0 is 32
zero bytes. A new owner of a partition (rebalance, restart) starts a new chain; an old chain ends with a
*final* checkpoint when its partition is revoked or the worker stops (where possible: a killed worker's chain
just stops). What is hashed is defined in streams/contracts/audit_chain.py; `pdx audit verify` recomputes it
from ClickHouse (streams/audit/verify.py).

Flow, per fetch (streams/worker/loop.py):

1. the Decider links each audit record as it builds it (:meth:`AuditChains.link`; synchronous, a few µs:
   two SHA-256 over canonical JSON and one over 120 bytes; an identity snapshot's digest is cached per
   inventory message);
2. once the loop knows which audit records Kafka acknowledged, :meth:`AuditChains.settle` moves each chain's
   *durable head* (only durable records are ever checkpointed);
3. every :data:`CHECKPOINT_EVERY_S` seconds, and on revoke/shutdown, :meth:`AuditChains.checkpoints` gives one
   AuditCheckpoint per chain whose durable head moved, signed with the worker's audit key (kind ``audit``)
   when it has one, unsigned otherwise (chaining works without a key; verify reports unsigned checkpoints).

A record whose audit write failed is not replied to (fail closed) and stays a gap in its chain: verify reports
it as missing, which it is.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from streams.contracts import audit_chain, signing, splice, wire

log = logging.getLogger("pdx.worker.chain")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: How often a chain's durable head is checkpointed (records after the last checkpoint are "not yet anchored").
CHECKPOINT_EVERY_S = 2.0


@dataclass(slots=True)
class Chain:
    chain_id: str
    topic: str
    partition: int
    #: last linked record (seq -1: none yet) and its hash
    seq: int = -1
    head: bytes = audit_chain.ZERO_HASH
    #: last record acknowledged by Kafka, and its hash
    durable_seq: int = -1
    durable_hash: bytes = audit_chain.ZERO_HASH
    #: last seq a produced checkpoint covers
    anchored_seq: int = -1
    #: records linked but not yet settled (a final checkpoint waits for none)
    unsettled: int = 0
    #: what each link hash starts with (audit_chain.link_prefix), and the chain id as an Avro string
    prefix: bytes = b""
    avro_id: bytes = b""

    def __post_init__(self) -> None:
        self.prefix = audit_chain.link_prefix(self.chain_id)
        self.avro_id = splice.avro_string(self.chain_id)


class Link(NamedTuple):
    chain: Chain
    seq: int
    hash: bytes


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One AuditCheckpoint to produce (pdx.audit.checkpoints, key chain_id)."""

    chain: Chain
    seq: int
    final: bool
    key: bytes
    value: bytes


class AuditChains:
    """The chains of one worker, one per request partition it owns."""

    def __init__(
        self,
        worker_id: str,
        signer: signing.SigningKey | None = None,
        *,
        every_s: float = CHECKPOINT_EVERY_S,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        nonce: Callable[[], str] | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.signer = signer
        self.every_s = every_s
        self.monotonic = monotonic
        self.wall_clock = wall_clock
        self._nonce = nonce or (lambda: f"{int(time.time() * 1000)}-{secrets.token_hex(4)}")
        self.chains: dict[tuple[str, int], Chain] = {}
        #: id(audit Out) -> its link, for the records of the fetch in flight
        self._pending: dict[int, Link] = {}
        #: identity id -> (the inventory message, hex digest of its canonical JSON)
        self._identities: dict[str, tuple[bytes, str]] = {}
        self._next_checkpoint = monotonic() + every_s

    # ---- the Decider's side (hot path) ----------------------------------------------------------------

    def identity_digest(self, identity_id: str, identity_msg: bytes) -> str:
        """Digest (hex) of an identity snapshot, computed once per inventory message (identities change rarely)."""
        cached = self._identities.get(identity_id)
        if cached is not None and cached[0] is identity_msg:
            return cached[1]
        value = audit_chain.identity_digest(wire.decode_as("Identity", identity_msg)).hex()
        self._identities[identity_id] = (identity_msg, value)
        return value

    def link(self, topic: str, partition: int, request_digest: bytes, body_digest: bytes) -> tuple[Link, bytes]:
        """The next link of the chain of (topic, partition) and the encoded AuditRecord ``chain`` field."""
        chain = self.chains.get((topic, partition))
        if chain is None:
            chain = Chain(f"{self.worker_id}/{topic}/{partition}/{self._nonce()}", topic, partition)
            self.chains[(topic, partition)] = chain
            log.info("audit chain %s started", chain.chain_id)
        seq = chain.seq + 1
        prev = chain.head
        hash_ = audit_chain.hash_link(chain.prefix, seq, prev, request_digest, body_digest)
        chain.seq, chain.head = seq, hash_
        chain.unsettled += 1
        # = splice.encode_chain(...), with the chain id's Avro string kept per chain (the digests are SHA-256)
        encoded = b"".join((b"\x02", chain.avro_id, splice.zigzag(seq), prev, request_digest, body_digest, hash_))
        return Link(chain, seq, hash_), encoded

    def track(self, out: Any, link: Link) -> None:
        """Remember which link the audit record ``out`` carries, until :meth:`settle`."""
        self._pending[id(out)] = link

    # ---- the loop's side ------------------------------------------------------------------------------

    def settle(self, durable: Iterable[Any]) -> None:
        """The fetch's audit records are produced: ``durable`` are those Kafka acknowledged. Moves each chain's
        durable head; forgets the fetch's links."""
        for out in durable:
            link = self._pending.get(id(out))
            if link is not None and link.seq > link.chain.durable_seq:
                link.chain.durable_seq, link.chain.durable_hash = link.seq, link.hash
        for link in self._pending.values():
            link.chain.unsettled -= 1
        self._pending.clear()

    def due(self) -> bool:
        return self.monotonic() >= self._next_checkpoint

    def checkpoints(self, *, final: Iterable[int] = (), all_final: bool = False) -> list[Checkpoint]:
        """A checkpoint per chain whose durable head is not anchored yet, and a final one for each chain of the
        request partitions in ``final`` (every chain when ``all_final``) that has durable records and none in
        flight. Restarts the periodic timer."""
        self._next_checkpoint = self.monotonic() + self.every_s
        ending = set(final)
        out = []
        for chain in self.chains.values():
            last = all_final or chain.partition in ending
            if chain.durable_seq < 0 or (chain.durable_seq <= chain.anchored_seq and not last):
                continue
            out.append(self._checkpoint(chain, last and chain.unsettled == 0 and chain.durable_seq == chain.seq))
        return out

    def anchored(self, done: Iterable[Checkpoint]) -> None:
        """These checkpoints are durable in Kafka."""
        for cp in done:
            cp.chain.anchored_seq = max(cp.chain.anchored_seq, cp.seq)

    def end(self, partitions: Iterable[int] | None = None) -> None:
        """Forget the chains of these request partitions (all when None): a later assignment starts new ones."""
        gone = None if partitions is None else set(partitions)
        for key in [k for k in self.chains if gone is None or k[1] in gone]:
            log.info("audit chain %s ended at seq %d", self.chains[key].chain_id, self.chains[key].durable_seq)
            del self.chains[key]

    def _checkpoint(self, chain: Chain, final: bool) -> Checkpoint:
        signed_at = self.wall_clock()
        signed_at_ms = int(audit_chain.micros(signed_at) // 1000)
        key = chain.chain_id.encode()
        key_id, signature = "", b""
        if self.signer is not None:
            value = audit_chain.checkpoint_value(
                chain.chain_id, chain.durable_seq, chain.durable_hash, final, self.worker_id, chain.topic,
                chain.partition,
            )
            signature = self.signer.sign_bytes(signing.signed_payload(signing.AUDIT, key, value, signed_at_ms))
            key_id = self.signer.key_id
        record = {
            "chain_id": chain.chain_id,
            "seq": chain.durable_seq,
            "head_hash": chain.durable_hash,
            "final": final,
            "worker_id": self.worker_id,
            "source_topic": chain.topic,
            "source_partition": chain.partition,
            "signed_at": _EPOCH + timedelta(milliseconds=signed_at_ms),
            "key_id": key_id,
            "signature": signature,
        }
        return Checkpoint(chain, chain.durable_seq, final, key, wire.encode("AuditCheckpoint", record))
