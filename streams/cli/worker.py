"""`pdx worker` (a decision worker) and `pdx sink` (the audit sink as its own process)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from streams import config
from streams.config import Settings
from streams.errors import UserError, kafka_unreachable


def cmd_worker(args: argparse.Namespace) -> int:
    cfg = config.load()
    if args.worker_id:
        cfg = cfg.replace(worker_id=args.worker_id)
    if args.no_audit_sink:
        cfg = cfg.replace(audit_sink=False)
    if args.metrics_port is not None:
        cfg = cfg.replace(metrics_port=args.metrics_port)
    _preflight(cfg)
    from streams.worker.app import build_app

    app = build_app(cfg)
    sys.argv = ["pdx worker", "worker", "-l", args.loglevel, "--without-web"]
    app.main()
    return 0


def _preflight(cfg: Settings) -> None:
    """Fail with one clear line instead of a worker that logs connection errors forever."""
    from streams.kafka.health import kafka_health
    from streams.kafka.topics import missing_topics

    ok, detail = kafka_health(cfg, timeout_s=10.0)
    if not ok:
        raise kafka_unreachable(cfg.kafka_bootstrap, detail)
    missing = asyncio.run(missing_topics(cfg))
    if missing:
        raise UserError(f"topics {', '.join(missing)} do not exist: run `pdx topics create` first")


def cmd_sink(args: argparse.Namespace) -> int:
    from streams import metrics
    from streams.audit.sink import AuditSink

    logging.basicConfig(level=args.loglevel.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    cfg = config.load()
    sink = AuditSink(cfg, args.sink_id or cfg.worker_id)
    metrics.serve(metrics.sink_registry(sink), cfg.metrics_port if args.metrics_port is None else args.metrics_port)
    try:
        asyncio.run(sink.run())
    except KeyboardInterrupt:
        pass
    return 0


def _port(raw: str) -> int:
    port = int(raw)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{raw} is not a port (0-65535)")
    return port


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("worker", help="run a decision worker (faust-streaming)")
    p.add_argument("--worker-id", help=f"worker id recorded in decisions (default ${config.ENV_WORKER_ID} or host-pid)")
    p.add_argument("-l", "--loglevel", default="info")
    p.add_argument("--no-audit-sink", action="store_true", help="do not run the ClickHouse audit sink in this worker")
    p.add_argument("--metrics-port", type=_port, help=f"serve Prometheus metrics on this port (default "
                   f"${config.ENV_METRICS_PORT}; 0: none)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("sink", help="run the audit sink (pdx.audit → ClickHouse) as its own process")
    p.add_argument("--sink-id")
    p.add_argument("--metrics-port", type=_port, help=f"serve Prometheus metrics on this port (default "
                   f"${config.ENV_METRICS_PORT}; 0: none)")
    p.add_argument("-l", "--loglevel", default="info")
    p.set_defaults(func=cmd_sink)
