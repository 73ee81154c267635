"""The request loop: one fetch → decide all → audit records durable → replies → commit offsets.

Why a batch loop on a plain consumer rather than a faust agent: faust's per-event stream path costs about
5× a batched aiokafka loop on the same broker (README, "Performance": 3.2–3.8k vs ~20k events/s, two
produces per event), and the delivery rules below need control over *when* offsets are committed. The
faust app (streams/worker/app.py) still owns the worker's lifecycle, the state replicas, timers and tasks;
this loop runs as one of its tasks, in the same event loop as the Decider (no thread hop).

Delivery, per fetch:

1. take what one ``getmany`` returns, up to ``worker_batch_max`` records — never wait to fill a batch;
2. decide every request (streams/worker/decide.py: synchronous, no await between requests);
3. produce every audit record and dead-letter entry, and wait until Kafka acknowledged them
   (idempotent producer, acks=all);
4. produce the replies of the requests whose audit record is durable — a reply is never visible before its
   audit record; a request whose audit record failed gets no reply, so its caller times out into a
   ``pdp_timeout`` deny (fail closed);
5. commit the fetched offsets once the replies are acknowledged.

Every audit record carries its link in the worker's hash chain for its request partition (the Decider links
it, streams/worker/chain.py); after step 3 the chains' durable heads move, and every few seconds (and on
revoke/shutdown) :meth:`RequestLoop.checkpoint` produces their signed checkpoints to pdx.audit.checkpoints,
never ahead of the audit records they cover.

A crash before 5 redelivers the fetch (at least once): the audit table deduplicates by request_id and the
client resolves each request once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from streams import config
from streams.config import Settings, reply_topic_allowed
from streams.errors import quote
from streams.metrics import FetchReport
from streams.worker.decide import Decider, Incoming, Out, Planned

log = logging.getLogger("pdx.worker.loop")


class RecordSink(Protocol):
    """Where the loop's records go: ``produce_all`` sends them and waits until each is acknowledged (or failed);
    it returns, per record, its offset once durable, or None when it failed. :class:`KafkaBatchProducer` is
    the Kafka one."""

    async def produce_all(self, records: Sequence[Out]) -> list[int | None]: ...


class KafkaBatchProducer:
    """Produces a fetch's records as one batch per topic-partition (aiokafka ``create_batch``/``send_batch``).

    Why not ``send`` per record: per record it builds a future, runs the (pure-Python) murmur2 partitioner
    and looks up the accumulator, which together cost more than the decision. A batch has one future; all
    its records are durable together. Records without a partition (DLQ entries) go through ``send``.
    """

    def __init__(self, producer: Any) -> None:
        self.producer = producer

    async def produce_all(self, records: Sequence[Out]) -> list[int | None]:
        pending: list[Any] = [None] * len(records)
        place: list[int] = [0] * len(records)  # index of the record in its batch
        batches: dict[tuple[str, int], tuple[Any, list[int]]] = {}
        submitted: list[tuple[Any, list[int]]] = []
        for index, out in enumerate(records):
            if out.partition is None:
                pending[index] = await self._send_one(out)
                continue
            slot = (out.topic, out.partition)
            builder, members = batches.get(slot) or (self.producer.create_batch(), [])
            if builder.append(key=out.key, value=out.value, timestamp=None, headers=out.headers) is None and members:
                submitted.append((await self._submit(builder, slot), members))  # full: submit, start another
                builder, members = self.producer.create_batch(), []
                builder.append(key=out.key, value=out.value, timestamp=None, headers=out.headers)
            if builder.record_count() == len(members):  # did not fit even an empty batch
                log.error("a %d-byte record for %s is larger than a batch; not produced", len(out.value), out.topic)
            else:
                place[index] = len(members)
                members.append(index)
            batches[slot] = (builder, members)
        for slot, (builder, members) in batches.items():
            if members:
                submitted.append((await self._submit(builder, slot), members))
        for fut, members in submitted:
            for index in members:
                pending[index] = fut
        unique = list({id(f): f for f in pending if f is not None}.values())
        results = await asyncio.gather(*unique, return_exceptions=True)
        base: dict[int, int] = {}  # future → offset of its first record
        for fut, result in zip(unique, results, strict=True):
            if isinstance(result, BaseException):
                log.error("producing a batch failed: %s", str(result)[:200])
            elif result is not _FAILED:
                base[id(fut)] = result.offset
        return [
            None if f is None or id(f) not in base else base[id(f)] + place[i] for i, f in enumerate(pending)
        ]

    async def _submit(self, builder: Any, slot: tuple[str, int]) -> Any:
        try:
            return await self.producer.send_batch(builder, slot[0], partition=slot[1])
        except Exception as exc:  # noqa: BLE001 - e.g. the partition vanished: fail these records only
            log.error("could not produce to %s[%d]: %s", slot[0], slot[1], str(exc)[:200])
            return _failed_future()

    async def _send_one(self, out: Out) -> Any:
        try:
            return await self.producer.send(out.topic, out.value, out.key, None, None, out.headers or None)
        except Exception as exc:  # noqa: BLE001 - one bad record must not stop the others
            log.error("could not produce to %s: %s", out.topic, str(exc)[:200])
            return _failed_future()


_FAILED = object()


def _failed_future() -> asyncio.Future[Any]:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    fut.set_result(_FAILED)
    return fut


class Metadata(Protocol):
    """The producer's cached cluster metadata (aiokafka's ClusterMetadata has this)."""

    def partitions_for_topic(self, topic: str) -> set[int] | None: ...


class ReplyRoutes:
    """Checks a reply's topic and partition against the allow-list and the *cached* metadata.

    Never waits: a topic with no cached metadata is refused (and looked up in the background, so the next
    request to it can succeed), because waiting on metadata for one request would stall every request.
    Lookups are bounded: at most ``max_lookups`` distinct topics are ever added to the producer's metadata
    (an allowed prefix admits endless names, and each one tracked costs every later metadata refresh).
    """

    def __init__(self, cfg: Settings, metadata: Metadata, request_lookup: Any = None, max_lookups: int = 1024) -> None:
        self.allowed = cfg.reply_topics
        self.metadata = metadata
        self.request_lookup = request_lookup
        self.max_lookups = max_lookups
        self.looked_up: set[str] = set()

    def __call__(self, topic: str, partition: Any) -> str | None:
        shown = quote(topic, 100)
        if not reply_topic_allowed(topic, self.allowed):
            return f"reply_to {shown} is not an allowed reply topic (allowed: {', '.join(self.allowed)})"
        if isinstance(partition, bool) or not isinstance(partition, int):
            return f"reply_partition {quote(partition, 20)} is not an integer"
        parts = self.metadata.partitions_for_topic(topic)
        if parts is None:
            self._look_up(topic)
            return f"reply topic {shown} is unknown to this worker (no metadata); retry, or create the topic"
        if partition not in parts:
            return f"reply_partition {partition} does not exist in {shown} (it has {len(parts)} partitions)"
        return None

    def _look_up(self, topic: str) -> None:
        if self.request_lookup is None or topic in self.looked_up:
            return
        if len(self.looked_up) >= self.max_lookups:
            log.warning("not looking up reply topic %s: %d looked up already", quote(topic, 100), self.max_lookups)
            return
        self.looked_up.add(topic)
        self.request_lookup(topic)


class LoopObserver:
    """What the loop reports, per fetch and per checkpoint round (streams/metrics.py WorkerMetrics is the
    Prometheus one); this one ignores everything."""

    def fetched(self, report: FetchReport) -> None:
        pass

    def checkpointed(self, count: int) -> None:
        pass

    def lag_due(self) -> bool:
        return False

    def consumer_lag(self, lag: Mapping[int, int]) -> None:
        pass


class RequestLoop:
    def __init__(self, decider: Decider, sink: RecordSink, observer: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.decider = decider
        self.sink = sink
        #: a LoopObserver (or anything with its methods, e.g. streams.metrics.WorkerMetrics)
        self.observer = observer if observer is not None else LoopObserver()
        self.clock = clock
        #: audit partition → the offset after this worker's last durable audit record there: the mark an
        #: offset commit carries (streams/worker/recorded.py)
        self.audit_end: dict[int, int] = {}
        #: the decider's audit hash chains (streams/worker/chain.py), None when it chains nothing
        self.chains = decider.chains

    async def checkpoint(self, *, final: Sequence[int] = (), all_final: bool = False, force: bool = False) -> int:
        """Produce the audit chains' checkpoints when due (or ``force``; ``final``/``all_final``: the chains of
        those request partitions end), after the audit records they cover are durable (``process`` settles
        them first). Returns how many were acknowledged; a failed one is produced again next time."""
        chains = self.chains
        if chains is None or not (force or final or all_final or chains.due()):
            return 0
        due = chains.checkpoints(final=final, all_final=all_final)
        if not due:
            return 0
        acked = await self.sink.produce_all([Out(config.TOPIC_CHECKPOINTS, cp.key, cp.value) for cp in due])
        done = [cp for cp, offset in zip(due, acked, strict=True) if offset is not None]
        chains.anchored(done)
        self.observer.checkpointed(len(done))
        if len(done) < len(due):
            log.warning("%d audit checkpoints were not acknowledged; retrying later", len(due) - len(done))
        return len(done)

    async def end_chains(self, partitions: Sequence[int] | None = None) -> None:
        """The chains of these request partitions (every chain when None) end: a final checkpoint each, then
        they are forgotten, so a later assignment of the partition starts a new chain. Never raises: a chain
        that could not be ended just stops (verify reports its last records as not yet anchored)."""
        if self.chains is None:
            return
        try:
            if partitions is None:
                await self.checkpoint(all_final=True)
            elif partitions:
                await self.checkpoint(final=partitions)
        except Exception as exc:  # noqa: BLE001 - e.g. Kafka gone at shutdown
            log.warning("could not produce the final audit checkpoints: %s", str(exc)[:200])
        self.chains.end(partitions)

    async def process(self, msgs: Sequence[Incoming], received_at: float | None = None) -> list[Planned]:
        """Decide one fetch and produce its records in the delivery order above (steps 2–4). ``received_at``
        (``clock()`` when the fetch arrived; default: now) starts the decision latency the observer sees."""
        received_at = self.clock() if received_at is None else received_at
        planned = self.decider.decide_batch(msgs)
        audited = [p for p in planned if p.audit is not None]
        dlq = [p.dead_letter for p in planned if p.dead_letter is not None]
        opened = [p.approval_request for p in planned if p.approval_request is not None]
        ok = await self.sink.produce_all([p.audit for p in audited if p.audit is not None] + dlq + opened)
        durable: set[int] = set()
        for p, offset in zip(audited, ok[: len(audited)], strict=True):
            if offset is None or p.audit is None:
                continue
            durable.add(id(p))
            if p.audit.partition is not None:
                self.audit_end[p.audit.partition] = max(self.audit_end.get(p.audit.partition, 0), offset + 1)
        if self.chains is not None:  # the chains' durable heads: what a checkpoint may cover
            self.chains.settle(p.audit for p in audited if id(p) in durable)
        replied = await self.sink.produce_all(
            [p.reply for p in planned if p.reply is not None and (p.audit is None or id(p) in durable)]
        )
        self.observer.fetched(FetchReport(
            size=len(msgs),
            decided=[p for p in audited if id(p) in durable],
            repeated=sum(1 for p in planned if p.audit is None and p.reply is not None),
            replied=sum(1 for offset in replied if offset is not None),
            audit_failed=len(audited) - len(durable),
            dead_letters=sum(1 for offset in ok[len(audited):len(audited) + len(dlq)] if offset is not None),
            seconds=self.clock() - received_at,
        ))
        return planned
