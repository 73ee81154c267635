"""What the Kafka benchmarks (e2e, drain, propagation, memory, the floors) share: the request mix and the
reply/audit records pdx answers it with, a producer of queued requests, the open-loop driver, a reader of one
partition's new records, background workers that do not audit (start, stop, resident memory) and synthetic
identities."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
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
#: The worker that drain starts for the queued backlog.
DRAIN_WORKER = "drain-worker-1"


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


class KeyedRoundTrips:
    """Round trips matched by key: :meth:`one` sends ``payload`` to ``topic`` under a fresh key and returns the
    milliseconds until ``consumer`` reads a record with that key (None after ``timeout_s``). The echo floor and
    the delivery benchmark time their relays this way."""

    def __init__(self, producer: Any, consumer: AIOKafkaConsumer, topic: str, payload: bytes) -> None:
        self.producer, self.consumer, self.topic, self.payload = producer, consumer, topic, payload
        self.pending: dict[bytes, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> KeyedRoundTrips:
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()

    async def _read(self) -> None:
        async for msg in self.consumer:
            fut = self.pending.pop(msg.key or b"", None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def one(self, timeout_s: float) -> float | None:
        key = uuid.uuid4().bytes
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending[key] = fut
        t0 = time.perf_counter()
        await self.producer.send(self.topic, self.payload, key=key)
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            self.pending.pop(key, None)
            return None
        return (time.perf_counter() - t0) * 1000


def spawn_quiet_worker(state_dir: Path, worker_id: str) -> Path:
    """Start a background worker with its audit sink off (benchmarks count decisions, not audit rows);
    returns its log."""
    from streams.devservices.workers import spawn_worker

    _, log = spawn_worker(state_dir, worker_id, {config.ENV_AUDIT_SINK: "off"})
    return log


def stop_workers(state_dir: Path, keep: Iterable[str] = ()) -> list[str]:
    """Stop every background worker under ``state_dir`` except those named in ``keep`` (a one-worker figure
    must not be shared with a worker another benchmark left running); returns the names stopped."""
    from streams.devservices import procs

    kept = set(keep)
    stopped = []
    for pid_file in sorted((state_dir / "workers").glob("*worker*.pid")):
        if pid_file.stem not in kept and procs.stop(pid_file):
            stopped.append(pid_file.stem)
    return stopped


def rss_mb(pid: int) -> float | None:
    """Resident set size (``VmRSS`` in /proc/<pid>/status) of a live process in MiB; None when unreadable."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)  # the kernel reports kB
    return None


def worker_rss_mb(state_dir: Path, worker_id: str) -> float | None:
    """RSS (MiB) of the background worker ``worker_id`` (its pid file is under ``state_dir``/workers)."""
    from streams.devservices import procs

    pid = procs.read_pid(state_dir / "workers" / f"{worker_id}.pid")
    return rss_mb(pid) if pid is not None else None


async def queue_requests(cfg: config.Settings, topic: str, n: int) -> None:
    """Produce n requests of the mix to ``topic`` (long timeouts: they wait for a consumer; replies to
    partition 0), keyed by identity like PolicyClient does."""
    from streams.client import PolicyClient
    from streams.contracts import wire

    builder = PolicyClient(reply_partition=0)
    producer = await clients.start_producer(cfg, linger_ms=20)
    try:
        for i in range(n):
            ident, action, resource, context = MIX[i % len(MIX)]
            request = builder.build_request(ident, action, resource, context, timeout_s=3600)
            await producer.send(topic, wire.encode("AccessRequest", request.to_dict()), key=ident.encode())
        await producer.flush()
    finally:
        await producer.stop()


def mix_outputs() -> dict[bytes, tuple[bytes, bytes]]:
    """For each request key of the mix, the (reply, audit record) a worker produces for it: the request decided
    by the shipped policies for the demo inventory's identity, the Decision encoded, the AuditRecord spliced.

    The floors send records of exactly these sizes, so they move the bytes pdx moves."""
    from streams.client import PolicyClient
    from streams.contracts import wire
    from streams.model.inventory_file import read_inventory
    from streams.policy import load_policy_dir
    from streams.policy.compiler import compile_bundle
    from streams.policy.evaluator import evaluate

    content = load_policy_dir(config.require_policies_dir("pdx bench")).to_bundle_content()
    bundle = compile_bundle(content)
    identities = {i.id: i for i in read_inventory(config.require_demo_inventory("pdx bench"))}
    builder = PolicyClient(reply_partition=0)
    out: dict[bytes, tuple[bytes, bytes]] = {}
    for ident, action, resource, context in MIX:
        request = builder.build_request(ident, action, resource, context, timeout_s=3600)
        identity = identities.get(ident)
        now = datetime.now(UTC)
        decision = evaluate(bundle, request, identity, [], now)
        decision.worker_id = DRAIN_WORKER
        reply = wire.encode("Decision", decision.to_dict())
        identity_msg = wire.encode("Identity", identity.to_dict()) if identity is not None else None
        audit = wire.splice_audit_record(
            wire.encode("AccessRequest", request.to_dict()), identity_msg, reply, received_at=now, decided_at=now,
            source_topic=config.TOPIC_REQUESTS, source_partition=0, source_offset=1_000_000, worker_id=DRAIN_WORKER)
        out.setdefault(ident.encode(), (reply, audit or b""))
    return out


def synthetic_identity(ident: str, status: str = "active") -> dict[str, Any]:
    """An inventory record (the dict ``put_identities`` takes) for a benchmark identity."""
    return {"id": ident, "kind": "agent", "owner": "bench", "status": status, "environments": [],
            "scopes": [], "tags": [], "approved_repositories": [], "risk_tier": "low", "credentials": [],
            "attributes": {}, "updated_at": datetime.now(UTC)}


def clone_id(ident: str, k: int) -> str:
    """The k-th benchmark copy of inventory identity ``ident`` (same record, another id)."""
    return f"{ident}.bench-{k}"


def spread_identities(n_partitions: int) -> dict[str, list[str]]:
    """For every identity of :data:`MIX`, one copy per request partition: ``{identity: [id on partition 0, id on
    partition 1, …]}``.

    Why copies: requests are keyed (so partitioned) by identity id, and the mix has only four identities, which
    cannot cover more than four partitions and in fact hash onto fewer; a worker whose partitions get no
    requests would sit idle and the N-worker figure would measure fewer workers. The copies are the demo
    inventory's records under other ids (:func:`clone_identities`), so each decides exactly like its original.
    """
    from streams.kafka.state import partition_for

    out: dict[str, list[str]] = {}
    for ident in dict.fromkeys(m[0] for m in MIX):
        found: dict[int, str] = {}
        k = 0
        while len(found) < n_partitions:
            found.setdefault(partition_for(clone_id(ident, k), n_partitions), clone_id(ident, k))
            k += 1
        out[ident] = [found[p] for p in range(n_partitions)]
    return out


#: One request of a spread mix: (identity id, action, resource, context, request partition).
SpreadRequest = tuple[str, str, dict[str, Any], dict[str, Any], int]


def spread_mix(n_partitions: int) -> list[SpreadRequest]:
    """The request mix over ``n_partitions`` partitions: entry j is the shape ``MIX[j % len(MIX)]`` sent by its
    identity's copy on partition ``j // len(MIX)``. Cycling through it, every partition gets the same share of
    every shape."""
    copies = spread_identities(n_partitions)
    return [(copies[ident][p], action, resource, context, p)
            for p in range(n_partitions) for ident, action, resource, context in MIX]


def check_covers(mix: Iterable[SpreadRequest], n_partitions: int) -> None:
    """Raise a UserError unless the mix's identities hash onto every one of ``n_partitions`` partitions (the
    partition each entry names must be the one its identity is keyed to)."""
    from streams.errors import UserError
    from streams.kafka.state import partition_for

    hit: set[int] = set()
    for ident, _action, _resource, _context, partition in mix:
        if partition_for(ident, n_partitions) != partition:
            raise UserError(f"bench mix: {ident} is keyed to partition {partition_for(ident, n_partitions)}, "
                            f"not {partition}")
        hit.add(partition)
    missing = sorted(set(range(n_partitions)) - hit)
    if missing:
        raise UserError(f"bench mix: no identity of the mix is keyed to partition(s) {missing} of "
                        f"{n_partitions}: the workers owning them would idle")


def clone_identities(copies: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The demo inventory's record of each identity, once per copy id in ``copies`` (the dicts
    ``put_identities`` takes)."""
    from streams.errors import UserError
    from streams.model.inventory_file import read_inventory

    originals = {i.id: i for i in read_inventory(config.require_demo_inventory("pdx bench"))}
    out: list[dict[str, Any]] = []
    for ident, ids in copies.items():
        if ident not in originals:
            raise UserError(f"bench mix: identity {ident} is not in the demo inventory")
        record = originals[ident].to_dict()
        out.extend({**record, "id": copy} for copy in ids)
    return out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a live process has used (``/proc/<pid>/stat``); None when unreadable."""
    import os

    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 (state) is fields[0]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores of this machine have spent not idle since boot (``/proc/stat``)."""
    import os

    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    ticks = [int(x) for x in first[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Cores used by named processes (and by the whole machine) between :meth:`start` and :meth:`stop`.

    On a shared 2-core machine the load generator, the broker, ClickHouse, the sink and the workers compete for
    the same cores, so a throughput figure means little without where the CPU went: ``other`` is what the
    machine spent outside the processes named (other users, the kernel's own work)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._t0 = 0.0
        self._before: dict[str, float | None] = {}
        self._machine: float | None = None

    def start(self) -> None:
        self._before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self._machine = machine_busy_seconds()
        self._t0 = time.perf_counter()

    def stop(self) -> dict[str, float | None]:
        """``{name: cores}`` (CPU seconds per wall second, 1.0 = one core busy), ``machine`` and ``other``."""
        wall = time.perf_counter() - self._t0
        machine = machine_busy_seconds()
        out: dict[str, float | None] = {}
        for name, pid in self.pids.items():
            before, after = self._before.get(name), cpu_seconds(pid)
            out[name] = round((after - before) / wall, 2) if before is not None and after is not None else None
        if machine is not None and self._machine is not None and wall > 0:
            busy = (machine - self._machine) / wall
            named = sum(v for v in out.values() if v is not None)
            out["machine"] = round(busy, 2)
            out["other"] = round(busy - named, 2)
        return out
