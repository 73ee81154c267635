"""The Prometheus endpoints of a real worker and a real `pdx sink` (streams/metrics.py): decide a few requests
through Kafka, scrape /metrics over HTTP and read the text format as Prometheus does."""

from __future__ import annotations

import asyncio
import collections
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams import config as settings
from streams.client import PolicyClient
from streams.devservices import procs
from streams.devservices.workers import spawn_sink, spawn_worker, wait_until_ready
from streams.kafka.topics import create_topics
from streams.ops import load_inventory, publish_policies

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
DEMO_INVENTORY = settings.REPO_ROOT / "examples" / "inventory.yaml"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def named(samples: Samples, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def scrape_until(port: int, ok: Any, timeout_s: float = 60.0) -> Samples:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            samples = scrape(port)
            if ok(samples):
                return samples
        except OSError:
            samples = {}
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics on port {port} never satisfied the check; last scrape: {samples}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def metered(services: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """A worker ("wm", its audit sink off) and a `pdx sink` ("sm"), each serving metrics; yields their ports."""
    s = settings.load()
    asyncio.run(create_topics(s, 4, 4))
    asyncio.run(publish_policies(str(settings.POLICIES_DIR), "tests", cfg=settings.load()))
    asyncio.run(load_inventory(str(DEMO_INVENTORY), show_progress=False, cfg=settings.load()))
    state: Path = tmp_path_factory.mktemp("metered")
    worker_port, sink_port = free_port(), free_port()
    env = {settings.ENV_METRICS_PORT: str(worker_port), settings.ENV_AUDIT_SINK: "off"}
    _, log = spawn_worker(state, "wm", env)
    spawn_sink(state, "sm", ("--metrics-port", str(sink_port)))
    wait_until_ready(log)
    yield worker_port, sink_port
    for pid_file in (state / "workers").glob("*.pid"):
        procs.stop(pid_file)


async def test_worker_and_sink_metrics_are_scraped(metered: tuple[int, int]) -> None:
    worker_port, sink_port = metered
    before = named(scrape(worker_port), "pdx_worker_decisions_total")
    db = {"id": "orders-db", "type": "database", "environment": "production"}
    async with PolicyClient(timeout_s=15.0) as client:
        answers = [await client.check("agent-config-bot", "config:read", {"id": "feature-flags", "type": "config"})
                   for _ in range(3)]
        answers += [await client.check("agent-intern", "db:connect", db, {"requested_ttl_s": 60}),
                    await client.check("nobody-at-all", "db:connect", db)]
    assert answers[-1].decision == "deny" and "unknown_identity" in answers[-1].reason_codes
    expected = collections.Counter(d.decision for d in answers)

    def counted(samples: Samples) -> bool:
        decisions = named(samples, "pdx_worker_decisions_total")
        return sum(decisions.values()) - sum(before.values()) >= len(answers)

    samples = scrape_until(worker_port, counted)
    decisions = {dict(k)["decision"]: 0.0 for k in named(samples, "pdx_worker_decisions_total")}
    for labels, v in named(samples, "pdx_worker_decisions_total").items():
        decisions[dict(labels)["decision"]] += v - before.get(labels, 0.0)
    assert {k: v for k, v in decisions.items() if v} == expected
    assert named(samples, "pdx_worker_decisions_total")[(("decision", "deny"), ("reason", "unknown_identity"))] >= 1
    latency = samples[("pdx_worker_decision_latency_seconds_count", ())]
    assert latency >= 5
    assert 0 < samples[("pdx_worker_decision_latency_seconds_sum", ())] / latency < 5.0
    assert samples[("pdx_worker_decision_latency_seconds_bucket", (("le", "+Inf"),))] == latency
    assert samples[("pdx_worker_batch_size_count", ())] >= 1
    assert named(samples, "pdx_worker_bundle_info") == {(("version", answers[0].bundle_version),): 1.0}
    assert samples[("pdx_worker_bundle_serial", ())] >= 0
    assert samples[("pdx_worker_identities", ())] >= 5
    ready = {dict(k)["topic"]: v for k, v in named(samples, "pdx_replica_ready").items()}
    assert ready == {topic: 1.0 for topic in settings.STATE_TOPICS}
    assert samples[("pdx_replica_records", (("topic", settings.TOPIC_INVENTORY),))] >= 5

    lagged = scrape_until(worker_port, lambda s: named(s, "pdx_worker_consumer_lag"), timeout_s=15.0)
    lag = named(lagged, "pdx_worker_consumer_lag")
    assert {dict(k)["partition"] for k in lag} <= {"0", "1", "2", "3"}
    assert all(0 <= v < 1000 for v in lag.values())

    sink = scrape_until(sink_port, lambda s: s.get(("pdx_sink_rows_inserted_total", ()), 0) >= 5, timeout_s=90.0)
    assert sink[("pdx_sink_insert_retries_total", ())] >= 0
    assert ("pdx_sink_dead_letters_total", ()) in sink
    backlog = named(sink, "pdx_sink_backlog")
    assert backlog and all(v >= 0 for v in backlog.values())
    assert {dict(k)["topic"] for k in backlog} <= {settings.TOPIC_AUDIT, settings.TOPIC_CHECKPOINTS}
