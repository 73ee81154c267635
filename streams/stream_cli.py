"""CLI of the decision pipeline: worker, policy publish, inventory, approvals, check, and the demo."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streams import settings
from streams.devservices import procs
from streams.devservices.progress import say
from streams.errors import UserError, kafka_unreachable

# ---- worker -------------------------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    if args.worker_id:
        os.environ[settings.ENV_WORKER_ID] = args.worker_id
    if args.no_audit_sink:
        os.environ[settings.ENV_AUDIT_SINK] = "off"
    _preflight(settings.load())
    from streams.app import app

    sys.argv = ["pdx worker", "worker", "-l", args.loglevel, "--without-web"]
    app.main()
    return 0


def _preflight(s: settings.Settings) -> None:
    """Fail with one clear line instead of a worker that logs connection errors forever."""
    from streams.devservices.services import kafka_health
    from streams.devservices.topics import missing_topics

    ok, detail = kafka_health(s.kafka_bootstrap, timeout_s=10.0)
    if not ok:
        raise kafka_unreachable(s.kafka_bootstrap, detail)
    missing = asyncio.run(missing_topics(s.kafka_bootstrap))
    if missing:
        raise UserError(f"topics {', '.join(missing)} do not exist: run `pdx topics create` first")


def cmd_sink(args: argparse.Namespace) -> int:
    import logging
    import socket

    from streams.sink import AuditSink

    logging.basicConfig(level=args.loglevel.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    sink_id = args.sink_id or f"{socket.gethostname()}-{os.getpid()}"
    try:
        asyncio.run(AuditSink(settings.load(), sink_id).run())
    except KeyboardInterrupt:
        pass
    return 0


def _spawn_pdx(state_dir: Path, name: str, args: list[str], env: dict[str, str] | None = None) -> tuple[int, Path]:
    """Start `pdx ARGS` in the background, pid and log under state_dir/workers (`pdx dev down` stops them)."""
    home = state_dir / "workers"
    home.mkdir(parents=True, exist_ok=True)
    log = home / f"{name}.log"
    pid = procs.spawn(
        [sys.executable, "-m", "streams.cli", *args],
        cwd=settings.REPO_ROOT,
        log_file=log,
        pid_file=home / f"{name}.pid",
        env=env,
    )
    return pid, log


def spawn_sink(state_dir: Path, sink_id: str) -> tuple[int, Path]:
    """Start `pdx sink` in the background; returns (pid, log)."""
    return _spawn_pdx(state_dir, sink_id, ["sink", "--sink-id", sink_id])


def spawn_worker(state_dir: Path, worker_id: str, extra_env: dict[str, str] | None = None) -> tuple[int, Path]:
    """Start `pdx worker` in the background; returns (pid, log). It writes <log>.ready when deciding."""
    ready = state_dir / "workers" / f"{worker_id}.ready"
    ready.unlink(missing_ok=True)
    env = {settings.ENV_WORKER_ID: worker_id, settings.ENV_READY_FILE: str(ready), **(extra_env or {})}
    return _spawn_pdx(state_dir, worker_id, ["worker", "--worker-id", worker_id], env)


def wait_until_ready(log: Path, timeout_s: float = 180.0) -> None:
    """Block until the worker started by spawn_worker says it is deciding (state loaded, partitions assigned).

    Why a file and not a probe request: a probe would be a real, audited decision about a fake identity,
    and would show up in investigators' timelines and analysts' risk reports.
    """
    ready = log.with_suffix(".ready")
    pid_file = log.with_suffix(".pid")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready.exists():
            return
        if procs.read_pid(pid_file) is None:
            raise UserError(f"the pdx worker exited during start. Last lines of {log}:\n{procs.tail(log)}")
        time.sleep(0.1)
    raise UserError(f"the pdx worker was not ready within {timeout_s:.0f}s. Last lines of {log}:\n{procs.tail(log)}")


def register_top(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("worker", help="run a decision worker (faust-streaming)")
    p.add_argument(
        "--worker-id", help=f"worker id recorded in decisions (default ${settings.ENV_WORKER_ID} or host-pid)"
    )
    p.add_argument("-l", "--loglevel", default="info")
    p.add_argument("--no-audit-sink", action="store_true", help="do not run the ClickHouse audit sink in this worker")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("sink", help="run the audit sink (pdx.audit → ClickHouse) as its own process")
    p.add_argument("--sink-id")
    p.add_argument("-l", "--loglevel", default="info")
    p.set_defaults(func=cmd_sink)

    p = sub.add_parser("approve", help="grant a time-bounded pre-approval")
    p.add_argument("--identity", required=True)
    p.add_argument("--action", required=True, help="action or glob, e.g. config:write")
    p.add_argument("--resource", required=True, help="resource id or glob")
    p.add_argument("--ttl", default="1h", help="how long the approval is valid: 30m, 4h, 2d (default 1h)")
    p.add_argument("--by", default=None, help="who approves (default: current user)")
    p.add_argument("--id", default=None, help="approval id (default: generated)")
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser("check", help="send one access request through Kafka and print the decision")
    p.add_argument("identity")
    p.add_argument("action")
    p.add_argument("--resource-id", required=True)
    p.add_argument("--resource-type", required=True)
    p.add_argument("--environment")
    p.add_argument("--sensitivity", choices=["public", "internal", "confidential", "restricted"])
    p.add_argument("--repository")
    p.add_argument("--ttl", type=int, help="requested TTL in seconds (context.requested_ttl_s)")
    p.add_argument("--source-ip")
    p.add_argument("--token-age", type=int, help="token issued this many seconds ago")
    p.add_argument("--approval-id")
    p.add_argument("--on-behalf-of", action="append", default=[])
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("demo", help="the end-to-end demo on the local stack")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(func=cmd_demo)


# ---- policy publish -----------------------------------------------------------------------------


async def publish_policies(directory: str, published_by: str) -> str:
    from streams.kafka_io import publish_bundle, start_producer
    from streams.policy import bundle_version, load_policy_dir

    policy_set = load_policy_dir(directory)
    content = policy_set.to_bundle_content()
    version = bundle_version(content)
    producer = await start_producer()
    try:
        await publish_bundle(producer, content, version, published_by)
    finally:
        await producer.stop()
    return version


def cmd_publish(args: argparse.Namespace) -> int:
    version = asyncio.run(publish_policies(args.directory, args.by or getpass.getuser()))
    print(version)
    say(f"published policy bundle {version[:12]} from {args.directory} to {settings.TOPIC_POLICIES}")
    return 0


def register_policy(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("publish", help="validate, bundle and publish a policy directory; prints the version")
    p.add_argument("directory", nargs="?", default=str(settings.POLICIES_DIR))
    p.add_argument("--by", help="publisher recorded in the bundle (default: current user)")
    p.set_defaults(func=cmd_publish)


# ---- inventory ----------------------------------------------------------------------------------


async def load_inventory(path: str, show_progress: bool = True) -> int:
    from rich.progress import Progress

    from streams.inventory.files import read_inventory
    from streams.kafka_io import put_identities, start_producer

    identities = read_inventory(path)
    producer = await start_producer(linger_ms=20)
    try:
        chunk = 1000
        with Progress(transient=True, disable=not show_progress or not sys.stderr.isatty()) as progress:
            task = progress.add_task(f"loading {path}", total=len(identities))
            for i in range(0, len(identities), chunk):
                await put_identities(producer, [x.to_dict() for x in identities[i : i + chunk]])
                progress.advance(task, min(chunk, len(identities) - i))
    finally:
        await producer.stop()
    return len(identities)


async def update_identity(identity_id: str, change: Any) -> Any:
    """Read an identity's latest record from the compacted inventory topic, change it, produce it back."""
    from streams import wire
    from streams.inventory.models import Identity
    from streams.kafka_io import latest_value, put_identities, start_producer

    raw = await latest_value(settings.TOPIC_INVENTORY, identity_id)
    if raw is None:
        raise UserError(f"identity {identity_id!r} is not in the inventory ({settings.TOPIC_INVENTORY})")
    identity = Identity.from_dict(wire.decode_as("Identity", raw))
    change(identity)
    identity.updated_at = datetime.now(UTC)
    producer = await start_producer()
    try:
        await put_identities(producer, [identity.to_dict()])
    finally:
        await producer.stop()
    return identity


def cmd_inventory_load(args: argparse.Namespace) -> int:
    n = asyncio.run(load_inventory(args.file))
    say(f"loaded {n} identities from {args.file} into {settings.TOPIC_INVENTORY}")
    return 0


def cmd_inventory_suspend(args: argparse.Namespace) -> int:
    def suspend(identity: Any) -> None:
        identity.status = "decommissioned" if args.decommission else "suspended"

    identity = asyncio.run(update_identity(args.identity, suspend))
    say(f"{identity.id}: status {identity.status}; its next request is denied")
    return 0


def cmd_inventory_rotate(args: argparse.Namespace) -> int:
    def rotate(identity: Any) -> None:
        for cred in identity.credentials:
            if cred.id == args.credential:
                cred.rotated_at = datetime.now(UTC)
                cred.status = "active"
                return
        known = ", ".join(c.id for c in identity.credentials) or "none"
        raise UserError(f"identity {identity.id} has no credential {args.credential!r} (it has: {known})")

    identity = asyncio.run(update_identity(args.identity, rotate))
    say(f"{identity.id}: credential {args.credential} rotated")
    return 0


def register_inventory(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("load", help="load identities from a YAML or CSV file")
    p.add_argument("file")
    p.set_defaults(func=cmd_inventory_load)
    p = sub.add_parser("suspend", help="kill switch: suspend an identity (its next request is denied)")
    p.add_argument("identity")
    p.add_argument("--decommission", action="store_true", help="mark decommissioned instead of suspended")
    p.set_defaults(func=cmd_inventory_suspend)
    p = sub.add_parser("rotate", help="record that a credential was rotated now")
    p.add_argument("identity")
    p.add_argument("credential")
    p.set_defaults(func=cmd_inventory_rotate)


# ---- approvals and check ------------------------------------------------------------------------


def parse_ttl(text: str) -> timedelta:
    """'30m', '4h', '2d', '45s' or plain seconds; must be positive and representable."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip()
    try:
        seconds = float(text[:-1]) * units[text[-1]] if text and text[-1] in units else float(text)
        ttl = timedelta(seconds=seconds)
    except (ValueError, IndexError, OverflowError):
        raise UserError(f"--ttl {text!r}: give a duration like 30m, 4h or 2d") from None
    if ttl <= timedelta(0):
        raise UserError(f"--ttl {text!r}: the duration must be positive")
    return ttl


async def grant_approval(
    identity: str, action: str, resource: str, ttl: timedelta, by: str, approval_id: str | None = None
) -> dict[str, Any]:
    from streams.kafka_io import put_approval, start_producer

    now = datetime.now(UTC)
    approval = {
        "approval_id": approval_id or f"apr-{uuid.uuid4().hex[:12]}",
        "identity_id": identity,
        "action": action,
        "resource_id": resource,
        "approved_by": by,
        "granted_at": now,
        "expires_at": now + ttl,
        "revoked": False,
    }
    producer = await start_producer()
    try:
        await put_approval(producer, approval)
    finally:
        await producer.stop()
    return approval


def cmd_approve(args: argparse.Namespace) -> int:
    approval = asyncio.run(
        grant_approval(
            args.identity, args.action, args.resource, parse_ttl(args.ttl), args.by or getpass.getuser(), args.id
        )
    )
    print(approval["approval_id"])
    say(f"approved {args.identity} for {args.action} on {args.resource} until {approval['expires_at'].isoformat()}")
    return 0


def decision_json(decision: Any) -> dict[str, Any]:
    d: dict[str, Any] = decision.to_dict()
    d["evaluated_at"] = decision.evaluated_at.isoformat()
    return d


def cmd_check(args: argparse.Namespace) -> int:
    from streams.client import PolicyClient

    resource = {
        "id": args.resource_id,
        "type": args.resource_type,
        "environment": args.environment,
        "sensitivity": args.sensitivity,
        "repository": args.repository,
    }
    context: dict[str, Any] = {
        "requested_ttl_s": args.ttl,
        "source_ip": args.source_ip,
        "approval_id": args.approval_id,
    }
    if args.token_age is not None:
        context["token_issued_at"] = datetime.now(UTC) - timedelta(seconds=args.token_age)

    async def run() -> Any:
        async with PolicyClient(timeout_s=args.timeout) as client:
            return await client.check(
                args.identity, args.action, resource, context, args.timeout, on_behalf_of=args.on_behalf_of
            )

    decision = asyncio.run(run())
    if decision.reason_codes == ["pdp_timeout"]:
        say("no decision arrived in time: is a worker running? (`pdx worker`, or `pdx demo` starts one)")
    if args.json:
        print(json.dumps(decision_json(decision), indent=2))
    else:
        print(f"{decision.decision.upper()}  (request {decision.request_id}, bundle {decision.bundle_version[:12]})")
        for r in decision.reasons:
            print(f"  reason  {r.code}: {r.message}" + (f"  [{r.policy}/{r.rule}]" if r.rule else ""))
        for k, v in decision.obligations.items():
            print(f"  obligation  {k} = {v}")
    return {"allow": 0, "step_up": 3}.get(decision.decision, 1)


def register_bench(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from streams.bench_stream import register

    register(sub)


def cmd_demo(args: argparse.Namespace) -> int:
    from streams.demo import run_demo

    return run_demo(as_json=args.json)
