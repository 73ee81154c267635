"""Audit sink: pdx.audit → ClickHouse, at least once, without loss or duplicates.

Why a plain consumer with manual commits rather than a faust agent: the guarantee we need is exactly
"commit an offset only after ClickHouse acknowledged every record before it". The sink polls a batch (size
and time bounded), inserts it, and only then commits; while ClickHouse is down it retries the same batch with
backoff and never moves on. A crash between insert and commit redelivers the batch; the table
(ReplacingMergeTree by request_id) and the per-batch insert deduplication token make that harmless.
It runs as a task inside each worker (unless PDX_AUDIT_SINK=off), in its own consumer group, so audit
partitions are shared too; `pdx sink` runs it as a process of its own, which on a small machine keeps its
ClickHouse inserts off the decide agent's CPU.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from streams import config as settings
from streams.contracts import wire
from streams.contracts.dlq import dead_letter_headers
from streams.kafka import clients

log = logging.getLogger("pdx.sink")

SINK_GROUP_SUFFIX = "-audit-sink"
RETRY_MAX_S = 10.0


class AuditSink:
    def __init__(self, s: settings.Settings, worker_id: str) -> None:
        self.settings = s
        self.worker_id = worker_id
        self.writer: Any = None

    async def _connect(self) -> None:
        from streams.audit.migrate import migrate
        from streams.audit.store import AuditWriter, connect

        delay = 0.5
        while True:
            try:
                client = await asyncio.to_thread(connect, self.settings.clickhouse_url)
                await asyncio.to_thread(migrate, client, ttl_days=self.settings.audit_ttl_days)
                self.writer = AuditWriter(client)
                log.info("audit sink connected to ClickHouse at %s", self.settings.clickhouse_url)
                return
            except Exception as exc:  # noqa: BLE001 - keep trying; decisions do not wait for ClickHouse
                log.warning("ClickHouse not available (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def run(self) -> None:
        from streams.audit.store import audit_row, dedup_token

        batch_max = self.settings.audit_batch_max
        batch_wait_ms = self.settings.audit_batch_wait_ms
        consumer = clients.consumer(
            self.settings,
            settings.TOPIC_AUDIT,
            group_id=self.settings.app_id + SINK_GROUP_SUFFIX,
            auto_offset_reset="earliest",
            max_poll_records=batch_max,
            client_id=f"pdx-sink-{self.worker_id}",
        )
        dlq = clients.producer(self.settings)
        await consumer.start()
        await dlq.start()
        try:
            await self._connect()
            loop = asyncio.get_running_loop()
            records: list[dict[str, Any]] = []
            rows: list[list[Any]] = []
            flush_at: float | None = None  # a batch is flushed when full or batch_wait_ms after its first record
            while True:
                wait_ms = batch_wait_ms if flush_at is None else max(0, int((flush_at - loop.time()) * 1000))
                batches = await consumer.getmany(timeout_ms=wait_ms, max_records=batch_max - len(rows))
                for m in (m for part in batches.values() for m in part):
                    try:
                        record = wire.decode_as("AuditRecord", m.value)
                        rows.append(audit_row(record))
                        records.append(record)
                    except ValueError as exc:  # WireError / AuditRecordError: keep it, in the DLQ
                        await dlq.send_and_wait(
                            settings.TOPIC_DLQ,
                            m.value,
                            key=m.key,
                            headers=dead_letter_headers(
                                f"audit sink: {exc}", m.topic, m.partition, m.offset, self.worker_id
                            ),
                        )
                if rows and flush_at is None:
                    flush_at = loop.time() + batch_wait_ms / 1000
                if rows and (len(rows) >= batch_max or loop.time() >= (flush_at or 0)):
                    await self._insert_until_acknowledged(rows, dedup_token(records))
                    # Everything fetched so far is in ClickHouse (or the DLQ): only now move the offsets.
                    await consumer.commit()
                    records, rows, flush_at = [], [], None
        finally:
            await consumer.stop()
            await dlq.stop()

    async def _insert_until_acknowledged(self, rows: list[list[Any]], token: str) -> None:
        delay = 0.2
        while True:
            try:
                await asyncio.to_thread(self.writer.insert_rows, rows, token=token)
                return
            except Exception as exc:  # noqa: BLE001 - ClickHouse down or rejecting: retry the same batch
                log.warning("audit insert of %d rows failed (%s); retrying in %.1fs", len(rows), exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
