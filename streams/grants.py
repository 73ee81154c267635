"""State changes for delegation and approval: record and revoke delegation grants (pdx.delegations); list, follow,
grant and deny the approval requests step_up decisions open (pdx.approval-requests).

The CLI (`pdx delegations`, `pdx approvals`), the demo and the tests call these; records are signed here with
the operator's key (streams/contracts/signing.py) and workers apply nothing else. Settings come from the caller.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import TopicPartition

from streams import config
from streams.config import Settings
from streams.contracts import signing, wire
from streams.errors import UserError, quote
from streams.kafka import clients
from streams.kafka.approvals import Found, epoch_ms, read_approval_request, seek_to_time
from streams.kafka.state import (
    latest_record,
    latest_records,
    partition_count,
    put_approval,
    wait_for_partitions,
)
from streams.model import ReasonCode
from streams.model import approval_request as apq
from streams.model.delegation import DelegationGrant

KeyPath = str | None


async def _send(cfg: Settings, topic: str, key: bytes, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
    producer = await clients.start_producer(cfg)
    try:
        await partition_count(producer, topic)  # a UserError naming `pdx topics create` if missing
        await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


# ---- delegation grants ---------------------------------------------------------------------------------------


async def grant_delegation(
    cfg: Settings, delegator: str, delegate: str, action: str, resource: str, ttl: timedelta, by: str,
    grant_id: str | None = None, key: KeyPath = None,
) -> DelegationGrant:
    """Record a signed grant: ``delegate`` may act for ``delegator`` on matching actions and resources."""
    if delegator == delegate:
        raise UserError(f"--delegator and --delegate are both {quote(delegate, 80)}: nobody delegates to themselves")
    signer = signing.signing_key(cfg, signing.DELEGATION, key)
    now = datetime.now(UTC)
    grant = DelegationGrant(grant_id or f"dlg-{uuid.uuid4().hex[:12]}", delegator, delegate, action, resource, by,
                            now, now + ttl)
    value = wire.encode("DelegationGrant", grant.to_dict())
    kafka_key = grant.grant_id.encode()
    await _send(cfg, config.TOPIC_DELEGATIONS, kafka_key, value,
                signer.headers(signing.DELEGATION, kafka_key, value, epoch_ms(now)))
    return DelegationGrant.from_dict(grant.to_dict(), signer.key_id)


async def record_grants(cfg: Settings, grants: list[dict[str, str]], by: str) -> list[DelegationGrant]:
    """Record a list of grants given as ``{grant_id, delegator, delegate, action, resource_id, ttl}`` (the demo's
    scenarios.yaml ``delegations:``; ``ttl`` like ``8h``)."""
    from streams.model.durations import parse_duration_s

    return [await grant_delegation(cfg, g["delegator"], g["delegate"], g["action"], g["resource_id"],
                                   timedelta(seconds=parse_duration_s(g["ttl"])), by, g["grant_id"])
            for g in grants]


async def revoke_delegation(cfg: Settings, grant_id: str, key: KeyPath = None) -> None:
    """A signed tombstone: every worker stops relying on the grant within one fetch."""
    signer = signing.signing_key(cfg, signing.DELEGATION, key)
    known = {g.grant_id for g in await list_delegations(cfg)}
    if grant_id not in known:
        raise UserError(f"delegation grant {quote(grant_id, 80)} is not on {config.TOPIC_DELEGATIONS}: "
                        "`pdx delegations list` shows the grants in force")
    kafka_key = grant_id.encode()
    await _send(cfg, config.TOPIC_DELEGATIONS, kafka_key, None,
                signer.headers(signing.DELEGATION, kafka_key, None, epoch_ms(datetime.now(UTC))))


async def list_delegations(cfg: Settings) -> list[DelegationGrant]:
    """The grants on the topic signed by a trusted delegation key (revoked ones are gone; expired ones are
    listed, see ``expires_at``)."""
    trust = signing.trusted_keys(cfg)
    out: list[DelegationGrant] = []
    for kafka_key, (value, headers) in (await latest_records(cfg, config.TOPIC_DELEGATIONS)).items():
        if value is None:
            continue
        try:
            trust.verify(signing.DELEGATION, kafka_key, value, headers)
            out.append(DelegationGrant.from_dict(wire.decode_as("DelegationGrant", value),
                                                 signing.header_value(headers, signing.HEADER_KEY_ID)))
        except (signing.SignatureError, ValueError):
            continue  # what workers refuse is not listed as in force
    return sorted(out, key=lambda g: (g.delegator, g.delegate, g.granted_at))


# ---- approval requests -------------------------------------------------------------------------------------------


async def approval_requests(cfg: Settings) -> list[Found]:
    """Every approval request on the topic, latest state each, oldest first."""
    trust = signing.trusted_keys(cfg)
    out: list[Found] = []
    for kafka_key, (value, headers) in (await latest_records(cfg, config.TOPIC_APPROVAL_REQUESTS)).items():
        if value is None:
            continue
        try:
            out.append(read_approval_request(trust, kafka_key, value, headers))
        except ValueError:
            continue
    return sorted(out, key=lambda f: f.record.opened_at)


async def pending(cfg: Settings, now: datetime | None = None) -> list[apq.ApprovalRequest]:
    """The open, unexpired approval requests a trusted worker opened."""
    now = now or datetime.now(UTC)
    return [f.record for f in await approval_requests(cfg) if f.trusted and f.record.state(now) == apq.OPEN]


async def _one(cfg: Settings, approval_request_id: str) -> Found:
    found = await latest_record(cfg, config.TOPIC_APPROVAL_REQUESTS, approval_request_id)
    if found is None or found[0] is None:
        raise UserError(f"approval request {quote(approval_request_id, 80)} is not on "
                        f"{config.TOPIC_APPROVAL_REQUESTS}: `pdx approvals pending` lists the open ones")
    return read_approval_request(signing.trusted_keys(cfg), approval_request_id.encode(), found[0], found[1])


def _resolvable(found: Found, by: str, now: datetime) -> apq.ApprovalRequest:
    record = found.record
    what = f"approval request {quote(record.approval_request_id, 80)}"
    if not found.trusted:
        raise UserError(f"{what} is not signed by a trusted worker key: it was not opened by pdx, refusing it")
    state = record.state(now)
    if state != apq.OPEN:
        by_whom = f" by {record.resolved_by}" if record.resolved_by else ""
        raise UserError(f"{what} is {state}{by_whom}; only an open request can be resolved")
    if apq.self_granted(by, record.identity_id, record.on_behalf_of):
        raise UserError(f"{ReasonCode.APPROVAL_SELF_GRANTED.value}: {quote(by, 80)} is the requesting identity or "
                        f"a principal it acts for, and cannot resolve its own {what}; ask a second person")
    return record


async def grant_request(
    cfg: Settings, approval_request_id: str, ttl: timedelta, by: str, key: KeyPath = None,
) -> apq.ApprovalRequest:
    """Grant an open approval request: an Approval scoped to exactly its identity, action and resource (id = the
    request's id, valid for ``ttl``), then the request's ``granted`` record. Both signed with the approval key."""
    signer = signing.signing_key(cfg, signing.APPROVAL, key)
    now = datetime.now(UTC)
    record = _resolvable(await _one(cfg, approval_request_id), by, now)
    producer = await clients.start_producer(cfg)
    try:
        await put_approval(producer, {
            "approval_id": record.approval_request_id, "identity_id": record.identity_id, "action": record.action,
            "resource_id": record.resource_id, "approved_by": by, "granted_at": now, "expires_at": now + ttl,
            "revoked": False,
        }, signer)
        resolved = record.resolved(apq.GRANTED, by, now, approval_expires_at=now + ttl)
        await _put_resolution(producer, resolved, signer, now)
    finally:
        await producer.stop()
    return resolved


async def deny_request(
    cfg: Settings, approval_request_id: str, reason: str, by: str, key: KeyPath = None,
) -> apq.ApprovalRequest:
    """Deny an open approval request (signed with the approval key); a waiting caller gets approval_denied."""
    signer = signing.signing_key(cfg, signing.APPROVAL, key)
    now = datetime.now(UTC)
    record = _resolvable(await _one(cfg, approval_request_id), by, now)
    resolved = record.resolved(apq.DENIED, by, now, resolution=reason)
    producer = await clients.start_producer(cfg)
    try:
        await _put_resolution(producer, resolved, signer, now)
    finally:
        await producer.stop()
    return resolved


async def _put_resolution(producer: Any, record: apq.ApprovalRequest, signer: signing.SigningKey,
                          now: datetime) -> None:
    value = wire.encode("ApprovalRequest", record.to_dict())
    kafka_key = record.approval_request_id.encode()
    await producer.send_and_wait(config.TOPIC_APPROVAL_REQUESTS, value, key=kafka_key,
                                 headers=signer.headers(signing.APPROVAL, kafka_key, value, epoch_ms(now)))


async def follow(cfg: Settings, since: datetime | None = None) -> AsyncIterator[Found]:
    """Every approval request record from ``since`` (default: now) on, as it arrives (for `pdx approvals watch`
    and chat-ops bots); unsigned or badly signed records are yielded with ``trusted`` False."""
    trust = signing.trusted_keys(cfg)
    consumer = await clients.start_consumer(cfg)
    try:
        parts = await wait_for_partitions(consumer, config.TOPIC_APPROVAL_REQUESTS)
        tps = [TopicPartition(config.TOPIC_APPROVAL_REQUESTS, p) for p in sorted(parts)]
        consumer.assign(tps)
        await seek_to_time(consumer, tps, since or datetime.now(UTC))
        while True:
            batch = await consumer.getmany(*tps, timeout_ms=1000)
            for msgs in batch.values():
                for m in msgs:
                    if m.key is None or m.value is None:
                        continue
                    try:
                        yield read_approval_request(trust, m.key, m.value, list(m.headers))
                    except ValueError:
                        continue
    finally:
        await consumer.stop()
