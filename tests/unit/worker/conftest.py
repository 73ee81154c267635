"""Small in-memory fakes of pdx's own interfaces for the worker's unit tests (no Kafka here)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from streams import config
from streams.contracts import wire
from streams.model import Identity
from streams.model.inventory_file import read_inventory
from streams.policy import bundle_version, load_policy_dir
from streams.worker.decide import Out
from streams.worker.state import WorkerState


@dataclass
class Produced:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    headers: list[tuple[str, bytes]]


@dataclass
class FakeProducer:
    """The request loop's RecordSink: records every send, and acknowledges it unless told to fail.

    ``fail(topic, value)`` decides a record's fate: None acknowledges, anything else fails it. ``events``
    logs sends and acknowledgements in order, so tests can check that a reply was sent only after its audit
    record was acknowledged.
    """

    fail: Any = None
    records: list[Produced] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    ends: dict[tuple[str, int | None], int] = field(default_factory=dict)  # next offset per topic-partition

    async def produce_all(self, records: Sequence[Out]) -> list[int | None]:
        ok: list[int | None] = []
        for out in records:
            self.events.append(f"send {out.topic} {out.key!r}")
            failed = self.fail(out.topic, out.value) if self.fail else None
            offset = None
            if failed is None:
                self.records.append(Produced(out.topic, out.key, out.value, out.partition, list(out.headers)))
                offset = self.ends.get((out.topic, out.partition), 0)
                self.ends[(out.topic, out.partition)] = offset + 1
            ok.append(offset)
        await asyncio.sleep(0)  # the acknowledgements arrive later
        self.events += [
            f"acked {out.topic} {out.key!r}" for out, done in zip(records, ok, strict=True) if done is not None
        ]
        return ok

    def on(self, topic: str) -> list[Produced]:
        return [r for r in self.records if r.topic == topic]


@dataclass
class FakeMetadata:
    """Cached cluster metadata: topic -> partitions."""

    topics: dict[str, set[int]] = field(default_factory=lambda: {config.TOPIC_DECISIONS: set(range(8))})

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return self.topics.get(topic)


def bundle_message(content: str, version: str | None = None) -> bytes:
    return wire.encode(
        "PolicyBundle",
        {
            "version": bundle_version(content) if version is None else version,
            "created_at": datetime.now(UTC),
            "published_by": "tests",
            "content": content,
        },
    )


def identity_message(identity: Identity) -> bytes:
    return wire.encode("Identity", identity.to_dict())


@pytest.fixture(scope="session")
def shipped_bundle() -> bytes:
    return bundle_message(load_policy_dir(config.POLICIES_DIR).to_bundle_content())


@pytest.fixture(scope="session")
def demo_identities() -> dict[str, Identity]:
    return {i.id: i for i in read_inventory(config.REPO_ROOT / "examples" / "inventory.yaml")}


@pytest.fixture
def loaded_state(shipped_bundle: bytes, demo_identities: dict[str, Identity]) -> WorkerState:
    """A WorkerState fed the shipped policies and the demo inventory, as the replicas would feed it."""
    state = WorkerState()
    state.apply_bundle(b"current", shipped_bundle)
    for ident in demo_identities.values():
        state.apply_identity(ident.id.encode(), identity_message(ident))
    return state
