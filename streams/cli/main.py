"""The ``pdx`` command.

Each module in :data:`COMMANDS` adds its command (or command group) through ``register(subparsers)``, with
``set_defaults(func=handler)``; a handler takes the parsed ``argparse.Namespace`` and returns an exit code.
This module only wires them together and turns expected errors into one clear line (never a traceback).
Modules import their heavy dependencies inside the handlers, so `pdx --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from streams import __version__
from streams.errors import UserError

#: Every top-level command, in `pdx --help` order: one module each, with ``register(subparsers)``.
#: Adding a command is one module plus one line here.
COMMANDS = (
    "worker",
    "topics",
    "policy",
    "inventory",
    "approve",
    "approvals",
    "delegations",
    "keys",
    "issuers",
    "check",
    "config_cmd",
    "audit",
    "report",
    "demo",
    "bench",
    "dev",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdx", description="pdx — policy decisions for non-human identities")
    parser.add_argument("--version", action="version", version=f"pdx {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"streams.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except UserError as exc:
        print(f"pdx: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pdx: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
