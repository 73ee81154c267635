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
from streams.contracts import signing, wire
from streams.errors import UserError
from streams.kafka import clients
from streams.kafka.state import BUNDLE_KEY, latest_record, next_serial, publish_bundle, put_approval, put_identities
from streams.model import Identity
from streams.model.inventory_file import read_inventory
from streams.policy import bundle_version, load_policy_dir

KeyPath = str | Path | None


async def publish_policies(
    directory: str | Path, published_by: str, *, cfg: Settings, key: KeyPath = None
) -> str:
    """Validate, bundle, sign and publish a policy directory to the policies topic; returns the bundle version.

    The serial is above that of the bundle in force (when it is signed by a trusted policy key: a forged bundle
    with a huge serial must not push ours aside) and at least the time in ms."""
    signer = signing.signing_key(cfg, signing.POLICY, key)
    content = load_policy_dir(directory).to_bundle_content()
    version = bundle_version(content)
    previous = await _trusted_latest(cfg, signing.POLICY, config.TOPIC_POLICIES, BUNDLE_KEY.decode())
    serial = next_serial(int(wire.decode_as("PolicyBundle", previous).get("serial") or 0) if previous else None)
    producer = await clients.start_producer(cfg)
    try:
        await publish_bundle(producer, content, version, published_by, signer, serial)
    finally:
        await producer.stop()
    return version


async def _trusted_latest(cfg: Settings, kind: str, topic: str, key: str) -> bytes | None:
    """The latest value for ``key`` if it is signed by a key trusted for ``kind``, else None."""
    found = await latest_record(cfg, topic, key)
    if found is None or found[0] is None:
        return None
    try:
        signing.trusted_keys(cfg).verify(kind, key.encode(), found[0], found[1])
    except signing.SignatureError:
        return None
    return found[0]


async def load_inventory(
    path: str | Path, show_progress: bool = True, *, cfg: Settings, key: KeyPath = None
) -> int:
    """Produce every identity of a YAML/CSV inventory file, signed; returns how many."""
    from rich.progress import Progress

    signer = signing.signing_key(cfg, signing.INVENTORY, key)
    identities = read_inventory(path)
    producer = await clients.start_producer(cfg, linger_ms=20)
    try:
        chunk = 1000
        with Progress(transient=True, disable=not show_progress or not sys.stderr.isatty()) as progress:
            task = progress.add_task(f"loading {path}", total=len(identities))
            for i in range(0, len(identities), chunk):
                await put_identities(producer, [x.to_dict() for x in identities[i : i + chunk]], signer)
                progress.advance(task, min(chunk, len(identities) - i))
    finally:
        await producer.stop()
    return len(identities)


async def update_identity(
    identity_id: str, change: Callable[[Identity], None], *, cfg: Settings, key: KeyPath = None
) -> Identity:
    """Read an identity's latest record from the compacted inventory topic, change it, sign it, produce it back.

    The record read must itself be signed by a trusted inventory key: re-signing a forged record would make
    the forgery trusted."""
    signer = signing.signing_key(cfg, signing.INVENTORY, key)
    found = await latest_record(cfg, config.TOPIC_INVENTORY, identity_id)
    raw, headers = found if found is not None else (None, [])
    if raw is None:
        raise UserError(f"identity {identity_id!r} is not in the inventory ({config.TOPIC_INVENTORY})")
    try:
        signing.trusted_keys(cfg).verify(signing.INVENTORY, identity_id.encode(), raw, headers)
    except signing.SignatureError as exc:
        raise UserError(
            f"the latest inventory record of {identity_id!r} is not trusted ({exc}): reload the identity from "
            "the inventory source (`pdx inventory load FILE`) instead of changing it"
        ) from None
    identity = Identity.from_dict(wire.decode_as("Identity", raw))
    change(identity)
    identity.updated_at = datetime.now(UTC)
    producer = await clients.start_producer(cfg)
    try:
        await put_identities(producer, [identity.to_dict()], signer)
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
    *,
    cfg: Settings,
    key: KeyPath = None,
) -> dict[str, Any]:
    """Produce a signed, time-bounded pre-approval; returns it (``approval_id`` generated when not given)."""
    signer = signing.signing_key(cfg, signing.APPROVAL, key)
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
        await put_approval(producer, approval, signer)
    finally:
        await producer.stop()
    return approval
