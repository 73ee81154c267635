"""Small in-memory fakes of pdx's own interfaces for the worker's unit tests (no Kafka here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from streams import config
from streams.contracts import wire
from streams.model import Identity
from streams.model.inventory_file import read_inventory
from streams.policy import bundle_version, load_policy_dir
from streams.worker.state import WorkerState


@dataclass
class Produced:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    headers: list[tuple[str, bytes]]


@dataclass
class ListProducer:
    """The Decider's Producer Protocol, recording what would have gone to Kafka."""

    records: list[Produced] = field(default_factory=list)

    async def produce(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None, headers: Any = ()
    ) -> None:
        self.records.append(Produced(topic, key, value, partition, list(headers or ())))

    def on(self, topic: str) -> list[Produced]:
        return [r for r in self.records if r.topic == topic]


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
