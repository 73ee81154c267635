"""What the Kafka benchmarks (e2e, drain, propagation, the echo floor) share: the request mix, the open-loop
driver, a reader of one partition's new records, and a background worker that does not audit."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.progress import Progress

from streams import config
from streams.kafka import clients

#: Requests the benchmarks send: a mix of the demo scenarios' shapes (allow, deny and step-up paths), as
#: ``(identity, action, resource, context)``.
MIX: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("agent-config-bot", "config:read", {"id": "feature-flags", "type": "config"}, {}),
    ("agent-intern", "db:connect", {"id": "orders-db", "type": "database", "environment": "production"},
     {"requested_ttl_s": 600}),
    ("agent-config-bot", "config:write", {"id": "feature-flags", "type": "config"}, {}),
    ("svc-billing", "api:call", {"id": "invoices-api", "type": "api", "sensitivity": "confidential"},
     {"source_ip": "10.1.2.3"}),
    ("wf-release-main", "deploy:release", {"id": "release-prod", "type": "pipeline", "environment": "production"},
     {}),
]

#: The worker that e2e and propagation measure (started by ``prepare_stack``).
BENCH_WORKER = "bench-worker-1"


async def open_loop(rate: float, duration: float, send: Callable[[int], Awaitable[float | None]],
                    ) -> tuple[list[float], int, float]:
    """Fire ``send(i)`` every 1/rate s for ``duration`` s, never waiting for a reply before the next send (so a
    slow server shows up as latency, not as a politely lower rate).

    ``send`` returns its latency in ms, or None when it got no reply. Returns (latencies ms, requests sent,
    seconds from the first send until the last reply).
    """
    total = int(rate * duration)
    interval = 1.0 / rate
    latencies: list[float] = []
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter()

    async def one(i: int) -> None:
        ms = await send(i)
        if ms is not None:
            latencies.append(ms)

    with Progress(console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty()) as progress:
        task = progress.add_task(f"{rate:g} req/s", total=total)
        for i in range(total):
            delay = start + i * interval - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
            tasks[-1].add_done_callback(lambda _t: progress.advance(task))
        await asyncio.gather(*tasks)
    return latencies, total, time.perf_counter() - start


async def tail(cfg: config.Settings, topic: str, **options: Any) -> AIOKafkaConsumer:
    """A started group-less consumer of partition 0 of ``topic``, positioned after its last record."""
    consumer = clients.consumer(cfg, **options)
    await consumer.start()
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    await consumer.seek_to_end(tp)
    await consumer.position(tp)
    return consumer


def spawn_quiet_worker(state_dir: Path, worker_id: str) -> Path:
    """Start a background worker with its audit sink off (benchmarks count decisions, not audit rows);
    returns its log."""
    from streams.devservices.workers import spawn_worker

    _, log = spawn_worker(state_dir, worker_id, {config.ENV_AUDIT_SINK: "off"})
    return log
