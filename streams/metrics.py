"""Operator metrics: the Prometheus endpoint of a worker and of an audit sink (``PDX_METRICS_PORT``).

Every metric is defined here, once, on a :class:`~prometheus_client.CollectorRegistry` of the process (not
prometheus_client's global registry), so a unit test builds as many as it likes. Two kinds of metric:

* events the request loop reports (:class:`WorkerMetrics`, the loop's observer, see
  streams/worker/loop.py ``LoopObserver``): decisions by outcome and reason code, decision latency
  (receive → reply acknowledged), fetch sizes, audit chain checkpoints, consumer lag per partition;
* state read at scrape time (:class:`StateCollector`, :class:`SinkCollector`): the bundle in force, replica
  record counts and readiness, refused signed records by kind, the audit sink's counters and backlog. Read
  when Prometheus asks, they cost the hot path nothing and cannot go stale.

No Kafka imports: the loop and the sink hand over plain values, and :func:`consumer_lag` takes anything with
aiokafka's ``assignment`` / ``highwater`` / ``position``.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("pdx.metrics")

#: decision latency buckets, seconds: 0.5 ms … 5 s
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: requests per fetch (PDX_WORKER_BATCH_MAX is 2000 by default)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
#: Decision.decision symbols in schema order (schemas/decision.avsc; a unit test checks them)
OUTCOMES = ("allow", "deny", "step_up")
#: most distinct reason labels kept; policies name their own reason codes, so the rest become "other"
MAX_REASONS = 200
_HEADER_LEN = 10  # Avro single-object header: C3 01 + 8-byte fingerprint


def _long(buf: bytes, pos: int) -> tuple[int, int]:
    """An Avro zig-zag varint at ``pos``: (value, position after it)."""
    b = buf[pos]
    n = b & 0x7F
    shift = 7
    pos += 1
    while b & 0x80:
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), pos


def decision_labels(message: bytes) -> tuple[str, str]:
    """(outcome, first reason code) of an encoded Decision, read from its first fields without decoding the
    rest (request_id, decision, reasons come first); ("unknown", "unknown") when it is not one."""
    try:
        pos = _HEADER_LEN
        size, pos = _long(message, pos)
        index, pos = _long(message, pos + size)
        outcome = OUTCOMES[index] if 0 <= index < len(OUTCOMES) else "unknown"
        count, pos = _long(message, pos)
        if count == 0:
            return outcome, "none"
        if count < 0:  # a block with its byte size
            _, pos = _long(message, pos)
        size, pos = _long(message, pos)
        return outcome, message[pos : pos + size].decode()
    except (IndexError, UnicodeDecodeError):
        return "unknown", "unknown"


class Planned(Protocol):
    """What the metrics read of a planned request (streams.worker.decide.Planned)."""

    @property
    def reply(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class FetchReport:
    """One fetch, as the request loop saw it."""

    #: requests fetched
    size: int
    #: requests whose audit record is durable (decided now; their reply was sent unless the route was invalid)
    decided: Sequence[Planned]
    #: redelivered requests answered with their recorded decision (no new audit record)
    repeated: int
    #: replies Kafka acknowledged
    replied: int
    #: requests whose audit record failed (no reply: the caller times out)
    audit_failed: int
    #: records sent to the dead-letter topic
    dead_letters: int
    #: from receiving the fetch to its replies being acknowledged
    seconds: float


class WorkerMetrics:
    """The worker's event metrics, and the request loop's observer (streams/worker/loop.py)."""

    def __init__(self, registry: CollectorRegistry, *, lag_every_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.decisions = Counter("pdx_worker_decisions", "Decisions made (audited), by outcome and first reason code",
                                 ["decision", "reason"], registry=registry)
        self.latency = Histogram("pdx_worker_decision_latency_seconds",
                                 "Receive of a fetch to its reply acknowledged, per reply", buckets=LATENCY_BUCKETS,
                                 registry=registry)
        self.batch = Histogram("pdx_worker_batch_size", "Requests per fetch", buckets=BATCH_BUCKETS,
                               registry=registry)
        self.repeated = Counter("pdx_worker_repeated_replies", "Redelivered requests answered with their recorded "
                                "decision", registry=registry)
        self.audit_failed = Counter("pdx_worker_audit_failures", "Requests not answered: their audit record failed",
                                    registry=registry)
        self.dead_letters = Counter("pdx_worker_dead_letters", "Records sent to the dead-letter topic",
                                    registry=registry)
        self.checkpoints = Counter("pdx_worker_audit_checkpoints", "Audit chain checkpoints acknowledged",
                                   registry=registry)
        self.lag = Gauge("pdx_worker_consumer_lag", "Requests not yet fetched per request partition "
                         "(high watermark - position)", ["partition"], registry=registry)
        self.lag_every_s = lag_every_s
        self.clock = clock
        self._lag_at = 0.0
        self._lag_parts: set[str] = set()
        self._reasons: set[str] = set()

    def fetched(self, report: FetchReport) -> None:
        self.batch.observe(report.size)
        counts: collections.Counter[tuple[str, str]] = collections.Counter(
            ("deny", "invalid_reply_route") if p.reply is None else decision_labels(p.reply.value)
            for p in report.decided
        )
        for (outcome, reason), n in counts.items():
            if reason not in self._reasons:
                if len(self._reasons) >= MAX_REASONS:
                    reason = "other"
                else:
                    self._reasons.add(reason)
            self.decisions.labels(outcome, reason).inc(n)
        observe = self.latency.observe  # one latency per reply: all of a fetch's replies share it
        for _ in range(report.replied):
            observe(report.seconds)
        if report.repeated:
            self.repeated.inc(report.repeated)
        if report.audit_failed:
            self.audit_failed.inc(report.audit_failed)
        if report.dead_letters:
            self.dead_letters.inc(report.dead_letters)

    def checkpointed(self, count: int) -> None:
        if count:
            self.checkpoints.inc(count)

    def lag_due(self) -> bool:
        now = self.clock()
        if now < self._lag_at:
            return False
        self._lag_at = now + self.lag_every_s
        return True

    def consumer_lag(self, lag: Mapping[int, int]) -> None:
        """The lag of every assigned partition; partitions no longer assigned are removed."""
        parts = {str(p) for p in lag}
        for gone in self._lag_parts - parts:
            self.lag.remove(gone)
        for p, n in lag.items():
            self.lag.labels(str(p)).set(n)
        self._lag_parts = parts


class _State(Protocol):
    @property
    def identities(self) -> Mapping[str, Any]: ...

    @property
    def bundle_serial(self) -> int: ...

    @property
    def rejected(self) -> Mapping[str, int]: ...

    def bundle_version(self) -> str: ...


class _Replica(Protocol):
    topic: str
    records: int
    failed: int

    @property
    def ready(self) -> Any: ...  # an asyncio.Event


class StateCollector(Collector):
    """The worker's state at scrape time (streams/worker/state.py WorkerState and its replicas)."""

    def __init__(self, state: _State, replicas: Sequence[_Replica]) -> None:
        self.state = state
        self.replicas = replicas

    def collect(self) -> Iterator[Metric]:
        state = self.state
        info = GaugeMetricFamily("pdx_worker_bundle_info", "The policy bundle in force (1, labelled by its version)",
                                 labels=["version"])
        version = state.bundle_version()
        if version:
            info.add_metric([version], 1)
        yield info
        yield GaugeMetricFamily("pdx_worker_bundle_serial", "Serial of the policy bundle in force (-1: none)",
                                value=state.bundle_serial)
        yield GaugeMetricFamily("pdx_worker_identities", "Identities in the inventory replica",
                                value=len(state.identities))
        rejected = CounterMetricFamily("pdx_worker_state_rejected", "Signed state records refused, by kind",
                                       labels=["kind"])
        for kind, n in sorted(dict(state.rejected).items()):
            rejected.add_metric([kind], n)
        yield rejected
        records = GaugeMetricFamily("pdx_replica_records", "Records a state replica applied", labels=["topic"])
        failed = GaugeMetricFamily("pdx_replica_failed_records", "Records a replica could not apply", labels=["topic"])
        ready = GaugeMetricFamily("pdx_replica_ready", "1 once a replica read its topic to the end seen at start",
                                  labels=["topic"])
        for r in self.replicas:
            records.add_metric([r.topic], r.records)
            failed.add_metric([r.topic], r.failed)
            ready.add_metric([r.topic], 1 if r.ready.is_set() else 0)
        yield from (records, failed, ready)


class _Sink(Protocol):
    inserted: int
    dead_lettered: int
    retries: int
    checkpoints_inserted: int

    @property
    def backlog(self) -> Mapping[tuple[str, int], int]: ...

    @property
    def batch(self) -> Any: ...  # AuditBatch (len = rows waiting)


class SinkCollector(Collector):
    """An audit sink's counters at scrape time (streams/audit/sink.py AuditSink)."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink

    def collect(self) -> Iterator[Metric]:
        s = self.sink
        yield CounterMetricFamily("pdx_sink_rows_inserted", "Audit rows ClickHouse acknowledged", value=s.inserted)
        yield CounterMetricFamily("pdx_sink_checkpoints_inserted", "Audit checkpoints ClickHouse acknowledged",
                                  value=s.checkpoints_inserted)
        yield CounterMetricFamily("pdx_sink_insert_retries", "Inserts retried (ClickHouse unavailable)",
                                  value=s.retries)
        yield CounterMetricFamily("pdx_sink_dead_letters", "Audit records sent to the dead-letter topic",
                                  value=s.dead_lettered)
        yield GaugeMetricFamily("pdx_sink_batch_rows", "Rows fetched, waiting for their insert", value=len(s.batch))
        backlog = GaugeMetricFamily("pdx_sink_backlog", "Records not yet fetched per partition "
                                    "(high watermark - position)", labels=["topic", "partition"])
        for (topic, partition), n in sorted(dict(s.backlog).items()):
            backlog.add_metric([topic, str(partition)], n)
        yield backlog


async def consumer_lag(consumer: Any) -> dict[tuple[str, int], int]:
    """(topic, partition) → high watermark - position, for every assigned partition whose high watermark is known
    (aiokafka learns it with each fetch; no broker round trip)."""
    lag: dict[tuple[str, int], int] = {}
    for tp in list(consumer.assignment()):
        high = consumer.highwater(tp)
        if high is None:
            continue
        position = await consumer.position(tp)
        lag[(tp.topic, tp.partition)] = max(0, high - position)
    return lag


def serve(registry: CollectorRegistry, port: int, addr: str = "0.0.0.0") -> Any:  # noqa: S104 - scraped remotely
    """Serve ``registry`` at http://addr:port/metrics in a daemon thread; None when ``port`` is 0 (disabled).
    Returns the server (``shutdown()`` stops it)."""
    if not port:
        return None
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    log.info("metrics at http://%s:%d/metrics", addr, port)
    return server


def worker_registry(state: _State, replicas: Sequence[_Replica]) -> tuple[CollectorRegistry, WorkerMetrics]:
    """A worker's registry: its event metrics and its state collector."""
    registry = CollectorRegistry()
    registry.register(StateCollector(state, replicas))
    return registry, WorkerMetrics(registry)


def sink_registry(sink: _Sink, registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """Register an audit sink's metrics on ``registry`` (a new one when None) and return it."""
    registry = registry if registry is not None else CollectorRegistry()
    registry.register(SinkCollector(sink))
    return registry


__all__ = [
    "FetchReport", "SinkCollector", "StateCollector", "WorkerMetrics", "consumer_lag", "decision_labels", "serve",
    "sink_registry", "worker_registry",
]
