"""Issue 12, found by testing as an attacker: anyone who could write to the state topics controlled decisions.

Each test writes to a state topic the way an attacker with a plain Kafka client would (no signature, a key the
worker does not trust, or an old signed record replayed) and checks the worker keeps deciding from the last
good, signed state. The same writes made every worker answer allow before state was signed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams import config as settings
from streams.client import PolicyClient
from streams.contracts import signing, wire
from streams.kafka import clients
from streams.kafka.state import latest_record, put_approval, put_identities
from streams.ops import publish_policies, update_identity
from streams.policy import bundle_version

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

FEATURE_FLAGS = {"id": "feature-flags", "type": "config", "environment": "production", "sensitivity": "internal"}
#: a bundle whose only rule allows everything, reason "pwned"
PWNED = json.dumps({"policies": [{"id": "pwned", "description": "x", "controls": [], "rules": [
    {"id": "allow-all", "effect": "allow", "when": {"action": "*"}, "reason": {"code": "pwned", "message": "pwned"}}
]}]})



async def _produce(topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
    producer = await clients.start_producer(settings.load())
    try:
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


def _bundle(content: str, serial: int) -> bytes:
    return wire.encode("PolicyBundle", {"version": bundle_version(content), "created_at": datetime.now(UTC),
                                        "published_by": "attacker", "content": content, "serial": serial})


async def _config_write(client: PolicyClient) -> Any:
    return await client.check("agent-config-bot", "config:write", FEATURE_FLAGS, on_behalf_of=["alice"])


async def test_forged_and_replayed_bundles_are_refused(client: PolicyClient) -> None:
    before = await _config_write(client)
    assert before.decision == "step_up"
    attacker = signing.SigningKey.generate()
    forged = _bundle(PWNED, 2**62)
    await _produce(settings.TOPIC_POLICIES, b"current", forged)  # unsigned
    await _produce(settings.TOPIC_POLICIES, b"current", forged,
                   attacker.headers(signing.POLICY, b"current", forged, 2**40))  # signed by an untrusted key
    # a validly signed but older bundle, replayed: read the one in force, re-publish it, replay the old one
    old = await latest_record(settings.load(), settings.TOPIC_POLICIES, "current")
    assert old is not None and old[0] is not None
    await publish_policies(str(settings.POLICIES_DIR), "tests", cfg=settings.load())
    current = (await _config_write(client)).bundle_version
    await _produce(settings.TOPIC_POLICIES, b"current", old[0], list(old[1]))
    await asyncio.sleep(1.5)
    after = await _config_write(client)
    assert after.decision == "step_up" and "pwned" not in after.reason_codes
    assert after.bundle_version == current


async def test_a_forged_inventory_record_does_not_revive_a_suspended_identity(client: PolicyClient) -> None:
    ident = f"agent-forge-{uuid.uuid4().hex[:8]}"
    record = {"id": ident, "kind": "agent", "owner": "t", "status": "active", "environments": ["staging"],
              "scopes": [], "tags": [], "approved_repositories": [], "risk_tier": "low", "credentials": [],
              "attributes": {}, "updated_at": datetime.now(UTC)}
    cfg = settings.load()
    producer = await clients.start_producer(cfg)
    try:
        await put_identities(producer, [record], signing.signing_key(cfg, signing.INVENTORY))
    finally:
        await producer.stop()
    original = await latest_record(cfg, settings.TOPIC_INVENTORY, ident)
    assert original is not None

    def suspend(i: Any) -> None:
        i.status = "suspended"

    await update_identity(ident, suspend, cfg=settings.load())
    await asyncio.sleep(1.0)
    resource = {"id": "docs", "type": "document"}
    assert "identity_suspended" in (await client.check(ident, "docs:read", resource)).reason_codes
    revived = wire.encode("Identity", record)
    await _produce(settings.TOPIC_INVENTORY, ident.encode(), original[0] or b"", list(original[1]))  # replayed
    await _produce(settings.TOPIC_INVENTORY, ident.encode(), revived)  # unsigned
    await asyncio.sleep(1.5)
    d = await client.check(ident, "docs:read", resource)
    assert d.decision == "deny" and "identity_suspended" in d.reason_codes
    # and an operator cannot be tricked into re-signing the forgery, now the latest record
    with pytest.raises(Exception, match="not trusted"):
        await update_identity(ident, suspend, cfg=settings.load())


async def test_a_forged_approval_does_not_turn_a_step_up_into_an_allow(client: PolicyClient) -> None:
    now = datetime.now(UTC)
    approval = {"approval_id": f"apr-forged-{uuid.uuid4().hex[:6]}", "identity_id": "agent-config-bot",
                "action": "config:write", "resource_id": "feature-flags", "approved_by": "mallory",
                "granted_at": now - timedelta(minutes=1), "expires_at": now + timedelta(hours=1), "revoked": False}
    attacker = signing.SigningKey.generate()
    cfg = settings.load()
    producer = await clients.start_producer(cfg)
    try:
        await put_approval(producer, approval, attacker)  # signed, but by a key no worker trusts
        unsigned = {**approval, "approval_id": approval["approval_id"] + "-u"}
        key = f"agent-config-bot/{unsigned['approval_id']}".encode()
        await producer.send_and_wait(settings.TOPIC_APPROVALS, wire.encode("Approval", unsigned), key=key)
    finally:
        await producer.stop()
    await asyncio.sleep(1.5)
    d = await _config_write(client)
    assert d.decision == "step_up" and d.reason_codes == ["approval_required"]
