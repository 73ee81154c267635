"""The state topics: producing policy bundles, identities, approvals and trusted token issuers, and reading a
compacted topic's latest values.

streams/ops.py (what the CLI and the demo call) produces with these; workers consume the topics through
streams/worker/replica.py. Every state record is signed (streams/contracts/signing.py): the functions here take
the SigningKey and put the signature in the record's headers; workers apply nothing else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2

from streams import config
from streams.config import Settings
from streams.contracts import signing, wire
from streams.errors import UserError
from streams.kafka import clients

log = logging.getLogger("pdx.kafka")


def partition_for(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a key (murmur2, positive, modulo)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


async def partition_count(producer: AIOKafkaProducer, topic: str) -> int:
    parts = await producer.partitions_for(topic)
    if not parts:
        raise UserError(f"topic {topic} does not exist: run `pdx topics create`")
    return len(parts)


BUNDLE_KEY = b"current"


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


def next_serial(previous: int | None, now_ms: int | None = None) -> int:
    """The serial of a new bundle: above the previous one, and at least the time in ms, so two publishers
    that never saw each other's bundles still publish increasing serials while their clocks agree."""
    now = _now_ms() if now_ms is None else now_ms
    return max(now, (previous if previous is not None else -1) + 1)


async def publish_bundle(
    producer: AIOKafkaProducer,
    content: str,
    version: str,
    published_by: str,
    key: signing.SigningKey,
    serial: int,
) -> None:
    value = wire.encode(
        "PolicyBundle",
        {
            "version": version,
            "created_at": datetime.now(UTC),
            "published_by": published_by,
            "content": content,
            "serial": serial,
        },
    )
    headers = key.headers(signing.POLICY, BUNDLE_KEY, value, _now_ms())
    await producer.send_and_wait(config.TOPIC_POLICIES, value, key=BUNDLE_KEY, headers=headers)


async def put_identities(
    producer: AIOKafkaProducer, identities: Iterable[Mapping[str, Any]], key: signing.SigningKey
) -> int:
    """Produce identities (dicts in the Identity contract shape) keyed by id, signed; returns how many."""
    futures = []
    signed_at = _now_ms()
    for identity in identities:
        value = wire.encode("Identity", identity)
        kafka_key = str(identity["id"]).encode()
        headers = key.headers(signing.INVENTORY, kafka_key, value, signed_at)
        futures.append(await producer.send(config.TOPIC_INVENTORY, value, key=kafka_key, headers=headers))
    await asyncio.gather(*futures)
    return len(futures)


async def delete_identities(producer: AIOKafkaProducer, ids: Iterable[str], key: signing.SigningKey) -> int:
    """Produce signed tombstones for identities (they are forgotten; compaction removes them); returns how many."""
    futures = []
    signed_at = _now_ms()
    for identity_id in ids:
        kafka_key = identity_id.encode()
        headers = key.headers(signing.INVENTORY, kafka_key, None, signed_at)
        futures.append(await producer.send(config.TOPIC_INVENTORY, None, key=kafka_key, headers=headers))
    await asyncio.gather(*futures)
    return len(futures)


async def put_approval(producer: AIOKafkaProducer, approval: Mapping[str, Any], key: signing.SigningKey) -> None:
    """Approvals are keyed identity/approval (so compaction keeps each one) but produced to the identity's
    partition, co-partitioned with that identity's requests."""
    identity_id = str(approval["identity_id"])
    n = await partition_count(producer, config.TOPIC_APPROVALS)
    kafka_key = f"{identity_id}/{approval['approval_id']}".encode()
    value = wire.encode("Approval", approval)
    await producer.send_and_wait(
        config.TOPIC_APPROVALS,
        value,
        key=kafka_key,
        partition=partition_for(identity_id, n),
        headers=key.headers(signing.APPROVAL, kafka_key, value, _now_ms()),
    )


async def put_issuers(
    producer: AIOKafkaProducer, entries: Iterable[tuple[str, bytes]], key: signing.SigningKey
) -> int:
    """Produce trusted token issuers to pdx.jwks: (issuer, its entry as JSON bytes) keyed by issuer, signed as
    ``jwks``; returns how many."""
    futures = []
    signed_at = _now_ms()
    for issuer, value in entries:
        kafka_key = issuer.encode()
        headers = key.headers(signing.JWKS, kafka_key, value, signed_at)
        futures.append(await producer.send(config.TOPIC_JWKS, value, key=kafka_key, headers=headers))
    await asyncio.gather(*futures)
    return len(futures)


async def delete_issuer(producer: AIOKafkaProducer, issuer: str, key: signing.SigningKey) -> None:
    """Produce a signed tombstone for a trusted token issuer: workers stop trusting it (unless their JWKS file
    pins it)."""
    kafka_key = issuer.encode()
    await producer.send_and_wait(config.TOPIC_JWKS, None, key=kafka_key,
                                 headers=key.headers(signing.JWKS, kafka_key, None, _now_ms()))


async def all_records(
    cfg: Settings, topic: str, timeout_s: float = 30.0
) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]:
    """Every record still on a (small) topic as (key, value, headers), partition by partition, oldest first:
    from the beginning of every partition to the end offsets seen at start."""
    consumer = await clients.start_consumer(cfg)
    try:
        parts = await wait_for_partitions(consumer, topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        async with asyncio.timeout(timeout_s):
            for tp in tps:
                while ends[tp] > 0 and await consumer.position(tp) < ends[tp]:
                    batch = await consumer.getmany(tp, timeout_ms=1000)
                    out.extend((m.key, m.value, list(m.headers)) for m in batch.get(tp, []) if m.offset < ends[tp])
        return out
    finally:
        await consumer.stop()


async def latest_records(
    cfg: Settings, topic: str, timeout_s: float = 30.0
) -> dict[bytes, tuple[bytes | None, list[tuple[str, bytes]]]]:
    """Every key of a (small) compacted topic with its latest (value, headers), tombstones included (value
    None)."""
    return {key: (value, headers) for key, value, headers in await all_records(cfg, topic, timeout_s)
            if key is not None}


async def latest_value(cfg: Settings, topic: str, key: str, timeout_s: float = 30.0) -> bytes | None:
    """The latest value for key in a compacted topic keyed by the default partitioner (None if absent)."""
    found = await latest_record(cfg, topic, key, timeout_s)
    return found[0] if found is not None else None


async def latest_record(
    cfg: Settings, topic: str, key: str, timeout_s: float = 30.0
) -> tuple[bytes | None, list[tuple[str, bytes]]] | None:
    """The latest (value, headers) for key in a compacted topic keyed by the default partitioner (None if
    absent)."""
    consumer = await clients.start_consumer(cfg)
    try:
        parts = await wait_for_partitions(consumer, topic)
        tp = TopicPartition(topic, partition_for(key, len(parts)))
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        await consumer.seek_to_beginning(tp)
        found: tuple[bytes | None, list[tuple[str, bytes]]] | None = None
        wanted = key.encode()
        async with asyncio.timeout(timeout_s):
            while end > 0 and await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                for msg in batch.get(tp, []):
                    if msg.key == wanted:
                        found = (msg.value, list(msg.headers))
        return found
    finally:
        await consumer.stop()


async def wait_for_partitions(consumer: AIOKafkaConsumer, topic: str, give_up_after_s: float | None = 5.0) -> set[int]:
    """The topic's partitions, refreshing metadata until it appears; UserError after ``give_up_after_s``
    (``None``: wait for ever, e.g. a worker started before `pdx topics create`)."""
    loop = asyncio.get_running_loop()
    deadline = None if give_up_after_s is None else loop.time() + give_up_after_s
    delay = 0.2
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return set(parts)
        if deadline is not None and loop.time() >= deadline:
            raise UserError(f"topic {topic} does not exist: run `pdx topics create`")
        if deadline is None:
            log.warning("topic %s not found yet (run `pdx topics create`); waiting", topic)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
