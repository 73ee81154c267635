"""pdx's topics: their specs, idempotent creation (`pdx topics create`) and the check a worker runs at start."""

from __future__ import annotations

from dataclasses import dataclass

from streams import config
from streams.config import Settings
from streams.errors import UserError, kafka_unreachable
from streams.kafka import clients


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(request_partitions: int, decision_partitions: int) -> list[TopicSpec]:
    """Requests, inventory and approvals share a partition count: they are co-partitioned by identity id."""
    if request_partitions < 1 or decision_partitions < 1:
        raise UserError("partition counts must be at least 1")
    compact = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": "3600000"}
    return [
        TopicSpec(config.TOPIC_REQUESTS, request_partitions, {"retention.ms": str(7 * 86400_000)}),
        TopicSpec(config.TOPIC_DECISIONS, decision_partitions, {"retention.ms": str(86400_000)}),
        TopicSpec(config.TOPIC_AUDIT, request_partitions, {"retention.ms": str(14 * 86400_000)}),
        TopicSpec(config.TOPIC_DLQ, 1, {"retention.ms": str(30 * 86400_000)}),
        TopicSpec(config.TOPIC_INVENTORY, request_partitions, compact),
        TopicSpec(config.TOPIC_APPROVALS, request_partitions, compact),
        TopicSpec(config.TOPIC_POLICIES, 1, compact),
        # the audit chains' signed checkpoints: few records (one per chain every few seconds), kept as long as
        # the DLQ; the audit sink copies them to ClickHouse (audit_checkpoints)
        TopicSpec(config.TOPIC_CHECKPOINTS, 1, {"retention.ms": str(30 * 86400_000)}),
    ]


async def create_topics(
    cfg: Settings, request_partitions: int | None = None, decision_partitions: int | None = None
) -> dict[str, str]:
    """Create missing topics; check existing ones. Returns {topic: 'created' | 'exists (N partitions)'}."""
    from aiokafka.admin import NewTopic  # type: ignore[import-untyped]
    from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError  # type: ignore[import-untyped]

    specs = topic_specs(request_partitions or cfg.request_partitions, decision_partitions or cfg.decision_partitions)
    admin = clients.admin(cfg)
    try:
        await admin.start()
    except KafkaConnectionError:
        raise kafka_unreachable(cfg.kafka_bootstrap) from None
    try:
        existing = await _partition_counts(admin)
        result: dict[str, str] = {}
        missing = [s for s in specs if s.name not in existing]
        for spec in specs:
            if spec.name in existing:
                result[spec.name] = f"exists ({existing[spec.name]} partitions)"
        if missing:
            try:
                await admin.create_topics([NewTopic(s.name, s.partitions, 1, topic_configs=s.config) for s in missing])
            except TopicAlreadyExistsError:
                pass  # created concurrently by another process: fine
            for spec in missing:
                result[spec.name] = f"created ({spec.partitions} partitions)"
            existing = await _partition_counts(admin)
        co = {existing.get(t) for t in (config.TOPIC_REQUESTS, config.TOPIC_INVENTORY, config.TOPIC_APPROVALS)}
        if len(co) != 1:
            raise UserError(
                f"{config.TOPIC_REQUESTS}, {config.TOPIC_INVENTORY} and {config.TOPIC_APPROVALS} must have "
                f"the same partition count (co-partitioned by identity id) but have {sorted(c for c in co if c)}; "
                "recreate them with the same count"
            )
        return result
    finally:
        await admin.close()


async def _partition_counts(admin: object) -> dict[str, int]:
    from aiokafka.admin import AIOKafkaAdminClient

    assert isinstance(admin, AIOKafkaAdminClient)
    names = [t for t in await admin.list_topics() if t.startswith("pdx.")]
    if not names:
        return {}
    described = await admin.describe_topics(names)
    return {d["topic"]: len(d["partitions"]) for d in described if d.get("error_code", 0) == 0}


async def missing_topics(cfg: Settings) -> list[str]:
    """The pdx topics a worker needs that do not exist yet."""
    admin = clients.admin(cfg)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    return [t for t in config.ALL_TOPICS if t not in existing]
