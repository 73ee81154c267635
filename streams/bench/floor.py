"""The floors the Kafka figures are printed beside: what the same broker does with no pdx in the way.

* **Echo** (latency, for e2e): ``echo_server`` runs in its own process
  (``python -m streams.bench.floor echo-server BOOTSTRAP``) and sends every record of :data:`ECHO_REQ` back on
  :data:`ECHO_REP`; :func:`measure_echo` drives it with the same open-loop schedule as the pdx measurement, so
  the difference between the two is what pdx itself costs.
* **Pass-through** (throughput, for drain and ``pdx bench floor``): :func:`measure_floor` fills a fresh topic
  (as many partitions as ``pdx.requests``) with N real AccessRequest messages of the mix, the same bytes drain
  queues, then runs :func:`pass_through` in its own process (``python -m streams.bench.floor pass-through
  SPEC``), as a worker would run: one consumer in a group, ``getmany`` batches of up to ``worker_batch_max``,
  and per event two ``send`` calls — a record the size of the reply pdx gives that request (to partition 0 of
  a reply topic, as drain's requests ask) and one the size of its AuditRecord (to the request's partition of
  an audit topic) — with the worker's producer settings (``clients.producer`` defaults: acks=all, idempotent;
  linger 0). Like the worker it waits for a fetch's records to be acknowledged before committing the fetch's
  offsets. No framework, no decode; the ``decode`` variant also runs ``wire.decode_as("AccessRequest", value)``
  on every request. Timed from the first record consumed until the records of the last one are acknowledged.
  The three topics are deleted afterwards.
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
from streams.bench.load import KeyedRoundTrips, mix_outputs, open_loop, queue_requests, rss_mb, tail
from streams.console import say
from streams.kafka import clients

ECHO_REQ = "pdx.bench.echo.requests"
ECHO_REP = "pdx.bench.echo.replies"
_PAYLOAD = b"x" * 180  # about the size of an encoded AccessRequest


async def echo_server(cfg: config.Settings) -> None:
    """Reply to every echo request on partition 0 of the reply topic (run in its own process)."""
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


async def _create_topics(cfg: config.Settings, partitions: dict[str, int] | None = None) -> None:
    """Create ``{topic: partitions}`` (default: the echo topics, one partition each) unless they exist."""
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = clients.admin(cfg)
    await admin.start()
    try:
        wanted = partitions or {ECHO_REQ: 1, ECHO_REP: 1}
        await admin.create_topics([NewTopic(topic, n, 1) for topic, n in wanted.items()])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


async def _delete_topics(cfg: config.Settings, topics: list[str]) -> None:
    from aiokafka.errors import KafkaError

    admin = clients.admin(cfg)
    await admin.start()
    try:
        await admin.delete_topics(topics)
    except KafkaError as exc:  # leftovers cost disk, not correctness: every run uses fresh names
        say(f"bench floor: could not delete {', '.join(topics)}: {exc}")
    finally:
        await admin.close()


async def measure_echo(cfg: config.Settings, rate: float, duration: float) -> list[float]:
    """Round-trip latencies (ms) of an open-loop echo load at ``rate`` req/s for ``duration`` s, through the
    broker at ``cfg.kafka_bootstrap``."""
    await _create_topics(cfg)
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.bench.floor", "echo-server", cfg.kafka_bootstrap,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert server.stdout is not None
    await asyncio.wait_for(server.stdout.readline(), 60)
    producer = clients.producer(cfg, linger_ms=0, acks=1, enable_idempotence=False)
    await producer.start()
    consumer = await tail(cfg, ECHO_REP, fetch_max_wait_ms=20)
    try:
        async with KeyedRoundTrips(producer, consumer, ECHO_REQ, _PAYLOAD) as trips:
            # Warm up: the echo consumer group must be assigned before measuring.
            for _ in range(200):
                if await trips.one(1.0) is not None:
                    break
            latencies, _, _ = await open_loop(rate, duration, lambda _i: trips.one(10.0))
    finally:
        await consumer.stop()
        await producer.stop()
        server.terminate()
        await server.wait()
    return latencies


@dataclass(frozen=True)
class FloorSpec:
    """What one pass-through process does (passed to it as JSON on the command line)."""

    bootstrap: str
    requests_topic: str
    replies_topic: str
    audit_topic: str
    group_id: str
    events: int
    decode: bool
    #: request key (hex) → (reply bytes, audit record bytes) that pdx produces for it
    sizes: dict[str, tuple[int, int]]


async def pass_through(settings: config.Settings, spec: FloorSpec) -> dict[str, Any]:
    """Consume ``spec.events`` records in a group and produce a reply- and an audit-sized record for each (run in
    its own process, with the process's ``settings``); returns {events, seconds, rss_mb}."""
    from aiokafka import TopicPartition

    from streams.contracts import wire

    cfg = settings.replace(kafka_bootstrap=spec.bootstrap)
    batch_max = cfg.worker_batch_max
    consumer = clients.consumer(cfg, spec.requests_topic, group_id=spec.group_id, auto_offset_reset="earliest",
                                max_poll_records=batch_max, fetch_max_wait_ms=100)
    producer = clients.producer(cfg, linger_ms=0)  # RELIABLE (acks=all, idempotent), like the worker's
    payloads = {bytes.fromhex(k): (b"r" * r, b"a" * a) for k, (r, a) in spec.sizes.items()}
    fallback = max(payloads.values(), key=lambda p: len(p[1]))
    decode = wire.decode_as if spec.decode else None
    await producer.start()
    await consumer.start()
    seen, first, idle_since = 0, 0.0, time.monotonic()
    try:
        while seen < spec.events:
            fetched = await consumer.getmany(timeout_ms=1000, max_records=batch_max)
            if not fetched:
                if time.monotonic() - idle_since > 120:
                    raise TimeoutError(f"pass-through: {seen} of {spec.events} records after 120 s without any")
                continue
            first = first or time.perf_counter()
            acks = []
            for tp, records in fetched.items():
                for msg in records:
                    if decode is not None:
                        decode("AccessRequest", msg.value or b"")
                    reply, audit = payloads.get(msg.key or b"", fallback)
                    acks.append(await producer.send(spec.replies_topic, reply, key=msg.key, partition=0))
                    acks.append(await producer.send(spec.audit_topic, audit, key=msg.key, partition=tp.partition))
                seen += len(records)
            await asyncio.gather(*acks)
            await consumer.commit({TopicPartition(tp.topic, tp.partition): rs[-1].offset + 1
                                   for tp, rs in fetched.items()})
            idle_since = time.monotonic()
        seconds = time.perf_counter() - first
    finally:
        await consumer.stop()
        await producer.stop()
    return {"events": seen, "seconds": seconds, "rss_mb": rss_mb(os.getpid())}


async def _run_pass_through(spec: FloorSpec) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.bench.floor", "pass-through", json.dumps(asdict(spec)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    if proc.returncode != 0:
        from streams.errors import UserError

        tail_of_err = err.decode(errors="replace")[-3000:]
        raise UserError(f"the pass-through floor process failed (exit {proc.returncode}):\n{tail_of_err}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def measure_floor(cfg: config.Settings, n: int) -> dict[str, Any]:
    """The pass-through floor on n requests through the broker at ``cfg.kafka_bootstrap``: plain, then with a
    decode of every request (each in its own process, both over the same pre-filled topic). Keys: floor_events,
    floor_seconds, floor_per_s, floor_decode_seconds, floor_decode_per_s, floor_rss_mb."""
    run = uuid.uuid4().hex[:10]
    topics = {f"pdx.bench.floor.{run}.requests": cfg.request_partitions,
              f"pdx.bench.floor.{run}.replies": cfg.decision_partitions,
              f"pdx.bench.floor.{run}.audit": cfg.request_partitions}
    requests_topic, replies_topic, audit_topic = topics
    await _create_topics(cfg, topics)
    try:
        say(f"bench floor: filling {requests_topic} with {n} requests")
        await queue_requests(cfg, requests_topic, n)
        sizes = {key.hex(): (len(reply), len(audit)) for key, (reply, audit) in mix_outputs().items()}
        out: dict[str, Any] = {"floor_events": n}
        for decode, name in ((False, "floor"), (True, "floor_decode")):
            say(f"bench floor: aiokafka pass-through{' with decode' if decode else ''} in its own process")
            spec = FloorSpec(cfg.kafka_bootstrap, requests_topic, replies_topic, audit_topic,
                             f"pdx-bench-floor-{run}-{name}", n, decode, sizes)
            result = await _run_pass_through(spec)
            seconds = result["seconds"]
            out[f"{name}_seconds"] = round(seconds, 3)
            out[f"{name}_per_s"] = round(result["events"] / seconds, 1) if seconds else None
            out.setdefault("floor_rss_mb", result["rss_mb"])
        return out
    finally:
        await _delete_topics(cfg, list(topics))


def run_floor(cfg: config.Settings, n: int) -> dict[str, Any]:
    """``pdx bench floor``: bring the local stack up (no worker needed) and measure the pass-through floor."""
    from streams.demo.runner import prepare_stack

    prepare_stack(cfg, start_worker=False)
    return asyncio.run(measure_floor(cfg, n))


# The processes above run as their own entry points: each reads its settings from its environment here.
if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "pass-through":
    fields = json.loads(sys.argv[2])
    fields["sizes"] = {k: tuple(v) for k, v in fields["sizes"].items()}
    print(json.dumps(asyncio.run(pass_through(config.load(), FloorSpec(**fields)))), flush=True)

if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "echo-server":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(echo_server(config.load().replace(kafka_bootstrap=sys.argv[2])))
