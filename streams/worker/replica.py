"""Replicated state: every worker keeps a full, live, decoded copy of the compacted state topics.

``pdx.inventory``, ``pdx.approvals``, ``pdx.policies`` and ``pdx.jwks`` (trusted token issuers) are compacted
topics holding current state by key.
Each worker reads ALL their partitions from the beginning with a group-less consumer and keeps reading, so:

* a rebalance of the request partitions costs nothing — there is no table to recover before deciding
  (we first used faust Tables co-partitioned with requests; on this stack their changelog recovery stalled
  for minutes after a second worker joined, and every request waited behind it);
* a suspend, an approval, a new bundle or a new issuer key reaches every worker within one fetch (see
  `pdx bench propagation`);
* values are decoded once, when they arrive, not on the hot path.

The cost is memory proportional to the inventory (about 1-2 KB per identity), which is fine for the
thousands-to-hundreds-of-thousands of identities an organisation has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from aiokafka import TopicPartition

from streams.config import Settings
from streams.kafka import clients
from streams.kafka.state import wait_for_partitions

log = logging.getLogger("pdx.replica")

#: ``apply(key, value, headers)``: headers carry the record's signature (streams/contracts/signing.py)
Apply = Callable[[bytes | None, bytes | None, Sequence[tuple[str, bytes]] | None], None]


class Record(Protocol):
    """What a replica reads of a consumed record (aiokafka's ConsumerRecord has these)."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


class CompactedReplica:
    """Consumes every partition of a compacted topic forever, calling ``apply(key, value)`` per record.

    :meth:`run` owns the Kafka consumer; :meth:`apply_records` and :meth:`track` / :meth:`observe` hold the
    logic (a record that fails to apply is logged and skipped; the replica is ready once every partition was
    read up to the end offset seen at start), so unit tests drive them without Kafka.
    """

    def __init__(self, cfg: Settings, topic: str, apply: Apply, client_id: str) -> None:
        self.cfg = cfg
        self.topic = topic
        self.apply = apply
        self.client_id = client_id
        self.ready = asyncio.Event()
        self.records = 0
        self.failed = 0
        self._targets: dict[int, int] = {}

    def apply_records(self, records: Iterable[Record]) -> None:
        for msg in records:
            try:
                self.apply(msg.key, msg.value, msg.headers)
            except Exception:
                self.failed += 1
                log.exception("%s[%d]@%d could not be applied", self.topic, msg.partition, msg.offset)
            self.records += 1

    def track(self, end_offsets: Mapping[int, int]) -> None:
        """Start loading: ``end_offsets`` (partition -> end offset at start) is what must be read to be ready."""
        self._targets = {p: end for p, end in end_offsets.items() if end > 0}
        if not self._targets:
            self._set_ready()

    def observe(self, positions: Mapping[int, int]) -> None:
        """Record the consumer's positions; the replica becomes ready when every target is reached."""
        for p, position in positions.items():
            if position >= self._targets.get(p, 0):
                self._targets.pop(p, None)
        if not self._targets and not self.ready.is_set():
            self._set_ready()

    async def run(self) -> None:
        consumer = clients.consumer(self.cfg, client_id=self.client_id, fetch_max_wait_ms=50)
        await consumer.start()
        try:
            parts = await wait_for_partitions(consumer, self.topic, give_up_after_s=None)
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            self.track({tp.partition: end for tp, end in ends.items()})
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=10000)
                for messages in batches.values():
                    self.apply_records(messages)
                if not self.ready.is_set():
                    self.observe({tp.partition: await consumer.position(tp) for tp in tps})
        finally:
            await consumer.stop()

    def _set_ready(self) -> None:
        log.info("replica of %s loaded (%d records)", self.topic, self.records)
        self.ready.set()
