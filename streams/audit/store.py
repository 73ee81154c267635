"""ClickHouse access for the audit trail: client factory, AuditRecord → row mapping and the batch writer.

Two ways in, both through :class:`AuditWriter`::

    writer = AuditWriter(connect(cfg=settings))   # or AuditWriter(url="http://...", cfg=settings, database="pdx")
    writer.insert_avro(container, token=t)   # the audit sink: raw AuditRecords as an Avro object container
    writer.insert(records)                   # list of AuditRecord dicts (docs/contracts.md); tests and tools

``insert_avro`` is the sink's path (streams/audit/avro_container.py builds the container from the Kafka message
bytes; the audit_ingest table and its materialized view, sql/004_native_avro_ingest.sql, derive the columns in
ClickHouse). ``insert`` maps each dict to a row in Python with :func:`audit_row`, which stays the reference the
view is tested against (tests/integration/test_audit_native_ingest.py) and the way to load records that are not
Avro-encodable (ISO strings for timestamps, say).

``insert`` raises :class:`AuditRecordError` (a ``ValueError``) *before anything is sent* when a record cannot be
mapped (the sink can dead-letter it), and :class:`AuditWriteError` when ClickHouse did not acknowledge the batch
(the sink retries the same batch and must not commit offsets). Retrying is safe: every batch carries an insert
deduplication token derived from its request ids, and the table collapses rows by request_id.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import unquote, urlparse

from streams import config
from streams.audit import avro_container
from streams.contracts import audit_fields
from streams.contracts.audit_fields import APPROVAL_FIELDS as APPROVAL_FIELDS  # re-exported: the row mapping's names
from streams.contracts.audit_fields import COLUMNS as COLUMNS
from streams.contracts.audit_fields import dumps as dumps
from streams.contracts.audit_fields import named_fields as named_fields
from streams.contracts.audit_fields import to_utc as to_utc
from streams.errors import ContractError, PdxError, UserError

try:  # clickhouse-connect is a runtime dependency; imported lazily-typed so mypy stays happy without stubs
    import clickhouse_connect
    from clickhouse_connect.driver.client import Client
    from clickhouse_connect.driver.exceptions import ClickHouseError
except ImportError:  # pragma: no cover - dependency missing
    clickhouse_connect = None  # type: ignore[assignment]
    Client = Any  # type: ignore[misc,assignment]
    ClickHouseError = Exception  # type: ignore[misc,assignment]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

class AuditRecordError(ContractError):
    """One AuditRecord cannot be mapped to a row (missing/invalid field). Carries the request id if known."""

    def __init__(self, message: str, request_id: str | None = None, index: int | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.index = index


class AuditWriteError(PdxError, RuntimeError):
    """ClickHouse did not acknowledge a batch; nothing may be assumed written. Retry the same batch."""


class AuditRejectedError(AuditWriteError):
    """ClickHouse answered that the data itself is malformed (it cannot parse a record of the block): retrying
    the same bytes cannot succeed, so the sink splits the block to find the bad records (see
    :func:`rejects_data`)."""


#: Server error codes that mean "this input is malformed" rather than "the server cannot take it right now" or
#: "the schema is not migrated": only these make the sink bisect a block and dead-letter records. Anything else
#: (connection refused, timeouts, memory limits, too many parts, unknown table, ...) is retried with backoff, so
#: a sick server never sends good records to the DLQ.
REJECTED_DATA_CODES = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        32,  # ATTEMPT_TO_READ_AFTER_EOF
        33,  # CANNOT_READ_ALL_DATA
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        131,  # TOO_LARGE_STRING_SIZE
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    }
)
#: STD_EXCEPTION: how ClickHouse reports an avro::Exception from its Avro reader (bad varint, negative length,
#: EOF inside a block, sync marker mismatch). Counted as a data rejection only when the message says avro.
STD_EXCEPTION = 1001
_CODE = re.compile(r"\bCode:\s*(\d+)")


def rejects_data(exc: BaseException) -> bool:
    """Whether a clickhouse-connect error says the inserted data is malformed (see :data:`REJECTED_DATA_CODES`)."""
    code = getattr(exc, "code", None)
    if code is None:
        m = _CODE.search(str(exc))
        code = int(m.group(1)) if m else None
    if code == STD_EXCEPTION:
        return "avro::" in str(exc)
    return code in REJECTED_DATA_CODES


def check_identifier(name: str, what: str = "identifier") -> str:
    """Database/table names are spliced into SQL text (they cannot be bound), so they must be plain identifiers."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise UserError(f"invalid ClickHouse {what} {name!r}: use letters, digits and underscores only")
    return name


def unreachable(url: str) -> UserError:
    return UserError(
        f"cannot reach ClickHouse at {url}: start it with `pdx dev up clickhouse` or set {config.ENV_CLICKHOUSE_URL}"
    )


def connect(
    url: str | None = None,
    *,
    cfg: config.Settings,
    database: str | None = None,
    role: str = "admin",
    **kwargs: Any,
) -> Client:
    """A clickhouse-connect client for ``url`` (default: ``cfg.clickhouse_url``, PDX_CLICKHOUSE_URL / dev port),
    logged in as ``role`` (``admin``: migrations and DDL; ``sink``: inserts audit rows; ``reader``: SELECT only).

    ``cfg`` is the Settings the entry point read. URL form: ``http[s]://[user[:password]@]host[:port][/database]``.
    A URL with a user logs in as that user; otherwise the role's login comes from
    :meth:`streams.config.Settings.clickhouse_login` (environment, then the dev credentials file of
    ``pdx dev up``), else the ``default`` user without a password. Raises :class:`UserError` if the server cannot
    be reached.
    """
    if clickhouse_connect is None:  # pragma: no cover
        raise UserError("clickhouse-connect is not installed: pip install clickhouse-connect")
    settings = cfg
    url = url or settings.clickhouse_url
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UserError(f"invalid ClickHouse URL {url!r}: expected http://host:port")
    if parsed.username:
        username, password = unquote(parsed.username), unquote(parsed.password) if parsed.password else ""
    else:
        username, password = settings.clickhouse_login(role, url) or ("default", "")
    opts: dict[str, Any] = {
        "host": parsed.hostname,
        "port": parsed.port or (8443 if parsed.scheme == "https" else 8123),
        "secure": parsed.scheme == "https",
        "username": username,
        "password": password,
        "connect_timeout": 5,
        "send_receive_timeout": 300,
        "compress": False,
        "autogenerate_session_id": False,
    }
    path_db = parsed.path.strip("/")
    if database or path_db:
        opts["database"] = database or path_db
    opts.update(kwargs)
    try:
        return clickhouse_connect.get_client(**opts)
    except ClickHouseError as exc:
        if "Database" in str(exc) and "does not exist" in str(exc):
            raise UserError(
                f"ClickHouse database {opts.get('database')!r} does not exist: run `pdx audit migrate`"
            ) from exc
        if refuses_login(exc):
            raise UserError(
                f"ClickHouse at {url} refused the login of user {username!r} (role {role}): set "
                f"{config.ENV_CLICKHOUSE_ROLE_PREFIX}{role.upper()}_USER/_PASSWORD or {config.ENV_CLICKHOUSE_USER}/"
                f"{config.ENV_CLICKHOUSE_PASSWORD}, or put the user in {config.ENV_CLICKHOUSE_URL}"
            ) from exc
        raise unreachable(url) from exc
    except OSError as exc:  # pragma: no cover - depends on the network stack
        raise unreachable(url) from exc


#: ClickHouse error codes meaning "not this login" (AUTHENTICATION_FAILED, REQUIRED_PASSWORD, WRONG_PASSWORD,
#: UNKNOWN_USER) and "not with this login's privileges" (ACCESS_DENIED)
_LOGIN_CODES = frozenset({516, 194, 193, 192})
_ACCESS_DENIED = 497


def _error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    m = _CODE.search(str(exc))
    return int(m.group(1)) if m else None


def refuses_login(exc: BaseException) -> bool:
    """Whether a ClickHouse error says the user or password was not accepted."""
    return _error_code(exc) in _LOGIN_CODES


def denies_access(exc: BaseException) -> bool:
    """Whether a ClickHouse error says the login may not do this (ACCESS_DENIED) or was not accepted at all."""
    code = _error_code(exc)
    return code == _ACCESS_DENIED or code in _LOGIN_CODES


# ---- AuditRecord -> row --------------------------------------------------------------------------------------
#
# The mapping is declared once, in streams/contracts/audit_fields.py (FIELDS): column types, the view's SQL and
# the Python derivation side by side. These names stay importable from here.


def audit_row(record: Mapping[str, Any]) -> list[Any]:
    """Map one AuditRecord dict (docs/contracts.md) to the audit table's columns, in :data:`COLUMNS` order.

    Raises :class:`AuditRecordError` naming the request id and the field when the record is malformed.
    """
    try:
        return audit_fields.audit_row(record)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        request = record.get("request") if isinstance(record, Mapping) else None
        rid = request.get("request_id") if isinstance(request, Mapping) else None
        request_id = str(rid) if rid is not None else None
        detail = f"missing field {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
        raise AuditRecordError(f"audit record {request_id or '?'}: {detail}", request_id) from exc


def dedup_token(records: Sequence[Mapping[str, Any]]) -> str:
    """Insert deduplication token of a batch: the same set of request ids gives the same token (the sink computes
    the same token from the raw messages with streams.audit.avro_container.dedup_token)."""
    return avro_container.dedup_token(str(r["request"]["request_id"]) for r in records)


#: The Null-engine table the sink inserts Avro containers into (sql/004_native_avro_ingest.sql).
INGEST_TABLE = "audit_ingest"
#: The hash-chain tables (sql/006_hash_chain.sql): one link per chained record, and the signed checkpoints.
LINKS_TABLE = "audit_chain_links"
CHECKPOINTS_TABLE = "audit_checkpoints"
#: Columns of audit_checkpoints the sink writes, in the order of streams.audit.sink.checkpoint_row.
CHECKPOINT_COLUMNS: tuple[str, ...] = (
    "chain_id",
    "seq",
    "head_hash",
    "final",
    "worker_id",
    "source_topic",
    "source_partition",
    "signed_at",
    "key_id",
    "signature",
    "kafka_partition",
    "kafka_offset",
)


class AuditWriter:
    """Inserts batches of AuditRecords into the audit table (what the audit sink agent calls)."""

    def __init__(
        self,
        client: Client | None = None,
        *,
        url: str | None = None,
        cfg: config.Settings | None = None,
        database: str = config.CLICKHOUSE_DATABASE,
        table: str = config.AUDIT_TABLE,
    ) -> None:
        if client is None and cfg is None:
            raise TypeError("AuditWriter needs a ClickHouse client, or the Settings (cfg=) to connect with")
        self.client = client if client is not None else connect(url, cfg=cfg, role="sink")  # type: ignore[arg-type]
        self.database = check_identifier(database, "database name")
        self.table = check_identifier(table, "table name")

    def rows(self, records: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        out = []
        for i, rec in enumerate(records):
            try:
                out.append(audit_row(rec))
            except AuditRecordError as exc:
                exc.index = i
                raise
        return out

    def insert(self, records: Sequence[Mapping[str, Any]], *, dedup: bool = True) -> None:
        """Insert one batch; returns only after ClickHouse acknowledged it. Raises on any failure."""
        if not records:
            return
        self.insert_rows(self.rows(records), token=dedup_token(records) if dedup else None)

    def insert_avro(self, container: bytes, *, token: str | None = None) -> None:
        """Insert an Avro object container of AuditRecords (streams.audit.avro_container.build) through the
        audit_ingest table; returns only after ClickHouse acknowledged it, materialized views included.

        Raises :class:`AuditRejectedError` when ClickHouse cannot parse the data, :class:`AuditWriteError` for
        every other failure. ``token`` is the insert deduplication token: the audit table sits behind a
        materialized view, so ``deduplicate_blocks_in_dependent_materialized_views`` makes the token count there
        (and in the rollups) and not only in the Null-engine table, which keeps nothing to deduplicate against.
        """
        # distributed_foreground_insert: on a cluster (audit_ingest is Distributed, streams/audit/migrate.py) the
        # insert is acknowledged only once every shard has it, not when it is queued on this node's disk.
        # input_format_avro_allow_missing_fields: a sink still running an older release (its records lack a field
        # a later migration added, e.g. relied_on) keeps inserting, with the field's default, instead of failing
        # every batch until it is restarted
        opts: dict[str, Any] = {
            "async_insert": 0,
            "deduplicate_blocks_in_dependent_materialized_views": 1,
            "distributed_foreground_insert": 1,
            "input_format_avro_allow_missing_fields": 1,
        }
        if token:
            opts["insert_deduplication_token"] = token
        try:
            self.client.raw_insert(f"{self.database}.{INGEST_TABLE}", insert_block=container, fmt="Avro", settings=opts)
        except (ClickHouseError, OSError) as exc:
            kind = AuditRejectedError if rejects_data(exc) else AuditWriteError
            raise kind(f"inserting an Avro block into {self.database}.{INGEST_TABLE} failed: {exc}") from exc

    def insert_checkpoints(self, rows: Sequence[Sequence[Any]], *, token: str | None = None) -> None:
        """Insert audit chain checkpoints (streams.audit.sink.checkpoint_row) into audit_checkpoints (sql/006)."""
        self._insert(CHECKPOINTS_TABLE, CHECKPOINT_COLUMNS, rows, token, "audit checkpoints")

    def insert_rows(self, rows: Sequence[Sequence[Any]], *, token: str | None = None) -> None:
        """Insert already-mapped rows (from :func:`audit_row`)."""
        self._insert(self.table, COLUMNS, rows, token, "audit rows")

    def _insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], token: str | None, what: str
    ) -> None:
        """One synchronous insert (deduplicated by ``token`` when given); AuditWriteError if not acknowledged."""
        if not rows:
            return
        opts: dict[str, Any] = {"async_insert": 0, "distributed_foreground_insert": 1}
        if token:
            opts["insert_deduplication_token"] = token
        try:
            self.client.insert(table, rows, column_names=list(columns), database=self.database, settings=opts)
        except (ClickHouseError, OSError) as exc:
            raise AuditWriteError(f"inserting {len(rows)} {what} into {self.database}.{table} failed: {exc}") from exc


def wait_for_audit_rows(
    expected: int,
    *,
    request_ids: Sequence[str] | None = None,
    id_prefix: str | None = None,
    url: str | None = None,
    cfg: config.Settings,
    timeout_s: float = 60.0,
) -> int:
    """Poll until ``expected`` distinct request ids (given, or starting with a prefix) are in the audit table
    at ``url`` (default: ``cfg.clickhouse_url``), read as the ``reader`` role of ``cfg``.

    Returns the count reached, which is below ``expected`` when the timeout passed first. Used by the demo,
    the benchmarks and the tests to check that nothing decided went unaudited.
    """
    if (request_ids is None) == (id_prefix is None):
        raise ValueError("give exactly one of request_ids or id_prefix")
    params: dict[str, Any]
    if request_ids is not None:
        where, params = "request_id IN {ids:Array(String)}", {"ids": list(request_ids)}
    else:
        where, params = "startsWith(request_id, {prefix:String})", {"prefix": id_prefix}
    client = connect(url or cfg.clickhouse_url, cfg=cfg, role="reader")
    sql = f"SELECT uniqExact(request_id) FROM {config.CLICKHOUSE_DATABASE}.{config.AUDIT_TABLE} WHERE {where}"
    deadline = time.monotonic() + timeout_s
    while True:
        count = int(client.query(sql, parameters=params).result_rows[0][0])
        if count >= expected or time.monotonic() >= deadline:
            return count
        time.sleep(0.5)
