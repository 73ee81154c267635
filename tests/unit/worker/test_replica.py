"""CompactedReplica's logic without Kafka: records applied in order, failures skipped, readiness."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from streams import config
from streams.worker.replica import CompactedReplica


@dataclass
class Rec:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=lambda: [("pdx-sig", b"s")])


def _replica(applied: list[tuple[bytes | None, bytes | None]]) -> CompactedReplica:
    def apply(key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None) -> None:
        if value == b"boom":
            raise RuntimeError("cannot apply")
        assert headers == [("pdx-sig", b"s")]  # the signature headers reach the applier
        applied.append((key, value))

    return CompactedReplica(config.load(), config.TOPIC_INVENTORY, apply, "test")


def test_records_are_applied_in_order_and_a_failing_one_is_skipped() -> None:
    applied: list[tuple[bytes | None, bytes | None]] = []
    replica = _replica(applied)
    replica.apply_records([Rec(0, 0, b"a", b"1"), Rec(0, 1, b"b", b"boom"), Rec(0, 2, b"a", None)])
    assert applied == [(b"a", b"1"), (b"a", None)]
    assert (replica.records, replica.failed) == (3, 1)


def test_ready_only_once_every_partition_reached_its_end_offset_at_start() -> None:
    replica = _replica([])
    replica.track({0: 5, 1: 0, 2: 3})
    assert not replica.ready.is_set()
    replica.observe({0: 5, 1: 0, 2: 1})
    assert not replica.ready.is_set()
    replica.observe({0: 5, 1: 0, 2: 3})
    assert replica.ready.is_set()


def test_an_empty_topic_is_ready_at_once() -> None:
    replica = _replica([])
    replica.track({0: 0, 1: 0})
    assert replica.ready.is_set()
