"""State changes an operator makes: publish policies, load and change inventory, grant approvals.

The CLI commands, the demo and the benchmarks call these; each produces to the state topics through
streams/kafka/state.py with a producer from the one client factory.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streams import config
from streams.config import Settings
from streams.contracts import wire
from streams.errors import UserError
from streams.kafka import clients
from streams.kafka.state import latest_value, publish_bundle, put_approval, put_identities
from streams.model import Identity
from streams.model.inventory_file import read_inventory
from streams.policy import bundle_version, load_policy_dir


async def publish_policies(directory: str | Path, published_by: str, cfg: Settings | None = None) -> str:
    """Validate, bundle and publish a policy directory to the policies topic; returns the bundle version."""
    cfg = cfg or config.load()
    content = load_policy_dir(directory).to_bundle_content()
    version = bundle_version(content)
    producer = await clients.start_producer(cfg)
    try:
        await publish_bundle(producer, content, version, published_by)
    finally:
        await producer.stop()
    return version


async def load_inventory(path: str | Path, show_progress: bool = True, cfg: Settings | None = None) -> int:
    """Produce every identity of a YAML/CSV inventory file; returns how many."""
    from rich.progress import Progress

    cfg = cfg or config.load()
    identities = read_inventory(path)
    producer = await clients.start_producer(cfg, linger_ms=20)
    try:
        chunk = 1000
        with Progress(transient=True, disable=not show_progress or not sys.stderr.isatty()) as progress:
            task = progress.add_task(f"loading {path}", total=len(identities))
            for i in range(0, len(identities), chunk):
                await put_identities(producer, [x.to_dict() for x in identities[i : i + chunk]])
                progress.advance(task, min(chunk, len(identities) - i))
    finally:
        await producer.stop()
    return len(identities)


async def update_identity(
    identity_id: str, change: Callable[[Identity], None], cfg: Settings | None = None
) -> Identity:
    """Read an identity's latest record from the compacted inventory topic, change it, produce it back."""
    cfg = cfg or config.load()
    raw = await latest_value(cfg, config.TOPIC_INVENTORY, identity_id)
    if raw is None:
        raise UserError(f"identity {identity_id!r} is not in the inventory ({config.TOPIC_INVENTORY})")
    identity = Identity.from_dict(wire.decode_as("Identity", raw))
    change(identity)
    identity.updated_at = datetime.now(UTC)
    producer = await clients.start_producer(cfg)
    try:
        await put_identities(producer, [identity.to_dict()])
    finally:
        await producer.stop()
    return identity


async def grant_approval(
    identity: str,
    action: str,
    resource: str,
    ttl: timedelta,
    by: str,
    approval_id: str | None = None,
    cfg: Settings | None = None,
) -> dict[str, Any]:
    """Produce a time-bounded pre-approval; returns it (``approval_id`` generated when not given)."""
    cfg = cfg or config.load()
    now = datetime.now(UTC)
    approval = {
        "approval_id": approval_id or f"apr-{uuid.uuid4().hex[:12]}",
        "identity_id": identity,
        "action": action,
        "resource_id": resource,
        "approved_by": by,
        "granted_at": now,
        "expires_at": now + ttl,
        "revoked": False,
    }
    producer = await clients.start_producer(cfg)
    try:
        await put_approval(producer, approval)
    finally:
        await producer.stop()
    return approval
