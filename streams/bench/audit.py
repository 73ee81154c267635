"""``pdx bench audit``: load N synthetic audit rows through the sink's AuditWriter and time the hot queries.

Prints JSON (``--json``) with:

* ``sink.rows_per_s`` — rows / seconds spent inside ``AuditWriter.insert`` (mapping each AuditRecord to a row,
  sending the batch, waiting for ClickHouse's acknowledgement, materialized views included). Generating the
  synthetic records is not counted.
* ``queries.timeline|explain|top`` — latency (ms) of the same calls ``pdx audit timeline/explain/top`` make,
  over random identities / request ids, after one warm-up: p50, p95, max.

Targets from the issue: timeline and explain < 100 ms on 10M rows; sink >= 50,000 rows/s.
The benchmark uses its own database (``pdx_bench_<random>``), dropped afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.audit.impact import progress_bar
from streams.bench import synthetic

TARGETS = {"timeline_p95_ms": 100.0, "explain_p95_ms": 100.0, "sink_rows_per_s": 50_000.0}


def _latency(fn: Callable[[], Any], n: int, advance: Callable[[int], None]) -> dict[str, float]:
    fn()  # warm-up
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
        advance(1)
    samples.sort()
    return {
        "n": n,
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[min(len(samples) - 1, int(0.95 * len(samples)))], 2),
        "max_ms": round(samples[-1], 2),
    }


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
    map_s = 0.0
    with fresh_database(url or _default_url(), "pdx_bench", keep=keep) as db:
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
                t0 = time.perf_counter()
                mapped = db.writer.rows(chunk)
                t1 = time.perf_counter()
                db.writer.insert_rows(mapped, token=None)
                t2 = time.perf_counter()
                map_s += t1 - t0
                insert_s += t2 - t0
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
            "map_us_per_row": round(map_s / rows * 1e6, 2) if rows else 0.0,
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


def _default_url() -> str:
    from streams import config as settings

    return settings.load().clickhouse_url


def cmd_bench_audit(args: argparse.Namespace) -> int:
    from streams.audit.store import connect

    if args.rows <= 0:
        from streams.errors import UserError

        raise UserError("--rows must be a positive number")
    url = args.url or _default_url()
    connect(url).close()  # fail fast with the usual "cannot reach ClickHouse" message
    result = run(
        url,
        args.rows,
        batch=args.batch,
        identities=args.identities,
        days=args.days,
        queries=args.queries,
        keep=args.keep,
        progress=not args.json,
    )
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    sys.stdout.flush()
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("audit", help="audit sink throughput and investigation query latency (JSON)")
    p.set_defaults(func=cmd_bench_audit)
    p.add_argument("--rows", type=int, default=100_000, help="synthetic audit rows to load (default: %(default)s)")
    p.add_argument("--batch", type=int, default=50_000, help="rows per AuditWriter.insert batch (default: %(default)s)")
    p.add_argument(
        "--identities", type=int, default=None, help="distinct identities (default: rows/1000, at least 100)"
    )
    p.add_argument("--days", type=int, default=30, help="spread decided_at over this many days (default: %(default)s)")
    p.add_argument("--queries", type=int, default=30, help="timed runs per query (default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the benchmark database")
    p.add_argument("--json", action="store_true", help="one line of JSON, no progress bar")
    p.add_argument("--url", default=None, help="ClickHouse HTTP URL (default: $PDX_CLICKHOUSE_URL or the dev server)")
