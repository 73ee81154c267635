"""Reading whole topics in integration tests (what was written, not what a client resolved)."""

from __future__ import annotations

from aiokafka import TopicPartition

from streams import config as settings
from streams.kafka import clients


async def partitions_of(topic: str) -> list[TopicPartition]:
    producer = await clients.start_producer(settings.load())
    try:
        return [TopicPartition(topic, p) for p in sorted(await producer.partitions_for(topic))]
    finally:
        await producer.stop()


async def end_offsets(topic: str) -> dict[TopicPartition, int]:
    parts = await partitions_of(topic)
    consumer = clients.consumer(settings.load())
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(parts))
    finally:
        await consumer.stop()


async def read_all(topic: str) -> list[tuple[int, int, bytes, dict[str, bytes]]]:
    """(partition, offset, value, headers) of every record now in ``topic``."""
    parts = await partitions_of(topic)
    consumer = clients.consumer(settings.load())
    await consumer.start()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out = []
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            for tp, msgs in (await consumer.getmany(timeout_ms=1000)).items():
                out += [(tp.partition, m.offset, m.value or b"", dict(m.headers)) for m in msgs]
        return out
    finally:
        await consumer.stop()
