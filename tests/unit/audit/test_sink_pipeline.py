"""The pipelined audit sink (AuditSink.pump / drain): the next batch is fetched while the previous one is inserted,
and offsets are still committed only after ClickHouse acknowledged, oldest batch first."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams import config
from streams.audit.sink import AuditBatch, AuditSink
from tests.unit.audit.test_sink import FakeDlq, Rec, audit_messages, request_ids


@dataclass
class OffsetSource:
    """Polls from a list (partition → records per poll); records explicit commits."""

    polls: list[dict[str, list[Rec]]]
    commits: list[dict[Any, int]] = field(default_factory=list)
    asked: int = 0

    async def getmany(self, *, timeout_ms: int, max_records: int) -> Mapping[Any, Sequence[Rec]]:
        self.asked += 1
        await asyncio.sleep(0)
        return self.polls.pop(0) if self.polls else {}

    async def commit(self, offsets: Mapping[Any, int] | None = None) -> None:
        assert offsets is not None, "the pipelined sink commits explicit offsets, never the consumer's position"
        self.commits.append(dict(offsets))


@dataclass
class GatedWriter:
    """An insert waits until its gate (by call order) is opened, like ClickHouse taking its time."""

    gates: list[threading.Event] = field(default_factory=list)
    done: list[list[str]] = field(default_factory=list)
    calls: int = 0

    def gate(self, i: int) -> threading.Event:
        while len(self.gates) <= i:
            self.gates.append(threading.Event())
        return self.gates[i]

    def insert_avro(self, container: bytes, *, token: str | None = None) -> None:
        i, self.calls = self.calls, self.calls + 1
        assert self.gate(i).wait(5), "test gate never opened"
        self.done.append(request_ids(container))

    def insert_checkpoints(self, rows: Sequence[Sequence[Any]], *, token: str | None = None) -> None:
        return None


def pipelined(max_rows: int, max_in_flight: int = 2) -> AuditSink:
    cfg = config.load().replace(audit_batch_max=max_rows, audit_batch_wait_ms=60_000)
    return AuditSink(cfg, "sink-test", insert_streams=1, max_in_flight=max_in_flight)


def at(recs: list[Rec], partition: int, first: int) -> list[Rec]:
    return [Rec(r.value, offset=first + i, partition=partition) for i, r in enumerate(recs)]


async def until(cond: Any, what: str) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_next_batch_is_fetched_while_one_is_inserted_and_commits_follow_acknowledgement_in_order() -> None:
    msgs = audit_messages(6)
    polls = [{"p0": at(msgs[0:2], 0, 0), "p1": at(msgs[2:3], 1, 10)}, {"p0": at(msgs[3:6], 0, 2)}]
    source, writer, dlq = OffsetSource(polls), GatedWriter(), FakeDlq()
    s = pipelined(max_rows=3)
    assert await s.pump(source, writer, dlq)  # batch 1 handed over, not waited for
    assert await s.pump(source, writer, dlq)  # batch 2 fetched and handed over while batch 1 is inserting
    await until(lambda: writer.calls == 2, "both inserts running")
    assert source.commits == [] and s.inserted == 0 and len(s.in_flight) == 2
    writer.gate(1).set()  # the second batch is acknowledged first: it must not be committed before the first
    await until(lambda: len(writer.done) == 1, "batch 2 acknowledged")
    await s.pump(source, writer, dlq)
    assert source.commits == []
    writer.gate(0).set()
    await until(lambda: s.in_flight[0].task.done(), "batch 1 acknowledged")
    await s.pump(source, writer, dlq)
    assert source.commits == [{"p0": 2, "p1": 11}, {"p0": 5}] and s.inserted == 6 and not s.in_flight


async def test_no_more_than_max_in_flight_batches_wait_for_clickhouse() -> None:
    msgs = audit_messages(4)
    polls = [{"p": at(msgs[i : i + 2], 0, i)} for i in (0, 2)]
    source, writer, dlq = OffsetSource(polls), GatedWriter(), FakeDlq()
    s = pipelined(max_rows=2, max_in_flight=1)
    assert await s.pump(source, writer, dlq)
    second = asyncio.create_task(s.pump(source, writer, dlq))
    await until(lambda: source.asked == 2, "the second poll")
    await asyncio.sleep(0.02)
    assert not second.done()  # full: it waits for the first insert before handing over another batch
    writer.gate(0).set()
    writer.gate(1).set()
    assert await second
    assert source.commits[0] == {"p": 2}


async def test_drain_inserts_the_partial_batch_and_commits_everything() -> None:
    msgs = audit_messages(3)
    source, writer, dlq = OffsetSource([{"p": at(msgs[:2], 0, 0)}, {"p": at(msgs[2:], 0, 2)}]), GatedWriter(), FakeDlq()
    writer.gate(0).set()
    writer.gate(1).set()
    s = pipelined(max_rows=2)
    assert await s.pump(source, writer, dlq)
    assert not await s.pump(source, writer, dlq)  # one record waits for its batch to fill
    await s.drain(source, writer, dlq)  # e.g. partitions revoked
    assert source.commits == [{"p": 2}, {"p": 3}] and s.inserted == 3 and not len(s.batch)


async def test_a_poll_of_only_bad_records_is_committed_in_order_after_the_batches_before_it() -> None:
    msgs = audit_messages(2)
    polls = [{"p": at(msgs, 0, 0)}, {"p": [Rec(b"garbage", offset=2)]}]
    source, writer, dlq = OffsetSource(polls), GatedWriter(), FakeDlq()
    s = pipelined(max_rows=2)
    assert await s.pump(source, writer, dlq)
    assert await s.pump(source, writer, dlq)  # nothing to insert, but its offset is committed after batch 1's
    assert source.commits == [] and len(dlq.sent) == 1
    writer.gate(0).set()
    await s.drain(source, writer, dlq)
    assert source.commits == [{"p": 2}, {"p": 3}] and writer.calls == 1


def test_a_batch_is_due_at_its_byte_bound() -> None:
    msgs = audit_messages(3)
    sizes = [len(m.value or b"") for m in msgs]
    batch = AuditBatch(max_rows=100, wait_s=60.0, max_bytes=sizes[0] + sizes[1])
    batch.add(msgs[0].value)
    assert not batch.due()
    batch.add(msgs[1].value)
    assert batch.due() and batch.bytes == sizes[0] + sizes[1]
    assert batch.fresh().max_bytes == batch.max_bytes and not batch.fresh().bytes
