"""`pdx bench e2e` and `pdx bench propagation`: the pipeline measured through the real Kafka and ClickHouse.

e2e: an open-loop load (requests sent on a fixed schedule, not waiting for replies — so a slow PDP shows
up as latency, not as a politely lower rate) through PolicyClient → worker → reply topic, plus, in the same
run and through the same broker, a bare aiokafka request→reply echo served by a separate process: the floor
that Kafka round trips alone cost on this machine.

propagation: how long from producing a change (suspend an identity, publish a bundle) until workers decide
with it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from streams import config as settings
from streams.contracts import wire

ECHO_REQ = "pdx.bench.echo.requests"
ECHO_REP = "pdx.bench.echo.replies"

# Requests the benchmark sends: a mix of the demo scenarios' shapes (allow, deny and step-up paths).
_MIX: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("agent-config-bot", "config:read", {"id": "feature-flags", "type": "config"}, {}),
    ("agent-intern", "db:connect", {"id": "orders-db", "type": "database", "environment": "production"},
     {"requested_ttl_s": 600}),
    ("agent-config-bot", "config:write", {"id": "feature-flags", "type": "config"}, {}),
    ("svc-billing", "api:call", {"id": "invoices-api", "type": "api", "sensitivity": "confidential"},
     {"source_ip": "10.1.2.3"}),
    ("wf-release-main", "deploy:release", {"id": "release-prod", "type": "pipeline", "environment": "production"},
     {}),
]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def _progress_note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _open_loop(rate: float, duration: float, send: Callable[[int], Awaitable[float | None]],
                     ) -> tuple[list[float], int, float]:
    """Fire send(i) every 1/rate s for duration s; returns (latencies ms, sent, elapsed s until last reply)."""
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
            target = start + i * interval
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
            tasks[-1].add_done_callback(lambda _t: progress.advance(task))
        await asyncio.gather(*tasks)
    return latencies, total, time.perf_counter() - start


# ---- the echo floor -----------------------------------------------------------------------------


async def echo_server(bootstrap: str) -> None:
    """Reply to every echo request on the partition it names (run in its own process)."""
    from streams.kafka import clients

    cfg = settings.load().replace(kafka_bootstrap=bootstrap)
    consumer = clients.consumer(cfg, ECHO_REQ, group_id="pdx-bench-echo", enable_auto_commit=True,
                                auto_offset_reset="latest", fetch_max_wait_ms=5)
    producer = clients.producer(cfg, linger_ms=0, acks=1, enable_idempotence=False)
    await consumer.start()
    await producer.start()
    print("echo-ready", flush=True)
    try:
        async for msg in consumer:
            await producer.send(ECHO_REP, msg.value, key=msg.key, partition=0, headers=msg.headers)
    finally:
        await consumer.stop()
        await producer.stop()


async def _measure_echo(bootstrap: str, rate: float, duration: float) -> list[float]:
    from aiokafka import TopicPartition
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    from streams.kafka import clients

    cfg = settings.load().replace(kafka_bootstrap=bootstrap)
    admin = clients.admin(cfg)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(ECHO_REQ, 1, 1), NewTopic(ECHO_REP, 1, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.bench.stream", "echo-server", bootstrap,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert server.stdout is not None
    await asyncio.wait_for(server.stdout.readline(), 60)
    producer = clients.producer(cfg, linger_ms=0, acks=1, enable_idempotence=False)
    consumer = clients.consumer(cfg, fetch_max_wait_ms=20)
    await producer.start()
    await consumer.start()
    tp = TopicPartition(ECHO_REP, 0)
    consumer.assign([tp])
    await consumer.seek_to_end(tp)
    await consumer.position(tp)
    pending: dict[bytes, asyncio.Future[None]] = {}

    async def reader() -> None:
        async for msg in consumer:
            fut = pending.pop(msg.key, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    read_task = asyncio.create_task(reader())
    # Warm up: the echo consumer group must be assigned before measuring.
    for _ in range(200):
        key = uuid.uuid4().bytes
        fut = asyncio.get_running_loop().create_future()
        pending[key] = fut
        await producer.send(ECHO_REQ, b"x" * 180, key=key)
        try:
            await asyncio.wait_for(fut, 1.0)
            break
        except TimeoutError:
            pending.pop(key, None)

    async def send(i: int) -> float | None:
        key = uuid.uuid4().bytes
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending[key] = fut
        t0 = time.perf_counter()
        await producer.send(ECHO_REQ, b"x" * 180, key=key)
        try:
            await asyncio.wait_for(fut, 10)
        except TimeoutError:
            pending.pop(key, None)
            return None
        return (time.perf_counter() - t0) * 1000

    try:
        latencies, _, _ = await _open_loop(rate, duration, send)
    finally:
        read_task.cancel()
        await consumer.stop()
        await producer.stop()
        server.terminate()
        await server.wait()
    return latencies


# ---- e2e --------------------------------------------------------------------------------------------


async def _measure_pdx(rate: float, duration: float, run_id: str) -> tuple[list[float], int, int, float]:
    from streams.client import PolicyClient

    async with PolicyClient(timeout_s=30.0) as client:
        for _ in range(20):  # warm-up outside the measured window
            await client.check(*_MIX[0])
        replies = 0

        async def send(i: int) -> float | None:
            nonlocal replies
            ident, action, resource, context = _MIX[i % len(_MIX)]
            request = client.build_request(ident, action, resource, context, request_id=f"{run_id}-{i}")
            t0 = time.perf_counter()
            decision = await client.send(request)
            if decision.worker_id:
                replies += 1
                return (time.perf_counter() - t0) * 1000
            return None

        latencies, sent, elapsed = await _open_loop(rate, duration, send)
    return latencies, sent, replies, elapsed


def run_e2e(rate: float, duration: float, echo_duration: float | None = None) -> dict[str, Any]:
    from streams.audit.store import wait_for_audit_rows
    from streams.demo.runner import prepare_stack

    prepare_stack("bench-worker-1")
    bootstrap = settings.load().kafka_bootstrap
    _progress_note(f"bench e2e: echo floor at {rate:g} req/s")
    echo = asyncio.run(_measure_echo(bootstrap, rate, echo_duration or min(duration, 10.0)))
    run_id = f"bench-{uuid.uuid4().hex[:10]}"
    _progress_note(f"bench e2e: pdx at {rate:g} req/s for {duration:g}s (run {run_id})")
    latencies, sent, replies, elapsed = asyncio.run(_measure_pdx(rate, duration, run_id))
    _progress_note("bench e2e: waiting for audit rows in ClickHouse")
    audit_rows = wait_for_audit_rows(sent, id_prefix=run_id + "-", timeout_s=max(60.0, duration * 2))
    return {
        "offered_rps": rate,
        "achieved_rps": round(replies / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(_percentile(latencies, 50), 2),
        "p95_ms": round(_percentile(latencies, 95), 2),
        "p99_ms": round(_percentile(latencies, 99), 2),
        "requests": sent,
        "replies": replies,
        "audit_rows": audit_rows,
        "echo_p50_ms": round(_percentile(echo, 50), 2),
        "echo_p99_ms": round(_percentile(echo, 99), 2),
        "echo_replies": len(echo),
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
    }


# ---- propagation ------------------------------------------------------------------------------------


async def _propagation(trials: int, workers: list[str]) -> dict[str, Any]:
    from streams.client import PolicyClient
    from streams.kafka import clients
    from streams.kafka.state import partition_for, put_identities
    from streams.ops import publish_policies
    from streams.policy.testing import policy_dir_with

    n_parts = settings.load().request_partitions
    # One probe identity per request partition, so every worker's partitions are probed.
    probes: dict[int, str] = {}
    i = 0
    while len(probes) < n_parts:
        ident = f"probe-agent-{i}"
        probes.setdefault(partition_for(ident, n_parts), ident)
        i += 1
    producer = await clients.start_producer(settings.load())

    def identity(ident: str, status: str) -> dict[str, Any]:
        return {"id": ident, "kind": "agent", "owner": "bench", "status": status, "environments": [],
                "scopes": [], "tags": [], "approved_repositories": [], "risk_tier": "low", "credentials": [],
                "attributes": {}, "updated_at": datetime.now(UTC)}

    await put_identities(producer, [identity(p, "active") for p in probes.values()])
    resource = {"id": "feature-flags", "type": "config"}
    suspend_ms: list[float] = []
    publish_ms: list[float] = []
    variant = policy_dir_with(Path(settings.load().state_dir) / "bench-policies", {})
    async with PolicyClient(timeout_s=10) as client:
        seen_workers: set[str] = set()
        for ident in probes.values():
            d = await client.check(ident, "config:read", resource)
            seen_workers.add(d.worker_id)
        for trial in range(trials):
            # suspend: from producing the change until the deciding worker denies
            ident = probes[trial % n_parts]
            await put_identities(producer, [identity(ident, "active")])
            while (await client.check(ident, "config:read", resource)).decision != "allow":
                await asyncio.sleep(0.01)
            t0 = time.perf_counter()
            await put_identities(producer, [identity(ident, "suspended")])
            while (await client.check(ident, "config:read", resource)).reason_codes != ["identity_suspended"]:
                pass
            suspend_ms.append((time.perf_counter() - t0) * 1000)
            await put_identities(producer, [identity(ident, "active")])
            # publish: from producing the bundle until every partition (every worker) decides with it
            (variant / "zz-bench.yaml").write_text(
                f"name: bench-{trial}\ndescription: propagation probe {trial}\nowner: bench\nmode: monitor\n"
                f"controls: [SP800-207:PDP]\nrules:\n  - id: bench-probe-{trial}\n    effect: deny\n    when:\n"
                f"      - action: \"bench:never-{trial}\"\n    reason: {{code: bench_probe, message: probe}}\n")
            t0 = time.perf_counter()
            version = await publish_policies(str(variant), "bench")
            pending = set(probes.values())
            while pending:
                ds = await asyncio.gather(*(client.check(p, "config:read", resource) for p in pending))
                pending = {d_ident for d_ident, d in zip(list(pending), ds, strict=True)
                           if d.bundle_version != version}
            publish_ms.append((time.perf_counter() - t0) * 1000)
    await producer.stop()
    await publish_policies(str(settings.POLICIES_DIR), "bench")
    return {
        "trials": trials,
        "workers": sorted(w for w in seen_workers if w),
        "suspend_p50_ms": round(_percentile(suspend_ms, 50), 1),
        "suspend_p99_ms": round(_percentile(suspend_ms, 99), 1),
        "publish_p50_ms": round(_percentile(publish_ms, 50), 1),
        "publish_p99_ms": round(_percentile(publish_ms, 99), 1),
    }


def run_propagation(trials: int, n_workers: int) -> dict[str, Any]:
    from streams.demo.runner import prepare_stack
    from streams.devservices import procs
    from streams.devservices.workers import spawn_worker, wait_until_ready

    prepare_stack("bench-worker-1")
    state_dir = settings.load().state_dir
    for i in range(2, n_workers + 1):
        if procs.read_pid(state_dir / "workers" / f"bench-worker-{i}.pid") is None:
            _, log = spawn_worker(state_dir, f"bench-worker-{i}", {settings.ENV_AUDIT_SINK: "off"})
            wait_until_ready(log)
    time.sleep(5 if n_workers > 1 else 0)  # let the group rebalance onto the new workers
    return asyncio.run(_propagation(trials, [f"bench-worker-{i}" for i in range(1, n_workers + 1)]))


async def _drain(n: int, worker_id: str) -> dict[str, Any]:
    """Queue n requests with no worker running, start one worker, time how fast it answers them all."""
    from aiokafka import TopicPartition

    from streams.client import PolicyClient
    from streams.devservices.workers import spawn_worker
    from streams.kafka import clients

    s = settings.load()
    builder = PolicyClient(reply_partition=0)
    consumer = clients.consumer(s)
    await consumer.start()
    tp = TopicPartition(settings.TOPIC_DECISIONS, 0)
    consumer.assign([tp])
    await consumer.seek_to_end(tp)
    await consumer.position(tp)
    producer = await clients.start_producer(s, linger_ms=20)
    try:
        for i in range(n):
            ident, action, resource, context = _MIX[i % len(_MIX)]
            request = builder.build_request(ident, action, resource, context, timeout_s=3600)
            value = wire.encode("AccessRequest", request.to_dict())
            await producer.send(settings.TOPIC_REQUESTS, value, key=ident.encode())
        await producer.flush()
    finally:
        await producer.stop()
    _progress_note(f"bench drain: {n} requests queued; starting worker {worker_id}")
    spawn_worker(s.state_dir, worker_id, {settings.ENV_AUDIT_SINK: "off"})
    replies, first, last = 0, 0.0, 0.0
    try:
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
    """Per-worker throughput without a load generator competing for the CPU."""
    from streams.demo.runner import prepare_stack
    from streams.devservices import procs

    state_dir = settings.load().state_dir
    for pid_file in (state_dir / "workers").glob("*worker*.pid"):
        procs.stop(pid_file)  # the backlog must be answered by exactly one fresh worker
    prepare_stack(start_worker=False)
    return asyncio.run(_drain(n, "drain-worker-1"))


def cmd_drain(args: argparse.Namespace) -> int:
    result = run_drain(args.requests)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def cmd_e2e(args: argparse.Namespace) -> int:
    result = run_e2e(args.rate, args.duration)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def cmd_propagation(args: argparse.Namespace) -> int:
    result = run_propagation(args.trials, args.workers)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("e2e", help="request→decision latency and throughput through Kafka, vs a bare echo")
    p.add_argument("--rate", type=float, default=1000.0, help="offered requests per second (open loop)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    p.add_argument("--json", action="store_true", help="one line of JSON on stdout")
    p.set_defaults(func=cmd_e2e)
    p = sub.add_parser("drain", help="one worker's throughput: queue N requests, then time one worker answering them")
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_drain)
    p = sub.add_parser("propagation", help="time from suspend / publish until workers decide with it")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--workers", type=int, default=2, help="workers running during the measurement")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_propagation)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "echo-server":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(echo_server(sys.argv[2]))
