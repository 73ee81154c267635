"""`pdx dev up|status|down [SERVICE]` and `pdx topics create`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from streams import settings
from streams.devservices.progress import say
from streams.devservices.services import SERVICES, DevStack, Ports


def _stack(args: argparse.Namespace) -> DevStack:
    return DevStack(Path(args.state_dir) if args.state_dir else settings.load().state_dir)


def _names(args: argparse.Namespace) -> tuple[str, ...]:
    return (args.service,) if args.service else SERVICES


def cmd_up(args: argparse.Namespace) -> int:
    stack = _stack(args)
    requested = Ports.free() if args.free_ports else Ports.from_settings(settings.load())
    for attr in ("kafka", "kafka_controller", "clickhouse_http", "clickhouse_tcp"):
        value = getattr(args, f"{attr}_port", None)
        if value:
            setattr(requested, attr, value)
    ports = stack.up(_names(args), requested)
    if args.print_env:
        for key, value in ports.env().items():
            print(f"export {key}={value}")
    else:
        say(
            f"pdx dev: Kafka at 127.0.0.1:{ports.kafka}, ClickHouse at http://127.0.0.1:{ports.clickhouse_http} "
            f"(state in {stack.state_dir}); stop with `pdx dev down`"
        )
    return 0


def status_rows(stack: DevStack, names: tuple[str, ...]) -> list[dict[str, object]]:
    ports = stack.ports()
    rows: list[dict[str, object]] = []
    for name in names:
        pid = stack.running_pid(name)
        ok, detail = stack.health(name, ports) if pid else (False, "not running")
        port = ports.kafka if name == "kafka" else ports.clickhouse_http
        rows.append(
            {
                "service": name,
                "healthy": ok,
                "pid": pid,
                "port": port,
                "detail": detail,
                "log": str(stack.log_file(name)),
            }
        )
    return rows


def cmd_status(args: argparse.Namespace) -> int:
    stack = _stack(args)
    rows = status_rows(stack, _names(args))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        table = Table(title=f"pdx dev services ({stack.state_dir})")
        for col in ("service", "status", "pid", "port", "detail"):
            table.add_column(col)
        for r in rows:
            table.add_row(
                str(r["service"]),
                "[green]healthy[/green]" if r["healthy"] else "[red]down[/red]",
                str(r["pid"] or "-"),
                str(r["port"]),
                str(r["detail"]),
            )
        Console().print(table)
    return 0 if all(r["healthy"] for r in rows) else 1


def cmd_down(args: argparse.Namespace) -> int:
    stack = _stack(args)
    stopped = stack.down(_names(args))
    say(f"pdx dev: stopped {', '.join(stopped)}" if stopped else "pdx dev: nothing was running")
    return 0


def register_dev(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dev = sub.add_parser("dev", help="local Kafka and ClickHouse for the demo and tests")
    dev_sub = dev.add_subparsers(dest="dev_command", metavar="up|status|down", required=True)
    for name, func, help_text in (
        ("up", cmd_up, "start the local services (idempotent)"),
        ("status", cmd_status, "check health for real; exit 1 if anything is down"),
        ("down", cmd_down, "stop the local services started from this state dir"),
    ):
        p = dev_sub.add_parser(name, help=help_text)
        p.add_argument("service", nargs="?", choices=SERVICES, help="only this service")
        p.add_argument(
            "--state-dir", help=f"state directory (default ${settings.ENV_STATE_DIR} or {settings.DEFAULT_STATE_DIR})"
        )
        p.set_defaults(func=func)
        if name == "up":
            p.add_argument("--free-ports", action="store_true", help="pick free ports instead of the defaults")
            p.add_argument("--print-env", action="store_true", help="print `export PDX_...` lines for the chosen ports")
            p.add_argument("--kafka-port", type=int)
            p.add_argument("--kafka-controller-port", type=int)
            p.add_argument("--clickhouse-http-port", type=int)
            p.add_argument("--clickhouse-tcp-port", type=int)
        if name == "status":
            p.add_argument("--json", action="store_true", help="print JSON")


def cmd_topics_create(args: argparse.Namespace) -> int:
    from streams.devservices.topics import create_topics

    s = settings.load()
    result = asyncio.run(
        create_topics(
            s.kafka_bootstrap,
            args.request_partitions or s.request_partitions,
            args.decision_partitions or s.decision_partitions,
        )
    )
    for topic, state in result.items():
        print(f"{topic}: {state}", file=sys.stderr if args.quiet else sys.stdout)
    return 0


def register_topics(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    topics = sub.add_parser("topics", help="Kafka topics")
    t_sub = topics.add_subparsers(dest="topics_command", metavar="create", required=True)
    p = t_sub.add_parser("create", help="create pdx topics (idempotent)")
    p.add_argument("--request-partitions", type=int, help="partitions of requests, inventory, approvals, audit")
    p.add_argument("--decision-partitions", type=int, help="partitions of the reply topic")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_topics_create)
