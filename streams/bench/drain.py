"""``pdx bench drain``: one worker's throughput without a load generator competing for the CPU.

N requests of the mix are queued while no worker runs; then one fresh worker is started and the time from its
first reply to its last is measured.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from streams import config
from streams.bench.load import MIX, spawn_quiet_worker, tail
from streams.console import say
from streams.contracts import wire
from streams.kafka import clients

DRAIN_WORKER = "drain-worker-1"


async def _queue(cfg: config.Settings, n: int) -> None:
    """Produce n requests (long timeouts: they wait for a worker) with replies to partition 0."""
    from streams.client import PolicyClient

    builder = PolicyClient(reply_partition=0)
    producer = await clients.start_producer(cfg, linger_ms=20)
    try:
        for i in range(n):
            ident, action, resource, context = MIX[i % len(MIX)]
            request = builder.build_request(ident, action, resource, context, timeout_s=3600)
            value = wire.encode("AccessRequest", request.to_dict())
            await producer.send(config.TOPIC_REQUESTS, value, key=ident.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _drain(n: int, worker_id: str) -> dict[str, Any]:
    """Queue n requests with no worker running, start one worker, time how fast it answers them all."""
    s = config.load()
    consumer = await tail(s, config.TOPIC_DECISIONS)
    replies, first, last = 0, 0.0, 0.0
    try:
        await _queue(s, n)
        say(f"bench drain: {n} requests queued; starting worker {worker_id}")
        spawn_quiet_worker(s.state_dir, worker_id)
        while replies < n:
            batch = await consumer.getmany(timeout_ms=120_000)
            if not batch:
                break
            last = time.perf_counter()
            first = first or last
            replies += sum(len(v) for v in batch.values())
    finally:
        await consumer.stop()
    seconds = last - first
    return {"requests": n, "replies": replies, "seconds": round(seconds, 2),
            "decisions_per_s": round(replies / seconds, 1) if seconds else None}


def run_drain(n: int) -> dict[str, Any]:
    """Stop every running worker, bring the stack up without one, and drain n queued requests."""
    from streams.demo.runner import prepare_stack
    from streams.devservices import procs

    state_dir = config.load().state_dir
    for pid_file in (state_dir / "workers").glob("*worker*.pid"):
        procs.stop(pid_file)  # the backlog must be answered by exactly one fresh worker
    prepare_stack(start_worker=False)
    return asyncio.run(_drain(n, DRAIN_WORKER))
