"""``pdx bench e2e``: request→decision latency and throughput through the real Kafka and ClickHouse.

An open-loop load (:func:`streams.bench.load.open_loop`) of the request mix goes through PolicyClient → worker
→ reply topic; in the same run and through the same broker, the bare aiokafka echo of
:mod:`streams.bench.floor` measures what Kafka round trips alone cost on this machine. Every request must also
reach the audit table, which is counted. The workers' resident memory is read at the end of each step, and the
CPU the workers, the load generator (this process), the broker, ClickHouse and the sink used during the load is
measured from /proc (``cpu_cores``: CPU seconds per wall second; ``other`` is the rest of the machine).

``--find-max`` raises the offered rate step by step (:func:`step_rates`: from ``start``, ×factor or +increment,
up to ``max_rate``; ``step_duration`` seconds each) and reports the highest offered rate the workers
**sustained** (:func:`sustained`: achieved ≥ 99% of offered, p99 < 100 ms, replies = audit rows = requests),
with every step's figures. It stops at the first step that is not sustained. It measures no echo floor.

``--workers N`` (default 1) measures N workers in one consumer group (``bench-worker-1`` … ``bench-worker-N``;
every other background worker is stopped first), all ready, and all partitions answered by exactly those N,
before load starts. ``--workers 1,2,4`` measures each N in turn and prints one object keyed by N
(:func:`keyed_result`), with the echo and pass-through floors measured once in the same run and the CPU count.
The request topic must have at least max(N) partitions, and the mix's identities are copied so that every
partition gets the same share of every request shape (:func:`streams.bench.load.spread_mix`).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streams import config
from streams.bench.floor import measure_echo, measure_floor
from streams.bench.load import (
    MIX,
    CpuMeter,
    SpreadRequest,
    check_covers,
    clone_identities,
    open_loop,
    spread_identities,
    spread_mix,
    stop_workers,
    worker_rss_mb,
)
from streams.bench.stats import summary
from streams.console import say
from streams.errors import UserError

#: What a step must achieve to count as sustained (``--find-max``).
SUSTAINED = {"min_achieved_fraction": 0.99, "max_p99_ms": 100.0}
#: The most workers ``--workers`` starts (each is a Python process of ~100 MiB).
MAX_WORKERS = 32


def parse_workers(text: str) -> list[int]:
    """``--workers``: one count ("2") or a comma-separated list ("1,2,4"), measured in the order given."""
    counts: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 1 <= int(part) <= MAX_WORKERS:
            raise UserError(f"--workers {text!r}: give worker counts from 1 to {MAX_WORKERS}, like 2 or 1,2,4")
        if int(part) in counts:
            raise UserError(f"--workers {text!r}: {int(part)} is listed twice")
        counts.append(int(part))
    return counts


def worker_ids(n: int) -> list[str]:
    """The N benchmark workers: ``bench-worker-1`` … ``bench-worker-N`` (bench-worker-1 is BENCH_WORKER)."""
    return [f"bench-worker-{i}" for i in range(1, n + 1)]


def check_partitions(partitions: int, n_workers: int) -> None:
    """A UserError unless the request topic has a partition for each of ``n_workers`` workers."""
    if partitions >= n_workers:
        return
    raise UserError(
        f"{config.TOPIC_REQUESTS} has {partitions} partition(s), fewer than the {n_workers} workers asked for: a "
        f"consumer group gives each partition to one worker, so {n_workers - partitions} would idle. Run the "
        f"benchmark on a stack whose topics have at least {n_workers}: `pdx dev down`, then `export "
        f"PDX_STATE_DIR=$(mktemp -d) {config.ENV_REQUEST_PARTITIONS}={n_workers}` and run it again (it creates "
        f"the topics with that many partitions); on an existing stack `pdx topics create --request-partitions "
        f"{n_workers}` only creates missing topics, it does not add partitions."
    )


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


@dataclass
class Plan:
    """What a measurement of N workers runs against: the workers, the request topic's partition count and the
    mix spread over those partitions."""

    workers: list[str]
    partitions: int
    mix: list[SpreadRequest]


async def _request_partitions(cfg: config.Settings) -> int:
    from streams.kafka import clients
    from streams.kafka.state import partition_count

    producer = await clients.start_producer(cfg)
    try:
        return await partition_count(producer, config.TOPIC_REQUESTS)
    finally:
        await producer.stop()


async def _load_copies(cfg: config.Settings, partitions: int) -> int:
    """Produce the mix identities' copies (:func:`streams.bench.load.spread_identities`), signed."""
    from streams.contracts import signing
    from streams.kafka import clients
    from streams.kafka.state import put_identities

    producer = await clients.start_producer(cfg, linger_ms=20)
    try:
        records = clone_identities(spread_identities(partitions))
        return await put_identities(producer, records, signing.signing_key(cfg, signing.INVENTORY))
    finally:
        await producer.stop()


def _prepare_stack(cfg: config.Settings, max_workers: int) -> int:
    """The local stack with bench-worker-1 and a sink, the request topic checked for ``max_workers`` partitions,
    the mix's copies in the inventory. Returns the request partitions."""
    from streams.demo.runner import prepare_stack

    workers = worker_ids(1)
    prepare_stack(cfg, workers[0])
    partitions = asyncio.run(_request_partitions(cfg))
    check_partitions(partitions, max_workers)
    check_covers(spread_mix(partitions), partitions)
    asyncio.run(_load_copies(cfg, partitions))
    return partitions


def _use_workers(cfg: config.Settings, n: int, partitions: int) -> Plan:
    """Exactly the N benchmark workers running (others stopped, missing ones started and ready)."""
    from streams.devservices.workers import start_workers

    state_dir = cfg.state_dir
    ids = worker_ids(n)
    stopped = stop_workers(state_dir, keep=ids)
    if stopped:
        say(f"bench e2e: stopped {', '.join(stopped)}")
    started = start_workers(state_dir, ids, {config.ENV_AUDIT_SINK: "off"})
    if started:
        say(f"bench e2e: started {', '.join(started)}")
    return Plan(ids, partitions, spread_mix(partitions))


async def _settle(client: Any, plan: Plan, timeout_s: float = 120.0) -> dict[int, str]:
    """Wait until the group has settled on exactly ``plan.workers``: every partition answered, by one of them,
    by the same worker two rounds in a row, every worker owning some partition, and every copy deciding like
    its original (its record has reached the workers). Returns {partition: worker}. Doubles as the warm-up."""
    deadline = time.monotonic() + timeout_s
    previous: dict[int, str] | None = None
    problems: list[str] = []
    while time.monotonic() < deadline:
        asked = [*((m[0], m[1], m[2], m[3], -1) for m in MIX), *plan.mix]
        decisions = await asyncio.gather(*(client.check(i, a, r, c) for i, a, r, c, _p in asked))
        originals = [(d.decision, d.reason_codes) for d in decisions[:len(MIX)]]
        owners: dict[int, set[str]] = defaultdict(set)
        problems = []
        for j, ((ident, *_rest, p), d) in enumerate(zip(plan.mix, decisions[len(MIX):], strict=True)):
            if not d.worker_id:
                problems.append(f"{ident}: no reply ({', '.join(d.reason_codes)})")
            elif (d.decision, d.reason_codes) != originals[j % len(MIX)]:
                problems.append(f"{ident}: {d.decision} {d.reason_codes}, its original {originals[j % len(MIX)]}")
            else:
                owners[p].add(d.worker_id)
        seen = {w for ws in owners.values() for w in ws}
        if not problems and len(owners) == plan.partitions and all(len(ws) == 1 for ws in owners.values()):
            if seen == set(plan.workers):
                current = {p: next(iter(ws)) for p, ws in sorted(owners.items())}
                if current == previous:
                    return current
                previous = current
                continue
            problems.append(f"answered by {sorted(seen)}, expected {plan.workers}")
        previous = None
        await asyncio.sleep(0.5)
    raise UserError(f"bench e2e: the {len(plan.workers)} workers did not settle on the {plan.partitions} "
                    f"partitions within {timeout_s:.0f}s: {'; '.join(problems[:5]) or 'a partition changed owner'}. "
                    "Look at the worker logs under $PDX_STATE_DIR/workers.")


def _cpu_pids(cfg: config.Settings, plan: Plan) -> dict[str, int]:
    """The processes whose CPU a step reports: the workers, this process (the load generator), the broker,
    ClickHouse and the audit sink."""
    from streams.demo.runner import AUDIT_SINK
    from streams.devservices.services import DevStack
    from streams.devservices.workers import worker_pid

    state_dir = cfg.state_dir
    stack = DevStack(state_dir, cfg)
    named = {w: worker_pid(state_dir, w) for w in plan.workers}
    named.update({"load_generator": os.getpid(), "kafka": stack.running_pid("kafka"),
                  "clickhouse": stack.running_pid("clickhouse"), "sink": worker_pid(state_dir, AUDIT_SINK)})
    return {name: pid for name, pid in named.items() if pid is not None}


@dataclass
class _Run:
    latencies: list[float]
    sent: int
    replies: int
    elapsed: float
    owners: dict[int, str]
    #: partition → worker → replies it sent for that partition's requests
    answered: dict[int, Counter[str]]
    cpu: dict[str, float | None]


async def _measure_pdx(cfg: config.Settings, rate: float, duration: float, run_id: str, plan: Plan) -> _Run:
    """Settle, then an open loop of request ids ``{run_id}-{i}`` over the spread mix."""
    from streams.client import PolicyClient

    async with PolicyClient(settings=cfg, timeout_s=30.0) as client:
        owners = await _settle(client, plan)
        replies = 0
        answered: dict[int, Counter[str]] = defaultdict(Counter)

        async def send(i: int) -> float | None:
            nonlocal replies
            ident, action, resource, context, partition = plan.mix[i % len(plan.mix)]
            request = client.build_request(ident, action, resource, context, request_id=f"{run_id}-{i}")
            t0 = time.perf_counter()
            decision = await client.send(request)
            if decision.worker_id:
                replies += 1
                answered[partition][decision.worker_id] += 1
                return (time.perf_counter() - t0) * 1000
            return None

        meter = CpuMeter(_cpu_pids(cfg, plan))
        meter.start()
        latencies, sent, elapsed = await open_loop(rate, duration, send)
        cpu = meter.stop()
    return _Run(latencies, sent, replies, elapsed, owners, answered, cpu)


def per_worker(plan: Plan, run: _Run, rss: Mapping[str, float | None]) -> dict[str, dict[str, Any]]:
    """Each worker's replies, the partitions it answered for during the load, and its RSS (MiB)."""
    out: dict[str, dict[str, Any]] = {}
    for w in plan.workers:
        parts = sorted(p for p, by in run.answered.items() if by.get(w))
        out[w] = {"decisions": sum(by.get(w, 0) for by in run.answered.values()), "partitions": parts,
                  "rss_mb": rss.get(w), "cpu_cores": run.cpu.get(w)}
    return out


def _measure_step(cfg: config.Settings, rate: float, duration: float, plan: Plan) -> dict[str, Any]:
    """The N workers at ``rate`` req/s for ``duration`` s: rates, latency percentiles, counts (audit rows
    included), each worker's share, RSS afterwards, and the CPU each process used during the load."""
    from streams.audit.store import wait_for_audit_rows

    run_id = f"bench-{uuid.uuid4().hex[:10]}"
    n = len(plan.workers)
    say(f"bench e2e: {n} worker(s) at {rate:g} req/s for {duration:g}s (run {run_id})")
    run = asyncio.run(_measure_pdx(cfg, rate, duration, run_id, plan))
    say("bench e2e: waiting for audit rows in ClickHouse")
    audit_rows = wait_for_audit_rows(run.sent, id_prefix=run_id + "-", cfg=cfg, timeout_s=max(60.0, duration * 2))
    rss = {w: worker_rss_mb(cfg.state_dir, w) for w in plan.workers}
    workers_cpu = [c for w in plan.workers if (c := run.cpu.get(w)) is not None]
    return {
        "workers": n,
        "offered_rps": rate,
        "achieved_rps": round(run.replies / run.elapsed, 1) if run.elapsed else 0.0,
        **summary(run.latencies, (50, 95, 99)),
        "requests": run.sent,
        "replies": run.replies,
        "audit_rows": audit_rows,
        "mean_ms": round(statistics.fmean(run.latencies), 2) if run.latencies else None,
        "worker_rss_mb": max((v for v in rss.values() if v is not None), default=None),
        "request_partitions": plan.partitions,
        "assignment": {w: sorted(p for p, o in run.owners.items() if o == w) for w in plan.workers},
        "moved_during_load": sorted(p for p, by in run.answered.items() if len(by) > 1),
        "per_worker": per_worker(plan, run, rss),
        "cpu_cores": {**run.cpu, "workers_total": round(sum(workers_cpu), 2)},
    }


def _echo_floor(cfg: config.Settings, rate: float, duration: float) -> dict[str, Any]:
    say(f"bench e2e: echo floor at {rate:g} req/s")
    echo = asyncio.run(measure_echo(cfg, rate, duration))
    return {**summary(echo, (50, 99), prefix="echo_"), "echo_replies": len(echo), "echo_rps": rate}


def run_e2e(cfg: config.Settings, rate: float, duration: float, workers: Sequence[int] = (1,),
            echo_duration: float | None = None, floor_requests: int = 20_000) -> dict[str, Any]:
    """Start the local stack, measure the echo floor then the workers at ``rate`` req/s, and count the audit
    rows. One worker count: one flat object (as before ``--workers``); several: :func:`keyed_result`."""
    partitions = _prepare_stack(cfg, max(workers))
    echo = _echo_floor(cfg, rate, echo_duration or min(duration, 10.0))
    floor = _pass_through_floor(cfg, floor_requests) if len(workers) > 1 else {}
    results = {n: _measure_step(cfg, rate, duration, _use_workers(cfg, n, partitions)) for n in workers}
    if len(workers) == 1:
        return {**results[workers[0]], **echo, "cpu_count": os.cpu_count()}
    return keyed_result(results, {**echo, **floor}, os.cpu_count())


def _pass_through_floor(cfg: config.Settings, n: int) -> dict[str, Any]:
    """The aiokafka pass-through floor (:func:`streams.bench.floor.measure_floor`) on n requests, with the
    workers idle; {} when n is 0."""
    if n <= 0:
        return {}
    return asyncio.run(measure_floor(cfg, n))


def _find_max(cfg: config.Settings, rates: list[float], step_duration: float, plan: Plan) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    for rate in rates:
        result = _measure_step(cfg, rate, step_duration, plan)
        result["sustained"] = sustained(result)
        steps.append(result)
        if not result["sustained"]:
            say(f"bench e2e: {len(plan.workers)} worker(s): {rate:g} req/s not sustained; stopping")
            break
    return steps


def find_max_result(steps: list[dict[str, Any]], schedule: dict[str, Any]) -> dict[str, Any]:
    """One worker count's ``--find-max`` figures: the highest sustained step's, and every step."""
    best = next((s for s in reversed(steps) if s["sustained"]), None)
    last = steps[-1] if steps else {}
    return {
        "workers": last.get("workers"),
        "max_sustained_rps": best["offered_rps"] if best else None,
        "achieved_rps_at_max": best["achieved_rps"] if best else None,
        "p50_ms_at_max": best["p50_ms"] if best else None,
        "p99_ms_at_max": best["p99_ms"] if best else None,
        "worker_rss_mb_at_max": best["worker_rss_mb"] if best else None,
        "cpu_cores_at_max": best["cpu_cores"] if best else None,
        "per_worker_at_max": best["per_worker"] if best else None,
        "worker_rss_mb": last.get("worker_rss_mb"),
        "highest_achieved_rps": max((s["achieved_rps"] for s in steps), default=None),
        "criteria": SUSTAINED,
        "schedule": schedule,
        "steps": steps,
    }


def run_find_max(cfg: config.Settings, start: float, step: str, max_rate: float, step_duration: float,
                 workers: Sequence[int] = (1,), floor_requests: int = 20_000) -> dict[str, Any]:
    """For each worker count, raise the offered rate along :func:`step_rates` until a step is not
    :func:`sustained`. One count: one flat object (no floor, as before ``--workers``); several:
    :func:`keyed_result`, with the echo floor (at ``start``) and the pass-through floor."""
    rates = step_rates(start, step, max_rate)
    schedule = {"start_rps": start, "step": step, "max_rps": max_rate, "step_duration_s": step_duration}
    partitions = _prepare_stack(cfg, max(workers))
    floors: dict[str, Any] = {}
    if len(workers) > 1:
        floors = {**_echo_floor(cfg, start, min(step_duration, 10.0)), **_pass_through_floor(cfg, floor_requests)}
    results = {n: find_max_result(_find_max(cfg, rates, step_duration, _use_workers(cfg, n, partitions)), schedule)
               for n in workers}
    if len(workers) == 1:
        return {**results[workers[0]], "cpu_count": os.cpu_count()}
    return keyed_result(results, floors, os.cpu_count())


def keyed_result(results: Mapping[int, Mapping[str, Any]], floor: Mapping[str, Any],
                 cpu_count: int | None) -> dict[str, Any]:
    """Several worker counts' results in one object: ``by_workers`` keyed by N (a string, as JSON keys are),
    ``summary`` one row per N in the order measured (achieved rate, p50/p99, highest sustained rate when
    ``--find-max``, cores the workers and the load generator used), the floors and the machine's CPU count."""
    rows = []
    for n, r in results.items():
        fm = "max_sustained_rps" in r
        cpu = (r.get("cpu_cores_at_max") if fm else r.get("cpu_cores")) or {}
        rows.append({
            "workers": n,
            "max_sustained_rps": r.get("max_sustained_rps") if fm else None,
            "achieved_rps": r.get("achieved_rps_at_max") if fm else r.get("achieved_rps"),
            "highest_achieved_rps": r.get("highest_achieved_rps") if fm else r.get("achieved_rps"),
            "p50_ms": r.get("p50_ms_at_max") if fm else r.get("p50_ms"),
            "p99_ms": r.get("p99_ms_at_max") if fm else r.get("p99_ms"),
            "workers_cores": cpu.get("workers_total"),
            "load_generator_cores": cpu.get("load_generator"),
            "machine_cores": cpu.get("machine"),
        })
    return {"cpu_count": cpu_count, "workers": list(results), "summary": rows, "floor": dict(floor),
            "by_workers": {str(n): dict(r) for n, r in results.items()}}
