"""The faust-streaming app: topics, agents and state, wired in one place.

* ``decide`` (streams/decide.py) — a faust agent on ``pdx.requests`` (keyed by identity id); workers in the
  consumer group share its partitions.
* ``state`` — inventory, approvals and the current compiled policy bundle, kept as a full live replica in
  every worker by reading the compacted ``pdx.inventory``, ``pdx.approvals`` and ``pdx.policies`` topics
  (streams/replica.py explains why a replica rather than co-partitioned faust Tables).
* ``audit_sink`` (streams/sink.py) — ``pdx.audit`` → ClickHouse, committing only after ClickHouse acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path
from typing import Any

import faust

from streams import settings
from streams.replica import CompactedReplica
from streams.sink import AuditSink
from streams.state import WorkerState

_s = settings.load()
log = logging.getLogger("pdx.worker")

#: Identifies this worker in decisions and audit records.
WORKER_ID = os.environ.get(settings.ENV_WORKER_ID) or f"{socket.gethostname()}-{os.getpid()}"

app = faust.App(
    _s.app_id,
    broker=f"kafka://{_s.kafka_bootstrap}",
    store="memory://",
    web_enabled=False,
    # Everything on the wire is Avro single-object encoded bytes, decoded by streams/wire.py.
    key_serializer="raw",
    value_serializer="raw",
    topic_partitions=_s.request_partitions,
    topic_replication_factor=1,
    topic_allow_declare=True,
    consumer_auto_offset_reset="earliest",
    producer_linger_ms=_s.producer_linger_ms,
    broker_commit_every=1000,
    broker_commit_interval=1.0,
    stream_wait_empty=False,
    # No faust tables (state is a replica, see streams/replica.py): nothing to wait for before consuming.
    stream_recovery_delay=0.0,
)


def _raw_topic(name: str, **kw: Any) -> faust.TopicT:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", **kw)


requests_topic = _raw_topic(settings.TOPIC_REQUESTS, partitions=_s.request_partitions)
dlq_topic = _raw_topic(settings.TOPIC_DLQ)

#: Inventory, approvals and the policy bundle: a full live replica in every worker (see streams/replica.py).
state = WorkerState()
_replicas = [
    CompactedReplica(_s.kafka_bootstrap, settings.TOPIC_INVENTORY, state.apply_identity, f"pdx-inv-{WORKER_ID}"),
    CompactedReplica(_s.kafka_bootstrap, settings.TOPIC_APPROVALS, state.apply_approval, f"pdx-apr-{WORKER_ID}"),
    CompactedReplica(_s.kafka_bootstrap, settings.TOPIC_POLICIES, state.apply_bundle, f"pdx-pol-{WORKER_ID}"),
]


@app.task
async def run_replicas() -> None:
    await asyncio.gather(*(r.run() for r in _replicas))


@app.task
async def audit_sink() -> None:
    if os.environ.get(settings.ENV_AUDIT_SINK, "on") == "off":
        return  # a separate `pdx sink` process writes the audit trail
    await AuditSink(_s, WORKER_ID).run()


_rebalanced = asyncio.Event()


@app.on_rebalance_complete.connect  # type: ignore[arg-type]  # faust types the receiver narrowly
async def _on_rebalance_complete(sender: Any, *args: Any, signal: Any = None, **kwargs: Any) -> None:
    _rebalanced.set()


@app.task
async def announce_ready() -> None:
    """Write PDX_READY_FILE once state is loaded and the group gave us our partitions (see wait_until_ready)."""
    ready_file = os.environ.get(settings.ENV_READY_FILE)
    await wait_state_loaded()
    await _rebalanced.wait()
    log_state("ready")
    if ready_file:
        Path(ready_file).write_text(WORKER_ID + "\n")


def log_state(what: str) -> None:
    log.info(
        "pdx worker %s %s: bundle %s, %d identities",
        WORKER_ID,
        what,
        state.bundle_version()[:12] or "(none)",
        len(state.identities),
    )


async def wait_state_loaded() -> None:
    """Decisions wait until every replica has read its topic up to the end offsets seen at start."""
    await asyncio.gather(*(r.ready.wait() for r in _replicas))


# Agents register themselves on import (they import the topics and tables above, so this comes last).
from streams import decide  # noqa: E402,F401
