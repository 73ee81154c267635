"""`pdx bench engine | e2e | drain | floor | delivery | memory | propagation | audit | sink | faults`: JSON benchmarks.

Only the command line lives here; the measurements are functions in :mod:`streams.bench` returning dicts,
imported when a command runs so `pdx --help` stays fast. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _print_json(result: Any, one_line: bool) -> int:
    print(json.dumps(result) if one_line else json.dumps(result, indent=2))
    sys.stdout.flush()
    return 0


def cmd_engine(args: argparse.Namespace) -> int:
    from streams.bench.engine import run_engine_bench

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    results = run_engine_bench(n=args.n, seed=args.seed, large=args.large_rules, peers=not args.no_peers, log=log)
    if args.json:
        return _print_json(results, one_line=True)
    print(f"{'engine':<10}{'rules':>8}{'n':>8}{'p50 us':>10}{'p99 us':>10}{'decisions/s':>14}{'agreement':>11}")
    for r in results:
        print(f"{r['engine']:<10}{r['rules']:>8}{r['n']:>8}{r['p50_us']:>10}{r['p99_us']:>10}"
              f"{r['decisions_per_s']:>14}{r['agreement']:>11.2%}")
    return 0


def cmd_e2e(args: argparse.Namespace) -> int:
    from streams import config
    from streams.bench.e2e import parse_workers, run_e2e, run_find_max

    workers = parse_workers(args.workers)
    cfg = config.load()
    if args.find_max:
        result = run_find_max(cfg, args.start, args.step, args.max_rate, args.step_duration, workers,
                              floor_requests=args.floor_requests)
        return _print_json(result, args.json)
    return _print_json(run_e2e(cfg, args.rate, args.duration, workers, floor_requests=args.floor_requests), args.json)


def _positive(value: str) -> int:
    n = int(value)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return n


def cmd_drain(args: argparse.Namespace) -> int:
    from streams import config
    from streams.bench.drain import run_drain

    return _print_json(run_drain(config.load(), args.requests), args.json)


def cmd_floor(args: argparse.Namespace) -> int:
    from streams import config
    from streams.bench.floor import run_floor

    return _print_json(run_floor(config.load(), args.requests), args.json)


def cmd_memory(args: argparse.Namespace) -> int:
    from streams import config
    from streams.bench.memory import run_memory

    return _print_json(run_memory(config.load(), args.identities, keep=args.keep), args.json)


def cmd_propagation(args: argparse.Namespace) -> int:
    from streams import config
    from streams.bench.propagation import run_propagation

    return _print_json(run_propagation(config.load(), args.trials, args.workers), args.json)


def cmd_audit(args: argparse.Namespace) -> int:
    from streams import config
    from streams.audit.store import connect
    from streams.bench.audit import run
    from streams.errors import UserError

    if args.rows <= 0 or args.base_rows <= 0:
        raise UserError("--rows and --base-rows must be positive numbers")
    if not 0 <= args.redeliver < 1:
        raise UserError("--redeliver is a share of the rows, 0 <= share < 1")
    cfg = config.load()
    url = args.url or cfg.clickhouse_url
    connect(url, cfg=cfg).close()  # fail fast with the usual "cannot reach ClickHouse" message
    options = {k: getattr(args, k) for k in ("base_rows", "batch", "identities", "days", "queries", "redeliver",
                                             "keep")}
    return _print_json(run(url, args.rows, cfg=cfg, **options, progress=not args.json), args.json)


def _add_engine(bench: Any) -> None:
    p = bench.add_parser("engine", help="decision latency: pdx vs cedarpy vs regopy, and pdx at 10k rules")
    p.add_argument("--json", action="store_true", help="print one JSON list (one object per engine run)")
    p.add_argument("-n", "--n", type=int, default=20000, help="requests per engine (default 20000)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--large-rules", type=int, default=10000, help="rule count for the scale run (default 10000)")
    p.add_argument("--no-peers", action="store_true", help="skip cedarpy and regopy")
    p.set_defaults(func=cmd_engine)


def _add_stream(bench: Any) -> None:
    p = bench.add_parser("e2e", help="request→decision latency and throughput through Kafka, vs a bare echo")
    p.add_argument("--rate", type=float, default=1000.0, help="offered requests per second (open loop)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    p.add_argument("--json", action="store_true", help="one line of JSON on stdout")
    p.add_argument("--workers", default="1", metavar="N[,N...]",
                   help="workers in one consumer group (default: 1); a list like 1,2,4 measures each in turn and "
                   "prints one object keyed by N with the floors; the request topic needs max(N) partitions")
    p.add_argument("--floor-requests", type=int, default=20_000, metavar="N",
                   help="with several --workers: requests of the pass-through floor (0: skip it; default: "
                   "%(default)s)")
    find = p.add_argument_group("--find-max", "raise the offered rate step by step until a step is not sustained "
                                "(achieved >= 99% of offered, p99 < 100 ms, replies = audit rows = requests)")
    find.add_argument("--find-max", action="store_true", help="report the highest sustained rate (and every step)")
    find.add_argument("--start", type=float, default=500.0, help="first offered rate (default: %(default)s)")
    find.add_argument("--step", default="x1.5", help="next rate: xFACTOR or +INCREMENT (default: %(default)s)")
    find.add_argument("--max-rate", type=float, default=20000.0, help="highest rate tried (default: %(default)s)")
    find.add_argument("--step-duration", type=float, default=5.0, help="seconds per step (default: %(default)s)")
    p.set_defaults(func=cmd_e2e)
    p = bench.add_parser("drain", help="one worker's throughput: queue N requests, then time one worker answering "
                         "them; beside the pass-through floor on the same N")
    p.add_argument("--requests", type=_positive, default=20000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_drain)
    p = bench.add_parser("floor", help="bare aiokafka pass-through (consume, 2 produces per event) in its own "
                         "process, with and without decoding each request")
    p.add_argument("--requests", type=_positive, default=20000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_floor)
    p = bench.add_parser("memory", help="worker RSS once ready with N synthetic identities in the inventory")
    p.add_argument("--identities", type=_positive, default=100_000, help="synthetic identities (default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="leave the synthetic identities in the inventory")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_memory)
    p = bench.add_parser("propagation", help="time from suspend / publish until workers decide with it")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--workers", type=int, default=2, help="workers running during the measurement")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_propagation)


def cmd_faults(args: argparse.Namespace) -> int:
    from streams import config
    from streams.bench.faults import Options, run_faults

    opts = Options(rate=args.rate, kills=args.kills, outage_s=args.outage_s, timeout_s=args.timeout,
                   malformed=args.malformed, brokers=args.brokers)
    return _print_json(run_faults(config.load(), args.only, opts), args.json)


def cmd_delivery(args: argparse.Namespace) -> int:
    from streams import config
    from streams.bench.delivery import run_delivery

    return _print_json(run_delivery(config.load(), args.requests, args.rate, args.duration), args.json)


def _add_delivery(bench: Any) -> None:
    p = bench.add_parser("delivery", help="audit-before-reply vs one Kafka transaction per fetch: drain rate and "
                         "latency of a bare relay for each (JSON)")
    p.add_argument("--requests", type=_positive, default=20_000, help="queued requests relayed (default: %(default)s)")
    p.add_argument("--rate", type=float, default=500.0, help="open-loop rate for latency (default: %(default)s)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of open-loop load (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="one line of JSON on stdout")
    p.set_defaults(func=cmd_delivery)


def _add_faults(bench: Any) -> None:
    p = bench.add_parser("faults", help="under load: kill workers, the sink, restart Kafka, ClickHouse outage, "
                         "malformed requests; takeover time, timeouts, conflicts, duplicates, lost audit rows")
    p.add_argument("--only", action="append", metavar="NAME",  # checked by run_faults (keeps --help fast)
                   help="run only this scenario (repeatable): worker_kill, sink_kill, broker_restart, "
                   "clickhouse_outage, broker_leader_kill (needs --brokers 3), malformed")
    p.add_argument("--brokers", type=_positive, default=1,
                   help="Kafka nodes of the dev stack; 3 (a replicated cluster, started if Kafka is not running) "
                   "adds broker_leader_kill (default: %(default)s)")
    p.add_argument("--rate", type=float, default=300.0, help="offered requests per second (default: %(default)s)")
    p.add_argument("--kills", type=_positive, default=5, help="worker_kill: workers killed (default: %(default)s)")
    p.add_argument("--outage-s", type=float, default=60.0,
                   help="clickhouse_outage: seconds ClickHouse is down (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=5.0,
                   help="the callers' timeout: later replies are pdp_timeouts (default: %(default)s)")
    p.add_argument("--malformed", type=_positive, default=20_000,
                   help="malformed: malformed requests sent (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="one line of JSON on stdout")
    p.set_defaults(func=cmd_faults)


def _add_audit(bench: Any) -> None:
    p = bench.add_parser("audit", help="investigation query latency and rows read on a big audit trail (JSON)")
    p.set_defaults(func=cmd_audit)
    p.add_argument("--rows", type=int, default=1_000_000, help="audit rows in the trail (default: %(default)s)")
    p.add_argument("--base-rows", type=int, default=100_000,
                   help="synthetic rows loaded through the audit sink, multiplied in ClickHouse up to --rows "
                   "(default: %(default)s; see streams/bench/audit.py)")
    p.add_argument("--batch", type=int, default=50_000, help="rows per sink batch (default: %(default)s)")
    p.add_argument(
        "--identities", type=int, default=None, help="distinct identities (default: rows/1000, at least 100)"
    )
    p.add_argument("--days", type=int, default=90, help="spread decided_at over this many days (default: %(default)s)")
    p.add_argument("--redeliver", type=float, default=0.001,
                   help="share of the rows inserted again as redeliveries (default: %(default)s)")
    p.add_argument("--queries", type=int, default=30, help="timed runs per query (default: %(default)s)")
    p.add_argument("--keep", action="store_true", help="keep the benchmark database")
    p.add_argument("--json", action="store_true", help="one line of JSON, no progress bar")
    p.add_argument("--url", default=None, help="ClickHouse HTTP URL (default: $PDX_CLICKHOUSE_URL or the dev server)")


def cmd_sink(args: argparse.Namespace) -> int:
    from streams import config
    from streams.bench.sink import run_sink_bench

    def log(msg: str) -> None:
        print(msg, file=sys.stderr)

    cfg = config.load()
    result = run_sink_bench(cfg, args.records, partitions=args.partitions, keep=args.keep, log=log)
    return _print_json(result, args.json)


def _add_sink(bench: Any) -> None:
    p = bench.add_parser("sink", help="the audit sink moving N records from a Kafka topic of its own into a ClickHouse "
                         "database of its own, beside ClickHouse ingesting the same rows as one Avro container (JSON)")
    p.add_argument("--records", type=_positive, default=1_000_000, help="audit records moved (default: %(default)s)")
    p.add_argument("--partitions", type=_positive, default=None,
                   help="partitions of the benchmark topic (default: those of pdx.audit, $PDX_REQUEST_PARTITIONS)")
    p.add_argument("--keep", action="store_true", help="keep the benchmark topic and database")
    p.add_argument("--json", action="store_true", help="one line of JSON on stdout")
    p.set_defaults(func=cmd_sink)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = sub.add_parser("bench", help="benchmarks that print JSON")
    bench = group.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", required=True)
    _add_engine(bench)
    _add_stream(bench)
    _add_audit(bench)
    _add_sink(bench)
    _add_faults(bench)
    _add_delivery(bench)
