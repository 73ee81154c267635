"""``pdx bench drain``: one worker's throughput without a load generator competing for the CPU.

N requests of the mix are queued while no worker runs; then one fresh worker is started and the time from its
first reply to its last is measured (``decisions_per_s`` counts the replies after the first ones seen, which
were decided before the clock started), and its resident memory read once it has answered them all. In the same
invocation, on the same broker and with the same N, the aiokafka pass-through floor
(:func:`streams.bench.floor.measure_floor`) shows what moving those records costs with no pdx in the way:
``ratio_to_floor`` = ``decisions_per_s`` / ``floor_per_s``. The drain worker is stopped before the floor runs,
so the two do not share the CPU.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from streams import config
from streams.bench.floor import measure_floor
from streams.bench.load import DRAIN_WORKER, queue_requests, spawn_quiet_worker, stop_workers, tail, worker_rss_mb
from streams.console import say

#: What the throughput issue asks of one worker (reported beside the figures, not asserted).
TARGETS = {"decisions_per_s": 10_000.0, "ratio_to_floor": 0.5}


async def _drain(s: config.Settings, n: int, worker_id: str) -> dict[str, Any]:
    """Queue n requests with no worker running, start one worker, time how fast it answers them all."""
    consumer = await tail(s, config.TOPIC_DECISIONS)
    replies, first_replies, first, last = 0, 0, 0.0, 0.0
    try:
        await queue_requests(s, config.TOPIC_REQUESTS, n)
        say(f"bench drain: {n} requests queued; starting worker {worker_id}")
        spawn_quiet_worker(s.state_dir, worker_id)
        while replies < n:
            batch = await consumer.getmany(timeout_ms=120_000)
            if not batch:
                break
            last = time.perf_counter()
            replies += sum(len(v) for v in batch.values())
            if not first:
                first, first_replies = last, replies
    finally:
        await consumer.stop()
    seconds = last - first
    # The replies that arrived with the first ones were decided before the clock started (a batching worker
    # sends a whole fetch's replies together): the rate is that of the replies after them.
    return {"requests": n, "replies": replies, "seconds": round(seconds, 2),
            "decisions_per_s": round((replies - first_replies) / seconds, 1) if seconds else None,
            "worker_rss_mb": worker_rss_mb(s.state_dir, worker_id)}


def run_drain(cfg: config.Settings, n: int) -> dict[str, Any]:
    """Stop every running worker, bring the stack up without one, drain n queued requests, then measure the
    pass-through floor on n requests."""
    from streams.demo.runner import prepare_stack

    stop_workers(cfg.state_dir)  # the backlog must be answered by exactly one fresh worker
    prepare_stack(cfg, start_worker=False)
    result = asyncio.run(_drain(cfg, n, DRAIN_WORKER))
    stop_workers(cfg.state_dir)  # nor may it share the CPU with the floor (or with a later benchmark's worker)
    floor = asyncio.run(measure_floor(cfg, n))
    rate, floor_rate = result["decisions_per_s"], floor["floor_per_s"]
    result.update(floor)
    result["ratio_to_floor"] = round(rate / floor_rate, 3) if rate and floor_rate else None
    result["targets"] = TARGETS
    return result
