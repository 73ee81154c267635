"""Reading pdx.approval-requests: an approval request's record verified by the key its status requires, a
partition positioned by time, and the wait for one request's resolution (PolicyClient's wait_for_approval).

Runtime code (the client SDK uses it); the operator commands that write these records are in streams/grants.py.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiokafka import TopicPartition

from streams import config
from streams.config import Settings
from streams.contracts import signing, wire
from streams.kafka import clients
from streams.kafka.state import partition_for, wait_for_partitions
from streams.model import approval_request as apq


def epoch_ms(at: datetime) -> int:
    """Kafka's timestamps and the signing time: milliseconds since the epoch."""
    return int(at.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class Found:
    record: apq.ApprovalRequest
    #: whether the record is signed as its status requires (open: a worker's audit key; else an approval key)
    trusted: bool


def read_approval_request(
    trust: signing.TrustedKeys, kafka_key: bytes, value: bytes, headers: list[tuple[str, bytes]]
) -> Found:
    """The record (ValueError if it does not decode), and whether its signature is what its status needs."""
    record = apq.ApprovalRequest.from_dict(wire.decode_as("ApprovalRequest", value))
    kind = signing.AUDIT if record.status == apq.OPEN else signing.APPROVAL
    try:
        trust.verify(kind, kafka_key, value, headers)
        return Found(record, True)
    except signing.SignatureError:
        return Found(record, False)


async def seek_to_time(consumer: Any, tps: list[TopicPartition], at: datetime) -> None:
    """Position each partition at its first record at or after ``at`` (its end when there is none)."""
    offsets = await consumer.offsets_for_times({tp: epoch_ms(at) for tp in tps})
    ends = await consumer.end_offsets(tps)
    for tp in tps:
        found = offsets.get(tp)
        consumer.seek(tp, found.offset if found is not None else ends[tp])


async def wait_resolution(cfg: Settings, approval_request_id: str, opened_at: datetime,
                          deadline_s: float) -> apq.ApprovalRequest | None:
    """The approval request's resolution (granted / denied, signed by a trusted approval key) once it arrives,
    or None when ``deadline_s`` passes first. Reads only the request's own partition, from its opening on."""
    trust = signing.trusted_keys(cfg)
    consumer = await clients.start_consumer(cfg)
    wanted = approval_request_id.encode()
    try:
        parts = await wait_for_partitions(consumer, config.TOPIC_APPROVAL_REQUESTS)
        tp = TopicPartition(config.TOPIC_APPROVAL_REQUESTS, partition_for(approval_request_id, len(parts)))
        consumer.assign([tp])
        await seek_to_time(consumer, [tp], opened_at - timedelta(seconds=60))
        async with asyncio.timeout(deadline_s):
            while True:
                batch = await consumer.getmany(tp, timeout_ms=500)
                for m in batch.get(tp, []):
                    if m.key != wanted or m.value is None:
                        continue
                    try:
                        found = read_approval_request(trust, m.key, m.value, list(m.headers))
                    except ValueError:
                        continue
                    if found.trusted and found.record.status in (apq.GRANTED, apq.DENIED):
                        return found.record
    except TimeoutError:
        return None
    finally:
        await consumer.stop()
