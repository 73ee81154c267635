"""One source of truth for every topic name, port, version, path and environment variable.

Everything that another module, the compose file, the README or a test needs to agree on lives here.
Values can be overridden with ``PDX_*`` environment variables; defaults point at the local dev services
started by ``pdx dev up``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

#: Apache Kafka version run by ``pdx dev`` (resolved from Maven Central; see streams/devservices/kafka-pom.xml).
KAFKA_VERSION = "4.1.1"
#: Scala build of the Kafka server artifact (``kafka_2.13``).
KAFKA_SCALA = "2.13"
#: Image tags used by compose.yaml (checked by a unit test).
KAFKA_IMAGE = f"apache/kafka:{KAFKA_VERSION}"
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:25.8"

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMAS_DIR = REPO_ROOT / "schemas"
POLICIES_DIR = REPO_ROOT / "policies"
AUDIT_SQL_DIR = Path(__file__).resolve().parent / "audit" / "sql"

# ---- topics -------------------------------------------------------------------------------------
TOPIC_REQUESTS = "pdx.requests"
TOPIC_DECISIONS = "pdx.decisions"
TOPIC_AUDIT = "pdx.audit"
TOPIC_DLQ = "pdx.dlq"
TOPIC_INVENTORY = "pdx.inventory"
TOPIC_APPROVALS = "pdx.approvals"
TOPIC_POLICIES = "pdx.policies"
#: Topics whose records are current state keyed by id: compacted, so the latest value per key survives.
COMPACTED_TOPICS = (TOPIC_INVENTORY, TOPIC_APPROVALS, TOPIC_POLICIES)
ALL_TOPICS = (TOPIC_REQUESTS, TOPIC_DECISIONS, TOPIC_AUDIT, TOPIC_DLQ, *COMPACTED_TOPICS)

# ---- ClickHouse ---------------------------------------------------------------------------------
CLICKHOUSE_DATABASE = "pdx"
AUDIT_TABLE = "audit_decisions"

# ---- environment variables ----------------------------------------------------------------------
ENV_KAFKA_BOOTSTRAP = "PDX_KAFKA_BOOTSTRAP"
ENV_CLICKHOUSE_URL = "PDX_CLICKHOUSE_URL"
ENV_STATE_DIR = "PDX_STATE_DIR"
ENV_KAFKA_PORT = "PDX_KAFKA_PORT"
ENV_KAFKA_CONTROLLER_PORT = "PDX_KAFKA_CONTROLLER_PORT"
ENV_CLICKHOUSE_HTTP_PORT = "PDX_CLICKHOUSE_HTTP_PORT"
ENV_CLICKHOUSE_TCP_PORT = "PDX_CLICKHOUSE_TCP_PORT"
ENV_REQUEST_PARTITIONS = "PDX_REQUEST_PARTITIONS"
ENV_DECISION_PARTITIONS = "PDX_DECISION_PARTITIONS"
ENV_WORKER_ID = "PDX_WORKER_ID"
ENV_APP_ID = "PDX_APP_ID"
ENV_AUDIT_TTL_DAYS = "PDX_AUDIT_TTL_DAYS"
ENV_TEST_SERVICES = "PDX_TEST_SERVICES"
ENV_AUDIT_SINK = "PDX_AUDIT_SINK"
ENV_AUDIT_BATCH_MAX = "PDX_AUDIT_BATCH_MAX"
ENV_AUDIT_BATCH_WAIT_MS = "PDX_AUDIT_BATCH_WAIT_MS"
ENV_CACHE_DIR = "PDX_CACHE_DIR"
ENV_PRODUCER_LINGER_MS = "PDX_PRODUCER_LINGER_MS"
ENV_READY_FILE = "PDX_READY_FILE"

DEFAULT_KAFKA_PORT = 9092
DEFAULT_KAFKA_CONTROLLER_PORT = 9093
DEFAULT_CLICKHOUSE_HTTP_PORT = 8123
DEFAULT_CLICKHOUSE_TCP_PORT = 9000
DEFAULT_STATE_DIR = ".pdx"
DEFAULT_REQUEST_PARTITIONS = 4
DEFAULT_DECISION_PARTITIONS = 8
DEFAULT_APP_ID = "pdx-decider"
DEFAULT_AUDIT_TTL_DAYS = 400


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(
            f"pdx: environment variable {name}={raw!r} is not an integer; unset it or give a number"
        ) from None


@dataclass(frozen=True)
class Settings:
    """Resolved runtime settings (defaults overridden by environment variables)."""

    state_dir: Path = field(default_factory=lambda: Path(os.environ.get(ENV_STATE_DIR, DEFAULT_STATE_DIR)).resolve())
    kafka_port: int = field(default_factory=lambda: _env_int(ENV_KAFKA_PORT, DEFAULT_KAFKA_PORT))
    kafka_controller_port: int = field(
        default_factory=lambda: _env_int(ENV_KAFKA_CONTROLLER_PORT, DEFAULT_KAFKA_CONTROLLER_PORT)
    )
    clickhouse_http_port: int = field(
        default_factory=lambda: _env_int(ENV_CLICKHOUSE_HTTP_PORT, DEFAULT_CLICKHOUSE_HTTP_PORT)
    )
    clickhouse_tcp_port: int = field(
        default_factory=lambda: _env_int(ENV_CLICKHOUSE_TCP_PORT, DEFAULT_CLICKHOUSE_TCP_PORT)
    )
    request_partitions: int = field(
        default_factory=lambda: _env_int(ENV_REQUEST_PARTITIONS, DEFAULT_REQUEST_PARTITIONS)
    )
    decision_partitions: int = field(
        default_factory=lambda: _env_int(ENV_DECISION_PARTITIONS, DEFAULT_DECISION_PARTITIONS)
    )
    app_id: str = field(default_factory=lambda: os.environ.get(ENV_APP_ID, DEFAULT_APP_ID))
    #: worker producer linger: 0 is lowest latency; a few ms batch replies and audit records (less CPU per decision)
    producer_linger_ms: int = field(default_factory=lambda: _env_int(ENV_PRODUCER_LINGER_MS, 1))
    audit_ttl_days: int = field(default_factory=lambda: _env_int(ENV_AUDIT_TTL_DAYS, DEFAULT_AUDIT_TTL_DAYS))

    @property
    def kafka_bootstrap(self) -> str:
        return os.environ.get(ENV_KAFKA_BOOTSTRAP) or f"127.0.0.1:{self.kafka_port}"

    @property
    def clickhouse_url(self) -> str:
        return os.environ.get(ENV_CLICKHOUSE_URL) or f"http://127.0.0.1:{self.clickhouse_http_port}"


def load() -> Settings:
    """Settings as the environment says now (re-read on every call, so tests can change the env)."""
    return Settings()
