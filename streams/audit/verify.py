"""`pdx audit verify`: recompute the workers' audit hash chains from ClickHouse and check the signed checkpoints.

What is checked, for the records decided in ``[since, until)`` (streams/contracts/audit_chain.py has the
canonical form; sql/006_hash_chain.sql the tables):

* **links** (audit_chain_links): per chain, seq contiguous (a chain that begins inside the window must begin at
  seq 0 or continue a link before the window), each link's hash recomputed from its own fields, and its prev
  equal to the previous link's hash. One seq with two different links is a fork.
* **rows** (audit_decisions, read without FINAL so every stored copy is judged): each row is found by its
  record_hash; its request and body digests are recomputed from its columns (request_json / identity_json
  parsed, then canonical JSON) and must equal its link's; every derived column (identity_id, action,
  resource_id, decision, reason_codes, identity_status, ...) must equal what streams.audit.store.audit_row
  derives from the hashed content, so altering any column is detected. A row with no record_hash, or one no
  link names, is forged.
* **collapsed duplicates**: the audit table keeps one row per redelivered request (sql/005). A link whose row
  is gone is not an error when another chain holds a verified row of the same request (same request_id and
  request_digest, which the link's own hash proves): it is counted as collapsed.
* **checkpoints** (audit_checkpoints): each signature is checked against the keys trusted for kind ``audit``
  (streams/contracts/signing.py); a bad or untrusted one is a forged checkpoint. The link at (chain_id, seq)
  must have head_hash; a *final* checkpoint must be the chain's last link. A checkpoint whose records are not
  in ClickHouse yet is *pending* while it is younger than ``grace_s`` (the sink may not have inserted them),
  else those records are missing. Records after a chain's last valid signed checkpoint are *not yet anchored*:
  counted, not a failure (the last few seconds of a running worker, or of one that was killed), unless
  ``require_anchored``. Unsigned checkpoints (a worker without an audit key) anchor nothing and fail the run
  only with ``require_signed``.

Limits: it holds the window's links and rows in memory (fine for days of a small deployment; use a narrower
``--since`` on a large one), and trailing records after a chain's last checkpoint can be deleted undetected
(that is what "not yet anchored" counts).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from streams import config
from streams.audit.store import (
    CHECKPOINTS_TABLE,
    COLUMNS,
    LINKS_TABLE,
    AuditRecordError,
    audit_row,
    check_identifier,
)
from streams.contracts import audit_chain, audit_fields, signing

#: Problem kinds (all fail the run).
BROKEN = "broken"  # a link's hash or prev does not recompute, or a fork
MISSING = "missing"  # a record of a chain is not there
ALTERED = "altered"  # a row's content does not hash to its link, or a derived column disagrees
FORGED = "forged"  # a row in no chain, or a checkpoint with a bad/untrusted signature
CONTRADICTED = "contradicted"  # a valid checkpoint names another head, or a record follows a final checkpoint
KINDS = (BROKEN, MISSING, ALTERED, FORGED, CONTRADICTED)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ZERO_HEX = audit_chain.ZERO_HASH.hex()
_LINK_COLUMNS = (
    "chain_id", "seq", "prev", "request_digest", "body_digest", "record_hash", "request_id", "identity_id",
    "toUnixTimestamp64Micro(decided_at)", "worker_id", "source_topic", "source_partition", "source_offset",
)  # fmt: skip
_CHECKPOINT_COLUMNS = (
    "chain_id", "seq", "head_hash", "final", "worker_id", "source_topic", "source_partition",
    "toUnixTimestamp64Milli(signed_at)", "key_id", "signature",
)  # fmt: skip
_TIMES = audit_fields.TIMES


@dataclass(frozen=True)
class Problem:
    kind: str
    chain_id: str | None
    seq: int | None
    request_id: str | None
    detail: str


@dataclass(frozen=True)
class LinkRow:
    chain_id: str
    seq: int
    prev: str
    request_digest: str
    body_digest: str
    record_hash: str
    request_id: str
    identity_id: str
    decided_us: int
    worker_id: str
    source_topic: str
    source_partition: int
    source_offset: int

    def recomputed(self) -> str:
        return audit_chain.link_hash(
            self.chain_id, self.seq, bytes.fromhex(self.prev), bytes.fromhex(self.request_digest),
            bytes.fromhex(self.body_digest),
        ).hex()  # fmt: skip


@dataclass(frozen=True)
class CheckpointRow:
    chain_id: str
    seq: int
    head_hash: str
    final: bool
    worker_id: str
    source_topic: str
    source_partition: int
    signed_at_ms: int
    key_id: str
    signature: str


@dataclass
class ChainResult:
    chain_id: str
    first_seq: int
    last_seq: int
    records: int
    anchored_seq: int  # last seq covered by a valid signed checkpoint (-1: none)
    final: bool
    problems: list[Problem] = field(default_factory=list)


@dataclass
class Report:
    database: str
    since: datetime
    until: datetime
    chains: list[ChainResult] = field(default_factory=list)
    links: int = 0
    rows: int = 0
    verified: int = 0
    collapsed_duplicates: int = 0
    not_yet_anchored: int = 0
    checkpoints_signed: int = 0
    checkpoints_unsigned: int = 0
    checkpoints_pending: int = 0
    #: problems outside any chain: forged rows, forged checkpoints of chains with no links
    unchained_problems: list[Problem] = field(default_factory=list)
    require_signed: bool = False
    require_anchored: bool = False

    @property
    def problems(self) -> list[Problem]:
        return [p for c in self.chains for p in c.problems] + self.unchained_problems

    @property
    def ok(self) -> bool:
        if self.problems:
            return False
        if self.require_signed and self.checkpoints_unsigned:
            return False
        return not (self.require_anchored and self.not_yet_anchored)

    def first_problems(self, limit: int = 50) -> list[Problem]:
        """The first problem of each chain, then the problems outside chains (at most ``limit``)."""
        firsts = [c.problems[0] for c in self.chains if c.problems]
        return (firsts + self.unchained_problems)[:limit]

    def to_json(self, limit: int = 50) -> dict[str, Any]:
        counts: dict[str, int] = defaultdict(int)
        for p in self.problems:
            counts[p.kind] += 1
        return {
            "ok": self.ok,
            "database": self.database,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "chains": len(self.chains),
            "links": self.links,
            "rows": self.rows,
            "verified": self.verified,
            "collapsed_duplicates": self.collapsed_duplicates,
            "not_yet_anchored": self.not_yet_anchored,
            "checkpoints": {
                "signed": self.checkpoints_signed,
                "unsigned": self.checkpoints_unsigned,
                "pending": self.checkpoints_pending,
            },
            "problems": {kind: counts.get(kind, 0) for kind in KINDS},
            "first_problems": [asdict(p) for p in self.first_problems(limit)],
            "chain_summaries": [
                {
                    "chain_id": c.chain_id,
                    "first_seq": c.first_seq,
                    "last_seq": c.last_seq,
                    "records": c.records,
                    "anchored_seq": c.anchored_seq,
                    "final": c.final,
                    "problems": len(c.problems),
                }
                for c in self.chains
            ],
        }


def _micros_to_dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


def _normal(value: Any) -> Any:
    """A comparable form of a column value, whichever way it was produced (ClickHouse or audit_row)."""
    if isinstance(value, datetime):
        v = value.replace(tzinfo=UTC) if value.tzinfo is None else value
        return audit_chain.micros(v)
    if isinstance(value, (list, tuple)):
        return [_normal(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _normal(v) for k, v in value.items()}
    return value


class StoredRow:
    """One stored audit row (its columns as ClickHouse returns them, and its times as integer microseconds) and
    what its content hashes to: ``request_digest`` / ``body_digest`` (hex), and ``error`` when a derived column
    disagrees with the hashed content or the row cannot be rebuilt."""

    __slots__ = ("body_digest", "columns", "error", "request", "request_digest")

    def __init__(self, columns: dict[str, Any], times: Mapping[str, int]) -> None:
        self.columns = columns
        self.error = ""
        self.request: dict[str, Any] = {}
        self.request_digest = ""
        self.body_digest = ""
        try:
            self._hash(times)
        except (ValueError, TypeError, KeyError, AuditRecordError) as exc:
            self.error = f"cannot rebuild the record from its columns: {exc}"

    def _hash(self, times: Mapping[str, int]) -> None:
        c = {**self.columns, **{t: _micros_to_dt(us) for t, us in times.items()}}
        # the record the row stores (the audit fields that hold part of it), hashed as the worker hashed it
        record = audit_fields.record_of_columns(c)
        self.request = record["request"]
        request_digest, body_digest = audit_chain.record_digests(record)
        self.request_digest, self.body_digest = request_digest.hex(), body_digest.hex()
        # every other column must be what the hashed content derives to (audit_row is the reference the ingest
        # view is tested against); the storing columns are hashed themselves (the JSON ones as parsed: ClickHouse
        # and Python escape some characters apart)
        expected = dict(zip(COLUMNS, audit_row(record), strict=True))
        for name in COLUMNS:
            if name in _HASHED_AS_IS:
                continue
            want, have = _normal(expected[name]), c[name]
            if name in _NAMED_TUPLES:
                have = [audit_fields.named_fields(v, _NAMED_TUPLES[name]) for v in have]
            elif name == "principals_json":
                want, have = json.loads(str(expected[name])), json.loads(str(have or "[]"))
            have = _normal(have)
            if want != have:
                self.error = f"column {name} is {have!r}, its hashed content says {want!r}"
                return


#: Columns hashed themselves rather than compared: the JSON as parsed (ClickHouse and Python escape some
#: characters apart) and the record's own times (occurred_at, part of the request, is compared).
_HASHED_AS_IS = frozenset({"request_json", "identity_json", "received_at", "decided_at", "evaluated_at"})
#: Columns of named tuples, compared as plain tuples.
_NAMED_TUPLES = {"reasons": audit_fields.REASON_FIELDS, "monitor": audit_fields.MONITOR_FIELDS,
                 "approvals": audit_fields.APPROVAL_FIELDS}  # fmt: skip


class Verifier:
    """Reads one window of the chain tables and the audit table, and judges them (see the module docstring)."""

    def __init__(
        self,
        client: Any,
        database: str = config.CLICKHOUSE_DATABASE,
        *,
        trusted: signing.TrustedKeys | None = None,
        grace_s: float = 60.0,
        now: datetime | None = None,
    ) -> None:
        self.client = client
        self.db = check_identifier(database, "database name")
        self.trusted = trusted if trusted is not None else signing.TrustedKeys()
        self.grace_s = grace_s
        self.now = now or datetime.now(UTC)

    # ---- reading ----------------------------------------------------------------------------------------

    def _query(self, sql: str, params: Mapping[str, Any]) -> list[Sequence[Any]]:
        return list(self.client.query(sql, parameters=dict(params)).result_rows)

    def _window(self, since: datetime, until: datetime) -> dict[str, Any]:
        return {"since": since, "until": until}

    def _links(self, where: str, params: Mapping[str, Any]) -> list[LinkRow]:
        sql = f"SELECT DISTINCT {', '.join(_LINK_COLUMNS)} FROM {self.db}.{LINKS_TABLE} WHERE {where}"
        return [
            LinkRow(str(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]), str(r[6]), str(r[7]), int(r[8]),
                    str(r[9]), str(r[10]), int(r[11]), int(r[12]))
            for r in self._query(sql, params)
        ]  # fmt: skip

    def _rows(self, where: str, params: Mapping[str, Any]) -> list[StoredRow]:
        times = ", ".join(f"toUnixTimestamp64Micro({t})" for t in _TIMES)
        sql = f"SELECT {', '.join(COLUMNS)}, {times} FROM {self.db}.{config.AUDIT_TABLE} WHERE {where}"
        n = len(COLUMNS)
        out = []
        for r in self._query(sql, params):
            columns = dict(zip(COLUMNS, r[:n], strict=True))
            out.append(StoredRow(columns, dict(zip(_TIMES, (int(t) for t in r[n:]), strict=True))))
        return out

    def _checkpoints(self, chain_ids: Sequence[str], since: datetime, until: datetime) -> list[CheckpointRow]:
        sql = (
            f"SELECT DISTINCT {', '.join(_CHECKPOINT_COLUMNS)} FROM {self.db}.{CHECKPOINTS_TABLE} "
            "WHERE chain_id IN {ids:Array(String)} OR (signed_at >= {since:DateTime64(6)} "
            "AND signed_at < {until:DateTime64(6)})"
        )
        rows = self._query(sql, {"ids": list(chain_ids), "since": since, "until": until})
        return [CheckpointRow(r[0], int(r[1]), r[2], bool(r[3]), r[4], r[5], int(r[6]), int(r[7]), r[8], r[9])
                for r in rows]

    # ---- judging ----------------------------------------------------------------------------------------

    def verify(
        self, since: datetime, until: datetime, *, require_signed: bool = False, require_anchored: bool = False
    ) -> Report:
        report = Report(self.db, since, until, require_signed=require_signed, require_anchored=require_anchored)
        window = self._window(since, until)
        in_window = "decided_at >= {since:DateTime64(6)} AND decided_at < {until:DateTime64(6)}"
        links = self._links(in_window, window)
        month = "decided_month BETWEEN toYYYYMM({since:DateTime64(6)}) AND toYYYYMM({until:DateTime64(6)})"
        rows = self._rows(f"{month} AND {in_window}", window)
        report.links, report.rows = len(links), len(rows)

        links_by_hash: dict[str, list[LinkRow]] = defaultdict(list)
        for link in links:
            links_by_hash[link.record_hash].append(link)
        rows_by_hash: dict[str, list[StoredRow]] = defaultdict(list)
        for row in rows:
            rows_by_hash[str(row.columns["record_hash"])].append(row)

        # rows whose link is outside the window (their decided_at was changed?), and links whose row is
        # outside it: looked up by hash, anywhere
        orphan_hashes = [h for h in rows_by_hash if h and h not in links_by_hash]
        if orphan_hashes:
            for link in self._links("record_hash IN {hs:Array(String)}", {"hs": orphan_hashes}):
                links_by_hash[link.record_hash].append(link)
        lost = [link.record_hash for link in links if link.record_hash not in rows_by_hash]
        if lost:
            for row in self._rows("record_hash IN {hs:Array(String)}", {"hs": lost}):
                rows_by_hash[str(row.columns["record_hash"])].append(row)

        # 1. every row: in a chain, and its content hashes to its link
        good_requests: set[tuple[str, str]] = set()  # (request_id, request_digest) of verified rows
        row_ok: dict[str, bool] = {}
        for record_hash, copies in rows_by_hash.items():
            owners = links_by_hash.get(record_hash)
            for row in copies:
                rid = str(row.columns["request_id"])
                if not record_hash:
                    report.unchained_problems.append(Problem(FORGED, None, None, rid, "audit row without a chain link"))
                    continue
                if not owners:
                    report.unchained_problems.append(
                        Problem(FORGED, None, None, rid, f"audit row {record_hash[:16]}… is in no chain")
                    )
                    continue
            if not record_hash or not owners:
                continue
            link = owners[0]
            ok = True
            for row in copies:
                detail = row.error or _mismatch(row, link)
                if detail:
                    ok = False
                    row_ok[record_hash] = False
                    _chain_problem(report, link, ALTERED, detail)
            if ok:
                row_ok[record_hash] = True
                report.verified += len(copies)
                good_requests.add((link.request_id, link.request_digest))

        # 2. every chain: contiguous, recomputed, anchored by its checkpoints
        by_chain: dict[str, list[LinkRow]] = defaultdict(list)
        for link in links:
            by_chain[link.chain_id].append(link)
        before = self._heads_before(list(by_chain), since)
        checkpoints = self._checkpoints(list(by_chain), since, until)
        cps_by_chain: dict[str, list[CheckpointRow]] = defaultdict(list)
        for cp in checkpoints:
            if self._checkpoint_valid(report, cp):
                cps_by_chain[cp.chain_id].append(cp)
        results: dict[str, ChainResult] = {}
        for chain_id in sorted(by_chain):
            chain_links = sorted(by_chain[chain_id], key=lambda k: k.seq)
            result = ChainResult(chain_id, chain_links[0].seq, chain_links[-1].seq, 0, -1, False)
            results[chain_id] = result
            report.chains.append(result)
            self._walk(report, result, chain_links, before.get(chain_id), rows_by_hash, row_ok, good_requests)
        for chain_id, result in results.items():
            self._anchor(report, result, by_chain[chain_id], cps_by_chain.get(chain_id, []))
        others = [c for c in cps_by_chain if c not in results]  # checkpoints of chains with no record in the window
        stored: dict[tuple[str, int], set[str]] = defaultdict(set)
        if others:
            for chain_id, seq, record_hash in self._query(
                f"SELECT chain_id, seq, record_hash FROM {self.db}.{LINKS_TABLE} "
                "WHERE chain_id IN {ids:Array(String)}",
                {"ids": others},
            ):
                stored[(str(chain_id), int(seq))].add(str(record_hash))
        for chain_id in others:
            for cp in cps_by_chain[chain_id]:
                hashes = stored.get((chain_id, cp.seq))
                if hashes is None:
                    if not self._pending(report, cp):
                        report.unchained_problems.append(Problem(
                            MISSING, chain_id, cp.seq, None, f"a checkpoint names seq {cp.seq}, which is not stored"
                        ))  # fmt: skip
                elif hashes != {cp.head_hash}:
                    report.unchained_problems.append(Problem(
                        CONTRADICTED, chain_id, cp.seq, None, "a checkpoint names another hash for this record"
                    ))  # fmt: skip
        report.chains.sort(key=lambda c: c.chain_id)
        return report

    def _heads_before(self, chain_ids: Sequence[str], since: datetime) -> dict[str, tuple[int, str]]:
        """For chains with links in the window: (seq, hash) of their last link before it."""
        if not chain_ids:
            return {}
        rows = self._query(
            f"SELECT chain_id, max(seq), argMax(record_hash, seq) FROM {self.db}.{LINKS_TABLE} "
            "WHERE chain_id IN {ids:Array(String)} AND decided_at < {since:DateTime64(6)} GROUP BY chain_id",
            {"ids": list(chain_ids), "since": since},
        )
        return {str(r[0]): (int(r[1]), str(r[2])) for r in rows}

    def _walk(
        self,
        report: Report,
        result: ChainResult,
        chain_links: list[LinkRow],
        before: tuple[int, str] | None,
        rows_by_hash: Mapping[str, list[StoredRow]],
        row_ok: Mapping[str, bool],
        good_requests: set[tuple[str, str]],
    ) -> None:
        expected_seq, expected_prev = (0, _ZERO_HEX) if before is None else (before[0] + 1, before[1])
        previous: LinkRow | None = None
        for link in chain_links:
            if previous is not None and link.seq == previous.seq:
                _add(result, Problem(BROKEN, link.chain_id, link.seq, link.request_id,
                                     f"two different records at seq {link.seq} (a fork)"))  # fmt: skip
                continue
            result.records += 1
            if link.seq > expected_seq:
                missing = f"seq {expected_seq}" + (f"..{link.seq - 1}" if link.seq - 1 > expected_seq else "")
                _add(result, Problem(MISSING, link.chain_id, expected_seq, None, f"{missing} missing from the chain"))
            elif link.prev != expected_prev:
                _add(result, Problem(BROKEN, link.chain_id, link.seq, link.request_id,
                                     "prev is not the hash of the record before"))  # fmt: skip
            if link.recomputed() != link.record_hash:
                _add(result, Problem(BROKEN, link.chain_id, link.seq, link.request_id,
                                     "the link's hash does not recompute from its fields"))  # fmt: skip
            if link.record_hash not in rows_by_hash:
                if (link.request_id, link.request_digest) in good_requests:
                    report.collapsed_duplicates += 1  # a redelivery's second decision, collapsed (sql/005)
                else:
                    _add(result, Problem(MISSING, link.chain_id, link.seq, link.request_id,
                                         "the audit row of this record is missing"))  # fmt: skip
            expected_seq, expected_prev, previous = link.seq + 1, link.record_hash, link

    def _checkpoint_valid(self, report: Report, cp: CheckpointRow) -> bool:
        """Count it; False (after reporting it as forged) when its signature does not verify."""
        if not cp.key_id:
            report.checkpoints_unsigned += 1
            return True
        value = audit_chain.checkpoint_value(
            cp.chain_id, cp.seq, bytes.fromhex(cp.head_hash), cp.final, cp.worker_id, cp.source_topic,
            cp.source_partition,
        )
        payload = signing.signed_payload(signing.AUDIT, cp.chain_id.encode(), value, cp.signed_at_ms)
        try:
            self.trusted.verify_bytes(signing.AUDIT, payload, bytes.fromhex(cp.signature), cp.key_id)
        except (signing.SignatureError, ValueError) as exc:
            report.unchained_problems.append(Problem(FORGED, cp.chain_id, cp.seq, None, f"checkpoint: {exc}"))
            return False
        report.checkpoints_signed += 1
        return True

    def _pending(self, report: Report, cp: CheckpointRow) -> bool:
        """A checkpoint younger than the grace period whose records may still be on their way to ClickHouse."""
        if (self.now - (_EPOCH + timedelta(milliseconds=cp.signed_at_ms))).total_seconds() < self.grace_s:
            report.checkpoints_pending += 1
            return True
        return False

    def _anchor(
        self, report: Report, result: ChainResult, chain_links: list[LinkRow], cps: list[CheckpointRow]
    ) -> None:
        at = {link.seq: link for link in chain_links}
        last = chain_links[-1].seq if chain_links else -1
        for cp in sorted(cps, key=lambda c: c.seq):
            if cp.seq < result.first_seq:
                continue  # covers records before the window
            link = at.get(cp.seq)
            if link is None:
                if cp.seq > last and self._pending(report, cp):
                    continue
                _add(result, Problem(MISSING, cp.chain_id, cp.seq, None,
                                     f"a checkpoint names seq {cp.seq}, which is not stored"))  # fmt: skip
                continue
            if link.record_hash != cp.head_hash:
                _add(result, Problem(CONTRADICTED, cp.chain_id, cp.seq, link.request_id,
                                     "a checkpoint names another hash for this record"))  # fmt: skip
                continue
            if cp.final:
                result.final = True
                if last > cp.seq:
                    after = at.get(cp.seq + 1) or chain_links[-1]
                    _add(result, Problem(CONTRADICTED, cp.chain_id, after.seq, after.request_id,
                                         f"records follow the chain's final checkpoint at seq {cp.seq}"))  # fmt: skip
            if cp.key_id:
                result.anchored_seq = max(result.anchored_seq, cp.seq)
        unanchored = sum(1 for link in chain_links if link.seq > result.anchored_seq)
        report.not_yet_anchored += unanchored


def _mismatch(row: StoredRow, link: LinkRow) -> str:
    if row.request_digest != link.request_digest:
        return "the stored request does not hash to its chain link"
    if row.body_digest != link.body_digest:
        return "the stored decision (or identity, times, source) does not hash to its chain link"
    return ""


def _add(result: ChainResult, problem: Problem) -> None:
    result.problems.append(problem)


def _chain_problem(report: Report, link: LinkRow, kind: str, detail: str) -> None:
    """A problem found before the chains are walked: kept until its chain's result exists."""
    report.unchained_problems.append(Problem(kind, link.chain_id, link.seq, link.request_id, detail))


def regroup(report: Report) -> Report:
    """Move problems that name a chain under that chain (first problem per chain = lowest seq)."""
    chains = {c.chain_id: c for c in report.chains}
    keep = []
    for p in report.unchained_problems:
        target = chains.get(p.chain_id or "")
        if target is None:
            keep.append(p)
        else:
            target.problems.append(p)
    report.unchained_problems = keep
    for c in report.chains:
        c.problems.sort(key=lambda p: (p.seq if p.seq is not None else -1, KINDS.index(p.kind)))
    return report


def verify(
    client: Any,
    database: str,
    since: datetime,
    until: datetime,
    *,
    trusted: signing.TrustedKeys | None = None,
    grace_s: float = 60.0,
    require_signed: bool = False,
    require_anchored: bool = False,
    now: datetime | None = None,
) -> Report:
    """Verify the audit trail of ``database`` for records decided in ``[since, until)``."""
    verifier = Verifier(client, database, trusted=trusted, grace_s=grace_s, now=now)
    return regroup(verifier.verify(since, until, require_signed=require_signed, require_anchored=require_anchored))


def format_text(report: Report, limit: int = 50) -> Iterable[str]:
    """The human-readable report (what `pdx audit verify` prints without --json)."""
    yield (
        f"audit trail of {report.database}, {report.since:%Y-%m-%d %H:%M:%S} → {report.until:%Y-%m-%d %H:%M:%S} UTC: "
        f"{len(report.chains)} chains, {report.links} chained records, {report.rows} rows"
    )
    yield (
        f"  verified {report.verified} rows; {report.collapsed_duplicates} collapsed duplicates; "
        f"{report.not_yet_anchored} records not yet anchored by a signed checkpoint"
    )
    yield (
        f"  checkpoints: {report.checkpoints_signed} signed, {report.checkpoints_unsigned} unsigned"
        + (f", {report.checkpoints_pending} pending" if report.checkpoints_pending else "")
    )
    problems = report.problems
    if problems:
        yield f"FAILED: {len(problems)} problems; the first per chain:"
        for p in report.first_problems(limit):
            where = f"{p.chain_id} seq {p.seq}" if p.chain_id else "no chain"
            rid = f" request {p.request_id}" if p.request_id else ""
            yield f"  {p.kind:12} {where}{rid}: {p.detail}"
    if report.require_signed and report.checkpoints_unsigned:
        yield f"FAILED: {report.checkpoints_unsigned} unsigned checkpoints (--require-signed)"
    if report.require_anchored and report.not_yet_anchored:
        yield f"FAILED: {report.not_yet_anchored} records not anchored by a signed checkpoint (--require-anchored)"
    if report.ok:
        yield "OK: the audit trail is intact"
