"""Audit sink: pdx.audit → ClickHouse, at least once, without loss or duplicates.

Why a plain consumer with manual commits rather than a faust agent: the guarantee we need is exactly
"commit an offset only after ClickHouse acknowledged every record before it". The sink polls a batch (size
and time bounded), inserts it, and only then commits; while ClickHouse is down it retries the same batch with
backoff and never moves on. A crash between insert and commit redelivers the batch; the table
(ReplacingMergeTree by request_id) and the per-batch insert deduplication token make that harmless.
It runs as a task inside each worker (unless PDX_AUDIT_SINK=off), in its own consumer group, so audit
partitions are shared too; `pdx sink` runs it as a process of its own, which on a small machine keeps its
ClickHouse inserts off the decide agent's CPU.

The batching rules live in :class:`AuditBatch` and one poll → insert → commit round in :meth:`AuditSink.step`,
both driven through small Protocols (:class:`Source`, :class:`Writer`, :class:`DeadLetters`) so unit tests
exercise them with in-memory fakes; :meth:`AuditSink.run` only builds the real Kafka and ClickHouse clients.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from streams import config
from streams.audit.store import audit_row, dedup_token
from streams.config import Settings
from streams.contracts import wire
from streams.contracts.dlq import dead_letter_headers
from streams.kafka import clients

log = logging.getLogger("pdx.sink")

SINK_GROUP_SUFFIX = "-audit-sink"
RETRY_MAX_S = 10.0


class Record(Protocol):
    """What the sink reads of a consumed record (aiokafka's ConsumerRecord has these)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class Source(Protocol):
    """The audit topic, as the sink uses it (an aiokafka consumer in a group)."""

    async def getmany(self, *, timeout_ms: int, max_records: int) -> Mapping[Any, Sequence[Record]]: ...

    async def commit(self) -> None: ...


class Writer(Protocol):
    """Where rows go (streams.audit.store.AuditWriter); raises while ClickHouse does not acknowledge."""

    def insert_rows(self, rows: Sequence[Sequence[Any]], *, token: str | None = None) -> None: ...


class DeadLetters(Protocol):
    async def send_and_wait(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> Any: ...


class AuditBatch:
    """The records fetched since the last commit: their rows, and when the batch is due.

    A batch is flushed when it holds ``max_rows`` rows, or ``wait_s`` after its first row arrived, whichever
    comes first; an empty batch is never due (nothing to insert, nothing to commit but what the DLQ holds).
    """

    def __init__(self, max_rows: int, wait_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_rows = max_rows
        self.wait_s = wait_s
        self.clock = clock
        self.rows: list[list[Any]] = []
        self.records: list[dict[str, Any]] = []
        self.flush_at: float | None = None

    def add(self, value: bytes | None) -> None:
        """Decode and map one audit message; ValueError (WireError / AuditRecordError) if it is unusable."""
        if value is None:
            raise wire.WireError("audit record without a value (tombstone)")
        record = wire.decode_as("AuditRecord", value)
        self.rows.append(audit_row(record))
        self.records.append(record)
        if self.flush_at is None:
            self.flush_at = self.clock() + self.wait_s

    @property
    def room(self) -> int:
        return self.max_rows - len(self.rows)

    def due(self) -> bool:
        return bool(self.rows) and (len(self.rows) >= self.max_rows or self.clock() >= (self.flush_at or 0))

    def wait_ms(self) -> int:
        """How long the next poll may wait: until the batch is due, or ``wait_s`` when it is empty."""
        if self.flush_at is None:
            return int(self.wait_s * 1000)
        return max(0, math.ceil((self.flush_at - self.clock()) * 1000))

    def token(self) -> str:
        """The insert deduplication token: a redelivered batch gets the same token."""
        return dedup_token(self.records)

    def clear(self) -> None:
        self.rows, self.records, self.flush_at = [], [], None


class AuditSink:
    def __init__(self, cfg: Settings, worker_id: str, sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self.settings = cfg
        self.worker_id = worker_id
        self.sleep = sleep
        self.batch = AuditBatch(cfg.audit_batch_max, cfg.audit_batch_wait_ms / 1000)
        self.inserted = 0
        self.dead_lettered = 0

    async def _connect(self) -> Writer:
        from streams.audit.migrate import migrate
        from streams.audit.store import AuditWriter, connect

        delay = 0.5
        while True:
            try:
                client = await asyncio.to_thread(connect, self.settings.clickhouse_url)
                await asyncio.to_thread(migrate, client, ttl_days=self.settings.audit_ttl_days)
                log.info("audit sink connected to ClickHouse at %s", self.settings.clickhouse_url)
                return AuditWriter(client)
            except Exception as exc:  # noqa: BLE001 - keep trying; decisions do not wait for ClickHouse
                log.warning("ClickHouse not available (%s); retrying in %.1fs", exc, delay)
                await self.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def run(self) -> None:
        consumer = clients.consumer(
            self.settings,
            config.TOPIC_AUDIT,
            group_id=self.settings.app_id + SINK_GROUP_SUFFIX,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.audit_batch_max,
            client_id=f"pdx-sink-{self.worker_id}",
        )
        dlq = clients.producer(self.settings)
        await consumer.start()
        await dlq.start()
        try:
            writer = await self._connect()
            while True:
                await self.step(consumer, writer, dlq)
        finally:
            await consumer.stop()
            await dlq.stop()

    async def step(self, source: Source, writer: Writer, dlq: DeadLetters) -> bool:
        """One round: poll, add to the batch (unusable records go to the DLQ), and when the batch is due
        insert it until ClickHouse acknowledges, then commit. Returns whether it committed."""
        batch = self.batch
        fetched = await source.getmany(timeout_ms=batch.wait_ms(), max_records=batch.room)
        dead_lettered = 0
        for m in (m for part in fetched.values() for m in part):
            try:
                batch.add(m.value)
            except ValueError as exc:  # WireError / AuditRecordError: keep it, in the DLQ
                dead_lettered += 1
                await dlq.send_and_wait(
                    config.TOPIC_DLQ,
                    m.value,
                    key=m.key,
                    headers=dead_letter_headers(f"audit sink: {exc}", m.topic, m.partition, m.offset, self.worker_id),
                )
        self.dead_lettered += dead_lettered
        if not batch.rows and dead_lettered:
            await source.commit()  # only dead-lettered records since the last commit: they are safe in the DLQ
            return True
        if not batch.due():
            return False
        await self._insert_until_acknowledged(writer, batch.rows, batch.token())
        # Everything fetched so far is in ClickHouse (or the DLQ): only now move the offsets.
        await source.commit()
        self.inserted += len(batch.rows)
        batch.clear()
        return True

    async def _insert_until_acknowledged(self, writer: Writer, rows: list[list[Any]], token: str) -> None:
        delay = 0.2
        while True:
            try:
                await asyncio.to_thread(writer.insert_rows, rows, token=token)
                return
            except Exception as exc:  # noqa: BLE001 - ClickHouse down or rejecting: retry the same batch
                log.warning("audit insert of %d rows failed (%s); retrying in %.1fs", len(rows), exc, delay)
                await self.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
