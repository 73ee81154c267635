"""``pdx bench audit``: an audit trail of N rows (1M, 10M), then the investigation queries timed on it.

How the rows are made (``rows.method`` in the JSON):

1. **A base set through the sink** (``--base-rows``, default 100,000): synthetic AuditRecords
   (streams.bench.synthetic: agents, service accounts, workloads and humans; ~78% allowed, 15% denied, 7% stepped
   up; resources of every sensitivity) are encoded as the worker does and fed to ``AuditSink.step`` as Kafka
   records would arrive, so every column is what the ingest view writes (request_json, identity_json, reasons,
   principals_json, ...). ``sink.rows_per_s`` is the rate of that step (information only; ``pdx bench sink`` is
   the sink benchmark).
2. **Multiplied inside ClickHouse** up to N (one ``INSERT ... SELECT`` per million rows from the base rows
   ``CROSS JOIN numbers()``, so the rollup views run as on real inserts). Each copy of a base row gets a new
   request_id (32 hex digits, also in its request_json); an identity of another *identity group* (the same kind
   and number format, ``agent-00042`` -> ``agent-01342``, also in request_json and identity_json), drawn with a
   skew: group ``floor(G * u^2)`` of G = N / base groups, so the first groups' identities are the heavy hitters;
   and its four timestamps moved together by a whole number of days, wrapped into the window (``--days``,
   default 90: several monthly partitions), which keeps the hour-of-day mix. Columns not named stay the base
   row's, so the shape and sizes (request_json ~560 bytes) are those of real rows. Rows made this way have no
   hash-chain links (``pdx audit verify`` is not what is measured here).
3. **Redeliveries**: ``--redeliver`` (default 0.001) of the rows are inserted again as a worker that crashed
   before committing would: the same request (request_id, occurred_at, request_json), decided 2 s later by the
   other worker. They stay separate rows until a merge collapses them, which is what ``FINAL`` has to handle;
   ``exactness`` checks that a redelivered request shows once in its timeline and that explain returns the
   first decision.

Then background merges are waited for (bounded), and the same calls the CLI commands make are timed (the
functions of streams/audit/queries.py, risk.py and report.py, not SQL of our own), after one warm-up: p50, p95
(nearest rank), max, over random rows of the trail (so an identity is picked in proportion to its requests):

* ``timeline`` -- ``pdx audit timeline --identity ID`` over the 24 h around the picked row (limit 1000);
* ``explain`` -- ``pdx audit explain REQUEST_ID`` (``Audit.explain``);
* ``risk_scores`` -- ``pdx audit risk`` (last 7 days) and ``risk_report`` -- ``pdx report risk``'s data
  (``build_report_data``, last 7 days: totals, decisions over time, risk scores, denies by reason, rule hits,
  stale credentials, approvals) plus the HTML rendering.

For each query the JSON has ``rows_read`` (and ``bytes_read``): what ClickHouse reports it read for the call (the
X-ClickHouse-Summary clickhouse-connect returns, summed over the statements of a call, median over the timed
runs), and ``plan``: ``EXPLAIN ESTIMATE`` of the statement (parts, rows, marks selected by the primary key,
partition pruning and skip indexes), for one representative call. Targets (issue 27 part 5) are in ``targets``,
pass/fail in ``meets_targets``; a target applies at the size it names (timeline 50 ms at 1M, 200 ms at 10M,
explain 20 ms at 1M, risk report 2 s at 10M). Timings are wall-clock from this process and noisy on a shared
machine. The benchmark uses its own database (``pdx_bench_<random>``), dropped afterwards unless ``--keep``.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from streams import config
from streams.audit.queries import Audit
from streams.audit.sink import INSERT_STREAMS, AuditBatch, AuditSink
from streams.bench import synthetic
from streams.bench.stats import percentile, summary
from streams.console import progress_bar
from streams.contracts import wire

#: Issue 27 part 5: (target, the trail size it applies at).
TARGETS: dict[str, tuple[float, int]] = {
    "timeline_p95_ms@1M": (50.0, 1_000_000),
    "timeline_p95_ms@10M": (200.0, 10_000_000),
    "explain_p95_ms@1M": (20.0, 1_000_000),
    "risk_report_p95_ms@10M": (2000.0, 10_000_000),
}


@dataclass
class _Polled:
    """One audit message as the sink's consumer hands it over (streams.audit.sink.Record)."""

    value: bytes | None
    offset: int
    topic: str = config.TOPIC_AUDIT
    partition: int = 0
    key: bytes | None = None


class _Source:
    """Hands the sink one batch in one poll (streams.audit.sink.Source)."""

    def __init__(self, batch: list[_Polled]) -> None:
        self.batch: list[_Polled] | None = batch

    async def getmany(self, *, timeout_ms: int, max_records: int) -> Mapping[Any, Sequence[_Polled]]:
        batch, self.batch = self.batch, None
        return {0: batch} if batch else {}

    async def commit(self) -> None:
        return None


@dataclass
class _Dlq:
    sent: list[Any] = field(default_factory=list)

    async def send_and_wait(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        self.sent.append((topic, value))


class RecordingClient:
    """A clickhouse-connect client that remembers, per ``query``, the statement, its parameters and the summary
    ClickHouse sent (X-ClickHouse-Summary: read_rows, read_bytes, elapsed_ns). The bench hands it to
    :class:`Audit`, so what is measured is exactly the statements the CLI's calls send."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def query(self, sql: str, parameters: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        result = self.client.query(sql, parameters=parameters, **kwargs)
        self.calls.append((sql, dict(parameters or {}), dict(result.summary or {})))
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def _python_us_per_row(polled: list[_Polled]) -> float:
    """Microseconds per record the sink spends in Python: AuditBatch.add, then the containers and tokens."""
    t = time.perf_counter()
    batch = AuditBatch(len(polled), 60.0)
    for m in polled:
        batch.add(m.value, m)
    for block in batch.blocks(INSERT_STREAMS):
        block.prepare()
    return (time.perf_counter() - t) / max(len(polled), 1) * 1e6


def _timed(fn: Callable[[], Any], n: int, rec: RecordingClient, advance: Callable[[int], None]) -> dict[str, Any]:
    """``fn`` once to warm up, then ``n`` timed calls: latency p50/p95 (nearest rank)/max in ms, and the rows and
    bytes ClickHouse read per call (summed over the call's statements; median and max over the calls)."""
    fn()
    samples: list[float] = []
    reads: list[tuple[int, int]] = []
    for _ in range(n):
        rec.calls.clear()
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
        reads.append((sum(int(c[2].get("read_rows", 0)) for c in rec.calls),
                      sum(int(c[2].get("read_bytes", 0)) for c in rec.calls)))
        advance(1)
    return {
        "n": n,
        **summary(samples, (50, 95)),
        "max_ms": round(percentile(samples, 100), 2),
        "rows_read": {"median": int(statistics.median(r for r, _ in reads)), "max": max(r for r, _ in reads)},
        "bytes_read_median": int(statistics.median(b for _, b in reads)),
        "statements": len(rec.calls),
    }


def _plan(rec: RecordingClient, fn: Callable[[], Any]) -> list[dict[str, Any]]:
    """EXPLAIN ESTIMATE of each statement one call of ``fn`` sends: what the primary key, partition pruning and
    skip indexes select (parts, rows, marks) before reading; and what the call then read."""
    rec.calls.clear()
    fn()
    plans = []
    for sql, params, summ in list(rec.calls):
        est = rec.client.query(f"EXPLAIN ESTIMATE {sql}", parameters=params).result_rows
        plans.append({
            "estimate": [{"table": f"{r[0]}.{r[1]}", "parts": int(r[2]), "rows": int(r[3]), "marks": int(r[4])}
                         for r in est],
            "read_rows": int(summ.get("read_rows", 0)),
            "server_ms": round(int(summ.get("elapsed_ns", 0)) / 1e6, 2),
        })
    return plans


# ---- making the trail ----------------------------------------------------------------------------------------

#: The columns an insert into the audit table writes (all but the MATERIALIZED ones and inserted_at).
def _insert_columns(client: Any, table: str) -> list[str]:
    db, name = table.split(".")
    rows = client.query(
        "SELECT name FROM system.columns WHERE database = {d:String} AND table = {t:String} "
        "AND default_kind != 'MATERIALIZED' AND name != 'inserted_at' ORDER BY position",
        parameters={"d": db, "t": name},
    ).result_rows
    return [r[0] for r in rows]


#: How a copy of a base row differs from it (see the module docstring); ``c`` is numbers()' row, the copy number.
#: ``rid``, ``ident`` and ``shift_us`` are computed once in a subquery and used by the columns below; the base
#: row's values are ``old_*`` there (in the outer SELECT, ``request_id`` etc. name the new values, the aliases).
_COPY = {
    "request_id": "rid",
    "identity_id": "ident",
    "occurred_at": "addMicroseconds(occurred_at, shift_us)",
    "received_at": "addMicroseconds(received_at, shift_us)",
    "decided_at": "addMicroseconds(decided_at, shift_us)",
    "evaluated_at": "addMicroseconds(evaluated_at, shift_us)",
    "source_offset": "source_offset + c * {base:UInt64}",
    "request_json": (
        "replaceOne(replaceOne(replaceOne(request_json, concat('\"request_id\":\"', old_rid, '\"'), "
        "concat('\"request_id\":\"', rid, '\"')), concat('\"identity_id\":\"', old_ident, '\"'), "
        "concat('\"identity_id\":\"', ident, '\"')), "
        "concat('\"occurred_at\":\"', formatDateTime(old_occ, '%Y-%m-%dT%H:%i:%S.%f+00:00'), '\"'), "
        "concat('\"occurred_at\":\"', formatDateTime(addMicroseconds(old_occ, shift_us), "
        "'%Y-%m-%dT%H:%i:%S.%f+00:00'), '\"'))"
    ),
    "identity_json": (
        "if(isNull(identity_json), identity_json, replaceOne(assumeNotNull(identity_json), "
        "concat('\"id\":\"', old_ident, '\"'), concat('\"id\":\"', ident, '\"')))"
    ),
}

_COPY_FROM = """
FROM (
    SELECT *, c, request_id AS old_rid, identity_id AS old_ident, occurred_at AS old_occ,
        lower(hex(MD5(concat(request_id, '/', toString(c))))) AS rid,
        cityHash64(rid) AS h,
        toUInt64(floor({groups:UInt64} * pow((h % 1000003) / 1000003, 2))) AS grp,
        concat(extract(identity_id, '^(.*)-[0-9]+$'), '-',
               leftPad(toString(toUInt64(extract(identity_id, '-([0-9]+)$')) + grp * {base_identities:UInt64}),
                       5, '0')) AS ident,
        toInt64(toUnixTimestamp64Micro(decided_at)) - {start_us:Int64} AS since_start,
        ((since_start + toInt64(intDiv(h, 1000003) % {days:UInt64}) * 86400000000) % {span_us:Int64})
            - since_start AS shift_us
    FROM {table} AS base
    CROSS JOIN (SELECT number AS c FROM numbers({first:UInt64}, {count:UInt64})) AS copies
    WHERE base.source_offset < {base:UInt64} AND base.source_offset + c * {base:UInt64} < {rows:UInt64}
)
"""

_REDELIVER = {
    "received_at": "addMicroseconds(received_at, 2000000)",
    "decided_at": "addMicroseconds(decided_at, 2000000)",
    "evaluated_at": "addMicroseconds(evaluated_at, 2000000)",
    "worker_id": "if(worker_id = 'worker-0', 'worker-1', 'worker-0')",
    "source_offset": "source_offset + 1000000000",
}


#: Both cores for the bulk inserts, the rollup views in parallel (measured: 200k copied rows 11.7 s -> 7.1 s).
_INSERT_SETTINGS = {"max_insert_threads": 2, "parallel_view_processing": 1}


def _select(columns: list[str], changed: Mapping[str, str]) -> str:
    return ", ".join(f"{changed[c]} AS {c}" if c in changed else c for c in columns)


def _load_base(db: Any, cfg: config.Settings, rows: int, *, batch: int, identities: int, start: datetime,
               end: datetime, seed: int, advance: Callable[[int], None]) -> dict[str, Any]:
    """``rows`` synthetic records through ``AuditSink.step`` (the real ingest path)."""
    insert_s = python_us = 0.0
    dlq = _Dlq()
    done = 0
    gen = synthetic.records(rows, seed=seed, identities=identities, start=start, end=end)
    with asyncio.Runner() as runner:
        while done < rows:
            chunk = [next(gen) for _ in range(min(batch, rows - done))]
            polled = [_Polled(wire.encode("AuditRecord", rec), offset=done + i) for i, rec in enumerate(chunk)]
            if not done:
                python_us = _python_us_per_row(polled)
            sink = AuditSink(cfg.replace(audit_batch_max=len(polled)), "bench-sink")  # due when full
            t0 = time.perf_counter()
            committed = runner.run(sink.step(_Source(polled), db.writer, dlq))
            insert_s += time.perf_counter() - t0
            if not committed or dlq.sent:
                raise RuntimeError(f"the audit sink did not take the batch (dead-lettered: {dlq.sent})")
            done += len(chunk)
            advance(len(chunk))
    return {
        "rows_per_s": round(rows / insert_s) if insert_s else 0,
        "seconds": round(insert_s, 2),
        "python_us_per_row": round(python_us, 2),
        "path": f"AuditSink.step: native Avro into audit_ingest, {INSERT_STREAMS} concurrent inserts per batch",
    }


def _multiply(client: Any, table: str, columns: list[str], *, rows: int, base: int, copies: int, groups: int,
              base_identities: int, start: datetime, days: int, advance: Callable[[int], None]) -> float:
    """Copies 1..copies of the ``base`` rows in ``table`` (copy 0 is the base), about 1M rows per INSERT, the
    last one cut at ``rows`` rows in all."""
    per_insert = max(1, 1_000_000 // max(base, 1))
    start_us = int(start.timestamp() * 1e6)
    sql = (f"INSERT INTO {table} ({', '.join(columns)}) SELECT {_select(columns, _COPY)} "
           + _COPY_FROM.replace("{table}", table))
    t = time.perf_counter()
    first = 1
    while first <= copies:
        count = min(per_insert, copies - first + 1)
        client.query(sql, parameters={
            "rows": rows, "base": base, "groups": groups, "base_identities": base_identities, "start_us": start_us,
            "days": days, "span_us": days * 86_400_000_000, "first": first, "count": count},
            settings=_INSERT_SETTINGS)
        first += count
        advance(count * base)
    return time.perf_counter() - t


def _redeliver(client: Any, table: str, columns: list[str], share: float) -> int:
    """Insert ``share`` of the rows again as redeliveries (module docstring, point 3)."""
    if share <= 0:
        return 0
    every = max(1, round(1 / share))
    client.query(
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT {_select(columns, _REDELIVER)} FROM {table} "
        "WHERE cityHash64(request_id) % {every:UInt64} = 0",
        parameters={"every": every}, settings=_INSERT_SETTINGS,
    )
    return int(client.query(f"SELECT count() FROM {table} WHERE source_offset >= 1000000000").result_rows[0][0])


def _settle(client: Any, database: str, *, timeout_s: float = 180.0) -> float:
    """Wait (at most ``timeout_s``) until no merge of the audit table runs: a trail queried in production has had
    time to merge. Returns the seconds waited."""
    t = time.perf_counter()
    while time.perf_counter() - t < timeout_s:
        running = client.query(
            "SELECT count() FROM system.merges WHERE database = {d:String} AND table = 'audit_decisions'",
            parameters={"d": database}).result_rows[0][0]
        if not running:
            break
        time.sleep(1.0)
    return time.perf_counter() - t


def _sample(client: Any, table: str, n: int, seed: int) -> list[tuple[str, str, datetime]]:
    """``n`` random rows (request_id, identity_id, decided_at) of the trail, first decisions only."""
    rows = client.query(
        f"SELECT request_id, identity_id, decided_at FROM {table} WHERE source_offset < 1000000000 "
        "ORDER BY cityHash64(request_id, {seed:UInt64}) LIMIT {n:UInt32}",
        parameters={"seed": seed, "n": n},
    ).result_rows
    return [(r[0], r[1], r[2].replace(tzinfo=UTC)) for r in rows]


def _exactness(audit: Audit, client: Any, table: str) -> dict[str, Any]:
    """A redelivered request, still two rows in the table, shows once in its timeline; explain gives the first
    decision (the earlier decided_at)."""
    some = client.query(f"SELECT request_id FROM {table} WHERE source_offset >= 1000000000 LIMIT 1").result_rows
    row = client.query(
        f"SELECT request_id, any(identity_id), min(decided_at), count() AS n FROM {table} "
        "WHERE request_id = {rid:String} GROUP BY request_id", parameters={"rid": some[0][0]},
    ).result_rows if some else []
    if not row or row[0][3] < 2:
        return {"checked": False, "why": "no redelivery, or merged away already"}
    rid, ident, first, copies = row[0]
    first = first.replace(tzinfo=UTC)
    shown = [r for r in audit.timeline(ident, first - timedelta(hours=1), first + timedelta(hours=1))
             if r["request_id"] == rid]
    explained = audit.explain(rid)
    ok = len(shown) == 1 and explained is not None and explained["decided_at"] == first
    return {"checked": True, "request_id": rid, "rows_in_table": int(copies), "timeline_shows": len(shown),
            "explain_is_first_decision": explained is not None and explained["decided_at"] == first, "ok": ok}


def _table_stats(client: Any, database: str) -> dict[str, Any]:
    r = client.query(
        "SELECT count(), uniqExact(partition), sum(rows), sum(bytes_on_disk) FROM system.parts "
        "WHERE database = {d:String} AND table = 'audit_decisions' AND active",
        parameters={"d": database},
    ).result_rows[0]
    return {"active_parts": int(r[0]), "partitions": int(r[1]), "rows_in_parts": int(r[2]),
            "bytes_on_disk": int(r[3] or 0)}


def run(
    url: str,
    rows: int,
    *,
    cfg: config.Settings,
    base_rows: int = 100_000,
    batch: int = 50_000,
    identities: int | None = None,
    days: int = 90,
    queries: int = 30,
    redeliver: float = 0.001,
    seed: int = 1,
    keep: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Make a trail of ``rows`` rows (module docstring) in a fresh database of the ClickHouse at ``url`` and time
    the investigation queries on it. ``cfg``: the Settings the entry point read (the sink's settings)."""
    from streams.audit.report import build_report_data, render_html
    from streams.audit.risk import risk_scores
    from streams.bench.auditdb import fresh_database

    identities = identities or max(100, rows // 1000)
    base = min(rows, base_rows)
    groups = math.ceil(rows / base)  # identity groups, and the copies of the base (the last one partial)
    base_identities = max(1, identities // groups)
    end = datetime.now(UTC)
    start = end - timedelta(days=days)
    rng = random.Random(seed)
    with fresh_database(url, "pdx_bench", keep=keep, cfg=cfg) as db:
        table = f"{db.database}.audit_decisions"
        columns = _insert_columns(db.client, table)
        wall = time.perf_counter()
        with progress_bar(rows, "making the audit trail", progress) as advance:
            sink = _load_base(db, cfg, base, batch=batch, identities=base_identities, start=start, end=end,
                              seed=seed, advance=advance)
            multiply_s = _multiply(db.client, table, columns, rows=rows, base=base, copies=groups - 1, groups=groups,
                                   base_identities=base_identities, start=start, days=days, advance=advance)
        redelivered = _redeliver(db.client, table, columns, redeliver)
        make_s = time.perf_counter() - wall
        settle_s = _settle(db.client, db.database)
        stored = db.count(final=False)
        distinct_identities = int(db.client.query(f"SELECT uniq(identity_id) FROM {table}").result_rows[0][0])
        sample = _sample(db.client, table, 500, seed)
        rec = RecordingClient(db.client)
        audit = Audit(rec, db.database)
        exact = _exactness(audit, db.client, table)
        pick = lambda: sample[rng.randrange(len(sample))]  # noqa: E731
        returned: list[int] = []

        def timeline() -> Any:
            _rid, ident, at = pick()
            out = audit.timeline(ident, at - timedelta(hours=12), at + timedelta(hours=12), limit=1000)
            returned.append(len(out))
            return out

        def explain() -> Any:
            rid, _ident, _at = pick()
            row = audit.explain(rid)
            assert row is not None, rid
            return row

        def risk() -> Any:
            return risk_scores(audit, end - timedelta(days=7), end)

        def report() -> Any:
            return render_html(build_report_data(audit, end - timedelta(days=7), end))

        calls = {"timeline": (timeline, queries), "explain": (explain, queries),
                 "risk_scores": (risk, max(3, queries // 3)), "risk_report": (report, max(3, queries // 3))}
        lat: dict[str, Any] = {}
        with progress_bar(sum(n for _, n in calls.values()), "timing queries", progress) as advance:
            for name, (fn, n) in calls.items():
                lat[name] = _timed(fn, n, rec, advance)
                lat[name]["plan"] = _plan(rec, fn)
        lat["timeline"]["rows_returned_median"] = int(statistics.median(returned))
        version = db.client.query("SELECT version()").result_rows[0][0]
        table_stats = _table_stats(db.client, db.database)
        database = db.database
    meets = {name: lat[name.split("_p95")[0]]["p95_ms"] < target
             for name, (target, size) in TARGETS.items() if size == rows}
    return {
        "rows": {
            "requested": rows,
            "stored": stored,
            "redeliveries": redelivered,
            "identities": distinct_identities,
            "days": days,
            "method": (f"{base:,} synthetic records through AuditSink.step, multiplied in ClickHouse "
                       f"(INSERT ... SELECT x numbers({groups})) into {groups} skewed identity groups, "
                       f"{redeliver:g} of the rows redelivered (streams/bench/audit.py)"),
            "seconds_to_make": round(make_s, 2),
            "multiply_seconds": round(multiply_s, 2),
            "merges_waited_s": round(settle_s, 1),
        },
        "sink": sink,
        "table": table_stats,
        "queries": lat,
        "exactness": exact,
        "targets": {name: {"p95_ms_below": target, "at_rows": size} for name, (target, size) in TARGETS.items()},
        "meets_targets": meets,
        "clickhouse_version": version,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg()[0],
        "database": database if keep else None,
    }
