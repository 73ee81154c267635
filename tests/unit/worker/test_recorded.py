"""Redelivery: a request decided (audit record durable) but not committed is answered again with the decision
recorded in pdx.audit, never decided a second time, and not audited twice."""

from __future__ import annotations

from typing import Any

from streams import config
from streams.contracts import wire
from streams.worker.decide import Decider
from streams.worker.loop import ReplyRoutes, RequestLoop
from streams.worker.recorded import RecordedDecisions, consumer_commits, format_mark, parse_mark
from streams.worker.state import WorkerState
from tests.unit.worker.conftest import FakeMetadata, FakeProducer, apply_identity
from tests.unit.worker.test_decider import encoded, incoming, reason


def worker(state: WorkerState, recorded: RecordedDecisions | None = None) -> tuple[RequestLoop, FakeProducer]:
    producer = FakeProducer()
    routes = ReplyRoutes(config.Settings.from_env({}), FakeMetadata())
    decider = Decider(state, "w-test", routes, audit_on_request_partition=True, recorded=recorded)
    return RequestLoop(decider, producer), producer


def suspend(state: WorkerState, demo_identities: Any, identity: str = "agent-config-bot") -> None:
    suspended = {**demo_identities[identity].to_dict(), "status": "suspended"}
    apply_identity(state, identity.encode(), wire.encode("Identity", suspended))


async def test_a_redelivered_batch_repeats_its_recorded_decisions_and_is_audited_once(
    loaded_state: WorkerState, demo_identities: Any
) -> None:
    batch = [incoming(encoded(request_id=f"r{i}"), offset=10 + i) for i in range(3)]
    first, first_out = worker(loaded_state)
    await first.process(batch)
    assert [reason(first_out, i) for i in range(3)] == [("allow", "config_read")] * 3
    # the first worker dies before committing; meanwhile the identity is suspended
    suspend(loaded_state, demo_identities)
    recorded = RecordedDecisions()
    kept = recorded.add_audit_records(1, 10, [r.value for r in first_out.on(config.TOPIC_AUDIT)])
    assert kept == 3
    second, second_out = worker(loaded_state, recorded)
    await second.process(batch)
    assert [r.value for r in second_out.on(config.TOPIC_DECISIONS)] == [
        r.value for r in first_out.on(config.TOPIC_DECISIONS)
    ]
    assert [r.partition for r in second_out.on(config.TOPIC_DECISIONS)] == [3, 3, 3]
    assert second_out.on(config.TOPIC_AUDIT) == []  # audited once, by the first worker
    assert len(recorded) == 0
    # a request after the redelivered ones is decided now (and sees the suspension)
    await second.process([incoming(encoded(request_id="r9"), offset=13)])
    assert reason(second_out, 3) == ("deny", "identity_suspended")
    assert [r.key for r in second_out.on(config.TOPIC_AUDIT)] == [b"r9"]


async def test_a_recorded_decision_is_only_reused_for_the_same_request(loaded_state: WorkerState) -> None:
    """The offset now holds another request (e.g. the topic was recreated): it is decided on its own."""
    first, first_out = worker(loaded_state)
    await first.process([incoming(encoded(request_id="old", action="config:write"), offset=5)])
    assert reason(first_out) == ("step_up", "approval_required")
    recorded = RecordedDecisions()
    recorded.add_audit_records(1, 0, [r.value for r in first_out.on(config.TOPIC_AUDIT)])
    second, second_out = worker(loaded_state, recorded)
    await second.process([incoming(encoded(request_id="new"), offset=5)])
    assert reason(second_out) == ("allow", "config_read")
    assert [r.key for r in second_out.on(config.TOPIC_AUDIT)] == [b"new"]


async def test_only_uncommitted_requests_of_the_partition_are_kept(loaded_state: WorkerState) -> None:
    first, first_out = worker(loaded_state)
    await first.process([incoming(encoded(request_id=f"r{i}"), offset=i) for i in range(5)])
    values = [r.value for r in first_out.on(config.TOPIC_AUDIT)]
    recorded = RecordedDecisions()
    assert recorded.add_audit_records(1, 3, values) == 2  # offsets 3 and 4
    assert recorded.add_audit_records(2, 0, values) == 0  # about another partition
    assert recorded.add_audit_records(1, 0, [b"\x00not avro"]) == 0
    recorded.forget([1])
    assert len(recorded) == 0


def test_recorded_decisions_are_bounded() -> None:
    recorded = RecordedDecisions(max_entries=2)
    assert recorded.add(0, 1, "a", b"x") and recorded.add(0, 2, "b", b"y")
    assert not recorded.add(0, 3, "c", b"z")
    assert recorded.take(0, 1, "a") == b"x" and recorded.take(0, 1, "a") is None
    assert recorded.take(0, 2, "other") is None


async def test_the_loop_tracks_the_audit_mark_its_commits_carry(loaded_state: WorkerState) -> None:
    loop, _ = worker(loaded_state)
    await loop.process([incoming(encoded(request_id=f"r{i}"), offset=i) for i in range(4)])
    assert loop.audit_end == {1: 4}  # the next audit record in partition 1 goes to offset 4


def test_marks_round_trip_and_bad_metadata_is_no_mark() -> None:
    assert parse_mark(format_mark(42)) == 42
    assert format_mark(None) == "" and parse_mark("") is None
    assert parse_mark("audit=x") is None and parse_mark("audit=-3") is None and parse_mark("other") is None

    class OM:
        def __init__(self, offset: int, metadata: str) -> None:
            self.offset, self.metadata = offset, metadata

    class TP:
        def __init__(self, partition: int) -> None:
            self.partition = partition

    assert consumer_commits({TP(0): OM(7, "audit=3"), TP(1): OM(-1, ""), TP(2): None}) == {
        0: (7, 3), 1: (None, None), 2: (None, None)
    }
