"""The worker: a faust-streaming app built from a Settings, wiring the Decider, the state replicas and the sink.

* ``decide`` — a faust agent on ``pdx.requests`` (keyed by identity id) that hands each record to the
  :class:`~streams.worker.decide.Decider`; workers in the consumer group share the request partitions.
* state — inventory, approvals and the current compiled policy bundle, kept as a full live replica in every
  worker by reading the compacted state topics (streams/worker/replica.py explains why a replica rather than
  co-partitioned faust Tables).
* ``audit_sink`` (streams/audit/sink.py) — ``pdx.audit`` → ClickHouse, unless ``PDX_AUDIT_SINK=off``.

Why ``build_app(cfg)`` and not a module-level app: nothing is built from the environment at import time, so
importing the worker costs nothing, tests compose a worker from their own Settings, and there is no import
cycle between the app and its agent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import faust
from faust.types import StreamT

from streams import config
from streams.config import Settings
from streams.kafka import clients
from streams.worker.decide import Decider, Headers, Incoming
from streams.worker.replica import CompactedReplica
from streams.worker.state import WorkerState

log = logging.getLogger("pdx.worker")


class FaustProducer:
    """The Decider's Producer on top of faust's producer (the app's own aiokafka producer).

    Why not faust's Topic.send: on this hot path its per-message bookkeeping (sensors, FutureMessage) cost
    more than the decision itself. Records are handed over without waiting for the broker's ack; delivery
    failures are logged by the callback and the producer retries.
    """

    def __init__(self, app: faust.App) -> None:
        self.app = app

    async def produce(
        self, topic: str, key: bytes | None, value: bytes, partition: int | None = None, headers: Headers = ()
    ) -> None:
        fut = await self.app.producer.send(topic, key, value, partition, None, list(headers) or None)
        cast(asyncio.Future, fut).add_done_callback(_log_delivery_failure)


def _log_delivery_failure(fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("producing a decision/audit record failed: %s", fut.exception())


def state_replicas(cfg: Settings, state: WorkerState) -> list[CompactedReplica]:
    """Inventory, approvals and the policy bundle: a full live replica each, applied to ``state``."""
    wid = cfg.worker_id
    return [
        CompactedReplica(cfg, config.TOPIC_INVENTORY, state.apply_identity, f"pdx-inv-{wid}"),
        CompactedReplica(cfg, config.TOPIC_APPROVALS, state.apply_approval, f"pdx-apr-{wid}"),
        CompactedReplica(cfg, config.TOPIC_POLICIES, state.apply_bundle, f"pdx-pol-{wid}"),
    ]


def build_app(cfg: Settings) -> faust.App:
    """A decision worker for ``cfg``; run it with ``app.main()`` (what `pdx worker` does)."""
    app = faust.App(
        cfg.app_id,
        **clients.faust_broker_options(cfg),
        store="memory://",
        web_enabled=False,
        # Everything on the wire is Avro single-object encoded bytes, decoded by streams/contracts/wire.py.
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=cfg.request_partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=cfg.producer_linger_ms,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        stream_wait_empty=False,
        # No faust tables (state is a replica, see streams/worker/replica.py): nothing to wait for.
        stream_recovery_delay=0.0,
    )
    requests_topic = app.topic(
        config.TOPIC_REQUESTS,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=cfg.request_partitions,
    )
    state = WorkerState()
    replicas = state_replicas(cfg, state)
    rebalanced = asyncio.Event()

    def log_state(what: str) -> None:
        version = state.bundle_version()[:12] or "(none)"
        log.info("pdx worker %s %s: bundle %s, %d identities", cfg.worker_id, what, version, len(state.identities))

    async def state_loaded() -> None:
        """Decisions wait until every replica has read its topic up to the end offsets seen at start:
        deciding earlier would deny known identities as unknown."""
        await asyncio.gather(*(r.ready.wait() for r in replicas))

    @app.agent(requests_topic)
    async def decide(stream: StreamT) -> None:
        await state_loaded()
        decider = Decider(state, FaustProducer(app), cfg.worker_id)
        async for event in stream.events():
            m = event.message
            await decider.handle(Incoming(m.topic, m.partition, m.offset, m.key, event.value))

    @app.task
    async def run_replicas() -> None:
        await asyncio.gather(*(r.run() for r in replicas))

    if cfg.audit_sink:

        @app.task
        async def audit_sink() -> None:
            from streams.audit.sink import AuditSink

            await AuditSink(cfg, cfg.worker_id).run()

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]  # faust types the receiver narrowly
    async def on_rebalance_complete(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
        rebalanced.set()

    @app.task
    async def announce_ready() -> None:
        """Write the ready file once state is loaded and the group gave us our partitions."""
        await state_loaded()
        await rebalanced.wait()
        log_state("ready")
        if cfg.ready_file is not None:
            cfg.ready_file.write_text(cfg.worker_id + "\n")

    @app.timer(interval=30.0)
    async def report_state() -> None:
        log_state("state")

    return app
