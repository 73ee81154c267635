"""The audit sink's batching and commit rules, driven through its Protocols with in-memory fakes."""

from __future__ import annotations

import copy
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from streams import config
from streams.audit import avro_container
from streams.audit.sink import AuditBatch, AuditSink
from streams.audit.store import AuditRejectedError, dedup_token
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


def request_ids(container: bytes) -> list[str]:
    return [r["request"]["request_id"] for r in fastavro.reader(io.BytesIO(container))]


@dataclass
class FakeWriter:
    """Counts what it is given; fails ``failures`` times like a down server, and rejects (like ClickHouse
    failing to parse) any container holding a request id in ``poison``."""

    failures: int = 0
    poison: frozenset[str] = frozenset()
    batches: list[tuple[int, str | None]] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    inserted_ids: list[str] = field(default_factory=list)
    checkpoints: list[list[Any]] = field(default_factory=list)
    order: list[str] = field(default_factory=list)

    def insert_avro(self, container: bytes, *, token: str | None = None) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("ClickHouse is down")
        ids = request_ids(container)
        if self.poison.intersection(ids):
            self.rejected.append(len(ids))
            raise AuditRejectedError("Code: 1001. avro::Exception: Cannot have negative length")
        self.batches.append((len(ids), token))
        self.inserted_ids += ids
        self.order.append("records")

    def insert_checkpoints(self, rows: Sequence[Sequence[Any]], *, token: str | None = None) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("ClickHouse is down")
        self.checkpoints += [list(r) for r in rows]
        self.order.append("checkpoints")


@dataclass
class FakeDlq:
    sent: list[tuple[str, bytes | None, dict[str, bytes]]] = field(default_factory=list)

    async def send_and_wait(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        self.sent.append((topic, value, dict(headers or [])))


def audit_messages(n: int, seed: int = 7) -> list[Rec]:
    end = datetime.now(UTC)
    return [
        Rec(wire.encode("AuditRecord", r), offset=i) for i, r in enumerate(synthetic.records(n, seed=seed, end=end))
    ]


def rid(rec: Rec) -> str:
    assert rec.value is not None
    return avro_container.request_id(rec.value)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def sink(max_rows: int = 3, wait_ms: int = 1000, insert_streams: int = 1) -> tuple[AuditSink, Clock]:
    cfg = config.load().replace(audit_batch_max=max_rows, audit_batch_wait_ms=wait_ms)

    async def no_sleep(_s: float) -> None:
        return None

    s = AuditSink(cfg, "sink-test", sleep=no_sleep, insert_streams=insert_streams)
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


async def test_the_dedup_token_is_that_of_the_request_ids_whatever_their_order() -> None:
    msgs = audit_messages(4)
    tokens = []
    for order in (msgs, msgs[::-1]):
        s, _ = sink(max_rows=4)
        writer = FakeWriter()
        await s.step(FakeSource([list(order)]), writer, FakeDlq())
        tokens.append(writer.batches[0][1])
    records = [wire.decode_as("AuditRecord", m.value) for m in msgs if m.value is not None]
    assert tokens[0] == tokens[1] == dedup_token(records)  # the token of the row path, from the raw bytes
    assert tokens[0] != avro_container.dedup_token([rid(m) for m in msgs[:3]])


async def test_a_rejected_block_is_bisected_the_bad_records_dead_lettered_the_rest_inserted() -> None:
    s, _ = sink(max_rows=16)
    msgs = audit_messages(16)
    bad = {rid(msgs[5]), rid(msgs[12])}
    source, writer, dlq = FakeSource([msgs]), FakeWriter(poison=frozenset(bad)), FakeDlq()
    assert await s.step(source, writer, dlq)
    assert source.commits == 1
    assert sorted(writer.inserted_ids) == sorted(rid(m) for m in msgs if rid(m) not in bad)
    assert [v for _t, v, _h in dlq.sent] == [msgs[5].value, msgs[12].value]
    for _topic, _value, headers in dlq.sent:
        assert headers["error"].startswith(b"audit sink: ClickHouse rejected the record:")
    assert [h["source_offset"] for _t, _v, h in dlq.sent] == [b"5", b"12"]
    assert s.inserted == 14 and s.dead_lettered == 2
    # 16 -> 8+8 -> 4+4 per bad half -> 2+2 -> 1+1: a handful of extra inserts, not one per record
    assert len(writer.rejected) == 9 and writer.rejected[0] == 16


async def test_a_redelivered_batch_bisects_into_the_same_blocks_and_tokens() -> None:
    msgs = audit_messages(8)
    seen = []
    for _ in range(2):
        s, _ = sink(max_rows=8)
        writer = FakeWriter(poison=frozenset({rid(msgs[2])}))
        await s.step(FakeSource([list(msgs)]), writer, FakeDlq())
        seen.append(writer.batches)
    assert seen[0] == seen[1] and len(seen[0]) == 3  # [0,1] [3] [4..7] around the bad record 2
    assert all(token for _n, token in seen[0])


async def test_large_batches_go_as_concurrent_inserts_each_with_its_own_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streams.audit.sink.MIN_STREAM_RECORDS", 2)
    s, _ = sink(max_rows=6, insert_streams=2)
    msgs = audit_messages(6)
    writer = FakeWriter()
    assert await s.step(FakeSource([msgs]), writer, FakeDlq())
    assert [n for n, _ in writer.batches] == [3, 3] and sorted(writer.inserted_ids) == sorted(rid(m) for m in msgs)
    assert writer.batches[0][1] == avro_container.dedup_token([rid(m) for m in msgs[:3]]) != writer.batches[1][1]


async def test_a_record_of_another_registered_schema_version_is_re_encoded_to_the_current_one() -> None:
    # a newer writer that added an optional field: its fingerprint differs, its records resolve to ours
    newer = copy.deepcopy(wire.schema("AuditRecord"))
    newer["fields"].append({"name": "shard", "type": ["null", "string"], "default": None})
    wire.register_writer_schema("AuditRecord", newer)
    record = next(synthetic.records(1, seed=3, end=datetime.now(UTC)))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(newer), {**record, "shard": "eu-1"})
    from fastavro.schema import fingerprint, to_parsing_canonical_form

    fp = bytes.fromhex(fingerprint(to_parsing_canonical_form(fastavro.parse_schema(newer)), "CRC-64-AVRO"))
    message = wire.MAGIC + fp + body.getvalue()
    assert not avro_container.is_current(message)
    s, _ = sink(max_rows=2)
    writer, dlq = FakeWriter(), FakeDlq()
    assert await s.step(FakeSource([[Rec(message), *audit_messages(1, seed=4)]]), writer, dlq)
    assert dlq.sent == [] and writer.inserted_ids[0] == record["request"]["request_id"]


async def test_a_record_of_another_schema_goes_to_the_dlq() -> None:
    decision = next(synthetic.records(1, end=datetime.now(UTC)))["decision"]
    s, _ = sink(max_rows=2)
    source, writer, dlq = FakeSource([[Rec(wire.encode("Decision", decision), offset=3)]]), FakeWriter(), FakeDlq()
    assert await s.step(source, writer, dlq)
    assert writer.batches == [] and b"expected a AuditRecord message" in dlq.sent[0][2]["error"]


def checkpoint_message(seq: int) -> bytes:
    return wire.encode("AuditCheckpoint", {
        "chain_id": "w/pdx.requests/0/1-ab", "seq": seq, "head_hash": bytes(32), "final": False, "worker_id": "w",
        "source_topic": config.TOPIC_REQUESTS, "source_partition": 0, "signed_at": datetime.now(UTC),
        "key_id": "", "signature": b"",
    })  # fmt: skip


async def test_checkpoints_are_inserted_after_the_records_of_the_same_batch_then_committed() -> None:
    s, _ = sink(max_rows=3)
    cps = [Rec(checkpoint_message(2), offset=40, topic=config.TOPIC_CHECKPOINTS),
           Rec(b"not a checkpoint", offset=41, topic=config.TOPIC_CHECKPOINTS)]  # fmt: skip
    source, writer, dlq = FakeSource([audit_messages(3) + cps]), FakeWriter(), FakeDlq()
    assert await s.step(source, writer, dlq)
    assert writer.order == ["records", "checkpoints"] and source.commits == 1
    [row] = writer.checkpoints
    assert row[:3] == ["w/pdx.requests/0/1-ab", 2, "00" * 32] and row[-2:] == [0, 40]
    [(_topic, value, headers)] = dlq.sent
    assert value == b"not a checkpoint" and headers["source_topic"] == config.TOPIC_CHECKPOINTS.encode()


async def test_checkpoints_alone_are_inserted_when_due_and_retried_while_clickhouse_is_down() -> None:
    s, clock = sink(max_rows=3, wait_ms=1000)
    cps = [Rec(checkpoint_message(7), offset=3, topic=config.TOPIC_CHECKPOINTS)]
    source, writer, dlq = FakeSource([cps, []]), FakeWriter(failures=2), FakeDlq()
    assert not await s.step(source, writer, dlq)  # not due yet
    clock.t += 1.5
    assert await s.step(source, writer, dlq)
    assert writer.order == ["checkpoints"] and s.checkpoints_inserted == 1 and source.commits == 1
