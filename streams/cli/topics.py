"""`pdx topics create`: create pdx's topics idempotently."""

from __future__ import annotations

import argparse
import asyncio
import sys

from streams import config


def cmd_topics_create(args: argparse.Namespace) -> int:
    from streams.kafka.topics import create_topics

    result = asyncio.run(create_topics(config.load(), args.request_partitions, args.decision_partitions))
    for topic, state in result.items():
        print(f"{topic}: {state}", file=sys.stderr if args.quiet else sys.stdout)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    topics = sub.add_parser("topics", help="Kafka topics")
    t_sub = topics.add_subparsers(dest="topics_command", metavar="create", required=True)
    p = t_sub.add_parser("create", help="create pdx topics (idempotent)")
    p.add_argument("--request-partitions", type=int, help="partitions of requests, inventory, approvals, audit")
    p.add_argument("--decision-partitions", type=int, help="partitions of the reply topic")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_topics_create)
