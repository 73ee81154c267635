"""Configuration: one source of truth for every topic name, port, version and ``PDX_*`` environment variable.

Everything that another module, the compose file, the README or a test needs to agree on lives here.
Values can be overridden with ``PDX_*`` environment variables; defaults point at the local dev services
started by ``pdx dev up``.
"""

# ruff: noqa: RUF009  (setting(...) returns a dataclasses.field, declaring each PDX_* variable once)
from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Mapping
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
# Each PDX_* setting is declared once, by setting(...) on its field below (Settings, KafkaSecurity,
# RequestLimits): env name, type, default, bounds, doc and whether it is secret. Settings.from_env reads them
# all generically; the ENV_* / DEFAULT_* names further down are derived from those declarations.

#: ``PDX_TRUSTED_KEYS_POLICY`` etc.: comma-separated public key files trusted for one kind of signed record
ENV_TRUSTED_KEYS_PREFIX = "PDX_TRUSTED_KEYS_"
#: ``PDX_SIGNING_KEY_POLICY`` etc.: the private key file that signs one kind of record (default: keys dir)
ENV_SIGNING_KEY_PREFIX = "PDX_SIGNING_KEY_"
#: ClickHouse login for every role (``PDX_CLICKHOUSE_USER`` / ``PDX_CLICKHOUSE_PASSWORD``), or for one role
#: (``PDX_CLICKHOUSE_ADMIN_USER`` / ``PDX_CLICKHOUSE_ADMIN_PASSWORD``, ``..._SINK_...``, ``..._READER_...``)
ENV_CLICKHOUSE_ROLE_PREFIX = "PDX_CLICKHOUSE_"
#: the dev issuers' JWKS in the keys dir (streams/devservices/issuer.py), used when PDX_JWKS_FILE is not set
DEV_JWKS_FILE = "jwks.json"
#: attribute-name patterns whose values never reach the audit trail (streams/contracts/redact.py)
DEFAULT_REDACT_ATTRIBUTES = ("authorization", "token", "secret", "password", "api_key", "cookie", "credential")
#: The kinds of signed records (streams/contracts/signing.py) and the key file stem of each.
SIGNED_KINDS = ("policy", "inventory", "approval", "audit", "jwks", "delegation")

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
TEST_SERVICE_MODES = ("local", "containers")

#: How a setting's text is turned into its value (see _Env.read).
SETTING_KINDS = ("text", "int", "choice", "onoff", "path", "file", "list", "custom")


@dataclass(frozen=True)
class Setting:
    """The one declaration of a ``PDX_*`` setting (attached to its dataclass field by :func:`setting`)."""

    env: str
    doc: str
    kind: str = "text"
    #: the value when the variable is unset or empty (already of the field's type); None: no value
    default: Any = None
    #: a default computed from the fields read before it (by field name), e.g. the bootstrap from the port
    derive: Callable[[Mapping[str, Any]], Any] | None = None
    low: int | None = None
    high: int | None = None
    choices: tuple[str, ...] = ()
    #: never printed (``pdx config`` masks it, repr leaves it out)
    secret: bool = False
    #: after parsing: validate or normalise the value, ``check(env name, value) -> value`` (ConfigError if bad)
    check: Callable[[str, Any], Any] | None = None
    #: kind "custom": reads the value itself from the variables in ``envs`` (prefix families like PDX_SIGNING_KEY_*)
    read: Callable[[_Env], Any] | None = None
    envs: tuple[str, ...] = ()


def setting(env: str, doc: str, *, required: bool = False, **spec: Any) -> Any:
    """A dataclass field declared by its ``PDX_*`` variable; ``required``: the dataclass itself has no default
    (``from_env`` still has one, ``default`` or ``derive``)."""
    s = Setting(env=env, doc=doc, **spec)
    if s.kind not in SETTING_KINDS:
        raise ValueError(f"setting {env}: unknown kind {s.kind!r}")
    meta = {"setting": s}
    repr_ = not s.secret
    if required:
        return field(metadata=meta, repr=repr_)
    if isinstance(s.default, (dict, list)):
        value = s.default
        return field(default_factory=lambda: type(value)(value), metadata=meta, repr=repr_)
    return field(default=s.default, metadata=meta, repr=repr_)


def group(**kw: Any) -> Any:
    """A field holding a dataclass of settings (KafkaSecurity, RequestLimits), read field by field."""
    return field(metadata={"group": True}, **kw)


def _resolved(_: str, value: Path) -> Path:
    return value.resolve()


def default_worker_id() -> str:
    """``host-pid``: unique per process on a host, readable in decisions and audit rows."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _kafka_security_post(values: dict[str, Any]) -> dict[str, Any]:
    protocol = values["protocol"]
    if not protocol.startswith("SASL"):
        values["sasl_mechanism"] = None
    env = _ENV_OF_KAFKA_SECURITY
    if protocol.startswith("SASL") and not (values["sasl_username"] and values["sasl_password"]):
        raise ConfigError(f"{env['protocol']}={protocol} needs {env['sasl_username']} and {env['sasl_password']}")
    if (values["ssl_certfile"] is None) != (values["ssl_keyfile"] is None):
        raise ConfigError(f"set both {env['ssl_certfile']} and {env['ssl_keyfile']} (a client certificate "
                          "and its key), or neither")
    return values


@dataclass(frozen=True)
class KafkaSecurity:
    """How every Kafka client authenticates (streams/kafka/clients.py applies it to each client it builds)."""

    protocol: str = setting("PDX_KAFKA_SECURITY_PROTOCOL", "how Kafka clients connect", kind="choice",
                            default="PLAINTEXT", choices=SECURITY_PROTOCOLS)
    sasl_mechanism: str | None = setting("PDX_KAFKA_SASL_MECHANISM", "SASL mechanism (SASL_* protocols only)",
                                         kind="choice", default=None, choices=SASL_MECHANISMS,
                                         derive=lambda v: "SCRAM-SHA-512" if v["protocol"].startswith("SASL") else None)
    sasl_username: str | None = setting("PDX_KAFKA_SASL_USERNAME", "SASL user")
    sasl_password: str | None = setting("PDX_KAFKA_SASL_PASSWORD", "SASL password", secret=True)  # never printed
    ssl_cafile: Path | None = setting("PDX_KAFKA_SSL_CAFILE", "CA bundle for the brokers' certificates", kind="file")
    ssl_certfile: Path | None = setting("PDX_KAFKA_SSL_CERTFILE", "client certificate (with its key)", kind="file")
    ssl_keyfile: Path | None = setting("PDX_KAFKA_SSL_KEYFILE", "client certificate's key", kind="file")

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

    max_message_bytes: int = setting("PDX_REQUEST_MAX_BYTES", "largest encoded request", kind="int", default=65536,
                                     low=1024, high=16 * 1024 * 1024)
    max_string_chars: int = setting("PDX_REQUEST_MAX_STRING", "longest string in a request", kind="int",
                                    default=4096, low=64, high=1024 * 1024)
    max_list_items: int = setting("PDX_REQUEST_MAX_LIST", "most on_behalf_of items", kind="int", default=64,
                                  low=1, high=100_000)
    max_map_entries: int = setting("PDX_REQUEST_MAX_MAP", "most entries in each attribute map", kind="int",
                                   default=64, low=1, high=100_000)
    max_token_chars: int = setting("PDX_REQUEST_MAX_TOKEN", "longest token (JWT)", kind="int", default=8192,
                                   low=256, high=1024 * 1024)


DEFAULT_REQUEST_LIMITS = RequestLimits()


def _check_reply_topics(name: str, topics: tuple[str, ...]) -> tuple[str, ...]:
    for pattern in topics:
        covered = [p for p in PROTECTED_TOPICS if _matches(p, pattern)]
        if covered:
            raise ConfigError(
                f"environment variable {name} allows {quote(pattern, 40)}, which covers {covered[0]}: "
                "replies must never go to request, state, audit or DLQ topics"
            )
    return topics


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

    state_dir: Path = setting("PDX_STATE_DIR", "dev services' state (data, logs, keys, credentials)", kind="path",
                              default=Path(".pdx"), check=_resolved, required=True)
    cache_dir: Path = setting("PDX_CACHE_DIR", "downloads (Kafka, ClickHouse, JDK)", kind="path", required=True,
                              derive=lambda v: Path.home() / ".cache" / "pdx")
    kafka_port: int = setting("PDX_KAFKA_PORT", "dev Kafka broker port", kind="int", default=9092, low=1,
                              high=65535, required=True)
    kafka_controller_port: int = setting("PDX_KAFKA_CONTROLLER_PORT", "dev Kafka controller port", kind="int",
                                         default=9093, low=1, high=65535, required=True)
    clickhouse_http_port: int = setting("PDX_CLICKHOUSE_HTTP_PORT", "dev ClickHouse HTTP port", kind="int",
                                        default=8123, low=1, high=65535, required=True)
    clickhouse_tcp_port: int = setting("PDX_CLICKHOUSE_TCP_PORT", "dev ClickHouse native port", kind="int",
                                       default=9000, low=1, high=65535, required=True)
    kafka_bootstrap: str = setting("PDX_KAFKA_BOOTSTRAP", "Kafka bootstrap servers", required=True,
                                   derive=lambda v: f"127.0.0.1:{v['kafka_port']}")
    clickhouse_url: str = setting("PDX_CLICKHOUSE_URL", "ClickHouse HTTP URL", required=True,
                                  derive=lambda v: f"http://127.0.0.1:{v['clickhouse_http_port']}")
    request_partitions: int = setting("PDX_REQUEST_PARTITIONS", "partitions of pdx.requests", kind="int",
                                      default=4, low=1, required=True)
    decision_partitions: int = setting("PDX_DECISION_PARTITIONS", "partitions of pdx.decisions", kind="int",
                                       default=8, low=1, required=True)
    app_id: str = setting("PDX_APP_ID", "worker consumer group / application id", default="pdx-decider",
                          required=True)
    worker_id: str = setting("PDX_WORKER_ID", "this worker's id in decisions and audit rows (default host-pid)",
                             derive=lambda v: default_worker_id(), required=True)
    #: worker producer linger: 0 is lowest latency; a few ms batch replies and audit records (less CPU per decision)
    producer_linger_ms: int = setting("PDX_PRODUCER_LINGER_MS", "worker producer linger (ms)", kind="int", default=1,
                                      low=0, high=60_000, required=True)
    audit_ttl_days: int = setting("PDX_AUDIT_TTL_DAYS", "audit rows kept this many days", kind="int", default=400,
                                  low=1, required=True)
    #: whether a worker runs the audit sink itself (False: a separate `pdx sink` process does)
    audit_sink: bool = setting("PDX_AUDIT_SINK", "whether a worker runs the audit sink itself", kind="onoff",
                               default=True, required=True)
    audit_batch_max: int = setting("PDX_AUDIT_BATCH_MAX", "most audit rows per ClickHouse insert", kind="int",
                                   default=5000, low=1, required=True)
    audit_batch_wait_ms: int = setting("PDX_AUDIT_BATCH_WAIT_MS", "longest wait before an audit insert (ms)",
                                       kind="int", default=1000, low=0, required=True)
    #: written by a worker once it decides (state loaded, partitions assigned); None: not written
    ready_file: Path | None = setting("PDX_READY_FILE", "written by a worker once it decides", kind="path",
                                      required=True)
    test_services: str = setting("PDX_TEST_SERVICES", "how integration tests get Kafka and ClickHouse",
                                 kind="choice", default="local", choices=TEST_SERVICE_MODES, required=True)
    kafka_security: KafkaSecurity = group()
    #: where replies may go: exact topic names, or prefixes ending in ``*`` (never state, audit or DLQ topics)
    reply_topics: tuple[str, ...] = setting("PDX_REPLY_TOPICS", "topics replies may go to (names or prefix*)",
                                            kind="list", default=DEFAULT_REPLY_TOPICS, check=_check_reply_topics)
    #: most requests one worker takes from one fetch and decides together
    worker_batch_max: int = setting("PDX_WORKER_BATCH_MAX", "most requests decided together", kind="int",
                                    default=2000, low=1, high=100_000)
    #: size limits of one AccessRequest; larger requests are denied request_too_large
    request_limits: RequestLimits = group(default=DEFAULT_REQUEST_LIMITS)
    #: where dev signing keys live (``<kind>.key`` private, ``<kind>*.pub`` trusted); default <state_dir>/keys
    keys_dir: Path | None = setting("PDX_KEYS_DIR", "signing keys directory (default <state_dir>/keys)", kind="path",
                                    check=_resolved)
    #: per kind, the public key files trusted for it (from PDX_TRUSTED_KEYS_<KIND>); a kind missing here
    #: trusts the ``<keys_dir>/<kind>*.pub`` files (two files at once during a key rotation)
    trusted_key_files: Mapping[str, tuple[Path, ...]] = setting(
        ENV_TRUSTED_KEYS_PREFIX + "<KIND>", "public key files trusted per kind (comma-separated)", kind="custom",
        default={}, read=lambda e: _trusted_key_files(e),
        envs=tuple(ENV_TRUSTED_KEYS_PREFIX + k.upper() for k in SIGNED_KINDS))
    #: per kind, the private key file that signs it (from PDX_SIGNING_KEY_<KIND>); default <keys_dir>/<kind>.key
    signing_key_files: Mapping[str, Path] = setting(
        ENV_SIGNING_KEY_PREFIX + "<KIND>", "private key file signing each kind", kind="custom", default={},
        read=lambda e: _signing_key_files(e), envs=tuple(ENV_SIGNING_KEY_PREFIX + k.upper() for k in SIGNED_KINDS))
    #: ClickHouse logins from the environment: per role (PDX_CLICKHOUSE_<ROLE>_USER/_PASSWORD) and, under
    #: ``"*"``, for every role (PDX_CLICKHOUSE_USER/_PASSWORD); see :meth:`clickhouse_login` for the order
    clickhouse_logins: Mapping[str, tuple[str, str]] = setting(
        ENV_CLICKHOUSE_ROLE_PREFIX + "[<ROLE>_]USER/PASSWORD", "ClickHouse logins per role", kind="custom",
        default={}, secret=True, read=lambda e: _clickhouse_logins(e),
        envs=tuple(f"{ENV_CLICKHOUSE_ROLE_PREFIX}{p}{w}" for p in ["", *(f"{r.upper()}_" for r in CLICKHOUSE_ROLES)]
                   for w in ("USER", "PASSWORD")))
    #: the dev credentials file (PDX_CLICKHOUSE_CREDENTIALS); None: <state_dir>/clickhouse/credentials.json
    clickhouse_credentials: Path | None = setting(
        "PDX_CLICKHOUSE_CREDENTIALS", "dev credentials file (default <state_dir>/clickhouse/credentials.json)",
        kind="path")
    #: PDX_CLICKHOUSE_CLUSTER: the cluster the audit schema is migrated on (streams/audit/migrate.py); None: one node
    clickhouse_cluster: str | None = setting("PDX_CLICKHOUSE_CLUSTER", "ClickHouse cluster for ON CLUSTER migrations",
                                             check=lambda _, raw: _cluster_name(raw))
    #: attribute-name patterns redacted from audit records (values shaped like JWTs / bearer tokens always are)
    redact_attributes: tuple[str, ...] = setting("PDX_REDACT_ATTRIBUTES", "attribute names redacted from audit",
                                                 kind="list", default=DEFAULT_REDACT_ATTRIBUTES)
    #: trusted workload-token issuers with their JWKS (PDX_JWKS_FILE); None: a request with a token is denied
    jwks_file: Path | None = setting("PDX_JWKS_FILE", "trusted token issuers' JWKS", kind="file")
    #: port of this process's Prometheus endpoint (PDX_METRICS_PORT, streams/metrics.py); 0: none
    metrics_port: int = setting("PDX_METRICS_PORT", "Prometheus endpoint port (0: none)", kind="int", default=0,
                                low=0, high=65535)
    #: most principals a request may act through (PDX_MAX_DELEGATION_DEPTH); longer: delegation_too_deep
    max_delegation_depth: int = setting("PDX_MAX_DELEGATION_DEPTH", "most principals a request may act through",
                                        kind="int", default=4, low=1, high=64)
    #: replication factor of pdx's topics (PDX_KAFKA_REPLICATION_FACTOR); None: from the broker count (3, or 1)
    kafka_replication_factor: int | None = setting("PDX_KAFKA_REPLICATION_FACTOR", "topics' replication factor",
                                                   kind="int", low=1, high=32767)
    #: min.insync.replicas of pdx's topics (PDX_KAFKA_MIN_INSYNC_REPLICAS); None: 2 with 3+ replicas, else 1
    kafka_min_insync_replicas: int | None = setting("PDX_KAFKA_MIN_INSYNC_REPLICAS", "topics' min.insync.replicas",
                                                    kind="int", low=1, high=32767)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``env`` (default: the process environment); ConfigError naming the variable if a
        value is unusable."""
        return cls.from_env_explained(env)[0]

    @classmethod
    def from_env_explained(cls, env: Mapping[str, str] | None = None) -> tuple[Settings, list[Origin]]:
        """Settings from ``env`` and, for every declared setting, where its value came from."""
        e = _Env(os.environ if env is None else env)
        origins: list[Origin] = []
        return _read(cls, e, origins, ""), origins

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


@dataclass(frozen=True)
class Origin:
    """Where one setting's effective value came from (``pdx config``)."""

    env: str
    field: str
    value: Any
    #: "env" (the variable is set), "default", or "derived" (computed from other settings)
    source: str
    secret: bool
    doc: str


def _read(cls: type[Any], e: _Env, origins: list[Origin], prefix: str) -> Any:
    """An instance of the settings dataclass ``cls``, every field read by its declaration."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if "group" in f.metadata:
            values[f.name] = _read(_GROUPS[f.name], e, origins, f"{prefix}{f.name}.")
            continue
        s: Setting = f.metadata["setting"]
        value, source = e.read(s, values)
        values[f.name] = value
        origins.append(Origin(s.env, prefix + f.name, value, source, s.secret, s.doc))
    post = _POSTS.get(cls)
    return cls(**(post(values) if post else values))


def _trusted_key_files(e: _Env) -> dict[str, tuple[Path, ...]]:
    return {
        kind: tuple(Path(x.strip()) for x in raw.split(",") if x.strip())
        for kind in SIGNED_KINDS
        if (raw := e.text(ENV_TRUSTED_KEYS_PREFIX + kind.upper(), ""))
    }


def _signing_key_files(e: _Env) -> dict[str, Path]:
    return {kind: Path(raw) for kind in SIGNED_KINDS if (raw := e.text(ENV_SIGNING_KEY_PREFIX + kind.upper(), ""))}


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


def _matches(topic: str, pattern: str) -> bool:
    if pattern.endswith("*"):
        return topic.startswith(pattern[:-1]) and len(topic) >= len(pattern)
    return topic == pattern


def reply_topic_allowed(topic: str, allowed: tuple[str, ...]) -> bool:
    """Whether ``topic`` is on the reply allow-list (exact names, or prefixes ending in ``*``)."""
    if topic in PROTECTED_TOPICS:
        return False
    return any(_matches(topic, pattern) for pattern in allowed)


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


    def read(self, s: Setting, before: Mapping[str, Any]) -> tuple[Any, str]:
        """The value of setting ``s`` and its source ("env", "default" or "derived"); ConfigError if bad."""
        value: Any
        if s.kind == "custom":
            assert s.read is not None
            value = s.read(self)
            return value, "env" if any(self.text(n, "") for n in s.envs) else "default"
        raw = self.text(s.env, "")
        if raw == "":
            value, source = (s.derive(before), "derived") if s.derive is not None else (s.default, "default")
            return (s.check(s.env, value) if s.check and value is not None else value), source
        if s.kind == "int":
            value = self.integer(s.env, 0, low=s.low, high=s.high)
        elif s.kind == "choice":
            value = self.choice(s.env, raw, s.choices)
        elif s.kind == "onoff":
            value = self.choice(s.env, raw, ("on", "off")) == "on"
        elif s.kind == "path":
            value = Path(raw)
        elif s.kind == "file":
            value = self.file(s.env)
        elif s.kind == "list":
            value = tuple(x.strip() for x in raw.split(",") if x.strip())
        else:
            value = raw
        return (s.check(s.env, value) if s.check else value), "env"


def _declared(cls: type[Any]) -> dict[str, Setting]:
    return {f.name: f.metadata["setting"] for f in dataclasses.fields(cls) if "setting" in f.metadata}


_GROUPS: dict[str, type[Any]] = {"kafka_security": KafkaSecurity, "request_limits": RequestLimits}
_POSTS: dict[type[Any], Callable[[dict[str, Any]], dict[str, Any]]] = {KafkaSecurity: _kafka_security_post}
_ENV_OF_KAFKA_SECURITY = {name: s.env for name, s in _declared(KafkaSecurity).items()}
_S = _declared(Settings)
_R = _declared(RequestLimits)


def declared_settings() -> list[tuple[str, Setting]]:
    """Every declared setting as (field path, declaration), in Settings order."""
    out: list[tuple[str, Setting]] = []
    for f in dataclasses.fields(Settings):
        if f.name in _GROUPS:
            out += [(f"{f.name}.{n}", s) for n, s in _declared(_GROUPS[f.name]).items()]
        else:
            out.append((f.name, f.metadata["setting"]))
    return out


# The names other modules import, derived from the declarations above (never declared a second time).
ENV_KAFKA_BOOTSTRAP = _S["kafka_bootstrap"].env
ENV_CLICKHOUSE_URL = _S["clickhouse_url"].env
ENV_STATE_DIR = _S["state_dir"].env
ENV_KAFKA_PORT = _S["kafka_port"].env
ENV_KAFKA_CONTROLLER_PORT = _S["kafka_controller_port"].env
ENV_CLICKHOUSE_HTTP_PORT = _S["clickhouse_http_port"].env
ENV_CLICKHOUSE_TCP_PORT = _S["clickhouse_tcp_port"].env
ENV_CLICKHOUSE_CLUSTER = _S["clickhouse_cluster"].env
ENV_REQUEST_PARTITIONS = _S["request_partitions"].env
ENV_DECISION_PARTITIONS = _S["decision_partitions"].env
ENV_KAFKA_REPLICATION_FACTOR = _S["kafka_replication_factor"].env
ENV_KAFKA_MIN_INSYNC_REPLICAS = _S["kafka_min_insync_replicas"].env
ENV_WORKER_ID = _S["worker_id"].env
ENV_APP_ID = _S["app_id"].env
ENV_AUDIT_TTL_DAYS = _S["audit_ttl_days"].env
ENV_TEST_SERVICES = _S["test_services"].env
ENV_AUDIT_SINK = _S["audit_sink"].env
ENV_AUDIT_BATCH_MAX = _S["audit_batch_max"].env
ENV_AUDIT_BATCH_WAIT_MS = _S["audit_batch_wait_ms"].env
ENV_CACHE_DIR = _S["cache_dir"].env
ENV_PRODUCER_LINGER_MS = _S["producer_linger_ms"].env
ENV_READY_FILE = _S["ready_file"].env
ENV_REPLY_TOPICS = _S["reply_topics"].env
ENV_WORKER_BATCH_MAX = _S["worker_batch_max"].env
ENV_REQUEST_MAX_BYTES = _R["max_message_bytes"].env
ENV_REQUEST_MAX_STRING = _R["max_string_chars"].env
ENV_REQUEST_MAX_LIST = _R["max_list_items"].env
ENV_REQUEST_MAX_MAP = _R["max_map_entries"].env
ENV_REQUEST_MAX_TOKEN = _R["max_token_chars"].env
ENV_JWKS_FILE = _S["jwks_file"].env
ENV_KEYS_DIR = _S["keys_dir"].env
ENV_REDACT_ATTRIBUTES = _S["redact_attributes"].env
ENV_METRICS_PORT = _S["metrics_port"].env
ENV_MAX_DELEGATION_DEPTH = _S["max_delegation_depth"].env
ENV_CLICKHOUSE_CREDENTIALS = _S["clickhouse_credentials"].env
ENV_KAFKA_SECURITY_PROTOCOL = _ENV_OF_KAFKA_SECURITY["protocol"]
ENV_KAFKA_SASL_MECHANISM = _ENV_OF_KAFKA_SECURITY["sasl_mechanism"]
ENV_KAFKA_SASL_USERNAME = _ENV_OF_KAFKA_SECURITY["sasl_username"]
ENV_KAFKA_SASL_PASSWORD = _ENV_OF_KAFKA_SECURITY["sasl_password"]
ENV_KAFKA_SSL_CAFILE = _ENV_OF_KAFKA_SECURITY["ssl_cafile"]
ENV_KAFKA_SSL_CERTFILE = _ENV_OF_KAFKA_SECURITY["ssl_certfile"]
ENV_KAFKA_SSL_KEYFILE = _ENV_OF_KAFKA_SECURITY["ssl_keyfile"]
ENV_CLICKHOUSE_USER, ENV_CLICKHOUSE_PASSWORD, ENV_CLICKHOUSE_ADMIN_USER, ENV_CLICKHOUSE_ADMIN_PASSWORD, \
    ENV_CLICKHOUSE_SINK_USER, ENV_CLICKHOUSE_SINK_PASSWORD, ENV_CLICKHOUSE_READER_USER, \
    ENV_CLICKHOUSE_READER_PASSWORD = _S["clickhouse_logins"].envs

DEFAULT_KAFKA_PORT: int = _S["kafka_port"].default
DEFAULT_KAFKA_CONTROLLER_PORT: int = _S["kafka_controller_port"].default
DEFAULT_CLICKHOUSE_HTTP_PORT: int = _S["clickhouse_http_port"].default
DEFAULT_CLICKHOUSE_TCP_PORT: int = _S["clickhouse_tcp_port"].default
DEFAULT_STATE_DIR: str = str(_S["state_dir"].default)
DEFAULT_REQUEST_PARTITIONS: int = _S["request_partitions"].default
DEFAULT_DECISION_PARTITIONS: int = _S["decision_partitions"].default
DEFAULT_APP_ID: str = _S["app_id"].default
DEFAULT_AUDIT_TTL_DAYS: int = _S["audit_ttl_days"].default
#: Most principals a request may act through (AccessRequest.on_behalf_of); longer chains are denied
#: delegation_too_deep before any rule. PDX_MAX_DELEGATION_DEPTH changes it.
DEFAULT_MAX_DELEGATION_DEPTH: int = _S["max_delegation_depth"].default


def load() -> Settings:
    """Settings as the environment says now (re-read on every call, so tests can change the env)."""
    return Settings.from_env()
