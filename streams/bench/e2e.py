"""``pdx bench e2e``: request→decision latency and throughput through the real Kafka and ClickHouse.

An open-loop load (:func:`streams.bench.load.open_loop`) of the request mix goes through PolicyClient → worker
→ reply topic; in the same run and through the same broker, the bare aiokafka echo of
:mod:`streams.bench.floor` measures what Kafka round trips alone cost on this machine. Every request must also
reach the audit table, which is counted.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from typing import Any

from streams import config
from streams.bench.floor import measure_echo
from streams.bench.load import BENCH_WORKER, MIX, open_loop
from streams.bench.stats import summary
from streams.console import say


async def _measure_pdx(rate: float, duration: float, run_id: str) -> tuple[list[float], int, int, float]:
    """(latencies ms, requests sent, replies from a worker, seconds) for request ids ``{run_id}-{i}``."""
    from streams.client import PolicyClient

    async with PolicyClient(timeout_s=30.0) as client:
        for _ in range(20):  # warm-up outside the measured window
            await client.check(*MIX[0])
        replies = 0

        async def send(i: int) -> float | None:
            nonlocal replies
            ident, action, resource, context = MIX[i % len(MIX)]
            request = client.build_request(ident, action, resource, context, request_id=f"{run_id}-{i}")
            t0 = time.perf_counter()
            decision = await client.send(request)
            if decision.worker_id:
                replies += 1
                return (time.perf_counter() - t0) * 1000
            return None

        latencies, sent, elapsed = await open_loop(rate, duration, send)
    return latencies, sent, replies, elapsed


def run_e2e(rate: float, duration: float, echo_duration: float | None = None) -> dict[str, Any]:
    """Start the local stack, measure the echo floor then pdx at ``rate`` req/s, and count the audit rows."""
    from streams.audit.store import wait_for_audit_rows
    from streams.demo.runner import prepare_stack

    prepare_stack(BENCH_WORKER)
    bootstrap = config.load().kafka_bootstrap
    say(f"bench e2e: echo floor at {rate:g} req/s")
    echo = asyncio.run(measure_echo(bootstrap, rate, echo_duration or min(duration, 10.0)))
    run_id = f"bench-{uuid.uuid4().hex[:10]}"
    say(f"bench e2e: pdx at {rate:g} req/s for {duration:g}s (run {run_id})")
    latencies, sent, replies, elapsed = asyncio.run(_measure_pdx(rate, duration, run_id))
    say("bench e2e: waiting for audit rows in ClickHouse")
    audit_rows = wait_for_audit_rows(sent, id_prefix=run_id + "-", timeout_s=max(60.0, duration * 2))
    return {
        "offered_rps": rate,
        "achieved_rps": round(replies / elapsed, 1) if elapsed else 0.0,
        **summary(latencies, (50, 95, 99)),
        "requests": sent,
        "replies": replies,
        "audit_rows": audit_rows,
        **summary(echo, (50, 99), prefix="echo_"),
        "echo_replies": len(echo),
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
    }
