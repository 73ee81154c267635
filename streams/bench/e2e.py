"""``pdx bench e2e``: request→decision latency and throughput through the real Kafka and ClickHouse.

An open-loop load (:func:`streams.bench.load.open_loop`) of the request mix goes through PolicyClient → worker
→ reply topic; in the same run and through the same broker, the bare aiokafka echo of
:mod:`streams.bench.floor` measures what Kafka round trips alone cost on this machine. Every request must also
reach the audit table, which is counted. The worker's resident memory is read at the end of the run.

``--find-max`` raises the offered rate step by step (:func:`step_rates`: from ``start``, ×factor or +increment,
up to ``max_rate``; ``step_duration`` seconds each) and reports the highest offered rate the worker
**sustained** (:func:`sustained`: achieved ≥ 99% of offered, p99 < 100 ms, replies = audit rows = requests),
with every step's figures. It stops at the first step that is not sustained. It measures no echo floor.

One worker is measured: other background workers (left by drain or a multi-worker propagation run) are
stopped first.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Mapping
from typing import Any

from streams import config
from streams.bench.floor import measure_echo
from streams.bench.load import BENCH_WORKER, MIX, open_loop, stop_workers, worker_rss_mb
from streams.bench.stats import summary
from streams.console import say
from streams.errors import UserError

#: What a step must achieve to count as sustained (``--find-max``).
SUSTAINED = {"min_achieved_fraction": 0.99, "max_p99_ms": 100.0}


def step_rates(start: float, step: str, max_rate: float) -> list[float]:
    """The offered rates of ``--find-max``: ``start``, then each previous rate ×F (``step`` "x1.5") or +N
    (``step`` "+500"), while ≤ ``max_rate``. Rates are whole requests per second."""
    text = step.strip().lower()
    try:
        amount = float(text[1:])
    except ValueError:
        amount = float("nan")
    grows = (text[:1] in ("x", "*") and amount > 1) or (text[:1] == "+" and amount >= 1)
    if not grows:
        raise UserError(f"--step {step!r}: give a factor above 1 like x1.5, or an increment like +500")
    if not 1 <= start <= max_rate:
        raise UserError(f"--start {start:g} must be at least 1 and at most --max-rate {max_rate:g}")
    rates: list[float] = []
    rate = float(round(start))
    while rate <= max_rate:
        rates.append(rate)
        rate = max(rate + 1, float(round(rate * amount if text[0] != "+" else rate + amount)))
    return rates


def sustained(step: Mapping[str, Any]) -> bool:
    """Whether a measured step kept up: achieved ≥ 99% of offered, p99 < 100 ms, and every request answered
    and audited (replies = audit rows = requests)."""
    p99 = step.get("p99_ms")
    return (
        step["achieved_rps"] >= SUSTAINED["min_achieved_fraction"] * step["offered_rps"]
        and p99 is not None and p99 == p99 and p99 < SUSTAINED["max_p99_ms"]  # p99 == p99: not NaN
        and step["requests"] == step["replies"] == step["audit_rows"] > 0
    )


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


def _measure_step(rate: float, duration: float) -> dict[str, Any]:
    """pdx at ``rate`` req/s for ``duration`` s: rates, latency percentiles, counts (audit rows included) and the
    worker's RSS afterwards."""
    from streams.audit.store import wait_for_audit_rows

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
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
        "worker_rss_mb": worker_rss_mb(config.load().state_dir, BENCH_WORKER),
    }


def _prepare() -> None:
    from streams.demo.runner import prepare_stack

    prepare_stack(BENCH_WORKER)
    stop_workers(config.load().state_dir, keep=[BENCH_WORKER])


def run_e2e(rate: float, duration: float, echo_duration: float | None = None) -> dict[str, Any]:
    """Start the local stack, measure the echo floor then pdx at ``rate`` req/s, and count the audit rows."""
    _prepare()
    bootstrap = config.load().kafka_bootstrap
    say(f"bench e2e: echo floor at {rate:g} req/s")
    echo = asyncio.run(measure_echo(bootstrap, rate, echo_duration or min(duration, 10.0)))
    return {**_measure_step(rate, duration), **summary(echo, (50, 99), prefix="echo_"), "echo_replies": len(echo)}


def run_find_max(start: float, step: str, max_rate: float, step_duration: float) -> dict[str, Any]:
    """Raise the offered rate along :func:`step_rates` until a step is not :func:`sustained`; the highest
    sustained rate, its figures, and every step's."""
    rates = step_rates(start, step, max_rate)
    _prepare()
    steps: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    for rate in rates:
        result = _measure_step(rate, step_duration)
        result["sustained"] = sustained(result)
        steps.append(result)
        if not result["sustained"]:
            say(f"bench e2e: {rate:g} req/s not sustained; stopping")
            break
        best = result
    return {
        "max_sustained_rps": best["offered_rps"] if best else None,
        "achieved_rps_at_max": best["achieved_rps"] if best else None,
        "p99_ms_at_max": best["p99_ms"] if best else None,
        "worker_rss_mb_at_max": best["worker_rss_mb"] if best else None,
        "worker_rss_mb": worker_rss_mb(config.load().state_dir, BENCH_WORKER),
        "criteria": SUSTAINED,
        "schedule": {"start_rps": start, "step": step, "max_rps": max_rate, "step_duration_s": step_duration},
        "steps": steps,
    }
