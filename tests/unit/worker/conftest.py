"""Small in-memory fakes of pdx's own interfaces for the worker's unit tests (no Kafka here)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams import config
from streams.contracts import signing, wire
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


#: The unit tests' own signing keys, one per kind, and a trust list holding them.
TEST_KEYS = {kind: signing.SigningKey.generate() for kind in signing.KINDS}
TEST_TRUST = signing.TrustedKeys({kind: [key.public] for kind, key in TEST_KEYS.items()})
_signed_at = itertools.count(1_700_000_000_000)


def signed(kind: str, key: bytes | None, value: bytes | None, at_ms: int | None = None) -> list[tuple[str, bytes]]:
    """Headers signing a state record with the test key of ``kind`` (each call signs later than the last)."""
    return TEST_KEYS[kind].headers(kind, key, value, next(_signed_at) if at_ms is None else at_ms)


def trusted_state() -> WorkerState:
    return WorkerState(TEST_TRUST)


def apply_identity(state: WorkerState, key: bytes | None, value: bytes | None) -> None:
    state.apply_identity(key, value, signed(signing.INVENTORY, key, value))


def apply_approval(state: WorkerState, key: bytes | None, value: bytes | None) -> None:
    state.apply_approval(key, value, signed(signing.APPROVAL, key, value))


def apply_delegation(state: WorkerState, key: bytes | None, value: bytes | None) -> None:
    state.apply_delegation(key, value, signed(signing.DELEGATION, key, value))


def delegation_message(grant_id: str = "dlg-alice-bot", delegator: str = "alice", delegate: str = "agent-config-bot",
                       action: str = "config:*", resource: str = "*", ttl: timedelta = timedelta(hours=8)) -> bytes:
    now = datetime.now(UTC)
    return wire.encode("DelegationGrant", {
        "grant_id": grant_id, "delegator": delegator, "delegate": delegate, "action": action,
        "resource_id": resource, "granted_by": "test", "granted_at": now - timedelta(minutes=1),
        "expires_at": now + ttl,
    })


def apply_bundle(state: WorkerState, value: bytes | None) -> None:
    state.apply_bundle(b"current", value, signed(signing.POLICY, b"current", value))


def bundle_message(content: str, version: str | None = None, serial: int = 1) -> bytes:
    return wire.encode(
        "PolicyBundle",
        {
            "version": bundle_version(content) if version is None else version,
            "created_at": datetime.now(UTC),
            "published_by": "tests",
            "content": content,
            "serial": serial,
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
    """A WorkerState fed the shipped policies and the demo inventory, as the replicas would feed it, and alice's
    signed delegation grant to agent-config-bot (config:*), as the demo records it."""
    state = trusted_state()
    apply_bundle(state, shipped_bundle)
    for ident in demo_identities.values():
        apply_identity(state, ident.id.encode(), identity_message(ident))
    apply_delegation(state, b"dlg-alice-bot", delegation_message())
    return state
