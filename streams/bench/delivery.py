"""``pdx bench delivery``: the two ways to make "no reply before its audit record" hold, measured side by side.

The failure issue offers two designs:

* **audit_first** (what the worker does): per fetch, produce the audit records and wait until Kafka
  acknowledged them (acks=all, idempotent), then produce the replies, then commit the offsets.
* **transaction**: per fetch, one Kafka transaction holding the audit records, the replies and the consumed
  offsets (``send_offsets_to_transaction``; exactly-once consume-transform-produce); callers must read
  replies ``read_committed``.

Both run here as a bare relay in its own process (no decide, no decode: what is compared is the delivery
protocol, not pdx), consuming a fresh request topic in a group and producing, per request, a reply of the
size pdx's reply has (to partition 0 of a reply topic) and a record of the size of its AuditRecord (to the
request's partition of an audit topic), with the worker's producer settings. Two figures per design:

* ``drain_per_s``: N queued requests relayed, from the first consumed until the last is acknowledged;
* latency: an open-loop load at ``rate`` req/s for ``duration`` s, each request timed from its send until
  its reply is readable by a ``read_committed`` consumer (which for audit_first is as soon as it is written),
  reported as p50/p99 ms, with how many got no reply within 10 s.

The topics are fresh per design and deleted afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from streams import config
from streams.bench.floor import _create_topics, _delete_topics
from streams.bench.load import KeyedRoundTrips, mix_outputs, open_loop, rss_mb
from streams.bench.stats import percentile
from streams.console import say
from streams.kafka import clients

MODES = ("audit_first", "transaction")


@dataclass(frozen=True)
class RelaySpec:
    bootstrap: str
    mode: str
    requests_topic: str
    replies_topic: str
    audit_topic: str
    group_id: str
    events: int
    reply_bytes: int
    audit_bytes: int


async def relay(settings: config.Settings, spec: RelaySpec) -> dict[str, Any]:
    """Relay ``spec.events`` requests in ``spec.mode`` (run in its own process, with the process's ``settings``);
    returns {events, seconds}."""
    from aiokafka import TopicPartition

    cfg = settings.replace(kafka_bootstrap=spec.bootstrap)
    batch_max = cfg.worker_batch_max
    consumer = clients.consumer(cfg, spec.requests_topic, group_id=spec.group_id, auto_offset_reset="earliest",
                                max_poll_records=batch_max, fetch_max_wait_ms=100,
                                isolation_level="read_committed")
    txn = spec.mode == "transaction"
    extra = {"transactional_id": f"{spec.group_id}-relay"} if txn else {}
    producer = clients.producer(cfg, linger_ms=0, **extra)
    reply, audit = b"r" * spec.reply_bytes, b"a" * spec.audit_bytes
    await producer.start()
    await consumer.start()
    seen, first, idle_since = 0, 0.0, time.monotonic()
    try:
        while not consumer.assignment():  # joined the group (in the background): the parent may start its clock
            await asyncio.sleep(0.05)
        print("ready", flush=True)
        while seen < spec.events:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=batch_max)
            if not fetched:
                if time.monotonic() - idle_since > 120:
                    raise TimeoutError(f"relay: {seen} of {spec.events} records after 120 s without any")
                continue
            first = first or time.perf_counter()
            offsets = {TopicPartition(tp.topic, tp.partition): rs[-1].offset + 1 for tp, rs in fetched.items()}
            records = [(tp.partition, m.key) for tp, rs in fetched.items() for m in rs]
            if txn:
                async with producer.transaction():
                    for partition, key in records:
                        await producer.send(spec.audit_topic, audit, key=key, partition=partition)
                        await producer.send(spec.replies_topic, reply, key=key, partition=0)
                    await producer.send_offsets_to_transaction(offsets, spec.group_id)
            else:
                acks = [await producer.send(spec.audit_topic, audit, key=key, partition=p) for p, key in records]
                await asyncio.gather(*acks)
                acks = [await producer.send(spec.replies_topic, reply, key=key, partition=0) for _, key in records]
                await asyncio.gather(*acks)
                await consumer.commit(offsets)
            seen += len(records)
            idle_since = time.monotonic()
        seconds = time.perf_counter() - first
    finally:
        await consumer.stop()
        await producer.stop()
    return {"events": seen, "seconds": seconds, "rss_mb": rss_mb(os.getpid())}


async def _start_relay(spec: RelaySpec) -> asyncio.subprocess.Process:
    """Start a relay process and wait until it joined its group."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.bench.delivery", "relay", json.dumps(asdict(spec)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    await asyncio.wait_for(proc.stdout.readline(), 120)
    return proc


async def _finish(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    out, err = await proc.communicate()
    if proc.returncode != 0:
        from streams.errors import UserError

        raise UserError(f"the delivery relay failed (exit {proc.returncode}):\n{err.decode(errors='replace')[-3000:]}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def _measure_mode(cfg: config.Settings, mode: str, n: int, rate: float, duration: float,
                        sizes: tuple[int, int]) -> dict[str, Any]:
    run = uuid.uuid4().hex[:10]
    topics = {f"pdx.bench.delivery.{run}.requests": cfg.request_partitions,
              f"pdx.bench.delivery.{run}.replies": 1,
              f"pdx.bench.delivery.{run}.audit": cfg.request_partitions}
    requests_topic, replies_topic, audit_topic = topics
    await _create_topics(cfg, topics)
    out: dict[str, Any] = {}
    try:
        producer = clients.producer(cfg, linger_ms=0)
        await producer.start()
        try:
            # throughput: a queued backlog
            say(f"bench delivery [{mode}]: {n} queued requests")
            for i in range(n):
                await producer.send(requests_topic, b"q" * 180, key=f"k{i % 64}".encode())
            await producer.flush()
            spec = RelaySpec(cfg.kafka_bootstrap, mode, requests_topic, replies_topic, audit_topic,
                             f"pdx-bench-delivery-{run}", n, *sizes)
            result = await _finish(await _start_relay(spec))
            out["drain_per_s"] = round(result["events"] / result["seconds"], 1) if result["seconds"] else None
            # latency: open loop against a running relay (same group: it continues after the backlog)
            total = int(rate * duration)
            say(f"bench delivery [{mode}]: open loop at {rate:g} req/s for {duration:g} s")
            relay_proc = await _start_relay(RelaySpec(**{**asdict(spec), "events": total}))
            out.update(await _latency(cfg, producer, requests_topic, replies_topic, rate, duration))
            await _finish(relay_proc)
        finally:
            await producer.stop()
    finally:
        await _delete_topics(cfg, list(topics))
    return out


async def _latency(cfg: config.Settings, producer: Any, requests_topic: str, replies_topic: str,
                   rate: float, duration: float) -> dict[str, Any]:
    from aiokafka import TopicPartition

    reader = clients.consumer(cfg, isolation_level="read_committed", fetch_max_wait_ms=20)
    await reader.start()
    tp = TopicPartition(replies_topic, 0)
    reader.assign([tp])
    await reader.seek_to_end(tp)
    await reader.position(tp)
    try:
        async with KeyedRoundTrips(producer, reader, requests_topic, b"q" * 180) as trips:
            latencies, sent, _ = await open_loop(rate, duration, lambda _i: trips.one(10.0))
    finally:
        await reader.stop()
    return {"rate": rate, "sent": sent, "answered": len(latencies),
            "p50_ms": round(percentile(latencies, 50), 2) if latencies else None,
            "p99_ms": round(percentile(latencies, 99), 2) if latencies else None}


def run_delivery(cfg: config.Settings, n: int, rate: float, duration: float) -> dict[str, Any]:
    """Both designs on one broker, one after the other; the stack comes up without a worker."""
    from streams.demo.runner import prepare_stack

    prepare_stack(cfg, start_worker=False)
    outputs = list(mix_outputs().values())
    sizes = (max(len(r) for r, _ in outputs), max(len(a) for _, a in outputs))

    async def both() -> dict[str, Any]:
        return {mode: await _measure_mode(cfg, mode, n, rate, duration, sizes) for mode in MODES}

    result: dict[str, Any] = {"events": n, "reply_bytes": sizes[0], "audit_bytes": sizes[1], **asyncio.run(both())}
    a, t = result["audit_first"], result["transaction"]
    if a["drain_per_s"] and t["drain_per_s"]:
        result["transaction_throughput_ratio"] = round(t["drain_per_s"] / a["drain_per_s"], 3)
    if a["p50_ms"] and t["p50_ms"]:
        result["transaction_p50_ratio"] = round(t["p50_ms"] / a["p50_ms"], 3)
    return result


# The relay runs as its own entry point: it reads its settings from its environment here.
if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "relay":
    print(json.dumps(asyncio.run(relay(config.load(), RelaySpec(**json.loads(sys.argv[2]))))), flush=True)
