"""The native ingest path's SQL, built from the declarations: the Avro schema and the audit fields.

The audit sink inserts raw AuditRecords as an Avro object container into ``audit_ingest`` (ENGINE = Null), and
materialized views derive the audit table's rows and the hash-chain links from it (streams/audit/sink.py):

* ``audit_ingest`` mirrors schemas/audit_record.avsc leaf by leaf (ClickHouse matches Avro fields to columns
  and record fields to Tuple elements by name and refuses a record with more leaves than its tuple): built
  here from the schema, so a field added to the schema is in it without anyone writing SQL;
* ``audit_ingest_mv`` computes each audit column as its :class:`~streams.contracts.audit_fields.Field` says
  (``sql``). The JSON columns (``json:request``, ``json:identity``, ``json:principals``) are written out
  field by field from the schema rather than with toJSONString(tuple), so the text depends on no session
  setting: the same keys in the same (schema) order and the same timestamp text
  (``2026-06-03T10:00:00.123000+00:00``, no fraction when it is zero) as the Python encoder
  (``audit_fields.dumps``). String escaping differs only for control characters and U+2028/U+2029, which every
  JSON parser reads back to the same value; toJSONString escapes '/' as '\\/' by default
  (output_format_json_escape_forward_slashes) and ``replaceAll(json, '\\\\/', '/')`` undoes exactly that whatever
  the setting (an escaped backslash before '/' is '\\\\\\/', still matched right).
  tests/integration/test_audit_native_ingest.py checks the view against ``audit_row`` row for row;
* ``audit_chain_links_mv`` writes one row per chained record into ``audit_chain_links`` (sql/006).

These three objects hold no data, so they are not versioned: ``pdx audit migrate`` re-creates them whenever what
this module builds differs from what the database has (:func:`fingerprint`, kept as the ingest table's comment;
streams/audit/migrate.py ``reconcile_ingest``). Dedup: the sink's insert_deduplication_token with
``deduplicate_blocks_in_dependent_materialized_views`` drops a retried block in every view's target.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from streams.contracts import audit_fields, wire

INGEST_TABLE = "audit_ingest"
INGEST_VIEW = "audit_ingest_mv"
LINKS_VIEW = "audit_chain_links_mv"
#: The objects :func:`statements` (re)creates, views first (they depend on the table).
VIEWS = (INGEST_VIEW, LINKS_VIEW)
#: What the view's FROM names the record's parts (the Field ``sql`` expressions use these).
_FROM = (
    "SELECT request AS req, identity AS idn, decision AS dec, received_at, decided_at, source_topic,\n"
    "           source_partition, source_offset, worker_id AS rec_worker_id, chain AS chn, relied_on AS rel\n"
    "    FROM $db.audit_ingest"
)
_WITH = (
    "    assumeNotNull(idn) AS ident,\n"
    "    arrayMap(c -> ifNull(c.rotated_at, c.created_at), arrayFilter(c -> c.status = 'active', ident.credentials))\n"
    "        AS active_since,\n"
    "    req.resource AS res,\n"
    "    req.context AS ctx"
)
_LINKS_SELECT = """SELECT
    link.chain_id                                          AS chain_id,
    link.seq                                               AS seq,
    lower(hex(link.prev))                                  AS prev,
    lower(hex(link.request_digest))                        AS request_digest,
    lower(hex(link.body_digest))                           AS body_digest,
    lower(hex(link.hash))                                  AS record_hash,
    request.request_id                                     AS request_id,
    request.identity_id                                    AS identity_id,
    decided_at,
    if(worker_id != '', worker_id, decision.worker_id)     AS worker_id,
    source_topic,
    source_partition,
    source_offset
FROM (SELECT *, assumeNotNull(chain) AS link FROM $db.audit_ingest WHERE chain IS NOT NULL)"""
_TIMESTAMP = {"timestamp-millis": "DateTime64(3, 'UTC')", "timestamp-micros": "DateTime64(6, 'UTC')"}
_PRIMITIVE = {"string": "String", "int": "Int32", "long": "Int64", "boolean": "Bool", "float": "Float32",
              "double": "Float64"}  # fmt: skip


class _Schema:
    """The self-contained AuditRecord schema with its named types resolvable (a later use names the type)."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.named: dict[str, Mapping[str, Any]] = {}
        self._collect(root)

    def _collect(self, node: Any) -> None:
        if isinstance(node, list):
            for n in node:
                self._collect(n)
        elif isinstance(node, dict):
            if node.get("type") in ("record", "enum", "fixed") and "name" in node:
                self.named[node["name"]] = node
                self.named.setdefault(node["name"].rsplit(".", 1)[-1], node)
            for key in ("fields", "items", "values", "type"):
                if key in node:
                    self._collect(node[key] if key != "fields" else [f["type"] for f in node["fields"]])

    def resolve(self, t: Any) -> Any:
        return self.named.get(t, t) if isinstance(t, str) else t

    def field(self, path: str) -> Any:
        """The (resolved) type at a dotted path of the record; a nullable parent is looked through."""
        node: Any = self.root
        for name in path.split("."):
            node = self.resolve(_non_null(self.resolve(node)))
            node = self.resolve(next(f["type"] for f in node["fields"] if f["name"] == name))
        return node

    def notation(self, t: Any) -> str:
        """The short type notation of the audit fields' ``avro`` (``string``, ``string?``, ``array<Reason>``,
        ``timestamp-millis``, ``Identity?``, ``enum``)."""
        t = self.resolve(t)
        if isinstance(t, list):
            return self.notation(_non_null(t)) + "?"
        if isinstance(t, str):
            return t
        kind = t["type"]
        if isinstance(kind, (dict, list)) or kind in self.named:
            return self.notation(kind)
        if t.get("logicalType") in _TIMESTAMP:
            return str(t["logicalType"])
        if kind == "array":
            return f"array<{self.notation(t['items'])}>"
        if kind == "map":
            return f"map<{self.notation(t['values'])}>"
        if kind == "enum":
            return "enum"
        if kind in ("record", "fixed"):
            return str(t["name"]).rsplit(".", 1)[-1]
        return str(kind)

    # ---- ClickHouse types ------------------------------------------------------------------------------

    def ch_type(self, t: Any, indent: str) -> str:
        t = self.resolve(t)
        if isinstance(t, list):
            return f"Nullable({self.ch_type(_non_null(t), indent)})"
        if isinstance(t, str):
            return _PRIMITIVE[t]
        kind = t["type"]
        if isinstance(kind, (dict, list)) or kind in self.named:
            return self.ch_type(kind, indent)
        if t.get("logicalType") in _TIMESTAMP:
            return _TIMESTAMP[t["logicalType"]]
        if kind in _PRIMITIVE:
            return _PRIMITIVE[kind]
        if kind == "enum":
            return "String"
        if kind == "fixed":
            return f"FixedString({int(t['size'])})"
        if kind == "array":
            return f"Array({self.ch_type(t['items'], indent)})"
        if kind == "map":
            return f"Map(String, {self.ch_type(t['values'], indent)})"
        if kind == "record":
            inner = indent + "    "
            fields = ",\n".join(f"{inner}{f['name']} {self.ch_type(f['type'], inner)}" for f in t["fields"])
            return f"Tuple(\n{fields})"
        raise ValueError(f"no ClickHouse type for Avro type {kind!r}")

    # ---- JSON text, as audit_fields.dumps writes it --------------------------------------------------------

    def json(self, t: Any, expr: str, depth: int = 0) -> str:
        """A ClickHouse expression giving the JSON text of ``expr`` (of Avro type ``t``), before the '\\/' fix."""
        t = self.resolve(t)
        if isinstance(t, list):
            return f"if(isNull({expr}), 'null', {self.json(_non_null(t), f'assumeNotNull({expr})', depth)})"
        if isinstance(t, str):
            return f"toString({expr})" if t in ("int", "long") else f"toJSONString({expr})"
        kind = t["type"]
        if isinstance(kind, (dict, list)) or kind in self.named:
            return self.json(kind, expr, depth)
        if t.get("logicalType") in _TIMESTAMP:
            text = f"formatDateTime(toDateTime64({expr}, 6, 'UTC'), '%Y-%m-%dT%H:%i:%S.%f+00:00')"
            return f"concat('\"', replaceOne({text}, '.000000+', '+'), '\"')"
        if kind == "array" and isinstance(self.resolve(t["items"]), Mapping) and \
                self.resolve(t["items"]).get("type") == "record":
            var = f"x{depth}"
            item = self.json(t["items"], var, depth + 1)
            return f"concat('[', arrayStringConcat(arrayMap({var} -> {item}, {expr}), ','), ']')"
        if kind == "record":
            parts = []
            for i, f in enumerate(t["fields"]):
                key = ("{" if i == 0 else ",") + f'"{f["name"]}":'
                parts += [f"'{key}'", self.json(f["type"], f"{expr}.{f['name']}", depth)]
            return f"concat({', '.join(parts)}, '}}')"
        return f"toJSONString({expr})"  # strings, enums, arrays of scalars, maps


def _non_null(t: Any) -> Any:
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        if len(rest) != 1:
            raise ValueError(f"only [null, T] unions are supported, not {t!r}")
        return rest[0]
    return t


def _schema() -> _Schema:
    return _Schema(wire.schema("AuditRecord"))


def _fixed_slash(expr: str) -> str:
    return f"replaceAll({expr}, '\\\\/', '/')"


def column_sql(field: audit_fields.Field, schema: _Schema | None = None) -> str:
    """The view's expression for one audit column (``json:`` columns written out from the schema)."""
    s = schema or _schema()
    if field.sql == "json:request":
        return _fixed_slash(s.json(s.field("request"), "req"))
    if field.sql == "json:identity":
        return f"if(idn IS NULL, NULL, {_fixed_slash(s.json(s.field('identity'), 'ident'))})"
    if field.sql == "json:principals":
        item = _fixed_slash(s.json(s.field("relied_on.principals")["items"], "p", 1))
        items = f"arrayStringConcat(arrayMap(p -> {item}, assumeNotNull(rel).principals), ',')"
        return f"if(rel IS NULL, '[]', concat('[', {items}, ']'))"
    if field.sql.startswith("json:"):
        raise ValueError(f"audit field {field.name}: unknown JSON column {field.sql!r}")
    return field.sql


def ingest_table(comment: str = "") -> str:
    """CREATE TABLE for audit_ingest (``$db`` left as a placeholder), one column per AuditRecord field."""
    s = _schema()
    cols = ",\n".join(f"    {f['name']} {s.ch_type(f['type'], '    ')}" for f in s.root["fields"])
    tail = f"\nCOMMENT '{comment}'" if comment else ""
    return f"CREATE TABLE IF NOT EXISTS $db.{INGEST_TABLE}\n(\n{cols}\n)\nENGINE = Null{tail}"


def ingest_view() -> str:
    """CREATE MATERIALIZED VIEW audit_ingest_mv: every audit column as its field declares it."""
    s = _schema()
    cols = ",\n".join(f"    {column_sql(f, s)} AS {f.name}" for f in audit_fields.FIELDS)
    return (f"CREATE MATERIALIZED VIEW IF NOT EXISTS $db.{INGEST_VIEW} TO $db.$audit_table AS\nWITH\n{_WITH}\n"
            f"SELECT\n{cols}\nFROM (\n    {_FROM}\n)")  # fmt: skip


def links_view() -> str:
    return f"CREATE MATERIALIZED VIEW IF NOT EXISTS $db.{LINKS_VIEW} TO $db.audit_chain_links AS\n{_LINKS_SELECT}"


def fingerprint() -> str:
    """What the built objects are: a hash of their SQL (stored as audit_ingest's comment)."""
    text = "\n;\n".join((ingest_table(), ingest_view(), links_view()))
    return "pdx-ingest:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def statements() -> list[str]:
    """Drop and create the three objects (templates with ``$db`` / ``$audit_table``): what a migrate runs when
    the database's fingerprint differs. An insert from a running sink in between fails and is retried."""
    return [
        *(f"DROP TABLE IF EXISTS $db.{view}" for view in VIEWS),
        f"DROP TABLE IF EXISTS $db.{INGEST_TABLE}",
        ingest_table(fingerprint()),
        ingest_view(),
        links_view(),
    ]


DOC_BEGIN = "<!-- audit fields: generated from streams/contracts/audit_fields.py by streams/audit/ingest.py -->"
DOC_END = "<!-- end of audit fields -->"


def fields_markdown() -> str:
    """The audit table's columns as a Markdown table (docs/contracts.md holds it; a test keeps it current)."""
    lines = [DOC_BEGIN, "| column | from (Avro type) | ClickHouse type | hash chain | redacted | since | |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for f in audit_fields.FIELDS:
        chain = {audit_fields.REQUEST: "request digest", audit_fields.BODY: "body"}.get(f.chain or "", "")
        ch = f.ch_type + (f" CODEC({f.codec})" if f.codec else "")
        lines.append(f"| `{f.name}` | `{f.source}` ({f.avro}) | `{ch}` | {chain} | {'yes' if f.redacted else ''} "
                     f"| {f.since} | {f.doc} |")
    return "\n".join([*lines, DOC_END])
