"""Recorded decisions: a redelivered request is answered with the decision already recorded for it.

Why: delivery is at least once. A worker that dies after a fetch's audit records are durable (and perhaps
after its replies went out) but before it committed the fetch's offsets has those requests redelivered to
the next owner of the partition. Deciding them again can give another answer (the clock moved on, an
approval expired, an identity was suspended in between), so one caller could see allow and then deny for
one request, and the audit trail would hold two decisions. pdx chose "audit durable, then reply" over Kafka
transactions (README, "Delivery guarantees"), so the rule is: *record the decision and reuse it*.

How:

* The audit record is the record of the decision. pdx.audit has as many partitions as pdx.requests and a
  worker writes each audit record to its request's partition number, so the decisions about request
  partition p are in audit partition p, in the order they were made.
* Each offset commit for request partition p carries, as its commit metadata, a *mark*: the end of the
  committing worker's audit records in audit partition p at the time the committed requests were done.
  Every request after the committed offset was decided (if at all) after that, so its audit record is at or
  after the mark.
* When a worker is assigned p, before it consumes from p (inside the rebalance), it reads audit partition p
  from the mark to its end and keeps, for each request offset at or after the committed one, the Decision
  recorded for it (:func:`load`). The Decider looks a request up by (partition, offset) and, when found and
  the request_id matches, replies with the recorded Decision and writes no second audit record.

Bounds: only the uncommitted tail is read (normally well under a second of traffic; commits run every
200 ms), at most :data:`MAX_SCAN` audit records per partition, and at most ``max_entries`` decisions are kept;
an entry is dropped once used, and a partition's entries when it is revoked. Past a bound a redelivered
request is decided again (logged), and the audit table still keeps one row per request (it deduplicates by
request, first decision kept).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import TopicPartition

from streams import config
from streams.config import Settings
from streams.contracts import wire
from streams.kafka import clients

log = logging.getLogger("pdx.worker.recorded")

#: Audit records read per assigned partition at most (about 1 s of a saturated worker is ~10k).
MAX_SCAN = 50_000


class RecordedDecisions:
    """(request partition, request offset) → (request_id, encoded Decision) for requests decided but not
    committed; bounded in entries (each entry is one small Decision message)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._by_offset: dict[tuple[int, int], tuple[str, bytes]] = {}

    def __len__(self) -> int:
        return len(self._by_offset)

    def add(self, partition: int, offset: int, request_id: str, decision_msg: bytes) -> bool:
        """Keep one decision; False (not kept) when full."""
        if len(self._by_offset) >= self.max_entries:
            return False
        self._by_offset[(partition, offset)] = (request_id, decision_msg)
        return True

    def take(self, partition: int, offset: int, request_id: str) -> bytes | None:
        """The Decision recorded for this request record, once; None when none is (or the id differs: the
        offset then belongs to another request, e.g. after the topic was recreated)."""
        if not self._by_offset:
            return None
        entry = self._by_offset.pop((partition, offset), None)
        if entry is None or entry[0] != request_id:
            return None
        return entry[1]

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop what is kept for these request partitions (they were revoked)."""
        gone = set(partitions)
        for key in [k for k in self._by_offset if k[0] in gone]:
            del self._by_offset[key]

    def add_audit_records(self, partition: int, committed: int, values: Iterable[bytes]) -> int:
        """Keep the decisions of the audit records (raw pdx.audit values) about requests at or after offset
        ``committed`` of request partition ``partition``; returns how many were kept."""
        kept = 0
        for value in values:
            try:
                record = wire.decode_as("AuditRecord", value)
            except wire.WireError:
                continue  # not ours to judge here: the sink dead-letters it
            if (
                record["source_topic"] != config.TOPIC_REQUESTS
                or record["source_partition"] != partition
                or record["source_offset"] < committed
            ):
                continue
            decision = record["decision"]
            message = wire.encode("Decision", decision, trusted=True)
            if not self.add(partition, record["source_offset"], str(decision["request_id"]), message):
                log.warning("recorded decisions are full (%d): later redeliveries are decided again", self.max_entries)
                break
            kept += 1
        return kept


def parse_mark(metadata: str | None) -> int | None:
    """The audit offset a commit's metadata carries (None: none, e.g. a commit by an older worker)."""
    if not metadata or not metadata.startswith("audit="):
        return None
    try:
        mark = int(metadata[len("audit="):])
    except ValueError:
        return None
    return mark if mark >= 0 else None


def format_mark(mark: int | None) -> str:
    return "" if mark is None else f"audit={mark}"


async def load(
    cfg: Settings,
    recorded: RecordedDecisions,
    committed: Mapping[int, tuple[int | None, int | None]],
    max_scan: int = MAX_SCAN,
    within_s: float = 5.0,
) -> dict[int, int]:
    """Read the recorded decisions for newly assigned request partitions.

    ``committed`` maps each request partition to (committed request offset or None, audit mark or None).
    Reads audit partition p from the mark (or, without one, the last ``max_scan`` records) to the end it has
    now, for at most ``within_s`` seconds (takeover must stay fast; past it, redeliveries are decided again).
    Returns the end offset each audit partition had: the first mark of the new owner.
    """
    if not committed:
        return {}
    tps = {p: TopicPartition(config.TOPIC_AUDIT, p) for p in committed}
    consumer = clients.consumer(cfg, client_id=f"pdx-recorded-{cfg.worker_id}", max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    kept = 0
    try:
        consumer.assign(list(tps.values()))
        ends = await consumer.end_offsets(list(tps.values()))
        begins = await consumer.beginning_offsets(list(tps.values()))
        todo: dict[TopicPartition, tuple[int, int]] = {}
        for p, (offset, mark) in committed.items():
            tp = tps[p]
            start = max(begins[tp], ends[tp] - max_scan, mark if mark is not None else 0)
            if start < ends[tp]:
                consumer.seek(tp, start)
                todo[tp] = (p, offset or 0)
            else:
                consumer.pause(tp)
        give_up = asyncio.get_running_loop().time() + within_s
        while todo and asyncio.get_running_loop().time() < give_up:
            fetched = await consumer.getmany(*todo, timeout_ms=1000)
            for tp, msgs in fetched.items():
                p, offset = todo[tp]
                kept += recorded.add_audit_records(p, offset, (m.value for m in msgs if m.value is not None))
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    consumer.pause(tp)
                    del todo[tp]
        if todo:
            log.warning("recorded decisions: gave up reading %s after %.1f s", sorted(todo), within_s)
    finally:
        await consumer.stop()
    log.info("recorded decisions: %d kept for redelivered requests of partitions %s", kept, sorted(committed))
    return {p: ends[tp] for p, tp in tps.items()}


def consumer_commits(raw: Mapping[Any, Any]) -> dict[int, tuple[int | None, int | None]]:
    """``{TopicPartition: OffsetAndMetadata}`` of pdx.requests → ``{partition: (offset, mark)}``."""
    out: dict[int, tuple[int | None, int | None]] = {}
    for tp, om in raw.items():
        offset = om.offset if om is not None and om.offset >= 0 else None
        out[tp.partition] = (offset, parse_mark(om.metadata if om is not None else None))
    return out
