"""A 3-broker KRaft cluster (``pdx dev up --brokers 3``) loses its partition leader under load.

The module starts its own stack (three combined broker+controller nodes and ClickHouse, free ports, its own state
dir and keys), creates the topics with the defaults for 3 brokers (replication 3, min.insync.replicas 2), runs one
worker (audit sink inside) and sends a steady stream of requests through ``PolicyClient``. Then it SIGKILLs the
broker that leads most ``pdx.requests`` partitions (partition 0's leader on a tie) and keeps sending. It asserts
what a caller and an auditor must see: every request answered or failed closed by the client's timeout (a
``pdp_timeout`` deny, never an exception or a hang), no request id with two different decisions in the replies or
in ClickHouse, every answered request audited with the decision the caller got, and decisions flowing again on
every partition the dead broker led. The seconds until they flow again are printed (``-s``) as ``recovery_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.partitioner import murmur2

from streams import config as settings
from streams.audit.migrate import migrate
from streams.audit.store import connect
from streams.bench.faults import leader_victim, takeover_by_partition, takeover_of
from streams.client import PolicyClient
from streams.contracts import wire
from streams.contracts.signing import ensure_dev_keys
from streams.devservices import procs
from streams.devservices.services import DevStack, Ports
from streams.devservices.workers import spawn_worker, wait_until_ready
from streams.kafka import clients
from streams.kafka.topics import create_topics
from streams.ops import load_inventory, publish_policies

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

RATE = 40.0  # requests/s: steady, far below what one worker decides
BEFORE_S = 5.0  # load before the kill
AFTER_S = 15.0  # load after it (recovery took 4-8 s here)
TIMEOUT_S = 8.0  # the callers' timeout: a later answer is a pdp_timeout deny
RECOVERY_BOUND_S = 30.0
#: known identities (allow / deny / step-up by the shipped policies) and unknown ones (deny), so that every
#: request partition carries load
IDENTITIES = ["agent-config-bot", "agent-intern", "agent-analytics", "sa-deploy-payments",
              *(f"ghost-{i}" for i in range(8))]


@dataclass
class Cluster:
    stack: DevStack
    ports: Ports
    worker_log: Path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("kafka-cluster")
    stack = DevStack(tmp / "state", settings.load())
    env_keys = [*Ports(1, 2, 3, 4).env(), settings.ENV_CLICKHOUSE_CREDENTIALS, settings.ENV_KEYS_DIR,
                settings.ENV_STATE_DIR, settings.ENV_KAFKA_REPLICATION_FACTOR, settings.ENV_KAFKA_MIN_INSYNC_REPLICAS]
    saved = {k: os.environ.get(k) for k in env_keys}
    try:
        ports = stack.up(("kafka", "clickhouse"), Ports.free(brokers=3), brokers=3)
        for k in (settings.ENV_KAFKA_REPLICATION_FACTOR, settings.ENV_KAFKA_MIN_INSYNC_REPLICAS):
            os.environ.pop(k, None)  # the defaults for 3 brokers are what this test is about
        os.environ.update(stack.env(ports))
        os.environ[settings.ENV_KEYS_DIR] = str(tmp / "keys")
        os.environ[settings.ENV_STATE_DIR] = str(stack.state_dir)
        s = settings.load()
        ensure_dev_keys(s)
        result = asyncio.run(create_topics(s, 4, 4))
        assert result[settings.TOPIC_REQUESTS] == "created (4 partitions, replication 3, min ISR 2)", result
        migrate(connect(s.clickhouse_url, cfg=s, role="admin"), ttl_days=s.audit_ttl_days)
        asyncio.run(publish_policies(str(settings.POLICIES_DIR), "tests", cfg=settings.load()))
        asyncio.run(load_inventory(str(settings.REPO_ROOT / "examples" / "inventory.yaml"), show_progress=False,
                                   cfg=settings.load()))
        _, log = spawn_worker(stack.state_dir, "cluster-w1")
        wait_until_ready(log)
        yield Cluster(stack, ports, log)
    finally:
        stack.down(("kafka", "clickhouse"))
        for pid_file in (stack.state_dir / "workers").glob("*.pid"):
            procs.stop(pid_file)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class Call:
    rid: str
    partition: int
    sent: float
    done: float | None = None
    decision: str | None = None
    timed_out: bool = False  # failed closed by the client (pdp_timeout)
    error: str | None = None  # an exception reached the caller: must never happen


@dataclass
class Replies:
    """Every reply seen on the client's reply partition for this run: (arrival, decision) per request id."""

    seen: dict[str, list[tuple[float, str]]] = field(default_factory=lambda: defaultdict(list))


async def _leaders() -> dict[int, int]:
    admin = clients.admin(settings.load())
    await admin.start()
    try:
        [topic] = await admin.describe_topics([settings.TOPIC_REQUESTS])
        return {p["partition"]: p["leader"] for p in topic["partitions"]}
    finally:
        await admin.close()


async def _read_replies(reply_partition: int, prefix: str, out: Replies) -> None:
    reader = await clients.start_consumer(settings.load(), fetch_max_wait_ms=50)
    tp = TopicPartition(settings.TOPIC_DECISIONS, reply_partition)
    reader.assign([tp])
    await reader.seek_to_end(tp)
    await reader.position(tp)
    try:
        while True:
            try:
                batch = await reader.getmany(timeout_ms=200)
            except asyncio.CancelledError:
                raise
            except Exception:  # a leader moving: keep reading, what we miss shows as a failure
                await asyncio.sleep(0.1)
                continue
            now = time.monotonic()
            for msgs in batch.values():
                for m in msgs:
                    rid = (next((v for k, v in m.headers if k == "correlation_id"), None) or m.key or b"").decode()
                    if rid.startswith(prefix):
                        out.seen[rid].append((now, str(wire.decode_as("Decision", m.value)["decision"])))
    finally:
        await reader.stop()


def _audit_rows(prefix: str, want: set[str], bound_s: float = 60.0) -> list[tuple[str, str]]:
    """Every audit row (not FINAL: duplicates count) of this run, once ``want`` are all there (bounded)."""
    client = connect(cfg=settings.load(), role="reader")
    sql = (f"SELECT request_id, decision FROM {settings.CLICKHOUSE_DATABASE}.{settings.AUDIT_TABLE} "
           "WHERE startsWith(request_id, {p:String})")
    deadline = time.monotonic() + bound_s
    try:
        while True:
            rows = [(str(r[0]), str(r[1])) for r in client.query(sql, parameters={"p": prefix}).result_rows]
            if want <= {rid for rid, _ in rows} or time.monotonic() > deadline:
                return rows
            time.sleep(0.5)
    finally:
        client.close()


async def test_leader_broker_killed_under_load(cluster: Cluster) -> None:
    prefix = f"cluster-{uuid.uuid4().hex[:8]}-"
    leaders = await _leaders()
    victim = leader_victim(leaders)
    victim_parts = sorted(p for p, b in leaders.items() if b == victim)
    n_parts = len(leaders)
    calls: list[Call] = []
    replies = Replies()
    async with PolicyClient(timeout_s=TIMEOUT_S) as client:
        assert client.reply_partition is not None
        reading = asyncio.create_task(_read_replies(client.reply_partition, prefix, replies))
        await asyncio.sleep(0.5)

        async def call(c: Call, ident: str, i: int) -> None:
            request = client.build_request(ident, "config:read", {"id": f"flags-{i}", "type": "config"},
                                           request_id=c.rid)
            try:
                d = await client.send(request)
            except Exception as exc:  # recorded: the assertion below names it
                c.error = f"{type(exc).__name__}: {exc}"
            else:
                c.decision = d.decision
                c.timed_out = any(r.code == "pdp_timeout" for r in d.reasons)
            c.done = time.monotonic()

        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic()
        kill_t: float | None = None
        total = int(RATE * (BEFORE_S + AFTER_S))
        for i in range(total):
            await asyncio.sleep(max(0.0, start + i / RATE - time.monotonic()))
            if kill_t is None and time.monotonic() - start >= BEFORE_S:
                kill_t = time.monotonic()
                assert cluster.stack.kill_broker(victim) is not None, f"broker {victim} was not running"
            ident = IDENTITIES[i % len(IDENTITIES)]
            c = Call(f"{prefix}{i}", (murmur2(ident.encode()) & 0x7FFFFFFF) % n_parts, time.monotonic())
            calls.append(c)
            tasks.append(asyncio.create_task(call(c, ident, i)))
        await asyncio.wait(tasks, timeout=TIMEOUT_S + 5)
        await asyncio.sleep(1.0)  # the last replies reach the reader too
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
    assert kill_t is not None
    after = await _leaders()

    answered = [c for c in calls if c.decision is not None and not c.timed_out]
    failed_closed = [c for c in calls if c.timed_out]
    lost = [c for c in calls if c.done is None or c.error is not None]
    conflicting = [rid for rid, rs in replies.seen.items() if len({d for _, d in rs}) > 1]
    rows = _audit_rows(prefix, {c.rid for c in answered})
    audited: dict[str, set[str]] = defaultdict(set)
    for rid, decision in rows:
        audited[rid].add(decision)
    unaudited = [c.rid for c in answered if c.rid not in audited]
    audit_conflicting = [rid for rid, ds in audited.items() if len(ds) > 1]
    disagrees = [c.rid for c in answered if c.rid in audited and c.decision not in audited[c.rid]]
    first_reply = {rid: rs[0][0] for rid, rs in replies.seen.items()}
    per = takeover_by_partition(kill_t, victim_parts, (
        (c.partition, c.sent, first_reply[c.rid]) for c in answered if c.rid in first_reply))
    recovery_s = takeover_of(per)
    figures = {"requests": len(calls), "answered": len(answered), "failed_closed": len(failed_closed),
               "lost": len(lost), "conflicting": len(conflicting) + len(audit_conflicting), "recovery_s": recovery_s,
               "victim": victim, "victim_partitions": victim_parts, "leaders_before": leaders,
               "leaders_after": after, "partition_recovery_s": per, "audit_rows": len(rows)}
    print(f"\nbroker_leader_kill: {figures}")

    assert set(Counter(c.partition for c in calls)) == set(range(n_parts)), "every partition carries load"
    assert victim not in after.values(), f"broker {victim} still leads after its death: {after}"
    assert not lost, f"{len(lost)} requests neither answered nor failed closed, e.g. {lost[:3]}"
    assert not conflicting and not audit_conflicting, (conflicting[:5], audit_conflicting[:5])
    assert not unaudited, f"{len(unaudited)} answered requests have no audit row, e.g. {unaudited[:5]}"
    assert not disagrees, f"audit rows disagree with the reply for {disagrees[:5]}"
    assert all(c.rid in replies.seen for c in answered), "the reader saw every reply the callers got"
    assert recovery_s is not None and recovery_s < RECOVERY_BOUND_S, per
    sent_late = [c for c in calls if c.sent >= kill_t + recovery_s]
    assert sent_late and all(not c.timed_out for c in sent_late), "after recovery every request is answered"
