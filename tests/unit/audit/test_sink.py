"""The audit sink's batching and commit rules, driven through its Protocols with in-memory fakes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from streams import config
from streams.audit.sink import AuditBatch, AuditSink
from streams.bench import synthetic
from streams.contracts import wire


@dataclass
class Rec:
    value: bytes | None
    offset: int = 0
    topic: str = config.TOPIC_AUDIT
    partition: int = 0
    key: bytes | None = b"k"


@dataclass
class FakeSource:
    polls: list[list[Rec]]
    commits: int = 0
    asked: list[tuple[int, int]] = field(default_factory=list)

    async def getmany(self, *, timeout_ms: int, max_records: int) -> Mapping[Any, Sequence[Rec]]:
        self.asked.append((timeout_ms, max_records))
        return {0: self.polls.pop(0)} if self.polls else {}

    async def commit(self) -> None:
        self.commits += 1


@dataclass
class FakeWriter:
    failures: int = 0
    batches: list[tuple[int, str | None]] = field(default_factory=list)

    def insert_rows(self, rows: Sequence[Sequence[Any]], *, token: str | None = None) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("ClickHouse is down")
        self.batches.append((len(rows), token))


@dataclass
class FakeDlq:
    sent: list[tuple[str, bytes | None, dict[str, bytes]]] = field(default_factory=list)

    async def send_and_wait(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        self.sent.append((topic, value, dict(headers or [])))


def audit_messages(n: int) -> list[Rec]:
    end = datetime.now(UTC)
    return [Rec(wire.encode("AuditRecord", r), offset=i) for i, r in enumerate(synthetic.records(n, end=end))]


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def sink(max_rows: int = 3, wait_ms: int = 1000) -> tuple[AuditSink, Clock]:
    cfg = config.load().replace(audit_batch_max=max_rows, audit_batch_wait_ms=wait_ms)

    async def no_sleep(_s: float) -> None:
        return None

    s = AuditSink(cfg, "sink-test", sleep=no_sleep)
    clock = Clock()
    s.batch.clock = clock
    return s, clock


async def test_a_full_batch_is_inserted_then_committed() -> None:
    s, _ = sink(max_rows=3)
    source, writer, dlq = FakeSource([audit_messages(3)]), FakeWriter(), FakeDlq()
    assert await s.step(source, writer, dlq)
    assert [n for n, _ in writer.batches] == [3] and source.commits == 1
    assert source.asked == [(1000, 3)]


async def test_a_partial_batch_waits_for_its_deadline_and_polls_only_for_the_room_left() -> None:
    s, clock = sink(max_rows=5, wait_ms=1000)
    source, writer, dlq = FakeSource([audit_messages(2), []]), FakeWriter(), FakeDlq()
    assert not await s.step(source, writer, dlq)
    assert writer.batches == [] and source.commits == 0
    clock.t += 0.4
    assert not await s.step(source, writer, dlq)
    assert source.asked[1] == (600, 3)  # wait until the batch is due, for at most the room left
    clock.t += 0.6
    assert await s.step(source, writer, dlq)
    assert [n for n, _ in writer.batches] == [2] and source.commits == 1


async def test_nothing_is_committed_until_clickhouse_acknowledges() -> None:
    s, _ = sink(max_rows=2)
    source, writer, dlq = FakeSource([audit_messages(2)]), FakeWriter(failures=3), FakeDlq()
    assert await s.step(source, writer, dlq)
    assert len(writer.batches) == 1 and source.commits == 1  # retried the same batch 3 times, committed once


async def test_a_redelivered_batch_gets_the_same_dedup_token() -> None:
    msgs = audit_messages(2)
    tokens = []
    for _ in range(2):
        s, _ = sink(max_rows=2)
        writer = FakeWriter()
        await s.step(FakeSource([list(msgs)]), writer, FakeDlq())
        tokens.append(writer.batches[0][1])
    assert tokens[0] == tokens[1] and tokens[0]


async def test_unusable_records_go_to_the_dlq_and_the_rest_is_inserted() -> None:
    s, _ = sink(max_rows=2)
    good = audit_messages(2)
    source = FakeSource([[good[0], Rec(b"garbage", offset=9), good[1]]])
    writer, dlq = FakeWriter(), FakeDlq()
    assert await s.step(source, writer, dlq)
    [(topic, value, headers)] = dlq.sent
    assert (topic, value) == (config.TOPIC_DLQ, b"garbage")
    assert headers["error"].startswith(b"audit sink:") and headers["source_offset"] == b"9"
    assert [n for n, _ in writer.batches] == [2] and s.dead_lettered == 1


async def test_a_poll_of_only_bad_records_is_committed_once_they_are_in_the_dlq() -> None:
    s, _ = sink(max_rows=5)
    source, writer, dlq = FakeSource([[Rec(b"garbage")]]), FakeWriter(), FakeDlq()
    assert await s.step(source, writer, dlq)
    assert writer.batches == [] and len(dlq.sent) == 1 and source.commits == 1


def test_batch_is_never_due_while_empty() -> None:
    batch = AuditBatch(max_rows=10, wait_s=0.0)
    assert not batch.due()
    with pytest.raises(ValueError):
        batch.add(None)
