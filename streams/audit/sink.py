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

Native ingestion: the sink does not decode the records. A message carrying the current AuditRecord header has
its Avro body copied into an Avro object container (streams.audit.avro_container), which ClickHouse reads with
``INSERT INTO audit_ingest FORMAT Avro``; a materialized view computes the audit table's columns
(sql/004_native_avro_ingest.sql). Per message, Python only compares the 10-byte header and reads the request id
(the first field) for the dedup token. A message written with another *registered* AuditRecord schema version
is decoded, resolved to the current schema and re-encoded (rare, slow, correct); anything else undecodable goes
to the DLQ at once. A body that looks right but that ClickHouse cannot parse makes it reject the whole block:
the sink then bisects the block (:meth:`AuditSink._write`) until the bad records are alone, dead-letters them
with ClickHouse's error and inserts the rest, so one bad record costs about log2(batch) extra inserts, not the
batch. Large batches are split into :data:`INSERT_STREAMS` inserts sent concurrently: ClickHouse parses one
insert on one core.

Pipelined (:meth:`AuditSink.pump`, what :meth:`AuditSink.run` loops on): while ClickHouse inserts a batch (up to
:data:`MAX_IN_FLIGHT` of them), the sink already fetches and takes the next, so Kafka fetching and Python's share no
longer wait for ClickHouse and the other way round. Offsets are committed explicitly, per batch (per partition, the
offset after the last record the batch holds), oldest batch first and only once ClickHouse acknowledged it and every
batch before it; before partitions are revoked the sink inserts and commits everything it fetched. :meth:`step`
is the same round without the pipeline (tests, ``pdx bench audit``).

What the insert deduplication token must guarantee: a block retried after an error that left ClickHouse's answer
unknown (a timeout after it wrote the block) is written once; the retry is the same block, so any deterministic
function of its records does. Across a crash, a redelivered batch gets the same token only when it is cut at the
same records, which neither a token of request ids nor one of (partition, first offset, last offset) can promise
(polls may return other mixes of partitions). Whatever gets in twice that way collapses in the audit table
(ReplacingMergeTree by request). The token stays the sorted request ids' hash, as on the row path
(store.dedup_token): reading the id is a few hundred nanoseconds per record, and the profile
(``pdx bench sink``: the sink process spends a fifth of the wall time on CPU) shows ClickHouse, not Python, bounds it.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from streams import config
from streams.audit import avro_container
from streams.audit.store import AuditRejectedError
from streams.config import Settings
from streams.contracts import wire
from streams.contracts.dlq import dead_letter_headers
from streams.kafka import clients
from streams.metrics import consumer_lag

log = logging.getLogger("pdx.sink")

SINK_GROUP_SUFFIX = "-audit-sink"
RETRY_MAX_S = 10.0
#: Concurrent inserts per batch (each its own container and dedup token), and the fewest records worth one.
INSERT_STREAMS = 2
MIN_STREAM_RECORDS = 10_000
#: how often the sink refreshes its backlog (the pdx_sink_backlog metric)
BACKLOG_EVERY_S = 2.0
#: A batch is also due once its messages hold this many bytes (the row bound, PDX_AUDIT_BATCH_MAX, alone would let
#: a batch of large records grow without limit): with INSERT_STREAMS and MAX_IN_FLIGHT it bounds the sink's memory.
BATCH_MAX_BYTES = 32 << 20
#: Batches whose insert may be running while the next one is fetched (see AuditSink.pump).
MAX_IN_FLIGHT = 2
#: While batches are in flight, polls wait at most this long, so an acknowledged batch is committed promptly.
SETTLE_POLL_MS = 20
#: aiokafka fetch sizes: one fetch brings up to this much per partition (aiokafka's default, 1 MiB, is ~1,500
#: audit records, so a backlog drained in many small round trips) and per broker response.
PARTITION_FETCH_BYTES = 8 << 20
FETCH_MAX_BYTES = 64 << 20


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


class OffsetSource(Protocol):
    """The audit topic as the pipelined sink uses it (:meth:`AuditSink.pump`): it commits explicit offsets, those
    of the batches ClickHouse acknowledged, not the consumer's position (which is already past the next batch)."""

    async def getmany(self, *, timeout_ms: int, max_records: int) -> Mapping[Any, Sequence[Record]]: ...

    async def commit(self, offsets: Mapping[Any, int] | None = None) -> None: ...


class Writer(Protocol):
    """Where records go (streams.audit.store.AuditWriter): an Avro object container of AuditRecords.

    Returns once ClickHouse acknowledged; raises :class:`~streams.audit.store.AuditRejectedError` when ClickHouse
    says the data is malformed (the sink bisects the block) and any other exception while it is unavailable
    (the sink retries the same block with backoff)."""

    def insert_avro(self, container: bytes, *, token: str | None = None) -> None: ...

    def insert_checkpoints(self, rows: Sequence[Sequence[Any]], *, token: str | None = None) -> None:
        """Insert audit chain checkpoints (rows of :func:`checkpoint_row`); raises while ClickHouse is unavailable."""
        ...


def checkpoint_row(value: bytes | None, origin: Record | None = None) -> list[Any]:
    """An AuditCheckpoint message (pdx.audit.checkpoints) as a row of the audit_checkpoints table (sql/006);
    WireError (a ValueError, for the DLQ) when it is not one. The signature is checked by `pdx audit verify`,
    not here: the sink stores evidence, good or bad."""
    if value is None:
        raise wire.WireError("audit checkpoint without a value (tombstone)")
    cp = wire.decode_as("AuditCheckpoint", value)
    return [
        cp["chain_id"],
        cp["seq"],
        bytes(cp["head_hash"]).hex(),
        bool(cp["final"]),
        cp["worker_id"],
        cp["source_topic"],
        cp["source_partition"],
        cp["signed_at"],
        cp["key_id"],
        bytes(cp["signature"]).hex(),
        origin.partition if origin is not None else -1,
        origin.offset if origin is not None else -1,
    ]


class DeadLetters(Protocol):
    async def send_and_wait(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> Any: ...


class AuditBatch:
    """The records fetched since the last commit, and when the batch is due.

    Holds each record as a current-schema single-object message (bytes), its request id and the Kafka record it
    came from (for the DLQ, should ClickHouse reject it later). A batch is flushed when it holds ``max_rows``
    records, or ``wait_s`` after its first record arrived, whichever comes first; an empty batch is never due
    (nothing to insert, nothing to commit but what the DLQ holds).
    """

    def __init__(
        self, max_rows: int, wait_s: float, clock: Callable[[], float] = time.monotonic, *,
        max_bytes: int = BATCH_MAX_BYTES,
    ) -> None:
        self.max_rows = max_rows
        self.wait_s = wait_s
        self.clock = clock
        self.max_bytes = max_bytes
        #: bytes of the messages held (the byte bound)
        self.bytes = 0
        #: partition → the offset after the last record of it fetched into this batch (what committing it moves to)
        self.offsets: dict[Any, int] = {}
        self.messages: list[bytes] = []
        self.ids: list[str] = []
        self.origins: list[Record | None] = []
        #: audit chain checkpoints (few: one per chain every few seconds), inserted after the records
        self.checkpoints: list[list[Any]] = []
        self.flush_at: float | None = None

    def add_checkpoint(self, value: bytes | None, origin: Record | None = None) -> None:
        """Take one AuditCheckpoint message; ValueError (WireError) if it is unusable, for the DLQ."""
        self.checkpoints.append(checkpoint_row(value, origin))
        if self.flush_at is None:
            self.flush_at = self.clock() + self.wait_s

    def add(self, value: bytes | None, origin: Record | None = None) -> None:
        """Take one audit message; ValueError (WireError) if it is unusable, for the DLQ.

        No decoding when it carries the current AuditRecord header. Otherwise it must decode as an AuditRecord
        (a registered older/newer writer schema is resolved to the current one) and is re-encoded."""
        if value is None:
            raise wire.WireError("audit record without a value (tombstone)")
        if not avro_container.is_current(value):
            value = wire.encode("AuditRecord", wire.decode_as("AuditRecord", value))
        self.ids.append(avro_container.request_id(value))
        self.messages.append(value)
        self.origins.append(origin)
        self.bytes += len(value)
        if self.flush_at is None:
            self.flush_at = self.clock() + self.wait_s

    def __len__(self) -> int:
        return len(self.messages)

    @property
    def room(self) -> int:
        return self.max_rows - len(self.messages)

    def due(self) -> bool:
        if not self.messages and not self.checkpoints:
            return False
        return (
            len(self.messages) >= self.max_rows or self.bytes >= self.max_bytes or self.clock() >= (self.flush_at or 0)
        )

    def wait_ms(self) -> int:
        """How long the next poll may wait: until the batch is due, or ``wait_s`` when it is empty."""
        if self.flush_at is None:
            return int(self.wait_s * 1000)
        return max(0, math.ceil((self.flush_at - self.clock()) * 1000))

    def token(self) -> str:
        """The insert deduplication token: a redelivered batch gets the same token."""
        return avro_container.dedup_token(self.ids)

    def blocks(self, streams: int) -> list[Block]:
        """The batch cut into ``streams`` contiguous blocks of near-equal size (the same cut for the same batch,
        so a redelivered batch gets the same per-block tokens)."""
        n = len(self.messages)
        streams = max(1, min(streams, n))
        bounds = [n * k // streams for k in range(streams + 1)]
        return [Block(self.messages[a:b], self.ids[a:b], self.origins[a:b]) for a, b in itertools.pairwise(bounds)]

    def checkpoint_token(self) -> str:
        """The checkpoints' insert deduplication token: their Kafka positions (a redelivery has the same)."""
        return "cp-" + avro_container.dedup_token(f"{row[-2]}:{row[-1]}" for row in self.checkpoints)

    def fresh(self) -> AuditBatch:
        """An empty batch with the same bounds (the pipelined sink starts one while this one is inserted)."""
        return AuditBatch(self.max_rows, self.wait_s, self.clock, max_bytes=self.max_bytes)

    def clear(self) -> None:
        self.messages, self.ids, self.origins, self.flush_at = [], [], [], None
        self.checkpoints, self.offsets, self.bytes = [], {}, 0


class InFlight:
    """A batch handed to ClickHouse (its insert task) and the offsets to commit once it is acknowledged."""

    __slots__ = ("offsets", "task")

    def __init__(self, task: asyncio.Task[int], offsets: dict[Any, int]) -> None:
        self.task, self.offsets = task, offsets


class Block:
    """Records inserted as one Avro container with one dedup token (a batch, a stream of it, or a bisected half)."""

    __slots__ = ("ids", "messages", "origins")

    def __init__(self, messages: list[bytes], ids: list[str], origins: list[Record | None]) -> None:
        self.messages, self.ids, self.origins = messages, ids, origins

    def __len__(self) -> int:
        return len(self.messages)

    def halves(self) -> tuple[Block, Block]:
        mid = len(self.messages) // 2
        return (
            Block(self.messages[:mid], self.ids[:mid], self.origins[:mid]),
            Block(self.messages[mid:], self.ids[mid:], self.origins[mid:]),
        )

    def prepare(self) -> tuple[bytes, str]:
        """The container and the dedup token (run off the event loop: it touches every message)."""
        return avro_container.build(self.messages), avro_container.dedup_token(self.ids)


class AuditSink:
    def __init__(
        self,
        cfg: Settings,
        worker_id: str,
        sleep: Callable[[float], Any] = asyncio.sleep,
        *,
        insert_streams: int = INSERT_STREAMS,
        max_in_flight: int = MAX_IN_FLIGHT,
        audit_topic: str = config.TOPIC_AUDIT,
        checkpoint_topic: str | None = config.TOPIC_CHECKPOINTS,
        database: str = config.CLICKHOUSE_DATABASE,
        group_id: str | None = None,
        migrate: bool = True,
        role: str = "sink",
    ) -> None:
        """``audit_topic``, ``checkpoint_topic`` (None: none), ``database`` and ``group_id`` (default: the app id +
        :data:`SINK_GROUP_SUFFIX`) are pdx's own unless a benchmark or a test points the sink elsewhere;
        ``migrate``: apply pending migrations to pdx's database before the first insert (what `pdx sink` does);
        ``role``: the ClickHouse login (the ``sink`` login may insert into pdx's database only)."""
        self.settings = cfg
        self.worker_id = worker_id
        self.audit_topic = audit_topic
        self.checkpoint_topic = checkpoint_topic
        self.database = database
        self.group_id = group_id or cfg.app_id + SINK_GROUP_SUFFIX
        self.migrate = migrate
        self.role = role
        self.sleep = sleep
        self.insert_streams = max(1, insert_streams)
        self.max_in_flight = max(1, max_in_flight)
        #: batches handed to ClickHouse and not committed yet, oldest first (see pump)
        self.in_flight: deque[InFlight] = deque()
        #: held while a fetched poll is taken into the batch and while batches are settled: a rebalance
        #: (on_partitions_revoked) must not commit in the middle of either
        self._lock = asyncio.Lock()
        self.batch = AuditBatch(cfg.audit_batch_max, cfg.audit_batch_wait_ms / 1000)
        self.inserted = 0
        #: records fetched from Kafka (inserted, dead-lettered or still in a batch)
        self.fetched = 0
        self.dead_lettered = 0
        self.checkpoints_inserted = 0
        #: inserts retried while ClickHouse was unavailable (streams/metrics.py reads these counters)
        self.retries = 0
        #: (topic, partition) → records not fetched yet, refreshed every few seconds by :meth:`run`
        self.backlog: dict[tuple[str, int], int] = {}

    async def _connect(self) -> Writer:
        from streams.audit.migrate import migrate_schema
        from streams.audit.store import AuditWriter, connect

        delay = 0.5
        while True:
            try:
                client = await asyncio.to_thread(
                    connect, self.settings.clickhouse_url, cfg=self.settings, role=self.role
                )
                if self.migrate:
                    await asyncio.to_thread(
                        migrate_schema, self.settings.clickhouse_url, cfg=self.settings,
                        ttl_days=self.settings.audit_ttl_days, cluster=self.settings.clickhouse_cluster,
                    )
                log.info("audit sink connected to ClickHouse at %s", self.settings.clickhouse_url)
                return AuditWriter(client, database=self.database)
            except Exception as exc:  # noqa: BLE001 - keep trying; decisions do not wait for ClickHouse
                log.warning("ClickHouse not available (%s); retrying in %.1fs", exc, delay)
                await self.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def run(self) -> None:
        from aiokafka import ConsumerRebalanceListener

        topics = [self.audit_topic] + ([self.checkpoint_topic] if self.checkpoint_topic else [])
        consumer = clients.consumer(
            self.settings,
            group_id=self.group_id,
            auto_offset_reset="earliest",
            max_poll_records=self.settings.audit_batch_max,
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
            fetch_max_bytes=FETCH_MAX_BYTES,
            client_id=f"pdx-sink-{self.worker_id}",
        )
        dlq = clients.producer(self.settings)
        sink = self
        writer: Writer | None = None

        class Drain(ConsumerRebalanceListener):  # type: ignore[misc]
            """Before partitions move to another sink: insert what was fetched and commit it, while still ours."""

            async def on_partitions_revoked(self, revoked: Any) -> None:
                if writer is not None:
                    await sink.drain(consumer, writer, dlq)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                return None

        consumer.subscribe(topics, listener=Drain())
        await consumer.start()
        await dlq.start()
        try:
            writer = await self._connect()
            backlog_at = 0.0
            while True:
                await self.pump(consumer, writer, dlq)
                if time.monotonic() >= backlog_at:
                    self.backlog = await consumer_lag(consumer)
                    backlog_at = time.monotonic() + BACKLOG_EVERY_S
        finally:
            writer = None  # stopping: the consumer may revoke its partitions, there is nothing to drain into
            for flight in self.in_flight:  # not committed: redelivered to whoever owns the partitions next
                flight.task.cancel()
            await consumer.stop()
            await dlq.stop()

    async def pump(self, source: OffsetSource, writer: Writer, dlq: DeadLetters) -> bool:
        """One round of the pipelined sink (what :meth:`run` loops on): commit the batches ClickHouse acknowledged,
        poll into the batch, and when it is due hand it to ClickHouse *without waiting* and start the next one.
        Returns whether it handed over a batch.

        Why: fetching and taking a batch is Python's work and inserting it is ClickHouse's, so on two cores the
        sink used to leave one idle at a time. Now up to ``max_in_flight`` batches are being inserted while the
        next is fetched. The guarantee is unchanged: a batch's offsets (per partition, the one after the last
        record it holds) are committed only once ClickHouse acknowledged it *and every batch before it*, so a crash
        at any instant redelivers everything not yet in ClickHouse (and perhaps some that is: the dedup token and
        ReplacingMergeTree make that harmless). Records dead-lettered on the way are covered by their batch's
        offsets and sent before it is handed over."""
        await self._settle(source, keep=self.max_in_flight)  # the ones already acknowledged
        batch = self.batch
        wait_ms = batch.wait_ms()
        if self.in_flight:  # come back soon to commit it once it is acknowledged
            wait_ms = min(wait_ms, SETTLE_POLL_MS)
        fetched = await source.getmany(timeout_ms=wait_ms, max_records=batch.room)
        async with self._lock:
            batch = self.batch  # a rebalance may have drained it while we polled
            for tp, part in fetched.items():
                if part:
                    batch.offsets[tp] = part[-1].offset + 1
            dead_lettered = await self._take(batch, fetched, dlq)
            only_dead_letters = dead_lettered and not len(batch) and not batch.checkpoints
            if not (batch.due() or only_dead_letters):
                return False
            await self._settle_locked(source, keep=self.max_in_flight - 1)  # room for one more
            self._hand_over(writer, dlq, batch)
        return True

    def _hand_over(self, writer: Writer, dlq: DeadLetters, batch: AuditBatch) -> None:
        self.batch = batch.fresh()
        self.in_flight.append(InFlight(asyncio.create_task(self._insert(writer, dlq, batch)), dict(batch.offsets)))

    async def drain(self, source: OffsetSource, writer: Writer, dlq: DeadLetters) -> None:
        """Insert the batch being filled and every batch in flight, and commit them (before a rebalance takes the
        partitions away: committing later would fail, and the next owner would insert them again)."""
        async with self._lock:
            if len(self.batch) or self.batch.checkpoints or self.batch.offsets:
                self._hand_over(writer, dlq, self.batch)
            await self._settle_locked(source, keep=0)

    async def _settle(self, source: OffsetSource, *, keep: int) -> None:
        async with self._lock:
            await self._settle_locked(source, keep=keep)

    async def _settle_locked(self, source: OffsetSource, *, keep: int) -> None:
        """Commit, oldest first, the batches ClickHouse acknowledged; wait for the oldest while more than ``keep``
        are in flight. A batch is committed only after every batch before it (a later one may finish first)."""
        while self.in_flight and (len(self.in_flight) > keep or self.in_flight[0].task.done()):
            head = self.in_flight[0]
            inserted = await head.task  # retries until ClickHouse acknowledged; raises only on a bug or the DLQ
            if head.offsets:
                await source.commit(head.offsets)
            self.in_flight.popleft()
            self.inserted += inserted

    async def _take(self, batch: AuditBatch, fetched: Mapping[Any, Sequence[Record]], dlq: DeadLetters) -> int:
        """Add a poll's records to ``batch``; unusable ones go to the DLQ (returns how many)."""
        self.fetched += sum(len(part) for part in fetched.values())
        dead_lettered = 0
        for m in (m for part in fetched.values() for m in part):
            try:
                if m.topic == self.checkpoint_topic:
                    batch.add_checkpoint(m.value, m)
                else:
                    batch.add(m.value, m)
            except ValueError as exc:  # WireError: keep it, in the DLQ
                dead_lettered += 1
                await self._dead_letter(dlq, m, f"audit sink: {exc}")
        self.dead_lettered += dead_lettered
        return dead_lettered

    async def _insert(self, writer: Writer, dlq: DeadLetters, batch: AuditBatch) -> int:
        """Insert a batch until ClickHouse acknowledged it (its records, then its checkpoints); rows inserted."""
        written = [0]
        if len(batch):
            streams = min(self.insert_streams, max(1, len(batch) // MIN_STREAM_RECORDS))
            written = await asyncio.gather(*(self._write(writer, dlq, block) for block in batch.blocks(streams)))
        if batch.checkpoints:  # after the records: a checkpoint is never in ClickHouse before what it covers
            await self._write_checkpoints(writer, batch)
        return sum(written)

    async def step(self, source: Source, writer: Writer, dlq: DeadLetters) -> bool:
        """One round: poll, add to the batch (unusable records go to the DLQ), and when the batch is due
        insert it until ClickHouse acknowledges (records it rejects go to the DLQ), then commit. Returns whether
        it committed."""
        batch = self.batch
        fetched = await source.getmany(timeout_ms=batch.wait_ms(), max_records=batch.room)
        dead_lettered = await self._take(batch, fetched, dlq)
        if not len(batch) and not batch.checkpoints and dead_lettered:
            await source.commit()  # only dead-lettered records since the last commit: they are safe in the DLQ
            return True
        if not batch.due():
            return False
        written = await self._insert(writer, dlq, batch)
        # Everything fetched so far is in ClickHouse (or the DLQ): only now move the offsets.
        await source.commit()
        self.inserted += written
        batch.clear()
        return True

    async def _write(self, writer: Writer, dlq: DeadLetters, block: Block) -> int:
        """Insert ``block`` until ClickHouse acknowledges it; returns how many records went in.

        While ClickHouse is unavailable the same block is retried with backoff. When it rejects the data, the
        block is split in halves, each inserted (and split again) on its own, so the records it cannot parse end
        up alone and go to the DLQ with its error. Each half has its own dedup token, derived like every token
        from its request ids, so a redelivered batch bisects into the same halves and the same tokens."""
        container, token = await asyncio.to_thread(block.prepare)
        delay = 0.2
        while True:
            try:
                await asyncio.to_thread(writer.insert_avro, container, token=token)
                return len(block)
            except AuditRejectedError as exc:
                if len(block) == 1:
                    self.dead_lettered += 1
                    origin = block.origins[0]
                    log.warning("ClickHouse rejected audit record %s (%s); dead-lettered", block.ids[0], exc)
                    await self._dead_letter(
                        dlq, origin, f"audit sink: ClickHouse rejected the record: {exc}", block.messages[0]
                    )
                    return 0
                log.warning("ClickHouse rejected a block of %d audit records (%s); bisecting", len(block), exc)
                first, second = block.halves()
                return await self._write(writer, dlq, first) + await self._write(writer, dlq, second)
            except Exception as exc:  # noqa: BLE001 - ClickHouse down or overloaded: retry the same block
                self.retries += 1
                log.warning("audit insert of %d records failed (%s); retrying in %.1fs", len(block), exc, delay)
                await self.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _write_checkpoints(self, writer: Writer, batch: AuditBatch) -> None:
        """Insert the batch's checkpoints until ClickHouse acknowledges them (retried with backoff)."""
        rows, token = batch.checkpoints, batch.checkpoint_token()
        delay = 0.2
        while True:
            try:
                await asyncio.to_thread(writer.insert_checkpoints, rows, token=token)
                self.checkpoints_inserted += len(rows)
                return
            except Exception as exc:  # noqa: BLE001 - ClickHouse down or overloaded: retry
                self.retries += 1
                log.warning("inserting %d audit checkpoints failed (%s); retrying in %.1fs", len(rows), exc, delay)
                await self.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def _dead_letter(
        self, dlq: DeadLetters, origin: Record | None, error: str, value: bytes | None = None
    ) -> None:
        """Send the original bytes (``value`` when the record has no Kafka origin) to the DLQ with the error."""
        if origin is None:
            await dlq.send_and_wait(
                config.TOPIC_DLQ, value, headers=dead_letter_headers(error, config.TOPIC_AUDIT, -1, -1, self.worker_id)
            )
            return
        await dlq.send_and_wait(
            config.TOPIC_DLQ,
            origin.value,
            key=origin.key,
            headers=dead_letter_headers(error, origin.topic, origin.partition, origin.offset, self.worker_id),
        )
