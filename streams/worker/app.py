"""The worker: a faust-streaming app built from a Settings, wiring the Decider, the state replicas and the sink.

* ``decide_requests`` — the batch loop on ``pdx.requests`` (streams/worker/loop.py: decide a whole fetch,
  audit durable before reply, commit after); workers in the consumer group share the request partitions.
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
import time
from typing import Any

import faust
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from streams import config, metrics
from streams.config import Settings
from streams.contracts import signing
from streams.contracts.redact import Redactor
from streams.errors import UserError
from streams.kafka import clients
from streams.model.tokens import TokenVerifier
from streams.worker import recorded
from streams.worker.chain import AuditChains
from streams.worker.decide import Decider, Incoming
from streams.worker.loop import KafkaBatchProducer, ReplyRoutes, RequestLoop
from streams.worker.recorded import format_mark
from streams.worker.replica import CompactedReplica
from streams.worker.state import WorkerState

log = logging.getLogger("pdx.worker")


def trusted_state_keys(cfg: Settings) -> signing.TrustedKeys:
    """The keys this worker trusts per kind; a kind with none is logged loudly: nothing of it is applied, so
    (for policies and inventory) every request is denied."""
    trust = signing.trusted_keys(cfg)
    for kind in (signing.POLICY, signing.INVENTORY, signing.APPROVAL, signing.JWKS):
        ids = trust.key_ids(kind)
        if ids:
            log.info("trusting %s records signed by %s", kind, ", ".join(ids))
        else:
            # without jwks keys only the JWKS file's issuers are trusted: a valid set-up, so a warning
            (log.warning if kind == signing.JWKS else log.error)(
                "no key is trusted for %s records (set %s%s or put %s*.pub in %s): none will be applied",
                kind, config.ENV_TRUSTED_KEYS_PREFIX, kind.upper(), kind, cfg.signing_keys_dir,
            )
    return trust


def token_verifier(cfg: Settings) -> TokenVerifier:
    """The trusted workload-token issuers pinned by PDX_JWKS_FILE (none without one); issuers published on
    pdx.jwks join them live (WorkerState.apply_jwks). A token of no trusted issuer is denied
    token_untrusted_issuer; requests without one are decided as before. A file that cannot be used stops the
    worker (UserError), since a typo must not silently turn every token into a deny."""
    issuers = cfg.token_issuers_file
    if issuers is None:
        log.info("no trusted token issuers file (%s not set): only issuers published on %s are trusted",
                 config.ENV_JWKS_FILE, config.TOPIC_JWKS)
        return TokenVerifier()
    verifier = TokenVerifier.from_file(issuers)
    log.info("trusting workload tokens of %s", ", ".join(sorted(verifier.issuers)) or "no issuer")
    return verifier


def audit_chains(cfg: Settings) -> AuditChains:
    """The worker's audit hash chains, signing checkpoints with its audit key when it has one. Without one (or
    with one that cannot be read) it still decides and chains; its checkpoints are unsigned."""
    try:
        signer = signing.optional_signing_key(cfg, signing.AUDIT)
    except UserError as exc:
        log.error("audit checkpoints will be unsigned: %s", exc)
        signer = None
    if signer is None:
        log.warning("no audit signing key (%s): audit checkpoints are unsigned",
                    signing.private_key_path(cfg, signing.AUDIT))
    else:
        log.info("signing audit checkpoints with key %s", signer.key_id)
    return AuditChains(cfg.worker_id, signer)


def state_replicas(cfg: Settings, state: WorkerState) -> list[CompactedReplica]:
    """Inventory, approvals, the policy bundle, the trusted token issuers and the delegation grants: a full live
    replica each, applied to ``state``."""
    wid = cfg.worker_id
    return [
        CompactedReplica(cfg, config.TOPIC_INVENTORY, state.apply_identity, f"pdx-inv-{wid}"),
        CompactedReplica(cfg, config.TOPIC_APPROVALS, state.apply_approval, f"pdx-apr-{wid}"),
        CompactedReplica(cfg, config.TOPIC_POLICIES, state.apply_bundle, f"pdx-pol-{wid}"),
        CompactedReplica(cfg, config.TOPIC_JWKS, state.apply_jwks, f"pdx-jwks-{wid}"),
        CompactedReplica(cfg, config.TOPIC_DELEGATIONS, state.apply_delegation, f"pdx-dlg-{wid}"),
    ]


def build_app(cfg: Settings) -> faust.App:
    """A decision worker for ``cfg``; run it with ``app.main()`` (what `pdx worker` does)."""
    app = faust.App(
        # Not cfg.app_id: that is the request loop's consumer group, and faust's own (idle) consumer would
        # join it with faust's assignor, which Kafka refuses as an inconsistent group protocol.
        f"{cfg.app_id}-runtime",
        **clients.faust_broker_options(cfg),
        store="memory://",
        web_enabled=False,
        # Everything on the wire is Avro single-object encoded bytes, decoded by streams/contracts/wire.py.
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=cfg.request_partitions,
        # faust's own topics (its assignor's leader topic): replicated when PDX_KAFKA_REPLICATION_FACTOR says so;
        # the request loop and the replicas never read them, so a broker loss there does not stop decisions
        topic_replication_factor=cfg.kafka_replication_factor or 1,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=cfg.producer_linger_ms,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        # faust's own (idle) consumer group: with faust's 60 s default, a worker started to replace a killed
        # one waited a minute for the dead member's session before its tasks (and the request loop) ran.
        broker_session_timeout=clients.FAST_TAKEOVER["session_timeout_ms"] / 1000,
        broker_heartbeat_interval=clients.FAST_TAKEOVER["heartbeat_interval_ms"] / 1000,
        stream_wait_empty=False,
        # No faust tables (state is a replica, see streams/worker/replica.py) and no agents (the request
        # loop runs its own consumer): faust runs the worker's services, tasks and timers.
        stream_recovery_delay=0.0,
    )
    state = WorkerState(trusted_state_keys(cfg), token_verifier(cfg))
    replicas = state_replicas(cfg, state)
    registry, observer = metrics.worker_registry(state, replicas)  # served when PDX_METRICS_PORT is set
    assigned = asyncio.Event()

    def log_state(what: str) -> None:
        version = state.bundle_version()[:12] or "(none)"
        refused = ", ".join(f"{n} {kind}" for kind, n in sorted(state.rejected.items())) or "none"
        log.info("pdx worker %s %s: bundle %s (serial %d), %d identities; refused state records: %s",
                 cfg.worker_id, what, version, state.bundle_serial, len(state.identities), refused)

    async def state_loaded() -> None:
        """Decisions wait until every replica has read its topic up to the end offsets seen at start:
        deciding earlier would deny known identities as unknown."""
        await asyncio.gather(*(r.ready.wait() for r in replicas))

    @app.task
    async def decide_requests() -> None:
        await state_loaded()
        await run_request_loop(cfg, state, assigned, observer)

    @app.task
    async def run_replicas() -> None:
        await asyncio.gather(*(r.run() for r in replicas))

    if cfg.audit_sink:

        @app.task
        async def audit_sink() -> None:
            from streams.audit.sink import AuditSink

            sink = AuditSink(cfg, cfg.worker_id)
            metrics.sink_registry(sink, registry)
            await sink.run()

    if cfg.metrics_port:

        @app.task
        async def serve_metrics() -> None:
            metrics.serve(registry, cfg.metrics_port)

    @app.task
    async def announce_ready() -> None:
        """Write the ready file once state is loaded and the group gave us our partitions."""
        await state_loaded()
        await assigned.wait()
        log_state("ready")
        if cfg.ready_file is not None:
            cfg.ready_file.write_text(cfg.worker_id + "\n")

    @app.timer(interval=30.0)
    async def report_state() -> None:
        log_state("state")

    return app


#: Bytes per produce batch: a fetch's audit records for one partition go in a few batches, not hundreds.
_BATCH_BYTES = 512 * 1024


class _Commits:
    """Answered request offsets not committed yet, each with its audit mark (streams/worker/recorded.py).

    Committing is batched in time, off the request path: a commit is a broker round trip, and waiting for
    it after every fetch made low-rate latency several round trips long.
    """

    def __init__(self, consumer: Any, every_s: float = 0.2) -> None:
        self.consumer = consumer
        self.every_s = every_s
        self.done: dict[TopicPartition, tuple[int, str]] = {}
        self._later: asyncio.Future[None] | None = None

    def record(self, fetched: dict[Any, list[Any]], marks: dict[int, int]) -> None:
        for tp, records in fetched.items():
            mark = format_mark(marks.get(tp.partition))
            self.done[TopicPartition(tp.topic, tp.partition)] = (records[-1].offset + 1, mark)
        if self._later is None or self._later.done():
            self._later = asyncio.ensure_future(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.every_s)
        await self.flush()

    async def flush(self) -> None:
        offsets = dict(self.done)
        self.done.clear()
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:  # a rebalance took the partitions: they are redelivered
            log.warning("offset commit failed (%s); the new owner re-reads these requests", exc)

    async def close(self) -> None:
        if self._later is not None:
            await asyncio.wait([self._later])
        await self.flush()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Partitions leave only after the fetch in flight is answered and committed; partitions arrive only after
    the decisions recorded for their uncommitted requests are loaded (so a redelivery repeats them)."""

    def __init__(self, cfg: Settings, consumer: Any, loop: RequestLoop, commits: _Commits, busy: asyncio.Lock,
                 assigned: asyncio.Event, co_partitioned: bool) -> None:
        self.cfg = cfg
        self.consumer = consumer
        self.loop = loop
        self.commits = commits
        self.busy = busy
        self.assigned = assigned
        self.co_partitioned = co_partitioned
        #: set while the loop may decide: cleared from a revocation until the new assignment's recorded
        #: decisions are loaded (aiokafka may already fetch for new partitions while the listener runs)
        self.settled = asyncio.Event()

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.settled.clear()
        async with self.busy:
            await self.commits.flush()
            await self.loop.end_chains(sorted(tp.partition for tp in revoked))
        self.loop.decider.recorded.forget(tp.partition for tp in revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        parts = sorted(tp.partition for tp in assigned)
        log.info("request partitions assigned: %s", parts)
        if self.co_partitioned and parts:
            try:
                raw = await clients.committed_offsets(self.consumer, list(assigned))
                commits = recorded.consumer_commits({tp: raw.get(tp) for tp in assigned})
                ends = await recorded.load(self.cfg, self.loop.decider.recorded, commits)
                self.loop.audit_end.update(ends)
            except (KafkaError, OSError) as exc:
                log.warning("could not read the recorded decisions (%s): redeliveries are decided again", exc)
        self.settled.set()
        self.assigned.set()


async def run_request_loop(cfg: Settings, state: WorkerState, assigned: asyncio.Event, observer: Any = None) -> None:
    """Consume ``pdx.requests`` in the worker's group and run the batch loop until cancelled; ``observer``: see
    streams.worker.loop.LoopObserver."""
    consumer = clients.consumer(
        cfg,
        group_id=cfg.app_id,
        auto_offset_reset="earliest",
        max_poll_records=cfg.worker_batch_max,
        fetch_max_wait_ms=100,
        client_id=f"pdx-worker-{cfg.worker_id}",
        **clients.FAST_TAKEOVER,
    )
    # Replies must not wait for linger; a fetch's records are still sent in few requests, because they are
    # all appended before the sender runs.
    producer = clients.producer(
        cfg, linger_ms=0, max_batch_size=_BATCH_BYTES, client_id=f"pdx-worker-{cfg.worker_id}"
    )
    await producer.start()
    await consumer.start()
    commits = _Commits(consumer)
    loop: RequestLoop | None = None
    try:
        await producer.partitions_for(config.TOPIC_DECISIONS)  # warm the metadata every reply is checked against
        same = len(await producer.partitions_for(config.TOPIC_AUDIT)) == len(
            await producer.partitions_for(config.TOPIC_REQUESTS)
        )
        if not same:
            log.warning(
                "%s and %s have different partition counts: a redelivered request is decided again "
                "(recreate them with `pdx topics create`)", config.TOPIC_AUDIT, config.TOPIC_REQUESTS
            )
        cluster = producer.client.cluster
        routes = ReplyRoutes(cfg, cluster, request_lookup=lambda topic: producer.client.add_topic(topic))
        chains = audit_chains(cfg)
        decider = Decider(state, cfg.worker_id, routes, audit_on_request_partition=same,
                          request_limits=cfg.request_limits, chains=chains,
                          redactor=Redactor(cfg.redact_attributes), tokens=state.tokens,
                          max_delegation_depth=cfg.max_delegation_depth, approval_signer=chains.signer)
        loop = RequestLoop(decider, KafkaBatchProducer(producer), observer)
        busy = asyncio.Lock()
        rebalance = _Rebalance(cfg, consumer, loop, commits, busy, assigned, same)
        consumer.subscribe([config.TOPIC_REQUESTS], listener=rebalance)
        while True:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=cfg.worker_batch_max)
            received = time.monotonic()
            if loop.observer.lag_due():
                lag = await metrics.consumer_lag(consumer)
                loop.observer.consumer_lag({partition: n for (_, partition), n in lag.items()})
            if not fetched:
                async with busy:
                    await loop.checkpoint()
                continue
            await rebalance.settled.wait()
            fetched = {tp: rs for tp, rs in fetched.items() if tp in consumer.assignment()}
            async with busy:
                msgs = [
                    Incoming(m.topic, m.partition, m.offset, m.key, m.value or b"")
                    for records in fetched.values()
                    for m in records
                ]
                await loop.process(msgs, received)
                # Everything fetched is answered (or failed closed): these offsets may be committed.
                commits.record(fetched, loop.audit_end)
                await loop.checkpoint()
    finally:
        if loop is not None:
            await loop.end_chains()
        await commits.close()
        await consumer.stop()
        await producer.stop()
