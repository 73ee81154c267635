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
        TopicSpec(config.TOPIC_JWKS, 1, compact),  # trusted token issuers: a handful of records, read whole
        # delegation grants and approval requests: read whole by every worker / approver, like approvals
        TopicSpec(config.TOPIC_DELEGATIONS, request_partitions, compact),
        TopicSpec(config.TOPIC_APPROVAL_REQUESTS, request_partitions, compact),
        # the audit chains' signed checkpoints: few records (one per chain every few seconds), kept as long as
        # the DLQ; the audit sink copies them to ClickHouse (audit_checkpoints)
        TopicSpec(config.TOPIC_CHECKPOINTS, 1, {"retention.ms": str(30 * 86400_000)}),
    ]


#: Replication when the cluster has at least this many brokers and nothing is configured: 3 copies, and a write
#: is acknowledged (acks=all) once 2 of them have it, so one broker can die without losing an acknowledged record
#: and without stopping writes.
CLUSTER_BROKERS = 3
CLUSTER_REPLICATION = (3, 2)


def replication_for(cfg: Settings, brokers: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) of the topics to create on a cluster of ``brokers`` brokers.

    ``PDX_KAFKA_REPLICATION_FACTOR`` / ``PDX_KAFKA_MIN_INSYNC_REPLICAS`` when set; else 3 / 2 with 3 or more brokers
    and 1 / 1 below that (a single dev broker). A configuration the cluster cannot honour is a UserError saying
    what to set, rather than topics Kafka refuses to create or writes it refuses with NotEnoughReplicas."""
    rf_set, isr_set = cfg.kafka_replication_factor, cfg.kafka_min_insync_replicas
    rf = rf_set or (CLUSTER_REPLICATION[0] if brokers >= CLUSTER_BROKERS else 1)
    isr = isr_set or (CLUSTER_REPLICATION[1] if rf >= CLUSTER_REPLICATION[0] else 1)
    if rf > brokers:
        raise UserError(
            f"{config.ENV_KAFKA_REPLICATION_FACTOR}={rf} but the cluster at {cfg.kafka_bootstrap} has {brokers} "
            f"broker(s): set {config.ENV_KAFKA_REPLICATION_FACTOR} to at most {brokers}"
            + (" (or unset it), or run more brokers (`pdx dev up --brokers 3` locally)" if brokers < CLUSTER_BROKERS
               else ", or add brokers")
        )
    if isr > rf:
        raise UserError(
            f"{config.ENV_KAFKA_MIN_INSYNC_REPLICAS}={isr} is more than the replication factor {rf}: every write "
            f"would be refused. Set {config.ENV_KAFKA_MIN_INSYNC_REPLICAS} to at most {rf} (usually {max(1, rf - 1)})"
        )
    return rf, isr


async def create_topics(
    cfg: Settings, request_partitions: int | None = None, decision_partitions: int | None = None
) -> dict[str, str]:
    """Create missing topics, replicated as :func:`replication_for` says for the cluster's broker count; check
    existing ones. Returns {topic: 'created (N partitions, replication R, min ISR I)' | 'exists (...)'}."""
    from aiokafka.admin import NewTopic  # type: ignore[import-untyped]
    from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError  # type: ignore[import-untyped]

    specs = topic_specs(request_partitions or cfg.request_partitions, decision_partitions or cfg.decision_partitions)
    admin = clients.admin(cfg)
    try:
        await admin.start()
    except KafkaConnectionError:
        raise kafka_unreachable(cfg.kafka_bootstrap) from None
    try:
        brokers = len((await admin.describe_cluster()).get("brokers") or ())
        rf, isr = replication_for(cfg, brokers)
        existing = await _describe(admin)
        result: dict[str, str] = {}
        missing = [s for s in specs if s.name not in existing]
        for spec in specs:
            if spec.name in existing:
                parts, have = existing[spec.name]
                note = f"; below the wanted {rf}: recreate it to replicate it" if have < rf else ""
                result[spec.name] = f"exists ({parts} partitions, replication {have}{note})"
        if missing:
            try:
                await admin.create_topics([
                    NewTopic(s.name, s.partitions, rf, topic_configs={**s.config, "min.insync.replicas": str(isr)})
                    for s in missing
                ])
            except TopicAlreadyExistsError:
                pass  # created concurrently by another process: fine
            for spec in missing:
                result[spec.name] = f"created ({spec.partitions} partitions, replication {rf}, min ISR {isr})"
            existing = await _describe(admin)
        co = {existing[t][0] if t in existing else None
              for t in (config.TOPIC_REQUESTS, config.TOPIC_INVENTORY, config.TOPIC_APPROVALS)}
        if len(co) != 1:
            raise UserError(
                f"{config.TOPIC_REQUESTS}, {config.TOPIC_INVENTORY} and {config.TOPIC_APPROVALS} must have "
                f"the same partition count (co-partitioned by identity id) but have {sorted(c for c in co if c)}; "
                "recreate them with the same count"
            )
        return result
    finally:
        await admin.close()


async def _describe(admin: object) -> dict[str, tuple[int, int]]:
    """{pdx topic: (partitions, replication factor)}; the replication factor is the smallest replica set."""
    from aiokafka.admin import AIOKafkaAdminClient

    assert isinstance(admin, AIOKafkaAdminClient)
    names = [t for t in await admin.list_topics() if t.startswith("pdx.")]
    if not names:
        return {}
    described = await admin.describe_topics(names)
    return {
        d["topic"]: (len(d["partitions"]), min((len(p["replicas"]) for p in d["partitions"]), default=0))
        for d in described
        if d.get("error_code", 0) == 0
    }


async def missing_topics(cfg: Settings) -> list[str]:
    """The pdx topics a worker needs that do not exist yet."""
    admin = clients.admin(cfg)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
    finally:
        await admin.close()
    return [t for t in config.ALL_TOPICS if t not in existing]
