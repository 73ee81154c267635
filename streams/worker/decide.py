"""The Decider: AccessRequest bytes → Decision on the reply topic and AuditRecord on pdx.audit.

The hot path, in order: decode → look up identity, approvals, bundle (cached decoded objects) → evaluate →
reply → audit. Fail closed: anything that prevents a real evaluation is a deny with a reason code; bytes we
cannot decode at all go to the dead-letter topic with the error, and the worker moves on.

Why a class with a producer Protocol, not a faust agent body: the decision logic is then unit-testable with
a small in-memory producer (tests/unit/worker/), and the faust app (streams/worker/app.py) only feeds it
messages. Nothing here imports faust or aiokafka.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from streams import config
from streams.contracts import wire
from streams.contracts.dlq import dead_letter_headers
from streams.model import AccessRequest, Decision, ReasonCode
from streams.policy import evaluate
from streams.worker.state import WorkerState

log = logging.getLogger("pdx.decide")

Headers = Sequence[tuple[str, bytes]]


class Producer(Protocol):
    """Where the Decider's records go. The faust app adapts its producer to this; tests use a list."""

    async def produce(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None, headers: Headers = ()
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Incoming:
    """One consumed request record: what the Decider needs of a Kafka message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def _now() -> datetime:
    return datetime.now(UTC)


class Decider:
    def __init__(
        self, state: WorkerState, producer: Producer, worker_id: str, clock: Callable[[], datetime] = _now
    ) -> None:
        self.state = state
        self.producer = producer
        self.worker_id = worker_id
        self.clock = clock

    async def handle(self, msg: Incoming) -> None:
        """Decide one request: reply and audit it, or dead-letter bytes that are not a request."""
        received_at = self.clock()
        raw = msg.value
        try:
            request_dict = wire.decode_as("AccessRequest", raw)
        except wire.WireError as exc:
            await self.dead_letter(msg, str(exc))
            return
        try:
            request = AccessRequest.from_dict(request_dict)
        except (ValueError, TypeError) as exc:
            # Decodable but not a valid request: answer if we know where to, else dead-letter it.
            if request_dict.get("reply_to") and request_dict.get("request_id"):
                decision = self.fail_closed(
                    str(request_dict["request_id"]), ReasonCode.INVALID_REQUEST, f"invalid request: {exc}"
                )
                await self.reply(request_dict["reply_to"], request_dict.get("reply_partition"), decision)
            await self.dead_letter(msg, f"invalid AccessRequest: {exc}")
            return

        state = self.state
        identity = state.identities.get(request.identity_id)
        if request.deadline is not None and request.deadline <= received_at:
            decision = self.fail_closed(
                request.request_id,
                ReasonCode.DEADLINE_EXPIRED,
                f"request deadline {request.deadline.isoformat()} passed before evaluation",
            )
        else:
            approvals = state.approvals_for(request.identity_id)
            decision = evaluate(state.bundle, request, identity, approvals, received_at)
        decision.worker_id = self.worker_id
        decision_msg = await self.reply(request.reply_to, request.reply_partition, decision)
        decided_at = self.clock()
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
            worker_id=self.worker_id,
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
                    "worker_id": self.worker_id,
                },
            )
        await self.producer.produce(config.TOPIC_AUDIT, request.request_id.encode(), audit)

    def fail_closed(self, request_id: str, code: str, message: str) -> Decision:
        return Decision.fail_closed(
            request_id, code, message, bundle_version=self.state.bundle_version(), worker_id=self.worker_id
        )

    async def reply(self, topic: str, partition: Any, decision: Decision) -> bytes:
        """Produce the decision to the requester's reply topic/partition; returns the encoded message."""
        part = partition if isinstance(partition, int) and partition >= 0 else None
        rid = decision.request_id.encode()
        message = wire.encode("Decision", decision.to_dict())
        await self.producer.produce(topic, rid, message, part, [("correlation_id", rid)])
        return message

    async def dead_letter(self, msg: Incoming, error: str) -> None:
        log.warning("dead-lettered %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, error)
        headers = dead_letter_headers(error, msg.topic, msg.partition, msg.offset, self.worker_id)
        await self.producer.produce(config.TOPIC_DLQ, msg.key, msg.value, None, headers)
