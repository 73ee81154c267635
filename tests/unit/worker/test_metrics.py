"""Operator metrics (streams/metrics.py): the request loop's observer, the state and sink collectors and the
text format they serve, driven with the worker's in-memory fakes (no Kafka, no HTTP server)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streams import config, metrics
from streams.audit.sink import AuditSink
from streams.contracts import signing, wire
from streams.worker.decide import Decider
from streams.worker.loop import LoopObserver, ReplyRoutes, RequestLoop
from streams.worker.state import WorkerState
from tests.unit.worker.conftest import FakeMetadata, FakeProducer
from tests.unit.worker.test_decider import encoded, incoming

NOW = datetime.now(UTC)


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry's text exposition, parsed back as Prometheus would read it."""
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return samples(registry).get((name, tuple(sorted(labels.items()))))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def metered_loop(state: WorkerState, producer: FakeProducer, clock: Clock | None = None,
                 ) -> tuple[RequestLoop, CollectorRegistry]:
    registry = CollectorRegistry()
    observer = metrics.WorkerMetrics(registry)
    routes = ReplyRoutes(config.Settings.from_env({}), FakeMetadata())
    return RequestLoop(Decider(state, "w-test", routes), producer, observer, clock=clock or Clock()), registry


@pytest.mark.parametrize(
    ("decision", "reasons"),
    [("allow", [{"code": "rule_allow", "message": "m", "policy": None, "rule": None}]), ("step_up", []),
     ("deny", [{"code": "x" * 300, "message": "m", "policy": "p", "rule": "r"}] * 2)],
)
def test_decision_labels_read_the_encoded_decision(decision: str, reasons: list[dict[str, Any]]) -> None:
    msg = wire.encode("Decision", {
        "request_id": "r" * 200, "decision": decision, "reasons": reasons, "matched_rules": [], "obligations": {},
        "bundle_version": "v", "evaluated_at": NOW, "worker_id": "w", "eval_us": 1,
    })
    assert wire.decode_as("Decision", msg)["decision"] == decision
    assert metrics.decision_labels(msg) == (decision, reasons[0]["code"] if reasons else "none")


def test_outcomes_follow_the_schema_and_garbage_is_unknown() -> None:
    schema = json.loads((config.REPO_ROOT / "schemas" / "decision.avsc").read_text())
    symbols = next(f["type"]["symbols"] for f in schema["fields"] if f["name"] == "decision")
    assert tuple(symbols) == metrics.OUTCOMES
    assert metrics.decision_labels(b"\xc3\x01") == ("unknown", "unknown")


async def test_the_loop_reports_decisions_latency_and_batch_size(loaded_state: WorkerState) -> None:
    clock = Clock()
    producer = FakeProducer()
    loop, registry = metered_loop(loaded_state, producer, clock)
    unknown = encoded(identity="nobody", request_id="r2")
    received = clock.now
    clock.now += 0.003  # 3 ms from the fetch to its replies
    await loop.process([incoming(encoded(request_id="r1"), 1), incoming(unknown, 2), incoming(b"junk", 3)], received)
    decided = {k[1]: v for k, v in samples(registry).items() if k[0] == "pdx_worker_decisions_total"}
    assert sum(decided.values()) == 2
    assert decided[(("decision", "deny"), ("reason", "unknown_identity"))] == 1
    assert value(registry, "pdx_worker_decision_latency_seconds_count") == 2
    assert value(registry, "pdx_worker_decision_latency_seconds_bucket", le="0.0025") == 0
    assert value(registry, "pdx_worker_decision_latency_seconds_bucket", le="0.005") == 2
    assert value(registry, "pdx_worker_batch_size_count") == 1
    assert value(registry, "pdx_worker_batch_size_sum") == 3
    assert value(registry, "pdx_worker_dead_letters_total") == 1


async def test_a_bad_route_counts_as_a_deny_and_a_failed_audit_as_unanswered(loaded_state: WorkerState) -> None:
    loop, registry = metered_loop(loaded_state, FakeProducer(fail=lambda topic, _v: topic == config.TOPIC_AUDIT))
    await loop.process([incoming(encoded())])
    assert value(registry, "pdx_worker_audit_failures_total") == 1
    assert value(registry, "pdx_worker_decision_latency_seconds_count") == 0  # no reply was sent
    loop, registry = metered_loop(loaded_state, FakeProducer())
    await loop.process([incoming(encoded(reply_to="pdx.replies.nowhere"))])
    assert value(registry, "pdx_worker_decisions_total", decision="deny", reason="invalid_reply_route") == 1


def test_reason_labels_are_bounded() -> None:
    registry = CollectorRegistry()
    observer = metrics.WorkerMetrics(registry)
    observer._reasons = {f"r{i}" for i in range(metrics.MAX_REASONS)}
    msg = wire.encode("Decision", {
        "request_id": "r", "decision": "deny", "reasons": [{"code": "new", "message": "", "policy": None,
                                                            "rule": None}],
        "matched_rules": [], "obligations": {}, "bundle_version": "v", "evaluated_at": NOW, "worker_id": "w",
        "eval_us": 1,
    })
    reply = SimpleNamespace(value=msg)
    observer.fetched(metrics.FetchReport(1, [SimpleNamespace(reply=reply)], 0, 1, 0, 0, 0.001))
    assert value(registry, "pdx_worker_decisions_total", decision="deny", reason="other") == 1


def test_lag_is_refreshed_when_due_and_forgets_revoked_partitions() -> None:
    clock = Clock()
    registry = CollectorRegistry()
    observer = metrics.WorkerMetrics(registry, lag_every_s=2.0, clock=clock)
    assert observer.lag_due() and not observer.lag_due()
    observer.consumer_lag({0: 5, 1: 0})
    assert value(registry, "pdx_worker_consumer_lag", partition="0") == 5
    clock.now += 2.0
    assert observer.lag_due()
    observer.consumer_lag({1: 7})
    assert value(registry, "pdx_worker_consumer_lag", partition="0") is None
    assert value(registry, "pdx_worker_consumer_lag", partition="1") == 7


async def test_consumer_lag_reads_high_watermark_minus_position() -> None:
    from aiokafka import TopicPartition

    tp, unknown = TopicPartition("t", 2), TopicPartition("t", 3)

    class Consumer:
        def assignment(self) -> set[Any]:
            return {tp, unknown}

        def highwater(self, p: Any) -> int | None:
            return 10 if p is tp else None

        async def position(self, p: Any) -> int:
            return 4

    assert await metrics.consumer_lag(Consumer()) == {("t", 2): 6}


async def test_checkpoints_are_counted(loaded_state: WorkerState) -> None:
    from streams.worker.chain import AuditChains

    producer = FakeProducer()
    registry = CollectorRegistry()
    routes = ReplyRoutes(config.Settings.from_env({}), FakeMetadata())
    decider = Decider(loaded_state, "w-test", routes, chains=AuditChains("w-test", None))
    loop = RequestLoop(decider, producer, metrics.WorkerMetrics(registry))
    await loop.process([incoming(encoded())])
    assert await loop.checkpoint(force=True) == 1
    assert value(registry, "pdx_worker_audit_checkpoints_total") == 1


async def test_the_default_observer_ignores_everything(loaded_state: WorkerState) -> None:
    routes = ReplyRoutes(config.Settings.from_env({}), FakeMetadata())
    loop = RequestLoop(Decider(loaded_state, "w-test", routes), FakeProducer())
    assert isinstance(loop.observer, LoopObserver) and not loop.observer.lag_due()
    assert len(await loop.process([incoming(encoded())])) == 1


@dataclass
class FakeReplica:
    topic: str
    records: int = 0
    failed: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)


async def test_state_is_collected_at_scrape_time(loaded_state: WorkerState) -> None:
    inventory, policies = FakeReplica(config.TOPIC_INVENTORY, records=12), FakeReplica(config.TOPIC_POLICIES, 1)
    inventory.ready.set()
    registry, _ = metrics.worker_registry(loaded_state, [inventory, policies])
    version = loaded_state.bundle_version()
    assert value(registry, "pdx_worker_bundle_info", version=version) == 1
    assert value(registry, "pdx_worker_bundle_serial") == loaded_state.bundle_serial
    assert value(registry, "pdx_worker_identities") == len(loaded_state.identities)
    assert value(registry, "pdx_replica_records", topic=config.TOPIC_INVENTORY) == 12
    assert value(registry, "pdx_replica_ready", topic=config.TOPIC_INVENTORY) == 1
    assert value(registry, "pdx_replica_ready", topic=config.TOPIC_POLICIES) == 0
    loaded_state.apply_identity(b"forged", b"\x00")  # unsigned: refused
    loaded_state.apply_identity(b"forged", b"\x00")
    assert value(registry, "pdx_worker_state_rejected_total", kind=signing.INVENTORY) == 2
    loaded_state.bundle = None  # no bundle in force: no version label at all
    assert not [k for k in samples(registry) if k[0] == "pdx_worker_bundle_info"]


def test_two_registries_do_not_collide(loaded_state: WorkerState) -> None:
    first, _ = metrics.worker_registry(loaded_state, [])
    second, _ = metrics.worker_registry(loaded_state, [])
    assert value(first, "pdx_worker_identities") == value(second, "pdx_worker_identities")


def test_sink_counters_and_backlog() -> None:
    sink = AuditSink(config.Settings.from_env({}), "s-test")
    registry = CollectorRegistry()
    metrics.sink_registry(sink, registry)
    sink.inserted, sink.retries, sink.dead_lettered = 40, 3, 2
    sink.backlog = {(config.TOPIC_AUDIT, 1): 9}
    assert value(registry, "pdx_sink_rows_inserted_total") == 40
    assert value(registry, "pdx_sink_insert_retries_total") == 3
    assert value(registry, "pdx_sink_dead_letters_total") == 2
    assert value(registry, "pdx_sink_backlog", topic=config.TOPIC_AUDIT, partition="1") == 9
    assert value(registry, "pdx_sink_batch_rows") == 0


async def test_sink_retries_are_counted() -> None:
    sink = AuditSink(config.Settings.from_env({}), "s-test", sleep=lambda _s: asyncio.sleep(0))
    calls: list[int] = []

    class Flaky:
        def insert_avro(self, container: bytes, *, token: str | None = None) -> None:
            calls.append(1)
            if len(calls) < 3:
                raise ConnectionError("down")

        def insert_checkpoints(self, rows: Any, *, token: str | None = None) -> None:
            pass

    from streams.audit.sink import Block

    assert await sink._write(Flaky(), None, Block([_audit_message()], ["r1"], [None])) == 1  # type: ignore[arg-type]
    assert sink.retries == 2


def _audit_message() -> bytes:
    from tests.unit.audit.test_sink import audit_messages

    value = audit_messages(1)[0].value
    assert value is not None
    return value


def test_serve_is_off_at_port_zero() -> None:
    assert metrics.serve(CollectorRegistry(), 0) is None


def test_metrics_port_setting() -> None:
    assert config.Settings.from_env({}).metrics_port == 0
    assert config.Settings.from_env({config.ENV_METRICS_PORT: "9464"}).metrics_port == 9464
    with pytest.raises(config.ConfigError):
        config.Settings.from_env({config.ENV_METRICS_PORT: "70000"})


def test_the_dashboard_reads_only_metrics_that_exist(loaded_state: WorkerState) -> None:
    import re

    import yaml

    grafana = config.REPO_ROOT / "streams" / "audit" / "grafana"
    registry, observer = metrics.worker_registry(loaded_state, [FakeReplica(config.TOPIC_INVENTORY)])
    sink = AuditSink(config.Settings.from_env({}), "s")
    sink.backlog = {(config.TOPIC_AUDIT, 0): 1}
    metrics.sink_registry(sink, registry)
    loaded_state.apply_identity(b"forged", b"\x00")  # every labelled family gets a sample
    observer.consumer_lag({0: 1})
    observer.decisions.labels("allow", "x").inc()
    exposed = {name for name, _labels in samples(registry)}
    dashboard = json.loads((grafana / "dashboards" / "pdx-metrics.json").read_text())
    ds = yaml.safe_load((grafana / "provisioning" / "datasources" / "prometheus.yaml").read_text())["datasources"][0]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert all(t["datasource"]["uid"] == ds["uid"] for p in dashboard["panels"] for t in p["targets"])
    used = {m for e in exprs for m in re.findall(r"\b(pdx_[a-z_]+)", e)}
    assert used and used <= exposed, used - exposed
    families = {m.name for m in registry.collect() if m.name.startswith("pdx_")}
    unread = {f for f in families if not any(u.startswith(f) for u in used)}
    assert not unread, f"metrics no panel shows: {unread}"
