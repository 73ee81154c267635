"""The audit record, declared once: every column of the audit table, where it comes from, and how it is hashed.

:data:`FIELDS` is the one table a maintainer edits to add a column. Each :class:`Field` says:

* ``name`` — the audit table column (ClickHouse ``ch_type`` and ``codec``; ``default`` for ``ADD COLUMN``);
* ``source`` / ``avro`` — the AuditRecord path it derives from (schemas/audit_record.avsc) and that path's Avro
  type, checked against the schema by tests/unit/audit/test_audit_fields.py;
* ``sql`` — how the ingest view computes it in ClickHouse from the raw Avro record (aliases ``req``, ``idn``,
  ``ident``, ``dec``, ``res``, ``ctx``, ``chn``, ``rel`` and the record's top-level fields; see
  streams/audit/ingest.py, which builds the view from this table);
* ``row`` — how :func:`audit_row` computes it in Python from an AuditRecord dict (the reference the view is
  tested against, and what ``pdx audit verify`` re-derives every stored column with);
* ``load`` — for a column that *stores* part of the record (the rest are derived from these), how a stored value
  goes back into the record (``pdx audit verify`` rebuilds the record from these and checks every other column);
* ``chain`` — whether and how the column is in the hash chain: :data:`REQUEST` (its content is the request
  digest), :data:`BODY` (an element of the body digest) or None; ``hashed`` gives the element, as a Python
  expression over ``r`` (the :class:`Rec`), ``d`` (its decision) and ``o`` (the record dict);
* ``redacted`` — whether its content passed the worker's redaction rules (streams/contracts/redact.py) before it
  was audited; ``doc`` — one line for the docs; ``since`` — the migration that added the column.

The chain's body (streams/contracts/audit_chain.py) is the ``hashed`` value of each :data:`BODY` field, in the
order of this table. Fields added after the chain was defined (``since`` later than :data:`CHAIN_SINCE`) are
hashed as one group per migration, appended as a nested list, and a trailing group whose fields are all at
their ``hashed_default`` is left out: a record written before a field existed hashes exactly as it always did.
So a new hashed field is one entry here (and its migration), and existing trails still verify.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; the stdlib writes the same bytes
    orjson = None  # type: ignore[assignment,unused-ignore]

#: Chain membership of a field (see the module docstring).
REQUEST = "request"
BODY = "body"
#: The migration that defined the chain: BODY fields since then (or earlier) are the body's inline elements.
CHAIN_SINCE = "006"
#: The fields of an ``approvals`` column element (sql/008), in order.
APPROVAL_FIELDS = ("approval_id", "approved_by", "granted_at", "expires_at")
REASON_FIELDS = ("code", "message", "policy", "rule")
MONITOR_FIELDS = ("policy", "rule", "effect", "reason_code")
OUTCOMES = ("allow", "deny", "step_up")
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_UNSET: Any = object()


# ---- value helpers (the Python side of the mapping) -------------------------------------------------------


def to_utc(value: Any, field: str) -> datetime:
    """Aware UTC datetime from a datetime (naive = UTC) or an ISO-8601 string."""
    if value.__class__ is datetime and value.tzinfo is UTC:
        return value  # type: ignore[no-any-return]
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{field}: not an ISO-8601 timestamp: {value!r}") from None
        return to_utc(parsed, field)
    raise ValueError(f"{field}: expected a timezone-aware datetime, got {type(value).__name__}")


def micros(value: _dt.datetime) -> int:
    """Microseconds since the epoch of an aware datetime (what DateTime64(6) and timestamp-micros hold)."""
    delta = value - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_utc(value, "json").isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def dumps(obj: Any) -> str:
    """Compact JSON with datetimes as ISO-8601 UTC strings (what request_json / identity_json hold)."""
    if orjson is not None:
        try:
            return orjson.dumps(obj, default=_json_default).decode()
        except TypeError:
            pass  # e.g. non-string map keys: fall back to the stdlib encoder below
    return json.dumps(obj, default=_json_default, separators=(",", ":"), ensure_ascii=False)


def _canonical_default(value: Any) -> Any:
    if isinstance(value, _dt.datetime):  # aware UTC datetimes, as fastavro decodes them: orjson's native text
        return value.isoformat()
    raise TypeError(f"cannot hash {type(value).__name__} as canonical JSON")


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, compact, UTF-8; datetimes as ISO-8601 text (they must be aware UTC)."""
    if orjson is not None:
        try:
            return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            pass  # e.g. an int beyond 64 bits: the stdlib writes the same canonical form
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_canonical_default
    ).encode()


def digest(obj: Any) -> bytes:
    """SHA-256 of the canonical JSON of ``obj``."""
    return hashlib.sha256(canonical_json(obj)).digest()


#: Fields added to the request / identity after the chain was defined, with their defaults. A field at its
#: default is left out of the canonical form, so a record hashes alike whether it was written before the field
#: existed (its ClickHouse JSON lacks it) or after (the decoded dict holds the default).
ADDED_REQUEST_DEFAULTS: dict[str, Any] = {"token": None}
ADDED_IDENTITY_DEFAULTS: dict[str, Any] = {"workload_subjects": []}


def _without_defaults(obj: Mapping[str, Any], added: Mapping[str, Any]) -> Mapping[str, Any]:
    drop = [k for k, default in added.items() if k in obj and obj[k] == default]
    if not drop:
        return obj
    return {k: v for k, v in obj.items() if k not in drop}


def request_digest(request: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical JSON of an AccessRequest dict (fields added later left out at their default)."""
    return digest(_without_defaults(request, ADDED_REQUEST_DEFAULTS))


def identity_digest(identity: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical JSON of an Identity dict (fields added later left out at their default)."""
    return digest(_without_defaults(identity, ADDED_IDENTITY_DEFAULTS))


def credential_age_days(identity: Mapping[str, Any] | None, at: datetime) -> float | None:
    """Age in days at ``at`` of the oldest *active* credential (age counts from rotated_at, else created_at)."""
    if not identity:
        return None
    oldest: datetime | None = None
    for cred in identity.get("credentials") or ():
        if cred.get("status", "active") != "active":
            continue
        since = cred.get("rotated_at") or cred.get("created_at")
        if since is None:
            continue
        ts = to_utc(since, "credential.created_at")
        if oldest is None or ts < oldest:
            oldest = ts
    if oldest is None:
        return None
    return max((at - oldest).total_seconds(), 0.0) / 86400.0


def named_fields(value: Any, names: Sequence[str]) -> tuple[Any, ...]:
    """A named Tuple column's element (clickhouse-connect returns named tuples as dicts) as a plain tuple."""
    if isinstance(value, Mapping):
        return tuple(value[n] for n in names)
    return tuple(value)


# ---- the record as the mapping reads it ----------------------------------------------------------------------


class Rec:
    """One AuditRecord as the fields read it: the decoded dict's parts, plus digests a worker already holds.

    The worker hashes a record it never decoded (streams/worker/decide.py splices the bytes), so it builds a
    ``Rec`` from the values it has and passes the identity digest and the principals' digests it keeps per
    inventory message; everything else reads the dict form.
    """

    __slots__ = (
        "_decided_at", "_identity_digest", "_principal_digests", "approvals", "decision", "identity", "record",
        "request",
    )  # fmt: skip

    def __init__(
        self,
        record: Mapping[str, Any],
        *,
        identity_digest: str | None = _UNSET,
        approvals: Sequence[tuple[str, str, datetime, datetime]] | None = None,
        principal_digests: list[str] | None = None,
    ) -> None:
        self.record = record
        self.request: Mapping[str, Any] = record.get("request") or {}
        self.decision: Mapping[str, Any] = record["decision"]
        self.identity: Mapping[str, Any] | None = record.get("identity")
        self._identity_digest = identity_digest
        self._principal_digests = principal_digests
        self._decided_at: datetime | None = None
        if approvals is None:
            relied = record.get("relied_on") or {}
            approvals = [
                (str(a["approval_id"]), str(a.get("approved_by") or ""), to_utc(a["granted_at"], "approval.granted_at"),
                 to_utc(a["expires_at"], "approval.expires_at"))
                for a in relied.get("approvals") or ()
            ]  # fmt: skip
        self.approvals = approvals

    @property
    def decided_at(self) -> datetime:
        if self._decided_at is None:
            self._decided_at = to_utc(self.record["decided_at"], "decided_at")
        return self._decided_at

    def time(self, name: str) -> datetime:
        """A record time, falling back as the audit table does (received_at and evaluated_at to decided_at)."""
        if name == "decided_at":
            return self.decided_at
        value = self.decision.get("evaluated_at") if name == "evaluated_at" else self.record.get(name)
        return self.decided_at if value is None else to_utc(value, name)

    def time_us(self, name: str) -> int:
        """:meth:`time` as integer µs (the hash chain's form), without a conversion for an aware UTC datetime."""
        value = self.decision.get("evaluated_at") if name == "evaluated_at" else self.record.get(name)
        if value is None:
            value = self.record["decided_at"]
        if value.__class__ is not datetime or value.tzinfo is not UTC:
            value = to_utc(value, name)
        return micros(value)

    def worker_id(self) -> str:
        return str(self.record.get("worker_id") or self.decision.get("worker_id") or "")

    def identity_hex(self) -> str | None:
        if self._identity_digest is not _UNSET:
            return self._identity_digest  # type: ignore[no-any-return]
        return identity_digest(self.identity).hex() if self.identity is not None else None

    def principals(self) -> list[Mapping[str, Any]]:
        return list((self.record.get("relied_on") or {}).get("principals") or ())

    def principal_hexes(self) -> list[str]:
        if self._principal_digests is not None:
            return self._principal_digests
        return [identity_digest(p).hex() for p in self.principals()]

    def ident(self, key: str) -> str:
        return str(self.identity.get(key) or "") if self.identity else ""


# ---- the declaration -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One column of the audit table (see the module docstring)."""

    name: str
    source: str
    avro: str
    ch_type: str
    sql: str
    row: Callable[[Rec], Any]
    doc: str
    codec: str = ""
    default: str = ""
    chain: str | None = None
    hashed: str = ""
    hashed_default: Any = None
    load: Callable[[Any], Any] | None = None
    redacted: bool = False
    since: str = "001"

    def ddl(self) -> str:
        """``name type [DEFAULT ...] [CODEC(...)]``: the column as ``ALTER TABLE ... ADD COLUMN`` writes it."""
        parts = [self.name, self.ch_type]
        if self.default:
            parts.append(f"DEFAULT {self.default}")
        if self.codec:
            parts.append(f"CODEC({self.codec})")
        return " ".join(parts)


def _strs(values: Any) -> list[str]:
    return [str(v) for v in values or ()]


def _reason_rows(rec: Rec) -> list[tuple[str, str, str, str]]:
    return [(str(r.get("code") or ""), str(r.get("message") or ""), str(r.get("policy") or ""),
             str(r.get("rule") or "")) for r in rec.decision.get("reasons") or ()]  # fmt: skip


def _monitor_rows(rec: Rec) -> list[tuple[str, str, str, str]]:
    return [(str(m.get("policy") or ""), str(m.get("rule") or ""), str(m.get("effect") or ""),
             str(m.get("reason_code") or "")) for m in rec.decision.get("monitor") or ()]  # fmt: skip


def _outcome(rec: Rec) -> str:
    outcome = str(rec.decision["decision"])
    if outcome not in OUTCOMES:
        raise ValueError(f"decision.decision: unknown outcome {outcome!r}")
    return outcome


def _ms_floor(dt: datetime) -> int:
    return micros(dt) // 1000 * 1000  # timestamp-millis and DateTime64(3) keep milliseconds


def _resource(rec: Rec, key: str) -> str:
    return str((rec.request.get("resource") or {}).get(key) or "")


def _load_reasons(rows: Any) -> list[dict[str, Any]]:
    return [{"code": c, "message": m, "policy": p or None, "rule": r or None}
            for c, m, p, r in (named_fields(x, REASON_FIELDS) for x in rows)]  # fmt: skip


def _load_monitor(rows: Any) -> list[dict[str, Any]]:
    return [dict(zip(MONITOR_FIELDS, named_fields(x, MONITOR_FIELDS), strict=True)) for x in rows]


def _load_approvals(rows: Any) -> list[dict[str, Any]]:
    return [dict(zip(APPROVAL_FIELDS, named_fields(x, APPROVAL_FIELDS), strict=True)) for x in rows]


def _load_json(text: Any) -> Any:
    return json.loads(text) if text is not None else None


#: Shared pieces of the view's SQL: an identity's oldest active credential, in days at decided_at.
_CREDENTIAL_AGE_SQL = (
    "if(idn IS NULL OR empty(active_since), NULL,\n"
    "       greatest((toUnixTimestamp64Micro(decided_at) - toUnixTimestamp64Milli(arrayMin(active_since)) * 1000)\n"
    "                / 1000000 / 86400, 0.))"
)  # the two divisions in the same order as Python's timedelta.total_seconds() / 86400.0, so equal to the bit

#: The audit table's columns. The order is free for ClickHouse (the view and the inserts name their columns);
#: it is the hash chain's body order for the BODY fields, so never reorder those.
FIELDS: tuple[Field, ...] = (
    # -- the request ---------------------------------------------------------------------------------------
    Field("request_id", "request.request_id", "string", "String", "req.request_id",
          lambda r: str(r.request["request_id"]), "Request id, echoed by the Decision."),
    Field("request_json", "request", "AccessRequest", "String", "json:request",
          lambda r: dumps(r.record["request"]), "The request as received, as JSON (keys in schema order).",
          codec="ZSTD(3)", chain=REQUEST, load=_load_json, redacted=True),
    Field("occurred_at", "request.occurred_at", "timestamp-millis", "DateTime64(3, 'UTC')", "req.occurred_at",
          lambda r: to_utc(r.request["occurred_at"], "request.occurred_at"), "When the caller made the request."),
    Field("identity_id", "request.identity_id", "string", "String", "req.identity_id",
          lambda r: str(r.request["identity_id"]), "The identity asking."),
    Field("on_behalf_of", "request.on_behalf_of", "array<string>", "Array(String)", "req.on_behalf_of",
          lambda r: _strs(r.request.get("on_behalf_of")), "Delegation chain, outermost principal first."),
    Field("action", "request.action", "string", "LowCardinality(String)", "req.action",
          lambda r: str(r.request["action"]), "The action asked for."),
    Field("resource_id", "request.resource.id", "string", "String", "res.id",
          lambda r: str(r.request["resource"]["id"]), "The resource acted on."),
    Field("resource_type", "request.resource.type", "string", "LowCardinality(String)", "res.type",
          lambda r: _resource(r, "type"), "Resource type."),
    Field("resource_environment", "request.resource.environment", "string?", "LowCardinality(String)",
          "ifNull(res.environment, '')", lambda r: _resource(r, "environment"), "Resource environment ('' if none)."),
    Field("resource_sensitivity", "request.resource.sensitivity", "string?", "LowCardinality(String)",
          "ifNull(res.sensitivity, '')", lambda r: _resource(r, "sensitivity"), "Resource sensitivity ('' if none)."),
    Field("source_ip", "request.context.source_ip", "string?", "String", "ifNull(ctx.source_ip, '')",
          lambda r: str((r.request.get("context") or {}).get("source_ip") or ""), "Caller IP address ('' if none)."),
    # -- the identity snapshot -----------------------------------------------------------------------------
    Field("identity_json", "identity", "Identity?", "Nullable(String)", "json:identity",
          lambda r: dumps(r.identity) if r.identity is not None else None,
          "The identity snapshot the decision used, as JSON; NULL when the identity was unknown.",
          codec="ZSTD(3)", chain=BODY, hashed="r.identity_hex()", load=_load_json),
    Field("identity_known", "identity", "Identity?", "Bool", "idn IS NOT NULL",
          lambda r: r.identity is not None, "Whether the inventory knew the identity."),
    Field("identity_kind", "identity.kind", "string", "LowCardinality(String)", "ident.kind",
          lambda r: r.ident("kind"), "Identity kind (agent, service_account, ...)."),
    Field("identity_status", "identity.status", "string", "LowCardinality(String)", "ident.status",
          lambda r: r.ident("status"), "Identity status at decision time."),
    Field("identity_owner", "identity.owner", "string", "LowCardinality(String)", "ident.owner",
          lambda r: r.ident("owner"), "The identity's owner."),
    Field("identity_risk_tier", "identity.risk_tier", "string", "LowCardinality(String)", "ident.risk_tier",
          lambda r: r.ident("risk_tier"), "The identity's risk tier."),
    Field("identity_tags", "identity.tags", "array<string>", "Array(LowCardinality(String))", "ident.tags",
          lambda r: _strs(r.identity.get("tags")) if r.identity else [], "The identity's tags."),
    Field("credential_age_days", "identity.credentials", "array<Credential>", "Nullable(Float64)",
          _CREDENTIAL_AGE_SQL, lambda r: credential_age_days(r.identity, r.decided_at),
          "Age in days of the oldest active credential at decision time (rotated_at, else created_at)."),
    # -- the decision, in hash-chain body order ------------------------------------------------------------
    Field("decision", "decision.decision", "enum", "LowCardinality(String)", "dec.decision", _outcome,
          "allow, deny or step_up.", chain=BODY, hashed="str(d['decision'])",
          load=str),
    Field("reason_codes", "decision.reasons", "array<Reason>", "Array(LowCardinality(String))",
          "arrayMap(r -> r.code, dec.reasons)", lambda r: [c for c, _, _, _ in _reason_rows(r)],
          "The reasons' codes."),
    Field("reasons", "decision.reasons", "array<Reason>",
          "Array(Tuple(code LowCardinality(String), message String, policy String, rule String))",
          "arrayMap(r -> (r.code, r.message, ifNull(r.policy, ''), ifNull(r.rule, '')), dec.reasons)",
          _reason_rows, "The reasons: code, message, policy and rule ('' if none).", chain=BODY,
          hashed="[[x['code'], x['message'], x.get('policy') or '', x.get('rule') or '']"
                 " for x in d.get('reasons') or ()]",
          hashed_default=[], load=_load_reasons),
    Field("matched_rules", "decision.matched_rules", "array<string>", "Array(LowCardinality(String))",
          "dec.matched_rules", lambda r: _strs(r.decision.get("matched_rules")), "Rules that matched.",
          chain=BODY, hashed="list(d.get('matched_rules') or ())", hashed_default=[], load=list),
    Field("obligations", "decision.obligations", "map<string>", "Map(LowCardinality(String), String)",
          "dec.obligations", lambda r: {str(k): str(v) for k, v in (r.decision.get("obligations") or {}).items()},
          "Obligations the caller must honour (e.g. max_ttl_s, approval_request_id).", chain=BODY,
          hashed="d.get('obligations') or {}", hashed_default={}, load=dict),
    Field("monitor", "decision.monitor", "array<MonitorOutcome>",
          "Array(Tuple(policy String, rule String, effect LowCardinality(String), reason_code LowCardinality(String)))",
          "arrayMap(m -> (m.policy, m.rule, m.effect, m.reason_code), dec.monitor)", _monitor_rows,
          "Outcomes of rules in monitor mode.", chain=BODY,
          hashed="[[m['policy'], m['rule'], m['effect'], m['reason_code']] for m in d.get('monitor') or ()]",
          hashed_default=[], load=_load_monitor),
    Field("bundle_version", "decision.bundle_version", "string", "LowCardinality(String)", "dec.bundle_version",
          lambda r: str(r.decision.get("bundle_version") or ""), "Policy bundle version decided with.",
          chain=BODY, hashed="str(d.get('bundle_version') or '')", load=str),
    Field("eval_us", "decision.eval_us", "long", "UInt64", "toUInt64(greatest(dec.eval_us, 0))",
          lambda r: max(int(r.decision.get("eval_us") or 0), 0), "Evaluation time in µs (negative as 0).",
          chain=BODY, hashed="max(int(d.get('eval_us') or 0), 0)", load=int),
    Field("evaluated_at", "decision.evaluated_at", "timestamp-micros", "DateTime64(6, 'UTC')", "dec.evaluated_at",
          lambda r: r.time("evaluated_at"), "The policy engine's clock for the decision.",
          chain=BODY, hashed="r.time_us('evaluated_at')", load=lambda v: v),
    Field("received_at", "received_at", "timestamp-micros", "DateTime64(6, 'UTC')", "received_at",
          lambda r: r.time("received_at"), "When the worker saw the request.",
          chain=BODY, hashed="r.time_us('received_at')", load=lambda v: v),
    Field("decided_at", "decided_at", "timestamp-micros", "DateTime64(6, 'UTC')", "decided_at",
          lambda r: r.decided_at, "When the decision was produced.",
          chain=BODY, hashed="r.time_us('decided_at')", load=lambda v: v),
    # -- where it was decided ------------------------------------------------------------------------------
    Field("worker_id", "worker_id", "string", "LowCardinality(String)",
          "if(rec_worker_id != '', rec_worker_id, dec.worker_id)", Rec.worker_id, "The worker that decided.",
          chain=BODY, hashed="r.worker_id()", load=str),
    Field("source_topic", "source_topic", "string", "LowCardinality(String)", "source_topic",
          lambda r: str(r.record.get("source_topic") or ""), "Topic the request was consumed from.",
          chain=BODY, hashed="str(o.get('source_topic') or '')", load=str),
    Field("source_partition", "source_partition", "int", "Int32", "source_partition",
          lambda r: int(r.record.get("source_partition") or 0), "Partition it was consumed from.",
          chain=BODY, hashed="int(o.get('source_partition') or 0)", load=int),
    Field("source_offset", "source_offset", "long", "Int64", "source_offset",
          lambda r: int(r.record.get("source_offset") or 0), "Offset of the request in that partition.",
          chain=BODY, hashed="int(o.get('source_offset') or 0)", load=int),
    # -- the hash chain and what the decision relied on ----------------------------------------------------
    Field("record_hash", "chain.hash", "Sha256", "String", "if(chn IS NULL, '', lower(hex(assumeNotNull(chn).hash)))",
          lambda r: _record_hash(r.record), "The record's hash-chain hash (hex); '' when unchained.",
          default="''", load=str, since="006"),
    Field("approvals", "relied_on.approvals", "array<ApprovalRelied>",
          "Array(Tuple(approval_id String, approved_by String, granted_at DateTime64(3, 'UTC'), "
          "expires_at DateTime64(3, 'UTC')))",
          "if(rel IS NULL, [], arrayMap(a -> (a.approval_id, a.approved_by, a.granted_at, a.expires_at), "
          "assumeNotNull(rel).approvals))",
          lambda r: list(r.approvals), "Approvals the decision relied on.", chain=BODY,
          hashed="[[a, b, _ms_floor(g), _ms_floor(e)] for a, b, g, e in r.approvals]", hashed_default=[],
          load=_load_approvals, since="008"),
    Field("principals_json", "relied_on.principals", "array<Identity>", "String", "json:principals",
          lambda r: dumps(r.principals()), "Snapshots of the delegation chain's principals, as a JSON array.",
          codec="ZSTD(3)", default="'[]'", chain=BODY, hashed="r.principal_hexes()", hashed_default=[],
          load=lambda v: json.loads(v or "[]"), since="008"),
)

BY_NAME: dict[str, Field] = {f.name: f for f in FIELDS}
#: Columns written by the sink and the tools, in :data:`FIELDS` order (what :func:`audit_row` returns).
COLUMNS: tuple[str, ...] = tuple(f.name for f in FIELDS)
#: Columns that are record times (verify reads them as integer µs).
TIMES: tuple[str, ...] = tuple(f.name for f in FIELDS if f.ch_type.startswith("DateTime64"))


def _record_hash(record: Mapping[str, Any]) -> str:
    chain = record.get("chain")
    if not chain:
        return ""
    value = chain["hash"]
    return value.hex() if isinstance(value, (bytes, bytearray)) else str(value)


def _groups() -> tuple[tuple[Field, ...], tuple[tuple[Field, ...], ...]]:
    """(the body's inline fields, the later groups in migration order)."""
    inline = tuple(f for f in FIELDS if f.chain == BODY and f.since <= CHAIN_SINCE)
    later: dict[str, list[Field]] = {}
    for f in FIELDS:
        if f.chain == BODY and f.since > CHAIN_SINCE:
            later.setdefault(f.since, []).append(f)
    return inline, tuple(tuple(later[v]) for v in sorted(later))


BODY_INLINE, BODY_GROUPS = _groups()


def _compile_body() -> Callable[[Rec], list[Any]]:
    """:func:`body` as one function compiled from the fields' ``hashed`` expressions (in it, ``r`` is the
    :class:`Rec`, ``d`` its decision and ``o`` the record): the worker computes it per decision, and one list
    display costs a third of calling a function per field."""
    inline = ", ".join(f.hashed for f in BODY_INLINE)
    lines = ["def body(r):", "    d = r.decision", "    o = r.record", f"    out = [{inline}]"]
    for i, group in enumerate(BODY_GROUPS):
        lines.append(f"    g{i} = [{', '.join(f.hashed for f in group)}]")
    # trailing groups at their defaults are left out: a group is kept when it, or a later one, is not
    kept = "False"
    for i in reversed(range(len(BODY_GROUPS))):
        lines.append(f"    k{i} = {kept} or g{i} != _DEFAULTS[{i}]")
        kept = f"k{i}"
    for i in range(len(BODY_GROUPS)):
        lines.append(f"    if k{i}:")
        lines.append(f"        out.append(g{i})")
    lines.append("    return out")
    defaults = [[f.hashed_default for f in g] for g in BODY_GROUPS]
    namespace: dict[str, Any] = {"_ms_floor": _ms_floor, "_DEFAULTS": defaults}
    exec(compile("\n".join(lines), "<audit_fields.body>", "exec"), namespace)  # noqa: S102 - our own declaration
    return namespace["body"]  # type: ignore[no-any-return]


#: The hash chain's body of a record: each BODY field's ``hashed`` value in :data:`FIELDS` order, then each
#: later group as one nested list, trailing groups at their defaults left out (see the module docstring).
body: Callable[[Rec], list[Any]] = _compile_body()


def audit_row(record: Mapping[str, Any]) -> list[Any]:
    """Map one AuditRecord dict (docs/contracts.md) to the audit table's columns, in :data:`COLUMNS` order.

    Raises ``ValueError``/``KeyError``/``TypeError`` on a malformed record (streams.audit.store wraps them)."""
    rec = Rec(record)
    return [f.row(rec) for f in FIELDS]


def record_of_columns(columns: Mapping[str, Any]) -> dict[str, Any]:
    """The AuditRecord a stored row holds, rebuilt from its storing columns (each field's ``load``, placed at its
    ``source`` path): what ``pdx audit verify`` hashes and re-derives the other columns from."""
    record: dict[str, Any] = {"decision": {}, "relied_on": {}}
    for f in FIELDS:
        if f.load is None:
            continue
        node = record
        *parents, leaf = f.source.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = f.load(columns[f.name])
    record["decision"]["request_id"] = (record.get("request") or {}).get("request_id")
    record["decision"]["worker_id"] = record.get("worker_id")
    if not record["relied_on"].get("approvals") and not record["relied_on"].get("principals"):
        record["relied_on"] = None
    return record
