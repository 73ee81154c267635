"""The decide agent: AccessRequest → Decision on the reply topic, AuditRecord on pdx.audit.

The hot path, in order: decode → look up identity, approvals, bundle (cached decoded objects) → evaluate →
reply → audit. Fail closed: anything that prevents a real evaluation is a deny with a reason code; bytes we
cannot decode at all go to the dead-letter topic with the error, and the worker moves on.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any, cast

from faust.types import EventT, StreamT

from streams import settings, wire
from streams.app import WORKER_ID, app, dlq_topic, log_state, requests_topic, state, wait_state_loaded
from streams.policy import evaluate
from streams.policy.model import AccessRequest, Decision

log = logging.getLogger("pdx.decide")


@app.agent(requests_topic)
async def decide(stream: StreamT) -> None:
    # Deciding before inventory and policies are loaded would deny known identities as unknown.
    await wait_state_loaded()
    async for event in stream.events():
        await handle_request(event)


async def handle_request(event: EventT) -> None:
    received_at = datetime.now(UTC)
    msg = event.message
    raw: bytes = event.value
    try:
        request_dict = wire.decode_as("AccessRequest", raw)
    except wire.WireError as exc:
        await dead_letter(event, str(exc))
        return
    try:
        request = AccessRequest.from_dict(request_dict)
    except (ValueError, TypeError) as exc:
        # Decodable but not a valid request: answer if we know where to, else dead-letter it.
        if request_dict.get("reply_to") and request_dict.get("request_id"):
            decision = fail_closed(str(request_dict["request_id"]), "invalid_request", f"invalid request: {exc}")
            await reply(request_dict["reply_to"], request_dict.get("reply_partition"), decision)
        await dead_letter(event, f"invalid AccessRequest: {exc}")
        return

    identity = state.identities.get(request.identity_id)
    if request.deadline is not None and request.deadline <= received_at:
        decision = fail_closed(
            request.request_id,
            "deadline_expired",
            f"request deadline {request.deadline.isoformat()} passed before evaluation",
        )
    else:
        approvals = state.approvals_for(request.identity_id)
        decision = evaluate(state.bundle, request, identity, approvals, received_at)
    decision.worker_id = WORKER_ID
    decision_msg = await reply(request.reply_to, request.reply_partition, decision)
    decided_at = datetime.now(UTC)
    identity_msg = state.identity_messages.get(request.identity_id) if identity is not None else None
    audit = wire.splice_audit_record(
        raw,
        identity_msg,
        decision_msg,
        received_at=received_at,
        decided_at=decided_at,
        source_topic=msg.topic,
        source_partition=msg.partition,
        source_offset=msg.offset,
        worker_id=WORKER_ID,
    )
    if audit is None:  # a part came in another schema version: encode the record the ordinary way
        audit = wire.encode(
            "AuditRecord",
            {
                "request": request_dict,
                "identity": identity.to_dict() if identity is not None else None,
                "decision": decision.to_dict(),
                "received_at": received_at,
                "decided_at": decided_at,
                "source_topic": msg.topic,
                "source_partition": msg.partition,
                "source_offset": msg.offset,
                "worker_id": WORKER_ID,
            },
        )
    await _produce(settings.TOPIC_AUDIT, request.request_id.encode(), audit)


def fail_closed(request_id: str, code: str, message: str) -> Decision:
    return Decision.fail_closed(request_id, code, message, bundle_version=state.bundle_version(), worker_id=WORKER_ID)


async def reply(topic: str, partition: Any, decision: Decision) -> bytes:
    """Produce the decision to the requester's reply topic/partition; returns the encoded message."""
    part = partition if isinstance(partition, int) and partition >= 0 else None
    rid = decision.request_id.encode()
    message = wire.encode("Decision", decision.to_dict())
    await _produce(topic, rid, message, part, [("correlation_id", rid)])
    return message


async def _produce(
    topic: str, key: bytes, value: bytes, partition: int | None = None, headers: list[tuple[str, bytes]] | None = None
) -> None:
    """Hand a record to the worker's producer without waiting for the broker's ack.

    Why not faust's Topic.send: on this hot path its per-message bookkeeping (sensors, FutureMessage) cost
    more than the decision itself. Delivery failures are logged by the callback; the producer retries.
    """
    fut = await app.producer.send(topic, key, value, partition, None, headers)
    cast(asyncio.Future, fut).add_done_callback(_log_delivery_failure)


def _log_delivery_failure(fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("producing a decision/audit record failed: %s", fut.exception())


async def dead_letter(event: EventT, error: str) -> None:
    msg = event.message
    log.warning("dead-lettered %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, error)
    await dlq_topic.send(
        key=msg.key,
        value=event.value,
        headers={
            "error": error.encode(),
            "source_topic": msg.topic.encode(),
            "source_partition": str(msg.partition).encode(),
            "source_offset": str(msg.offset).encode(),
            "worker_id": WORKER_ID.encode(),
        },
    )


@app.timer(interval=30.0)
async def report_state() -> None:
    log_state("state")
