"""`pdx dev up|status|down [SERVICE]`: the local Kafka and ClickHouse."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from rich.console import Console
from rich.table import Table

from streams import config
from streams.console import say
from streams.contracts.signing import ensure_dev_keys
from streams.devservices.issuer import ensure_dev_issuer
from streams.devservices.secure import PRINCIPALS
from streams.devservices.services import SERVICES, DevStack, Ports
from streams.errors import UserError


def _stack(args: argparse.Namespace) -> DevStack:
    cfg = config.load()
    return DevStack(Path(args.state_dir) if args.state_dir else cfg.state_dir, cfg)


def _names(args: argparse.Namespace) -> tuple[str, ...]:
    return (args.service,) if args.service else SERVICES


def cmd_up(args: argparse.Namespace) -> int:
    stack = _stack(args)
    if args.secure and args.brokers and args.brokers > 1:
        raise UserError(
            f"--secure runs one broker only: use `pdx dev up --secure` or `pdx dev up --brokers {args.brokers}`, "
            "not both"
        )
    requested = Ports.free() if args.free_ports else Ports.from_settings(config.load())
    for attr in ("kafka", "kafka_controller", "clickhouse_http", "clickhouse_tcp"):
        value = getattr(args, f"{attr}_port", None)
        if value:
            setattr(requested, attr, value)
    if args.brokers and args.brokers > 1 and not args.free_ports:
        # nodes 2..N next to node 1's ports: 9094/9095, 9096/9097 by default (PDX_KAFKA_PORT moves them all)
        base = max(requested.kafka, requested.kafka_controller) + 1
        requested.more_brokers = [(base + 2 * i, base + 2 * i + 1) for i in range(args.brokers - 1)]
    ports = stack.up(_names(args), requested, secure_mode=args.secure, brokers=args.brokers)
    dev_cfg = config.load().replace(state_dir=stack.state_dir)
    ensure_dev_keys(dev_cfg)  # state is signed: dev keys, see `pdx keys`
    ensure_dev_issuer(dev_cfg)  # a dev workload-token issuer the workers trust (streams/devservices/issuer.py)
    if args.print_env:
        _print_env(stack.env(ports, args.principal))
    else:
        kafka = (f"Kafka at {ports.bootstrap}" + (f" ({ports.brokers} brokers)" if ports.brokers > 1 else "")
                 + (" (SASL_SSL)" if stack.secure_mode else ""))
        say(
            f"pdx dev: {kafka}, ClickHouse at http://127.0.0.1:{ports.clickhouse_http} "
            f"(state in {stack.state_dir}); stop with `pdx dev down`"
        )
    return 0


def _print_env(env: dict[str, str]) -> None:
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")


def cmd_secure_files(args: argparse.Namespace) -> int:
    """Generate the dev CA, broker certificate, SCRAM passwords and ACL script without starting anything (what
    compose.secure.yaml mounts from <state_dir>/secure)."""
    from streams.devservices import secure

    stack = _stack(args)
    files = secure.ensure_all(stack.state_dir)
    written = secure.write_compose_files(files, config.load().app_id)
    say(f"pdx dev: secure files in {files.home} ({', '.join(p.name for p in written)}, ca.pem, broker.pem)")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Print the `export PDX_...` lines for the running stack, as ``principal`` in secure mode."""
    stack = _stack(args)
    _print_env(stack.env(principal=args.principal))
    return 0


def status_rows(stack: DevStack, names: tuple[str, ...]) -> list[dict[str, object]]:
    ports = stack.ports()
    rows: list[dict[str, object]] = []
    for name in names:
        pid = stack.running_pid(name)
        if name == "kafka" and ports.brokers > 1:
            rows += _cluster_rows(stack, ports)
            continue
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


def _cluster_rows(stack: DevStack, ports: Ports) -> list[dict[str, object]]:
    """A multi-broker Kafka: the row ``kafka`` is the cluster (healthy when the metadata lists every broker, with
    node 1's pid and port), then one row per node, ``kafka-node-N`` (healthy when its process runs and its port
    accepts connections)."""
    from streams.devservices import procs

    pids = stack.kafka_pids(ports)
    ok, detail = stack.health("kafka", ports) if any(pids.values()) else (False, "not running")
    rows: list[dict[str, object]] = [
        {"service": "kafka", "healthy": ok, "pid": pids[1], "port": ports.kafka,
         "detail": f"{detail} ({ports.brokers}-node cluster, bootstrap {ports.bootstrap})",
         "log": str(stack.node_log_file(1))}
    ]
    for node, port, _ in ports.kafka_nodes():
        up = pids[node] is not None and procs.port_open(port)
        rows.append({"service": f"kafka-node-{node}", "healthy": up, "pid": pids[node], "port": port,
                     "detail": "listening" if up else ("not listening" if pids[node] else "not running"),
                     "log": str(stack.node_log_file(node))})
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


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dev = sub.add_parser("dev", help="local Kafka and ClickHouse for the demo and tests")
    dev_sub = dev.add_subparsers(dest="dev_command", metavar="up|status|down|env|secure-files|token", required=True)
    for name, func, help_text in (
        ("up", cmd_up, "start the local services (idempotent)"),
        ("status", cmd_status, "check health for real; exit 1 if anything is down"),
        ("down", cmd_down, "stop the local services started from this state dir"),
        ("env", cmd_env, "print `export PDX_...` lines for the running stack (--principal in secure mode)"),
        ("secure-files", cmd_secure_files, "generate the CA, certificates and SCRAM passwords (compose.secure.yaml)"),
    ):
        p = dev_sub.add_parser(name, help=help_text)
        if name not in ("env", "secure-files"):
            p.add_argument("service", nargs="?", choices=SERVICES, help="only this service")
        p.add_argument(
            "--state-dir", help=f"state directory (default ${config.ENV_STATE_DIR} or {config.DEFAULT_STATE_DIR})"
        )
        p.set_defaults(func=func)
        if name in ("up", "env"):
            p.add_argument(
                "--principal",
                choices=PRINCIPALS,
                help="secure mode: the Kafka principal whose login the printed variables carry (default pdx-admin)",
            )
        if name == "up":
            p.add_argument(
                "--secure",
                action="store_true",
                help="Kafka with SASL_SSL (SCRAM-SHA-512), a dev CA and ACLs per pdx principal",
            )
            p.add_argument(
                "--brokers",
                type=int,
                help="Kafka nodes (combined broker+controller, one KRaft quorum); 3 for a replicated cluster "
                "(default: 1, or as many as already run)",
            )
            p.add_argument("--free-ports", action="store_true", help="pick free ports instead of the defaults")
            p.add_argument("--print-env", action="store_true", help="print `export PDX_...` lines for the chosen ports")
            p.add_argument("--kafka-port", type=int)
            p.add_argument("--kafka-controller-port", type=int)
            p.add_argument("--clickhouse-http-port", type=int)
            p.add_argument("--clickhouse-tcp-port", type=int)
        if name == "status":
            p.add_argument("--json", action="store_true", help="print JSON")
    from streams.cli.dev_token import add_parser

    add_parser(dev_sub)
