"""``pdx bench audit``: load N synthetic audit rows through the sink's AuditWriter and time the hot queries.

Prints JSON (``--json``) with:

* ``sink.rows_per_s`` — rows / seconds spent in the audit sink's ``AuditSink.step`` fed each batch as Kafka
  records would arrive (the raw single-object bytes): header check and request id per message, the Avro
  containers, the concurrent ``INSERT ... FORMAT Avro`` into audit_ingest, waiting for ClickHouse's
  acknowledgement, the materialized views (the audit table's columns, the rollups) included. Generating and
  encoding the synthetic records is not counted (the worker does that). ``sink.python_us_per_row`` is the part
  of it spent in Python per record (AuditBatch.add + building the container), measured on the first batch.
* ``queries.timeline|explain|top`` — latency (ms) of the same calls ``pdx audit timeline/explain/top`` make,
  over random identities / request ids, after one warm-up: p50, p95 (nearest rank), max.

Targets from the issue: timeline and explain < 100 ms on 10M rows; sink >= 50,000 rows/s.
The benchmark uses its own database (``pdx_bench_<random>``), dropped afterwards unless ``--keep``.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from streams import config
from streams.audit.sink import INSERT_STREAMS, AuditBatch, AuditSink
from streams.bench import synthetic
from streams.bench.stats import percentile, summary
from streams.console import progress_bar
from streams.contracts import wire

TARGETS = {"timeline_p95_ms": 100.0, "explain_p95_ms": 100.0, "sink_rows_per_s": 50_000.0}


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


def _python_us_per_row(polled: list[_Polled]) -> float:
    """Microseconds per record the sink spends in Python: AuditBatch.add, then the containers and tokens."""
    t = time.perf_counter()
    batch = AuditBatch(len(polled), 60.0)
    for m in polled:
        batch.add(m.value, m)
    for block in batch.blocks(INSERT_STREAMS):
        block.prepare()
    return (time.perf_counter() - t) / max(len(polled), 1) * 1e6


def _latency(fn: Callable[[], Any], n: int, advance: Callable[[int], None]) -> dict[str, float]:
    """Milliseconds per call of ``fn`` over ``n`` calls after one warm-up: p50, p95 (nearest rank) and max."""
    fn()  # warm-up
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
        advance(1)
    return {"n": n, **summary(samples, (50, 95)), "max_ms": round(percentile(samples, 100), 2)}


def run(
    url: str | None,
    rows: int,
    *,
    batch: int = 50_000,
    identities: int | None = None,
    days: int = 30,
    queries: int = 30,
    seed: int = 1,
    keep: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    from streams.bench.auditdb import fresh_database

    identities = identities or max(100, rows // 1000)
    end = datetime.now(UTC)
    start = end - timedelta(days=days)
    rng = random.Random(seed)
    sample: list[tuple[str, str, datetime]] = []  # (request_id, identity_id, decided_at) reservoir
    insert_s = 0.0
    python_us = 0.0
    cfg = config.load()
    dlq = _Dlq()
    with fresh_database(url or default_url(), "pdx_bench", keep=keep) as db, asyncio.Runner() as runner:
        wall = time.perf_counter()
        with progress_bar(rows, "loading audit rows", progress) as advance:
            done = 0
            gen = synthetic.records(rows, seed=seed, identities=identities, start=start, end=end)
            while done < rows:
                chunk = [next(gen) for _ in range(min(batch, rows - done))]
                for rec in chunk[:: max(1, len(chunk) // 50)]:
                    item = (rec["request"]["request_id"], rec["request"]["identity_id"], rec["decided_at"])
                    if len(sample) < 500:
                        sample.append(item)
                    else:
                        sample[rng.randrange(len(sample))] = item
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
        load_wall = time.perf_counter() - wall
        stored = db.count(final=False)
        parts = db.client.query(
            "SELECT count(), sum(bytes_on_disk) FROM system.parts "
            "WHERE database = {d:String} AND table = 'audit_decisions' AND active",
            parameters={"d": db.database},
        ).result_rows[0]
        audit = db.audit
        with progress_bar(queries * 3, "timing queries", progress) as advance:
            pick = lambda: sample[rng.randrange(len(sample))]  # noqa: E731

            def timeline() -> Any:
                _rid, ident, at = pick()
                return audit.timeline(ident, at - timedelta(hours=12), at + timedelta(hours=12), limit=1000)

            def explain() -> Any:
                rid, _ident, _at = pick()
                row = audit.explain(rid)
                assert row is not None, rid
                return row

            def top() -> Any:
                return audit.top(rng.choice(("denies", "step_ups", "restricted_access")), end - timedelta(days=7), end)

            lat = {
                "timeline": _latency(timeline, queries, advance),
                "explain": _latency(explain, queries, advance),
                "top": _latency(top, queries, advance),
            }
        version = db.client.query("SELECT version()").result_rows[0][0]
        database = db.database
    sink_rate = rows / insert_s if insert_s else 0.0
    return {
        "rows": rows,
        "rows_stored": stored,
        "batch": batch,
        "identities": identities,
        "days": days,
        "sink": {
            "rows_per_s": round(sink_rate),
            "seconds": round(insert_s, 2),
            "python_us_per_row": round(python_us, 2),
            "path": f"native Avro into audit_ingest, {INSERT_STREAMS} concurrent inserts per batch",
            "load_wall_seconds_incl_generation": round(load_wall, 2),
        },
        "queries": lat,
        "table": {"active_parts": int(parts[0]), "bytes_on_disk": int(parts[1] or 0)},
        "targets": TARGETS,
        "meets_targets": {
            "sink_rows_per_s": sink_rate >= TARGETS["sink_rows_per_s"],
            "timeline_p95_ms": lat["timeline"]["p95_ms"] < TARGETS["timeline_p95_ms"],
            "explain_p95_ms": lat["explain"]["p95_ms"] < TARGETS["explain_p95_ms"],
        },
        "clickhouse_version": version,
        "cpu_count": os.cpu_count(),
        "database": database if keep else None,
    }


def default_url() -> str:
    """The ClickHouse the benchmark loads into unless told otherwise ($PDX_CLICKHOUSE_URL or the dev server)."""
    return config.load().clickhouse_url
