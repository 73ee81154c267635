"""The floor every Kafka figure is printed beside: a bare aiokafka request→reply echo through the same broker.

``echo_server`` runs in its own process (``python -m streams.bench.floor echo-server BOOTSTRAP``) and sends
every record of :data:`ECHO_REQ` back on :data:`ECHO_REP`; :func:`measure_echo` drives it with the same
open-loop schedule as the pdx measurement, so the difference between the two is what pdx itself costs.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid

from streams import config
from streams.bench.load import open_loop, tail
from streams.kafka import clients

ECHO_REQ = "pdx.bench.echo.requests"
ECHO_REP = "pdx.bench.echo.replies"
_PAYLOAD = b"x" * 180  # about the size of an encoded AccessRequest


async def echo_server(bootstrap: str) -> None:
    """Reply to every echo request on partition 0 of the reply topic (run in its own process)."""
    cfg = config.load().replace(kafka_bootstrap=bootstrap)
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


async def _create_topics(cfg: config.Settings) -> None:
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = clients.admin(cfg)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(ECHO_REQ, 1, 1), NewTopic(ECHO_REP, 1, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


async def measure_echo(bootstrap: str, rate: float, duration: float) -> list[float]:
    """Round-trip latencies (ms) of an open-loop echo load at ``rate`` req/s for ``duration`` s."""
    cfg = config.load().replace(kafka_bootstrap=bootstrap)
    await _create_topics(cfg)
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams.bench.floor", "echo-server", bootstrap,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    assert server.stdout is not None
    await asyncio.wait_for(server.stdout.readline(), 60)
    producer = clients.producer(cfg, linger_ms=0, acks=1, enable_idempotence=False)
    await producer.start()
    consumer = await tail(cfg, ECHO_REP, fetch_max_wait_ms=20)
    pending: dict[bytes, asyncio.Future[None]] = {}

    async def reader() -> None:
        async for msg in consumer:
            fut = pending.pop(msg.key, None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    async def round_trip(timeout_s: float) -> float | None:
        key = uuid.uuid4().bytes
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending[key] = fut
        t0 = time.perf_counter()
        await producer.send(ECHO_REQ, _PAYLOAD, key=key)
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            pending.pop(key, None)
            return None
        return (time.perf_counter() - t0) * 1000

    read_task = asyncio.create_task(reader())
    try:
        # Warm up: the echo consumer group must be assigned before measuring.
        for _ in range(200):
            if await round_trip(1.0) is not None:
                break
        latencies, _, _ = await open_loop(rate, duration, lambda _i: round_trip(10.0))
    finally:
        read_task.cancel()
        await consumer.stop()
        await producer.stop()
        server.terminate()
        await server.wait()
    return latencies


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "echo-server":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(echo_server(sys.argv[2]))
