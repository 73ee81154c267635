"""PolicyClient: the SDK a service (policy enforcement point) uses to ask pdx for a decision.

    async with PolicyClient() as pdx:
        decision = await pdx.check("agent-7", "db:connect", {"id": "orders-db", "type": "database",
                                   "environment": "prod"}, {"requested_ttl_s": 900})

Each client instance reads only its own reply partition (assigned, not subscribed: no group rebalances),
and matches replies to requests by the ``correlation_id`` header. Many requests can be in flight at once.
A request not answered in time is a fail-closed deny with reason ``pdp_timeout`` — never an allow.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import random
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ParamSpec, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streams import config
from streams.config import Settings
from streams.contracts import wire
from streams.errors import PdxError, UserError, kafka_unreachable
from streams.kafka import clients
from streams.model import AccessRequest, Decision, ReasonCode, RequestContext, Resource

P = ParamSpec("P")
T = TypeVar("T")


class PolicyDenied(PdxError):
    """Raised by ``enforce`` when the decision is not allow; carries the decision and its reasons."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        self.reasons = decision.reasons
        codes = ", ".join(f"{r.code}: {r.message}" for r in decision.reasons) or "no reason given"
        super().__init__(f"{decision.decision} for request {decision.request_id}: {codes}")


class Denied(PolicyDenied):
    """The PDP denied the action."""


class StepUpRequired(PolicyDenied):
    """The action needs approval first (``obligations['require_approval']`` says by whom)."""


def timeout_decision(request_id: str, timeout_s: float) -> Decision:
    return Decision.fail_closed(
        request_id, ReasonCode.PDP_TIMEOUT, f"no decision from pdx within {timeout_s:g}s; failing closed"
    )


class PolicyClient:
    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        settings: Settings | None = None,
        reply_topic: str = config.TOPIC_DECISIONS,
        reply_partition: int | None = None,
        request_topic: str = config.TOPIC_REQUESTS,
        timeout_s: float = 5.0,
    ) -> None:
        cfg = settings or config.load()
        self.settings = cfg.replace(kafka_bootstrap=bootstrap) if bootstrap else cfg
        self.bootstrap = self.settings.kafka_bootstrap
        self.reply_topic = reply_topic
        self.reply_partition = reply_partition
        self.request_topic = request_topic
        self.timeout_s = timeout_s
        self._pending: dict[str, asyncio.Future[Decision]] = {}
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PolicyClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        from aiokafka.errors import KafkaConnectionError

        # acks=all with idempotence like every pdx producer: with a replicated pdx.requests, a request the
        # client was told is sent survives the loss of its partition leader (else it would time out as a deny)
        self._producer = clients.producer(self.settings, linger_ms=0)
        self._consumer = clients.consumer(self.settings, fetch_max_wait_ms=20)
        try:
            await self._producer.start()
            await self._consumer.start()
        except KafkaConnectionError:
            await self.stop()
            raise kafka_unreachable(self.bootstrap) from None
        parts = await self._producer.partitions_for(self.reply_topic)
        if not parts:
            await self.stop()
            raise UserError(f"reply topic {self.reply_topic} does not exist: run `pdx topics create`")
        if self.reply_partition is None:
            self.reply_partition = random.choice(sorted(parts))
        elif self.reply_partition not in parts:
            await self.stop()
            raise UserError(f"reply partition {self.reply_partition} does not exist in {self.reply_topic}")
        tp = TopicPartition(self.reply_topic, self.reply_partition)
        self._consumer.assign([tp])
        await self._consumer.seek_to_end(tp)
        await self._consumer.position(tp)  # resolve the end offset now, before any request is sent
        self._reader = asyncio.create_task(self._read_replies())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
            self._reader = None
        for fut in self._pending.values():
            fut.cancel()
        self._pending.clear()
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _read_replies(self) -> None:
        assert self._consumer is not None
        async for msg in self._consumer:
            correlation = next((v for k, v in msg.headers if k == "correlation_id"), None)
            fut = self._pending.get(correlation.decode()) if correlation else None
            if fut is None or fut.done():
                continue  # another client's reply on a shared partition, or one we gave up on
            try:
                fut.set_result(Decision.from_dict(wire.decode_as("Decision", msg.value)))
            except ValueError as exc:
                fut.set_exception(exc)

    def build_request(
        self,
        identity_id: str,
        action: str,
        resource: Resource | Mapping[str, Any],
        context: RequestContext | Mapping[str, Any] | None = None,
        *,
        on_behalf_of: Sequence[str] = (),
        timeout_s: float | None = None,
        request_id: str | None = None,
        token: str | None = None,
    ) -> AccessRequest:
        now = datetime.now(UTC)
        return AccessRequest(
            request_id=request_id or uuid.uuid4().hex,
            occurred_at=now,
            identity_id=identity_id,
            action=action,
            resource=resource if isinstance(resource, Resource) else Resource.from_dict(resource),
            context=context if isinstance(context, RequestContext) else RequestContext.from_dict(context or {}),
            on_behalf_of=list(on_behalf_of),
            reply_to=self.reply_topic,
            reply_partition=self.reply_partition if self.reply_partition is not None else 0,
            deadline=now + timedelta(seconds=timeout_s or self.timeout_s),
            token=token,
        )

    async def send(self, request: AccessRequest, timeout_s: float | None = None) -> Decision:
        """Send a prepared request and await its decision (fail-closed deny on timeout)."""
        if self._producer is None:
            raise RuntimeError("PolicyClient is not started: use `async with PolicyClient()` or await start()")
        timeout = timeout_s or self.timeout_s
        fut: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._pending[request.request_id] = fut
        value = wire.encode("AccessRequest", request.to_dict())
        try:
            # One deadline for everything: a broker that is down or a topic without metadata makes the
            # producer wait far longer than the caller's timeout, and that wait is bounded here too.
            async with asyncio.timeout(timeout):
                await self._producer.send(self.request_topic, value, key=request.identity_id.encode())
                return await fut
        except TimeoutError:
            return timeout_decision(request.request_id, timeout)
        except KafkaError as exc:  # could not even send: fail closed, never an exception to the caller
            return Decision.fail_closed(
                request.request_id,
                ReasonCode.PDP_TIMEOUT,
                f"could not send the request to pdx ({type(exc).__name__}); failing closed",
            )
        finally:
            self._pending.pop(request.request_id, None)

    async def check(
        self,
        identity_id: str,
        action: str,
        resource: Resource | Mapping[str, Any],
        context: RequestContext | Mapping[str, Any] | None = None,
        timeout: float | None = None,
        *,
        on_behalf_of: Sequence[str] = (),
        token: str | None = None,
        wait_for_approval: float | None = None,
    ) -> Decision:
        """Ask for a decision; ``token``: the caller's workload token (a JWT), verified by pdx, never stored.

        ``wait_for_approval`` (seconds): when the answer is step_up, wait that long for a second person to resolve
        the approval request it opened (``pdx approvals grant|deny``) and return the final decision: the request
        decided again once granted (allow, relying on that approval), deny ``approval_denied`` on a denial, deny
        ``approval_expired`` at the deadline. Reads the approval request's own partition of
        pdx.approval-requests, never ClickHouse."""
        request = self.build_request(
            identity_id, action, resource, context, on_behalf_of=on_behalf_of, timeout_s=timeout, token=token
        )
        decision = await self.send(request, timeout)
        if wait_for_approval is None or decision.decision != "step_up":
            return decision
        return await self._await_approval(request, decision, wait_for_approval, timeout)

    async def _await_approval(self, request: AccessRequest, step_up: Decision, wait_s: float,
                              timeout: float | None) -> Decision:
        from streams.kafka.approvals import wait_resolution
        from streams.model import approval_request as apq

        aid = step_up.obligations.get(apq.OBLIGATION)
        if not aid:
            return step_up  # nothing was opened (an older worker): the caller sees the step_up as it is
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + wait_s
        resolved = await wait_resolution(self.settings, aid, step_up.evaluated_at, wait_s)
        if resolved is None:
            return Decision.fail_closed(request.request_id, ReasonCode.APPROVAL_EXPIRED,
                                        f"approval request {aid} was not resolved within {wait_s:g}s; failing closed")
        if resolved.status != apq.GRANTED:
            why = f": {resolved.resolution}" if resolved.resolution else ""
            return Decision.fail_closed(request.request_id, ReasonCode.APPROVAL_DENIED,
                                        f"approval request {aid} was denied by {resolved.resolved_by}{why}")
        # Decided again, as a new request pinned to the granted approval (context.approval_id). The Approval is
        # produced before the grant record, but a worker may apply it a moment later: retry a step_up briefly.
        decision = step_up
        while True:
            again = dataclasses.replace(
                request, request_id=uuid.uuid4().hex,
                context=dataclasses.replace(request.context, approval_id=aid),
                deadline=datetime.now(UTC) + timedelta(seconds=timeout or self.timeout_s),
            )
            decision = await self.send(again, timeout)
            if decision.decision != "step_up" or loop.time() + 0.25 > give_up_at:
                return decision
            await asyncio.sleep(0.25)

    async def enforce(self, *args: Any, **kwargs: Any) -> Decision:
        """Like check, but raises Denied / StepUpRequired unless the decision is allow."""
        decision = await self.check(*args, **kwargs)
        if decision.decision == "allow":
            return decision
        raise StepUpRequired(decision) if decision.decision == "step_up" else Denied(decision)

    def guard(
        self,
        identity_id: str,
        action: str,
        resource: Resource | Mapping[str, Any],
        context: Mapping[str, Any] | None = None,
    ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Coroutine[Any, Any, T]]]:
        """Decorator for an async function (e.g. an agent's tool): runs it only when pdx allows."""

        def wrap(func: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
            @functools.wraps(func)
            async def guarded(*args: P.args, **kwargs: P.kwargs) -> T:
                await self.enforce(identity_id, action, resource, context)
                return await func(*args, **kwargs)

            return guarded

        return wrap


class SyncPolicyClient:
    """A blocking wrapper for scripts: runs a PolicyClient on an event loop in a background thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="pdx-client")
        self._thread.start()
        self._client = PolicyClient(*args, **kwargs)
        self._call(self._client.start())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def check(self, *args: Any, **kwargs: Any) -> Decision:
        return self._call(self._client.check(*args, **kwargs))

    def enforce(self, *args: Any, **kwargs: Any) -> Decision:
        return self._call(self._client.enforce(*args, **kwargs))

    def close(self) -> None:
        self._call(self._client.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> SyncPolicyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
