"""Top-level commands of the decision pipeline: `pdx demo` (more arrive with the stream worker)."""

from __future__ import annotations

import argparse

from streams import settings


def cmd_demo(args: argparse.Namespace) -> int:
    from streams.devservices.cli import cmd_status, cmd_topics_create
    from streams.devservices.services import DevStack, Ports

    stack = DevStack(settings.load().state_dir)
    stack.up(("kafka", "clickhouse"), Ports.from_settings(settings.load()))
    cmd_topics_create(argparse.Namespace(request_partitions=None, decision_partitions=None, quiet=True))
    return cmd_status(argparse.Namespace(state_dir=None, service=None, json=False))


def register_top(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="run the pdx demo on the local stack")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_demo)


def register_policy(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`pdx policy publish` arrives with the stream worker."""


def register_inventory(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`pdx inventory ...` arrives with the stream worker."""


def register_bench(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`pdx bench e2e|propagation` arrive with the stream worker."""
