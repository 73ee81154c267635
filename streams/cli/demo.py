"""`pdx demo`: the end-to-end demo on the local stack."""

from __future__ import annotations

import argparse


def cmd_demo(args: argparse.Namespace) -> int:
    from streams import config
    from streams.demo.runner import run_demo

    return run_demo(config.load(), as_json=args.json)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("demo", help="the end-to-end demo on the local stack")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(func=cmd_demo)
