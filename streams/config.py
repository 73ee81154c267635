"""Configuration: one source of truth for every topic name, port, version and ``PDX_*`` environment variable.

Everything that another module, the compose file, the README or a test needs to agree on lives here.
Values can be overridden with ``PDX_*`` environment variables; defaults point at the local dev services
started by ``pdx dev up``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.errors import ConfigError, UserError, quote

#: Apache Kafka version run by ``pdx dev`` (resolved from Maven Central; see streams/devservices/kafka-pom.xml).
KAFKA_VERSION = "4.1.1"
#: Scala build of the Kafka server artifact (``kafka_2.13``).
KAFKA_SCALA = "2.13"
#: Image tags used by compose.yaml (checked by a unit test).
KAFKA_IMAGE = f"apache/kafka:{KAFKA_VERSION}"
CLICKHOUSE_IMAGE = "clickhouse/clickhouse-server:25.8"

# ---- paths --------------------------------------------------------------------------------------
# What the runtime reads from the package itself (Avro schemas, audit SQL, templates, ...) is package data:
# it is found next to the modules (importlib.resources / __file__), installed or not. The policies/ and
# examples/ directories are not part of the package: they exist only in a source checkout (or wherever the
# user keeps policies), so commands that default to them ask default_policies_dir() / demo_inventory_file()
# and say what they need when there is nothing there.

#: The directory holding the ``streams`` package (a checkout, or site-packages when installed).
PACKAGE_PARENT = Path(__file__).resolve().parent.parent
#: The source checkout's root and its policies/: meaningful only in a checkout (tests, dev tools); an
#: installed package has no checkout (see checkout_root()).
REPO_ROOT = PACKAGE_PARENT
POLICIES_DIR = REPO_ROOT / "policies"
AUDIT_SQL_DIR = Path(__file__).resolve().parent / "audit" / "sql"


def checkout_root() -> Path | None:
    """The pdx source checkout this package runs from (an editable install or PYTHONPATH), or None when the
    package is installed (site-packages holds no pyproject.toml next to ``streams/``)."""
    if (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "streams" / "__init__.py").is_file():
        return REPO_ROOT
    return None


def _checkout_or_cwd(relative: str) -> Path | None:
    root = checkout_root()
    for candidate in (root / relative if root is not None else None, Path(relative)):
        if candidate is not None and candidate.exists():
            return candidate
    return None


def default_policies_dir() -> Path | None:
    """The policy directory commands use when given none: the checkout's policies/, else ./policies, else
    None (installed, run from a directory without policies)."""
    return _checkout_or_cwd("policies")


def demo_inventory_file() -> Path | None:
    """The demo inventory: the checkout's examples/inventory.yaml, else ./examples/inventory.yaml, else None."""
    return _checkout_or_cwd("examples/inventory.yaml")


def require_policies_dir(command: str) -> Path:
    """default_policies_dir() for a command that needs the shipped policies (demo, benchmarks); a UserError
    saying so when there are none."""
    return _required(default_policies_dir(), "policies/", command)


def require_demo_inventory(command: str) -> Path:
    """demo_inventory_file() for a command that needs it; a UserError saying so when there is none."""
    return _required(demo_inventory_file(), "examples/inventory.yaml", command)


def _required(found: Path | None, relative: str, command: str) -> Path:
    if found is None:
        raise UserError(
            f"{command} needs {relative} from the pdx source tree (not part of the installed package) and "
            f"./{relative} does not exist: run it from a pdx checkout or from a directory holding {relative}"
        )
    return found

# ---- topics -------------------------------------------------------------------------------------
TOPIC_REQUESTS = "pdx.requests"
TOPIC_DECISIONS = "pdx.decisions"
TOPIC_AUDIT = "pdx.audit"
TOPIC_DLQ = "pdx.dlq"
TOPIC_INVENTORY = "pdx.inventory"
TOPIC_APPROVALS = "pdx.approvals"
TOPIC_POLICIES = "pdx.policies"
#: signed checkpoints of the workers' audit hash chains (streams/worker/chain.py), read by the audit sink
TOPIC_CHECKPOINTS = "pdx.audit.checkpoints"
#: trusted workload-token issuers, keyed by issuer (``iss``), each value one entry of the JWKS file; signed
#: (kind ``jwks``) and merged into every worker's TokenVerifier live (streams/model/tokens.py)
TOPIC_JWKS = "pdx.jwks"
#: signed delegation grants (delegator → delegate for action/resource patterns, until an expiry), keyed by grant
#: id; a tombstone revokes (streams/model/delegation.py)
TOPIC_DELEGATIONS = "pdx.delegations"
#: approval requests opened by step_up decisions and their resolutions, keyed by approval request id
#: (streams/model/approval_request.py)
TOPIC_APPROVAL_REQUESTS = "pdx.approval-requests"
#: The signed state every worker replicates, written only by operators' tools (never by a worker).
STATE_TOPICS = (TOPIC_INVENTORY, TOPIC_APPROVALS, TOPIC_POLICIES, TOPIC_JWKS, TOPIC_DELEGATIONS)
#: Topics whose records are current state keyed by id: compacted, so the latest value per key survives.
COMPACTED_TOPICS = (*STATE_TOPICS, TOPIC_APPROVAL_REQUESTS)
ALL_TOPICS = (TOPIC_REQUESTS, TOPIC_DECISIONS, TOPIC_AUDIT, TOPIC_DLQ, *COMPACTED_TOPICS, TOPIC_CHECKPOINTS)
#: Topics a reply may never be written to, whatever the allow-list says: a Decision under a state key would
#: replace the good record after compaction.
PROTECTED_TOPICS = (TOPIC_REQUESTS, TOPIC_AUDIT, TOPIC_DLQ, *COMPACTED_TOPICS, TOPIC_CHECKPOINTS)
#: Default reply allow-list: the shared reply topic and per-service topics named ``pdx.replies.<service>``.
DEFAULT_REPLY_TOPICS = (TOPIC_DECISIONS, "pdx.replies.*")

# ---- ClickHouse ---------------------------------------------------------------------------------
CLICKHOUSE_DATABASE = "pdx"
AUDIT_TABLE = "audit_decisions"
#: The ClickHouse roles pdx connects as (streams.audit.store.connect(role=...)) and the dev server's user of each:
#: admin runs migrations (DDL), sink inserts audit rows, reader only SELECTs (investigators, reports, Grafana).
CLICKHOUSE_ROLES = ("admin", "sink", "reader")
CLICKHOUSE_DEV_USERS = {"admin": "pdx_admin", "sink": "pdx_sink", "reader": "pdx_reader"}
#: Where `pdx dev up` keeps the dev server's generated ClickHouse passwords (0600), relative to the state dir.
CLICKHOUSE_CREDENTIALS_FILE = Path("clickhouse") / "credentials.json"

# ---- environment variables ----------------------------------------------------------------------
ENV_KAFKA_BOOTSTRAP = "PDX_KAFKA_BOOTSTRAP"
ENV_CLICKHOUSE_URL = "PDX_CLICKHOUSE_URL"
ENV_STATE_DIR = "PDX_STATE_DIR"
ENV_KAFKA_PORT = "PDX_KAFKA_PORT"
ENV_KAFKA_CONTROLLER_PORT = "PDX_KAFKA_CONTROLLER_PORT"
ENV_CLICKHOUSE_HTTP_PORT = "PDX_CLICKHOUSE_HTTP_PORT"
ENV_CLICKHOUSE_TCP_PORT = "PDX_CLICKHOUSE_TCP_PORT"
#: a ClickHouse cluster (remote_servers name): migrations run ON CLUSTER with Replicated + Distributed tables
ENV_CLICKHOUSE_CLUSTER = "PDX_CLICKHOUSE_CLUSTER"
ENV_REQUEST_PARTITIONS = "PDX_REQUEST_PARTITIONS"
ENV_DECISION_PARTITIONS = "PDX_DECISION_PARTITIONS"
#: replication factor / min.insync.replicas of the topics `pdx topics create` makes; unset: 3 / 2 on a cluster of
#: 3 or more brokers, else 1 / 1 (streams/kafka/topics.py asks the cluster how many brokers it has)
ENV_KAFKA_REPLICATION_FACTOR = "PDX_KAFKA_REPLICATION_FACTOR"
ENV_KAFKA_MIN_INSYNC_REPLICAS = "PDX_KAFKA_MIN_INSYNC_REPLICAS"
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
ENV_REPLY_TOPICS = "PDX_REPLY_TOPICS"
ENV_WORKER_BATCH_MAX = "PDX_WORKER_BATCH_MAX"
ENV_REQUEST_MAX_BYTES = "PDX_REQUEST_MAX_BYTES"
ENV_REQUEST_MAX_STRING = "PDX_REQUEST_MAX_STRING"
ENV_REQUEST_MAX_LIST = "PDX_REQUEST_MAX_LIST"
ENV_REQUEST_MAX_MAP = "PDX_REQUEST_MAX_MAP"
ENV_REQUEST_MAX_TOKEN = "PDX_REQUEST_MAX_TOKEN"  # noqa: S105 - the variable's name, not a secret
#: the trusted workload-token issuers and their JWKS (streams/model/tokens.py); unset: no token verifies
ENV_JWKS_FILE = "PDX_JWKS_FILE"
#: the dev issuers' JWKS in the keys dir (streams/devservices/issuer.py), used when PDX_JWKS_FILE is not set
DEV_JWKS_FILE = "jwks.json"
ENV_KEYS_DIR = "PDX_KEYS_DIR"
ENV_REDACT_ATTRIBUTES = "PDX_REDACT_ATTRIBUTES"
#: the Prometheus endpoint's port (streams/metrics.py); 0 or unset: no endpoint
ENV_METRICS_PORT = "PDX_METRICS_PORT"
ENV_MAX_DELEGATION_DEPTH = "PDX_MAX_DELEGATION_DEPTH"
#: attribute-name patterns whose values never reach the audit trail (streams/contracts/redact.py)
DEFAULT_REDACT_ATTRIBUTES = ("authorization", "token", "secret", "password", "api_key", "cookie", "credential")
#: ``PDX_TRUSTED_KEYS_POLICY`` etc.: comma-separated public key files trusted for one kind of signed record
ENV_TRUSTED_KEYS_PREFIX = "PDX_TRUSTED_KEYS_"
#: ``PDX_SIGNING_KEY_POLICY`` etc.: the private key file that signs one kind of record (default: keys dir)
ENV_SIGNING_KEY_PREFIX = "PDX_SIGNING_KEY_"
#: The kinds of signed records (streams/contracts/signing.py) and the key file stem of each.
SIGNED_KINDS = ("policy", "inventory", "approval", "audit", "jwks", "delegation")

DEFAULT_KAFKA_PORT = 9092
DEFAULT_KAFKA_CONTROLLER_PORT = 9093
DEFAULT_CLICKHOUSE_HTTP_PORT = 8123
DEFAULT_CLICKHOUSE_TCP_PORT = 9000
DEFAULT_STATE_DIR = ".pdx"
DEFAULT_REQUEST_PARTITIONS = 4
DEFAULT_DECISION_PARTITIONS = 8
DEFAULT_APP_ID = "pdx-decider"
DEFAULT_AUDIT_TTL_DAYS = 400
#: Most principals a request may act through (AccessRequest.on_behalf_of); longer chains are denied
#: delegation_too_deep before any rule. PDX_MAX_DELEGATION_DEPTH changes it.
DEFAULT_MAX_DELEGATION_DEPTH = 4


ENV_KAFKA_SECURITY_PROTOCOL = "PDX_KAFKA_SECURITY_PROTOCOL"
ENV_KAFKA_SASL_MECHANISM = "PDX_KAFKA_SASL_MECHANISM"
ENV_KAFKA_SASL_USERNAME = "PDX_KAFKA_SASL_USERNAME"
ENV_KAFKA_SASL_PASSWORD = "PDX_KAFKA_SASL_PASSWORD"  # noqa: S105 - the variable's name, not a secret
ENV_KAFKA_SSL_CAFILE = "PDX_KAFKA_SSL_CAFILE"
ENV_KAFKA_SSL_CERTFILE = "PDX_KAFKA_SSL_CERTFILE"
ENV_KAFKA_SSL_KEYFILE = "PDX_KAFKA_SSL_KEYFILE"
#: ClickHouse login for every role (``PDX_CLICKHOUSE_USER`` / ``PDX_CLICKHOUSE_PASSWORD``), or for one role
#: (``PDX_CLICKHOUSE_ADMIN_USER`` / ``PDX_CLICKHOUSE_ADMIN_PASSWORD``, ``..._SINK_...``, ``..._READER_...``)
ENV_CLICKHOUSE_USER = "PDX_CLICKHOUSE_USER"
ENV_CLICKHOUSE_PASSWORD = "PDX_CLICKHOUSE_PASSWORD"  # noqa: S105 - the variable's name, not a secret
ENV_CLICKHOUSE_ROLE_PREFIX = "PDX_CLICKHOUSE_"
ENV_CLICKHOUSE_ADMIN_USER = "PDX_CLICKHOUSE_ADMIN_USER"
ENV_CLICKHOUSE_ADMIN_PASSWORD = "PDX_CLICKHOUSE_ADMIN_PASSWORD"  # noqa: S105
ENV_CLICKHOUSE_SINK_USER = "PDX_CLICKHOUSE_SINK_USER"
ENV_CLICKHOUSE_SINK_PASSWORD = "PDX_CLICKHOUSE_SINK_PASSWORD"  # noqa: S105
ENV_CLICKHOUSE_READER_USER = "PDX_CLICKHOUSE_READER_USER"
ENV_CLICKHOUSE_READER_PASSWORD = "PDX_CLICKHOUSE_READER_PASSWORD"  # noqa: S105
#: a dev credentials file (what `pdx dev up` writes; default <state_dir>/clickhouse/credentials.json)
ENV_CLICKHOUSE_CREDENTIALS = "PDX_CLICKHOUSE_CREDENTIALS"

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
TEST_SERVICE_MODES = ("local", "containers")


def default_worker_id() -> str:
    """``host-pid``: unique per process on a host, readable in decisions and audit rows."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client authenticates (streams/kafka/clients.py applies it to each client it builds)."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)  # never printed
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True)
class RequestLimits:
    """How large an AccessRequest may be before it is denied ``request_too_large`` (streams.contracts.limits).

    Why limits at all: every byte of a request is decoded, held, evaluated against, audited and stored in
    ClickHouse, and a request's size is chosen by whoever can write to pdx.requests. Why these defaults: a
    real request is a few hundred bytes (ids, an action, a handful of attributes), so each default leaves
    one to two orders of magnitude of headroom while keeping the worst case small:

    * ``max_message_bytes`` 64 KiB: the whole encoded message (header included). Far below Kafka's 1 MiB
      default ``max.message.bytes``, and it keeps each audit row (which holds the request's bytes) small.
      It bounds the totals; the limits below bound the pieces inside it.
    * ``max_string_chars`` 4096: every string (ids, action, resource fields, context fields, each
      ``on_behalf_of`` item, every attribute key and value). Room for a long ARN, URL or JWT-sized ticket;
      longer text is data, not an attribute to decide on. One limit for map keys and values too: a separate
      value limit would be one more knob with nothing to choose between them.
    * ``max_list_items`` 64 (``on_behalf_of``): a delegation chain is a few principals deep; 64 is already
      absurd, and policies test membership in it.
    * ``max_map_entries`` 64 (each of ``resource.attributes`` and ``context.attributes``): policies name the
      attributes they read; a few dozen are plenty.
    * ``max_token_chars`` 8192 (``token``, the caller's JWT): a token of its own limit, since a JWT with RSA
      signatures, nested ``act`` claims and many scopes passes 4096 characters (an ordinary one is 0.6-1.5k),
      while no attribute should.

    Nesting depth needs no limit: the Avro schema has fixed records, one array of strings and two maps of
    string to string, so a decoded request is never deeper than that (see streams.contracts.limits).
    """

    max_message_bytes: int = 65536
    max_string_chars: int = 4096
    max_list_items: int = 64
    max_map_entries: int = 64
    max_token_chars: int = 8192


DEFAULT_REQUEST_LIMITS = RequestLimits()


@dataclass(frozen=True)
class Settings:
    """Every ``PDX_*`` setting, read and validated once by :meth:`from_env`.

    Why one frozen object: the worker, the sink and the client are built *from* a Settings (see
    ``streams.worker.app.build_app``), so tests build them from a Settings of their own instead of patching
    the environment, and a wrong value fails at start with the variable's name, not deep in a client.
    No other module reads ``os.environ`` for pdx settings.

    ClickHouse logins are per role (``admin`` migrates, ``sink`` inserts audit records, ``reader`` only reads;
    see :meth:`clickhouse_login`): ``PDX_CLICKHOUSE_<ROLE>_USER`` / ``_PASSWORD`` for one role,
    ``PDX_CLICKHOUSE_USER`` / ``PDX_CLICKHOUSE_PASSWORD`` for all of them, else the credentials file that
    ``pdx dev up`` writes (``PDX_CLICKHOUSE_CREDENTIALS``, default ``<state_dir>/clickhouse/credentials.json``),
    else the server's ``default`` user without a password. A user in ``PDX_CLICKHOUSE_URL`` wins over all.
    """

    state_dir: Path
    cache_dir: Path
    kafka_port: int
    kafka_controller_port: int
    clickhouse_http_port: int
    clickhouse_tcp_port: int
    kafka_bootstrap: str
    clickhouse_url: str
    request_partitions: int
    decision_partitions: int
    app_id: str
    worker_id: str
    #: worker producer linger: 0 is lowest latency; a few ms batch replies and audit records (less CPU per decision)
    producer_linger_ms: int
    audit_ttl_days: int
    #: whether a worker runs the audit sink itself (False: a separate `pdx sink` process does)
    audit_sink: bool
    audit_batch_max: int
    audit_batch_wait_ms: int
    #: written by a worker once it decides (state loaded, partitions assigned); None: not written
    ready_file: Path | None
    test_services: str
    kafka_security: KafkaSecurity
    #: where replies may go: exact topic names, or prefixes ending in ``*`` (never state, audit or DLQ topics)
    reply_topics: tuple[str, ...] = DEFAULT_REPLY_TOPICS
    #: most requests one worker takes from one fetch and decides together
    worker_batch_max: int = 2000
    #: size limits of one AccessRequest; larger requests are denied request_too_large
    request_limits: RequestLimits = DEFAULT_REQUEST_LIMITS
    #: where dev signing keys live (``<kind>.key`` private, ``<kind>*.pub`` trusted); default <state_dir>/keys
    keys_dir: Path | None = None
    #: per kind, the public key files trusted for it (from PDX_TRUSTED_KEYS_<KIND>); a kind missing here
    #: trusts the ``<keys_dir>/<kind>*.pub`` files (two files at once during a key rotation)
    trusted_key_files: Mapping[str, tuple[Path, ...]] = field(default_factory=dict)
    #: per kind, the private key file that signs it (from PDX_SIGNING_KEY_<KIND>); default <keys_dir>/<kind>.key
    signing_key_files: Mapping[str, Path] = field(default_factory=dict)
    #: ClickHouse logins from the environment: per role (PDX_CLICKHOUSE_<ROLE>_USER/_PASSWORD) and, under
    #: ``"*"``, for every role (PDX_CLICKHOUSE_USER/_PASSWORD); see :meth:`clickhouse_login` for the order
    clickhouse_logins: Mapping[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    #: the dev credentials file (PDX_CLICKHOUSE_CREDENTIALS); None: <state_dir>/clickhouse/credentials.json
    clickhouse_credentials: Path | None = None
    #: PDX_CLICKHOUSE_CLUSTER: the cluster the audit schema is migrated on (streams/audit/migrate.py); None: one node
    clickhouse_cluster: str | None = None
    #: attribute-name patterns redacted from audit records (values shaped like JWTs / bearer tokens always are)
    redact_attributes: tuple[str, ...] = DEFAULT_REDACT_ATTRIBUTES
    #: trusted workload-token issuers with their JWKS (PDX_JWKS_FILE); None: a request with a token is denied
    jwks_file: Path | None = None
    #: port of this process's Prometheus endpoint (PDX_METRICS_PORT, streams/metrics.py); 0: none
    metrics_port: int = 0
    #: most principals a request may act through (PDX_MAX_DELEGATION_DEPTH); longer: delegation_too_deep
    max_delegation_depth: int = DEFAULT_MAX_DELEGATION_DEPTH
    #: replication factor of pdx's topics (PDX_KAFKA_REPLICATION_FACTOR); None: from the broker count (3, or 1)
    kafka_replication_factor: int | None = None
    #: min.insync.replicas of pdx's topics (PDX_KAFKA_MIN_INSYNC_REPLICAS); None: 2 with 3+ replicas, else 1
    kafka_min_insync_replicas: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``env`` (default: the process environment); ConfigError naming the variable if a
        value is unusable."""
        e = _Env(os.environ if env is None else env)
        kafka_port = e.port(ENV_KAFKA_PORT, DEFAULT_KAFKA_PORT)
        http_port = e.port(ENV_CLICKHOUSE_HTTP_PORT, DEFAULT_CLICKHOUSE_HTTP_PORT)
        ready = e.text(ENV_READY_FILE, "")
        return cls(
            state_dir=Path(e.text(ENV_STATE_DIR, DEFAULT_STATE_DIR)).resolve(),
            cache_dir=Path(e.text(ENV_CACHE_DIR, "") or Path.home() / ".cache" / "pdx"),
            kafka_port=kafka_port,
            kafka_controller_port=e.port(ENV_KAFKA_CONTROLLER_PORT, DEFAULT_KAFKA_CONTROLLER_PORT),
            clickhouse_http_port=http_port,
            clickhouse_tcp_port=e.port(ENV_CLICKHOUSE_TCP_PORT, DEFAULT_CLICKHOUSE_TCP_PORT),
            kafka_bootstrap=e.text(ENV_KAFKA_BOOTSTRAP, "") or f"127.0.0.1:{kafka_port}",
            clickhouse_url=e.text(ENV_CLICKHOUSE_URL, "") or f"http://127.0.0.1:{http_port}",
            request_partitions=e.integer(ENV_REQUEST_PARTITIONS, DEFAULT_REQUEST_PARTITIONS, low=1),
            decision_partitions=e.integer(ENV_DECISION_PARTITIONS, DEFAULT_DECISION_PARTITIONS, low=1),
            app_id=e.text(ENV_APP_ID, DEFAULT_APP_ID) or DEFAULT_APP_ID,
            worker_id=e.text(ENV_WORKER_ID, "") or default_worker_id(),
            producer_linger_ms=e.integer(ENV_PRODUCER_LINGER_MS, 1, low=0, high=60_000),
            audit_ttl_days=e.integer(ENV_AUDIT_TTL_DAYS, DEFAULT_AUDIT_TTL_DAYS, low=1),
            audit_sink=e.choice(ENV_AUDIT_SINK, "on", ("on", "off")) == "on",
            audit_batch_max=e.integer(ENV_AUDIT_BATCH_MAX, 5000, low=1),
            audit_batch_wait_ms=e.integer(ENV_AUDIT_BATCH_WAIT_MS, 1000, low=0),
            ready_file=Path(ready) if ready else None,
            test_services=e.choice(ENV_TEST_SERVICES, "local", TEST_SERVICE_MODES),
            kafka_security=_kafka_security(e),
            reply_topics=_reply_topics(e),
            worker_batch_max=e.integer(ENV_WORKER_BATCH_MAX, 2000, low=1, high=100_000),
            request_limits=_request_limits(e),
            keys_dir=Path(e.text(ENV_KEYS_DIR, "")).resolve() if e.text(ENV_KEYS_DIR, "") else None,
            trusted_key_files={
                kind: tuple(Path(x.strip()) for x in raw.split(",") if x.strip())
                for kind in SIGNED_KINDS
                if (raw := e.text(ENV_TRUSTED_KEYS_PREFIX + kind.upper(), ""))
            },
            redact_attributes=tuple(
                x.strip() for x in e.text(ENV_REDACT_ATTRIBUTES, ",".join(DEFAULT_REDACT_ATTRIBUTES)).split(",")
                if x.strip()
            ),
            signing_key_files={
                kind: Path(raw)
                for kind in SIGNED_KINDS
                if (raw := e.text(ENV_SIGNING_KEY_PREFIX + kind.upper(), ""))
            },
            clickhouse_logins=_clickhouse_logins(e),
            clickhouse_credentials=Path(raw) if (raw := e.text(ENV_CLICKHOUSE_CREDENTIALS, "")) else None,
            clickhouse_cluster=_cluster_name(e.text(ENV_CLICKHOUSE_CLUSTER, "")),
            jwks_file=e.file(ENV_JWKS_FILE),
            metrics_port=e.integer(ENV_METRICS_PORT, 0, low=0, high=65535),
            max_delegation_depth=e.integer(ENV_MAX_DELEGATION_DEPTH, DEFAULT_MAX_DELEGATION_DEPTH, low=1, high=64),
            kafka_replication_factor=e.integer(ENV_KAFKA_REPLICATION_FACTOR, 0, low=1, high=32767) or None,
            kafka_min_insync_replicas=e.integer(ENV_KAFKA_MIN_INSYNC_REPLICAS, 0, low=1, high=32767) or None,
        )

    @property
    def token_issuers_file(self) -> Path | None:
        """The trusted token issuers: PDX_JWKS_FILE, else the dev issuers' <keys dir>/jwks.json if it exists."""
        if self.jwks_file is not None:
            return self.jwks_file
        dev = self.signing_keys_dir / DEV_JWKS_FILE
        return dev if dev.is_file() else None

    @property
    def signing_keys_dir(self) -> Path:
        """Where dev keys are created and looked up: PDX_KEYS_DIR, else <state_dir>/keys."""
        return self.keys_dir if self.keys_dir is not None else self.state_dir / "keys"

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (e.g. ``cfg.replace(worker_id="w2")``)."""
        return dataclasses.replace(self, **changes)

    def clickhouse_login(self, role: str, url: str | None = None) -> tuple[str, str] | None:
        """(user, password) for a ClickHouse role (one of :data:`CLICKHOUSE_ROLES`), or None: the server's
        ``default`` user without a password (what pdx did before roles existed).

        Found in this order (the first that has one wins; credentials in the URL itself,
        ``http://user:password@host:port``, win over all of these, see streams.audit.store.connect):

        1. ``PDX_CLICKHOUSE_<ROLE>_USER`` / ``PDX_CLICKHOUSE_<ROLE>_PASSWORD`` (e.g. ``PDX_CLICKHOUSE_READER_USER``);
        2. ``PDX_CLICKHOUSE_USER`` / ``PDX_CLICKHOUSE_PASSWORD`` (one login for every role);
        3. the dev credentials file written by ``pdx dev up`` (``PDX_CLICKHOUSE_CREDENTIALS``, default
           ``<state_dir>/clickhouse/credentials.json``), used only when it belongs to the server ``url`` points
           at (same host and port), so a stale file never sends its passwords to another server.
        """
        if role not in CLICKHOUSE_ROLES:
            raise ConfigError(f"unknown ClickHouse role {role!r}: one of {', '.join(CLICKHOUSE_ROLES)}")
        for key in (role, "*"):
            if key in self.clickhouse_logins:
                return self.clickhouse_logins[key]
        return dev_clickhouse_login(
            self.clickhouse_credentials or self.state_dir / CLICKHOUSE_CREDENTIALS_FILE,
            role,
            url or self.clickhouse_url,
        )


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlparse

    parsed = urlparse(url if "://" in url else f"http://{url}")
    host = parsed.hostname or ""
    return ("127.0.0.1" if host == "localhost" else host), parsed.port or (8443 if parsed.scheme == "https" else 8123)


def dev_clickhouse_login(path: Path, role: str, url: str) -> tuple[str, str] | None:
    """The role's login from a dev credentials file (``{"url": ..., "users": {role: {"user", "password"}}}``),
    when the file exists and belongs to the server at ``url``; else None."""
    import json

    try:
        data = json.loads(path.read_text())
        if _host_port(str(data["url"])) != _host_port(url):
            return None
        entry = data["users"][role]
        return str(entry["user"]), str(entry["password"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _clickhouse_logins(e: _Env) -> dict[str, tuple[str, str]]:
    logins: dict[str, tuple[str, str]] = {}
    for key, prefix in [(r, f"{ENV_CLICKHOUSE_ROLE_PREFIX}{r.upper()}_") for r in CLICKHOUSE_ROLES] + [
        ("*", ENV_CLICKHOUSE_ROLE_PREFIX)
    ]:
        user = e.text(prefix + "USER", "")
        password = e.text(prefix + "PASSWORD", "")
        if password and not user:
            raise ConfigError(f"{prefix}PASSWORD is set but {prefix}USER is not: set both, or neither")
        if user:
            logins[key] = (user, password)
    return logins


def _request_limits(e: _Env) -> RequestLimits:
    """The request size limits. Lower bounds keep ordinary requests possible (a uuid request id, a few
    attributes); upper bounds keep a typo from switching the limits off (16 MiB is beyond any Kafka default)."""
    d = DEFAULT_REQUEST_LIMITS
    return RequestLimits(
        max_message_bytes=e.integer(ENV_REQUEST_MAX_BYTES, d.max_message_bytes, low=1024, high=16 * 1024 * 1024),
        max_string_chars=e.integer(ENV_REQUEST_MAX_STRING, d.max_string_chars, low=64, high=1024 * 1024),
        max_list_items=e.integer(ENV_REQUEST_MAX_LIST, d.max_list_items, low=1, high=100_000),
        max_map_entries=e.integer(ENV_REQUEST_MAX_MAP, d.max_map_entries, low=1, high=100_000),
        max_token_chars=e.integer(ENV_REQUEST_MAX_TOKEN, d.max_token_chars, low=256, high=1024 * 1024),
    )


def _reply_topics(e: _Env) -> tuple[str, ...]:
    raw = e.text(ENV_REPLY_TOPICS, "")
    topics = tuple(t.strip() for t in raw.split(",") if t.strip()) if raw else DEFAULT_REPLY_TOPICS
    for pattern in topics:
        covered = [p for p in PROTECTED_TOPICS if _matches(p, pattern)]
        if covered:
            raise ConfigError(
                f"environment variable {ENV_REPLY_TOPICS} allows {quote(pattern, 40)}, which covers {covered[0]}: "
                "replies must never go to request, state, audit or DLQ topics"
            )
    return topics


def _matches(topic: str, pattern: str) -> bool:
    if pattern.endswith("*"):
        return topic.startswith(pattern[:-1]) and len(topic) >= len(pattern)
    return topic == pattern


def reply_topic_allowed(topic: str, allowed: tuple[str, ...]) -> bool:
    """Whether ``topic`` is on the reply allow-list (exact names, or prefixes ending in ``*``)."""
    if topic in PROTECTED_TOPICS:
        return False
    return any(_matches(topic, pattern) for pattern in allowed)


def _kafka_security(e: _Env) -> KafkaSecurity:
    protocol = e.choice(ENV_KAFKA_SECURITY_PROTOCOL, "PLAINTEXT", SECURITY_PROTOCOLS)
    sec = KafkaSecurity(
        protocol=protocol,
        sasl_mechanism=e.choice(ENV_KAFKA_SASL_MECHANISM, "SCRAM-SHA-512", SASL_MECHANISMS)
        if protocol.startswith("SASL")
        else None,
        sasl_username=e.text(ENV_KAFKA_SASL_USERNAME, "") or None,
        sasl_password=e.text(ENV_KAFKA_SASL_PASSWORD, "") or None,
        ssl_cafile=e.file(ENV_KAFKA_SSL_CAFILE),
        ssl_certfile=e.file(ENV_KAFKA_SSL_CERTFILE),
        ssl_keyfile=e.file(ENV_KAFKA_SSL_KEYFILE),
    )
    if sec.uses_sasl and not (sec.sasl_username and sec.sasl_password):
        raise ConfigError(
            f"{ENV_KAFKA_SECURITY_PROTOCOL}={protocol} needs {ENV_KAFKA_SASL_USERNAME} and {ENV_KAFKA_SASL_PASSWORD}"
        )
    if (sec.ssl_certfile is None) != (sec.ssl_keyfile is None):
        raise ConfigError(f"set both {ENV_KAFKA_SSL_CERTFILE} and {ENV_KAFKA_SSL_KEYFILE} (a client certificate "
                          "and its key), or neither")
    return sec


def _cluster_name(raw: str) -> str | None:
    """PDX_CLICKHOUSE_CLUSTER is spliced into DDL (ON CLUSTER name), so it must be a plain identifier."""
    if not raw:
        return None
    if not (raw.isascii() and raw.replace("_", "a").isalnum() and not raw[0].isdigit()):
        raise ConfigError(
            f"environment variable {ENV_CLICKHOUSE_CLUSTER}={quote(raw, 40)} is not a cluster name: use the name "
            "of a cluster in the servers' remote_servers (letters, digits, underscores), or unset it for one node"
        )
    return raw


class _Env:
    """Typed reads of environment variables; every failure names the variable and what it accepts."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def text(self, name: str, default: str) -> str:
        raw = self.env.get(name)
        return default if raw is None else raw.strip()

    def integer(self, name: str, default: int, *, low: int | None = None, high: int | None = None) -> int:
        raw = self.text(name, "")
        if raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(
                f"environment variable {name}={quote(raw, 40)} is not an integer; unset it or give a number"
            ) from None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            shown = str(value) if len(raw) <= 20 else quote(raw, 40)  # a 4000-digit number is an integer too
            raise ConfigError(f"environment variable {name}={shown} is out of range: it must be {bounds}")
        return value

    def port(self, name: str, default: int) -> int:
        return self.integer(name, default, low=1, high=65535)

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        raw = self.text(name, "") or default
        if raw not in allowed:
            raise ConfigError(f"environment variable {name}={quote(raw, 40)} is not one of {', '.join(allowed)}")
        return raw

    def file(self, name: str) -> Path | None:
        raw = self.text(name, "")
        if not raw:
            return None
        path = Path(raw)
        if not path.is_file():
            raise ConfigError(f"environment variable {name}={quote(raw, 40)}: no such file")
        return path


def load() -> Settings:
    """Settings as the environment says now (re-read on every call, so tests can change the env)."""
    return Settings.from_env()
