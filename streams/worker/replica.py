"""Replicated state: every worker keeps a full, live, decoded copy of the compacted state topics.

``pdx.inventory``, ``pdx.approvals`` and ``pdx.policies`` are compacted topics holding current state by key.
Each worker reads ALL their partitions from the beginning with a group-less consumer and keeps reading, so:

* a rebalance of the request partitions costs nothing — there is no table to recover before deciding
  (we first used faust Tables co-partitioned with requests; on this stack their changelog recovery stalled
  for minutes after a second worker joined, and every request waited behind it);
* a suspend, an approval or a new bundle reaches every worker within one fetch (see `pdx bench propagation`);
* values are decoded once, when they arrive, not on the hot path.

The cost is memory proportional to the inventory (about 1-2 KB per identity), which is fine for the
thousands-to-hundreds-of-thousands of identities an organisation has.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import TopicPartition

from streams.config import Settings
from streams.kafka import clients
from streams.kafka.state import wait_for_partitions

log = logging.getLogger("pdx.replica")

Apply = Callable[[bytes | None, bytes | None], None]


class CompactedReplica:
    """Consumes every partition of a compacted topic forever, calling ``apply(key, value)`` per record."""

    def __init__(self, cfg: Settings, topic: str, apply: Apply, client_id: str) -> None:
        self.cfg = cfg
        self.topic = topic
        self.apply = apply
        self.client_id = client_id
        self.ready = asyncio.Event()
        self.records = 0

    async def run(self) -> None:
        consumer = clients.consumer(self.cfg, client_id=self.client_id, fetch_max_wait_ms=50)
        await consumer.start()
        try:
            parts = await wait_for_partitions(consumer, self.topic, give_up_after_s=None)
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            targets = await consumer.end_offsets(tps)
            caught_up = {tp for tp in tps if targets[tp] == 0}
            if len(caught_up) == len(tps):
                self._set_ready()
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=10000)
                for tp, messages in batches.items():
                    for msg in messages:
                        try:
                            self.apply(msg.key, msg.value)
                        except Exception:
                            log.exception("%s[%d]@%d could not be applied", self.topic, tp.partition, msg.offset)
                        self.records += 1
                if not self.ready.is_set():
                    for tp in tps:
                        if tp not in caught_up and await consumer.position(tp) >= targets[tp]:
                            caught_up.add(tp)
                    if len(caught_up) == len(tps):
                        self._set_ready()
        finally:
            await consumer.stop()

    def _set_ready(self) -> None:
        log.info("replica of %s loaded (%d records)", self.topic, self.records)
        self.ready.set()
