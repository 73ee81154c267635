"""`pdx bench engine | e2e | drain | propagation | audit`: benchmarks that print JSON on stdout."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from streams.bench import audit, engine, stream

    group = sub.add_parser("bench", help="benchmarks that print JSON")
    bench = group.add_subparsers(dest="bench_command", metavar="SUBCOMMAND", required=True)
    engine.register(bench)
    stream.register(bench)
    audit.register(bench)
