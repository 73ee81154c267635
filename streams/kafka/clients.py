"""The only place aiokafka (and faust broker) clients are built.

Every producer, consumer and admin client pdx creates comes from here, so bootstrap servers, TLS and SASL
(``Settings.kafka_security``) are applied once, the same way, to all of them. Callers pass only what is
particular to their use (group id, linger, offsets); security cannot be forgotten by one of them.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from streams.config import KafkaSecurity, Settings
from streams.errors import kafka_unreachable

#: Producer settings for records that must not be lost or duplicated (state, replies, audit).
RELIABLE = {"acks": "all", "enable_idempotence": True}

#: Group settings for consumers whose partitions must be served again soon after their owner dies. A killed
#: process sends no LeaveGroup, so the broker notices only when its session expires: 6 s is the smallest
#: session a default broker accepts (group.min.session.timeout.ms), and a heartbeat every second lets the
#: survivors join the rebalance within a second of it. aiokafka has no cooperative (incremental) assignor
#: and no KIP-848 protocol, so a rebalance revokes every partition briefly (streams/worker/app.py commits
#: before giving them up).
FAST_TAKEOVER: dict[str, Any] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def ssl_context(sec: KafkaSecurity) -> ssl.SSLContext | None:
    """A TLS context that verifies the broker (with the configured CA, if any) and presents the client
    certificate, if configured; None for plaintext protocols."""
    if not sec.uses_ssl:
        return None
    ctx = ssl.create_default_context(cafile=str(sec.ssl_cafile) if sec.ssl_cafile else None)
    if sec.ssl_certfile and sec.ssl_keyfile:
        ctx.load_cert_chain(str(sec.ssl_certfile), str(sec.ssl_keyfile))
    return ctx


def connection_options(cfg: Settings) -> dict[str, Any]:
    """Keyword arguments every aiokafka client takes: bootstrap servers and security."""
    sec = cfg.kafka_security
    options: dict[str, Any] = {"bootstrap_servers": cfg.kafka_bootstrap, "security_protocol": sec.protocol}
    context = ssl_context(sec)
    if context is not None:
        options["ssl_context"] = context
    if sec.uses_sasl:
        options.update(
            sasl_mechanism=sec.sasl_mechanism,
            sasl_plain_username=sec.sasl_username,
            sasl_plain_password=sec.sasl_password,
        )
    return options


def producer(cfg: Settings, **options: Any) -> AIOKafkaProducer:
    """A producer (not started). Defaults to :data:`RELIABLE`; pass e.g. ``acks=1`` where loss is harmless."""
    return AIOKafkaProducer(**{**connection_options(cfg), **RELIABLE, **options})


def consumer(cfg: Settings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """A consumer (not started). Without ``group_id`` it is group-less and never commits."""
    defaults: dict[str, Any] = {"enable_auto_commit": False, "group_id": None}
    return AIOKafkaConsumer(*topics, **{**connection_options(cfg), **defaults, **options})


async def committed_offsets(consumer: AIOKafkaConsumer, partitions: list[Any]) -> dict[Any, Any]:
    """``{TopicPartition: OffsetAndMetadata}`` committed by the consumer's group, *with* the commit metadata
    (aiokafka's public ``committed()`` returns the offset only)."""
    return dict(await consumer._coordinator.fetch_committed_offsets(partitions))


def admin(cfg: Settings, **options: Any) -> AIOKafkaAdminClient:
    """An admin client (not started)."""
    return AIOKafkaAdminClient(**{**connection_options(cfg), "request_timeout_ms": 15000, **options})


def low_level(cfg: Settings, **options: Any) -> AIOKafkaClient:
    """A bare protocol client (health checks: one metadata request)."""
    return AIOKafkaClient(**{**connection_options(cfg), **options})


async def start_producer(cfg: Settings, **options: Any) -> AIOKafkaProducer:
    """A started producer; UserError with what to do when Kafka cannot be reached."""
    p = producer(cfg, **options)
    try:
        await p.start()
    except KafkaConnectionError:
        await p.stop()
        raise kafka_unreachable(cfg.kafka_bootstrap) from None
    return p


async def start_consumer(cfg: Settings, *topics: str, **options: Any) -> AIOKafkaConsumer:
    """A started consumer; UserError with what to do when Kafka cannot be reached."""
    c = consumer(cfg, *topics, **options)
    try:
        await c.start()
    except KafkaConnectionError:
        await c.stop()
        raise kafka_unreachable(cfg.kafka_bootstrap) from None
    return c


def faust_broker_options(cfg: Settings) -> dict[str, Any]:
    """``faust.App`` keyword arguments for the same broker and security as the aiokafka clients."""
    import faust

    sec = cfg.kafka_security
    options: dict[str, Any] = {"broker": ";".join(f"kafka://{b}" for b in cfg.kafka_bootstrap.split(","))}
    context = ssl_context(sec)
    if sec.uses_sasl:
        options["broker_credentials"] = faust.SASLCredentials(
            username=sec.sasl_username,
            password=sec.sasl_password,
            mechanism=sec.sasl_mechanism,
            ssl_context=context,
        )
    elif context is not None:
        options["broker_credentials"] = faust.SSLCredentials(context)
    return options
