"""``pdx bench memory``: a worker's resident memory with a large inventory.

One worker (audit sink off) is started on the stack as the demo leaves it and its RSS read once it is ready
(state loaded, partitions assigned): the baseline. Then N synthetic identities (default 100,000) are produced
to the inventory topic, a fresh worker is started, and its RSS is read once it is ready, which it is only
after its replica has read the whole inventory. ``bytes_per_identity`` is the difference over N. Afterwards
the identities are deleted again (tombstones) unless ``keep``, so later workers of this state dir do not carry
them.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from streams import config
from streams.bench.load import spawn_quiet_worker, stop_workers, synthetic_identity, worker_rss_mb
from streams.console import say

MEMORY_WORKER = "memory-worker-1"
_CHUNK = 5000


def _ids(n: int) -> list[str]:
    return [f"bench-mem-{i:06d}" for i in range(n)]


async def _put(cfg: config.Settings, n: int, delete: bool = False) -> None:
    """Produce n synthetic identities (or, with ``delete``, their tombstones) to the inventory topic."""
    from streams.contracts import signing
    from streams.kafka import clients
    from streams.kafka.state import delete_identities, put_identities

    signer = signing.signing_key(cfg, signing.INVENTORY)
    producer = await clients.start_producer(cfg, linger_ms=20)
    try:
        ids = _ids(n)
        for i in range(0, n, _CHUNK):
            chunk = ids[i : i + _CHUNK]
            if delete:
                await delete_identities(producer, chunk, signer)
            else:
                await put_identities(producer, [synthetic_identity(ident) for ident in chunk], signer)
    finally:
        await producer.stop()


def _ready_worker_rss(state_dir: Path) -> tuple[float | None, float]:
    """Start the memory worker, wait until it is ready, read its RSS, stop it: (RSS MiB, seconds to ready)."""
    from streams.devservices.workers import wait_until_ready

    t0 = time.perf_counter()
    wait_until_ready(spawn_quiet_worker(state_dir, MEMORY_WORKER), timeout_s=900)
    ready_s = time.perf_counter() - t0
    time.sleep(1.0)  # let start-up garbage settle
    rss = worker_rss_mb(state_dir, MEMORY_WORKER)
    stop_workers(state_dir)
    return rss, ready_s


def run_memory(cfg: config.Settings, identities: int, keep: bool = False) -> dict[str, Any]:
    """Worker RSS with the demo inventory, then with ``identities`` more synthetic identities."""
    from streams.demo.runner import prepare_stack

    stop_workers(cfg.state_dir)
    _, demo_identities, _ = prepare_stack(cfg, start_worker=False)
    say("bench memory: baseline worker (demo inventory only)")
    baseline, baseline_ready_s = _ready_worker_rss(cfg.state_dir)
    say(f"bench memory: producing {identities} synthetic identities")
    t0 = time.perf_counter()
    asyncio.run(_put(cfg, identities))
    load_s = time.perf_counter() - t0
    say(f"bench memory: worker with {identities + demo_identities} identities")
    try:
        rss, ready_s = _ready_worker_rss(cfg.state_dir)
    finally:
        if not keep:
            say("bench memory: deleting the synthetic identities again")
            asyncio.run(_put(cfg, identities, delete=True))
    per_identity = (rss - baseline) * 2**20 / identities if rss is not None and baseline is not None else None
    return {
        "identities": identities,
        "demo_identities": demo_identities,
        "load_seconds": round(load_s, 2),
        "worker_rss_mb": rss,
        "worker_ready_s": round(ready_s, 2),
        "baseline_worker_rss_mb": baseline,
        "baseline_worker_ready_s": round(baseline_ready_s, 2),
        "bytes_per_identity": round(per_identity) if per_identity is not None else None,
        "kept": keep,
    }
