"""The ``pdx`` command.

Each feature area contributes its subcommands through a ``register(subparsers)`` function that adds parsers
with ``set_defaults(func=handler)``; a handler takes the parsed ``argparse.Namespace`` and returns an exit code.
This module only wires them together and turns expected errors into one clear line (never a traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from streams import __version__
from streams.errors import UserError


def _registrars() -> list[tuple[str, Callable[[argparse._SubParsersAction], None]]]:  # type: ignore[type-arg]
    """Top-level groups and the modules that fill them (imported lazily so `pdx --help` stays fast)."""
    from streams.devservices.cli import register_dev, register_topics

    out: list[tuple[str, Callable[[argparse._SubParsersAction], None]]] = [  # type: ignore[type-arg]
        ("dev", register_dev),
        ("topics", register_topics),
    ]
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdx", description="pdx — policy decisions for non-human identities")
    parser.add_argument("--version", action="version", version=f"pdx {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction] = {}  # type: ignore[type-arg]
    for name, help_text in (
        ("policy", "validate, lint, test, explain, bundle and publish policies"),
        ("bench", "benchmarks that print JSON"),
        ("audit", "investigate recorded decisions in ClickHouse"),
        ("report", "analyst reports"),
        ("inventory", "load and change identity inventory"),
    ):
        p = sub.add_parser(name, help=help_text)
        groups[name] = p.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")
        p.set_defaults(func=lambda _a, _p=p: (_p.print_help(), 2)[1])
    for _name, register in _registrars():
        register(sub)
    _register_optional(sub, groups)
    return parser


def _register_optional(sub: argparse._SubParsersAction, groups: dict[str, argparse._SubParsersAction]) -> None:  # type: ignore[type-arg]
    """Subcommands of feature modules; each registers into the group(s) it serves."""
    import importlib

    wiring: list[tuple[str, str, str]] = [
        # (module, function, group or "" for top level)
        ("streams.policy.cli", "register", "policy"),
        ("streams.policy.bench", "register", "bench"),
        ("streams.audit.cli", "register_audit", "audit"),
        ("streams.audit.cli", "register_report", "report"),
        ("streams.audit.impact", "register", "policy"),
        ("streams.audit.bench", "register", "bench"),
        ("streams.stream_cli", "register_top", ""),
        ("streams.stream_cli", "register_policy", "policy"),
        ("streams.stream_cli", "register_inventory", "inventory"),
        ("streams.stream_cli", "register_bench", "bench"),
    ]
    for module_name, func_name, group in wiring:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                continue  # feature not present in this build
            raise
        getattr(module, func_name)(groups[group] if group else sub)


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
