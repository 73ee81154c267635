"""`pdx demo`: the whole pipeline on the local stack, end to end through Kafka and ClickHouse.

Brings up Kafka and ClickHouse, creates topics, migrates the audit table, publishes the shipped policies,
loads the demo inventory, starts a worker, and runs the seed scenarios plus the kill switch through Kafka
with the PolicyClient SDK. Prints request → decision → reasons, then the audit rows that reached ClickHouse.

The scenarios are data: streams/demo/scenarios.yaml, in the `pdx policy test` case shape (scenario_file.py
loads and validates it; tests/unit/demo checks its expectations against the engine without Kafka).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from streams import config
from streams.console import say, step
from streams.demo.scenario_file import DemoScenarios, Scenario, load_scenarios
from streams.errors import UserError
from streams.model.durations import parse_duration_s

#: The checkout's demo inventory (tests); the demo itself asks config.require_demo_inventory(), which
#: also finds ./examples/inventory.yaml and says what is missing outside a checkout.
DEMO_INVENTORY = config.REPO_ROOT / "examples" / "inventory.yaml"
DEMO_WORKER = "demo-worker-1"
AUDIT_SINK = "audit-sink-1"
TIMELINE_IDENTITY = "agent-analytics"


def scenarios(in_change_window: bool) -> list[Scenario]:
    """The seed scenarios of streams/demo/scenarios.yaml (without the ``then:`` steps, which change state)."""
    return load_scenarios(in_change_window).cases


def in_change_window(now: datetime) -> bool:
    """Whether the shipped `change-window` schedule is open now, asked of the engine itself."""
    from streams.model import AccessRequest, Resource
    from streams.model.inventory_file import read_inventory
    from streams.policy import compile_bundle, evaluate, load_policy_dir

    bundle = compile_bundle(load_policy_dir(config.require_policies_dir("pdx demo")).to_bundle_content())
    inventory = config.require_demo_inventory("pdx demo")
    identity = next(i for i in read_inventory(inventory) if i.id == "sa-deploy-payments")
    request = AccessRequest(
        request_id="probe",
        occurred_at=now,
        identity_id=identity.id,
        action="secrets:read",
        resource=Resource(id="x", type="secret", repository="payments-service"),
    )
    return "outside_change_window" not in evaluate(bundle, request, identity, [], now).reason_codes


def scenario_token(cfg: config.Settings, sc: Any) -> str | None:
    """The scenario's workload token, minted now by the dev issuer of ``cfg`` (pdx dev up / the demo create it)."""
    if sc.token is None:
        return None
    from streams.devservices.issuer import mint

    return mint(cfg, sc.token)


async def _run_scenarios(cfg: config.Settings, demo: DemoScenarios) -> list[dict[str, Any]]:
    from streams.client import PolicyClient
    from streams.grants import record_grants
    from streams.ops import grant_approval, update_identity

    for a in demo.approvals:
        await grant_approval(a.identity_id, a.action, a.resource_id, a.expires_at - a.granted_at, a.approved_by,
                             approval_id=a.approval_id, cfg=cfg)
    await record_grants(cfg, demo.delegations, "pdx-demo")
    results: list[dict[str, Any]] = []
    async with PolicyClient(settings=cfg, timeout_s=10.0) as client:
        await asyncio.sleep(0.5)  # let the approvals and grants reach the worker's replicas
        for sc in demo.cases:
            if sc.approve is not None:  # a second person approves the step_up while the client waits
                approver = asyncio.create_task(_approve_when_opened(cfg, sc))
                d = await client.check(sc.identity, sc.action, sc.resource, sc.context,
                                       on_behalf_of=sc.on_behalf_of, token=scenario_token(cfg, sc),
                                       wait_for_approval=30)
                approver.cancel()
            else:
                d = await client.check(sc.identity, sc.action, sc.resource, sc.context,
                                       on_behalf_of=sc.on_behalf_of, token=scenario_token(cfg, sc))
            results.append(_result(sc, d))
        # Kill switch: suspend an identity that was just allowed; its next request is denied. The suspension
        # travels through Kafka, so ask again until the expected decision arrives (or 10 s pass).
        for sc in demo.then:
            if sc.suspend:
                await update_identity(sc.suspend, lambda i: setattr(i, "status", "suspended"), cfg=cfg)
            deadline = time.monotonic() + 10
            while True:
                d = await client.check(sc.identity, sc.action, sc.resource, sc.context,
                                       on_behalf_of=sc.on_behalf_of, token=scenario_token(cfg, sc))
                if d.decision == sc.expected or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
            results.append(_result(sc, d))
    return results


async def _approve_when_opened(cfg: config.Settings, sc: Scenario) -> None:
    """The demo's second person: grant the approval request the case's step_up opens, once it is pending."""
    from streams.grants import grant_request, pending

    assert sc.approve is not None
    since = datetime.now(UTC) - timedelta(seconds=1)  # not a request left open by an earlier run
    while True:
        for r in await pending(cfg):
            if (r.identity_id, r.action, r.resource_id) == (sc.identity, sc.action, sc.resource["id"]) and \
                    r.opened_at >= since:
                await grant_request(cfg, r.approval_request_id,
                                    timedelta(seconds=parse_duration_s(sc.approve.get("ttl", "30m"))),
                                    sc.approve["by"])
                return
        await asyncio.sleep(0.2)


def _result(sc: Scenario, d: Any) -> dict[str, Any]:
    codes = [r.code for r in d.reasons]
    ok = d.decision == sc.expected and all(code in codes for code in sc.expected_reasons)
    return {
        "name": sc.name,
        "identity": sc.identity,
        "action": sc.action,
        "resource": sc.resource["id"],
        "expected": sc.expected,
        "decision": d.decision,
        "reasons": codes,
        "ok": ok,
        "obligations": dict(d.obligations),
        "request_id": d.request_id,
        "worker_id": d.worker_id,
        "messages": [r.message for r in d.reasons],
    }


def prepare_stack(
    s: config.Settings, worker_id: str = DEMO_WORKER, *, start_worker: bool = True
) -> tuple[str, int, Path]:
    """Local stack up, topics, audit schema, shipped policies, demo inventory, a worker and an audit sink, as the
    settings ``s`` of the entry point say.

    Returns (bundle version, identities loaded, worker log). Shared by the demo and the benchmarks.
    """
    from streams.audit.migrate import migrate
    from streams.audit.store import connect
    from streams.contracts.signing import ensure_dev_keys
    from streams.devservices import procs
    from streams.devservices.issuer import ensure_dev_issuer
    from streams.devservices.services import DevStack, Ports
    from streams.devservices.workers import spawn_sink, spawn_worker, wait_until_ready
    from streams.kafka.topics import create_topics
    from streams.ops import load_inventory, publish_policies

    stack = DevStack(s.state_dir, s)
    stack.up(("kafka", "clickhouse"), Ports.from_settings(s))
    ensure_dev_keys(s)  # state is signed: dev keys under the state dir, the quick start stays two commands
    ensure_dev_issuer(s)  # and the demo's callers send workload tokens of a dev issuer the worker trusts
    asyncio.run(create_topics(s))
    with step("Migrating the ClickHouse audit schema"):
        migrate(connect(s.clickhouse_url, cfg=s, role="admin"), ttl_days=s.audit_ttl_days, cluster=s.clickhouse_cluster)
    with step("Publishing policies/ and loading examples/inventory.yaml"):
        version = asyncio.run(publish_policies(str(config.require_policies_dir("pdx demo")), "pdx-demo", cfg=s))
        inventory = config.require_demo_inventory("pdx demo")
        n_identities = asyncio.run(load_inventory(str(inventory), show_progress=False, cfg=s))
    pid_file = stack.state_dir / "workers" / f"{worker_id}.pid"
    log = stack.state_dir / "workers" / f"{worker_id}.log"
    if not start_worker:
        return version, n_identities, log
    if procs.read_pid(pid_file) is None:
        spawn_worker(stack.state_dir, worker_id, {config.ENV_AUDIT_SINK: "off"})
    if procs.read_pid(stack.state_dir / "workers" / f"{AUDIT_SINK}.pid") is None:
        spawn_sink(stack.state_dir, AUDIT_SINK)
    with step("Waiting for the pdx worker to answer"):
        wait_until_ready(log)
    return version, n_identities, log


def run_demo(cfg: config.Settings, as_json: bool = False) -> int:
    from streams.audit.store import wait_for_audit_rows

    load_scenarios(in_change_window=True)  # a bad scenarios.yaml fails here, before the stack comes up
    config.require_policies_dir("pdx demo")  # so does running it without policies/ or the inventory
    config.require_demo_inventory("pdx demo")
    version, n_identities, log = prepare_stack(cfg)
    window = in_change_window(datetime.now(UTC))
    # Loaded after the stack is up, so "now-2m" tokens are two minutes old when they are sent.
    with step("Running the scenarios through Kafka"):
        results = asyncio.run(_run_scenarios(cfg, load_scenarios(window)))
    with step("Waiting for the audit records to reach ClickHouse"):
        audit_rows = wait_for_audit_rows(len(results), request_ids=[r["request_id"] for r in results], cfg=cfg)
    with step("Verifying the audit trail's hash chains and signed checkpoints"):
        trail = _verify_trail(cfg)
    ok = all(r["ok"] for r in results) and audit_rows == len(results) and trail.ok
    timeline, report = _investigate(cfg, TIMELINE_IDENTITY)
    if as_json:
        print(
            json.dumps(
                {
                    "bundle_version": version,
                    "identities": n_identities,
                    "audit_rows": audit_rows,
                    "audit_verify": trail.to_json(limit=10),
                    "requests": len(results),
                    "timeline_identity": TIMELINE_IDENTITY,
                    "timeline": [
                        {
                            k: str(row.get(k))
                            for k in ("decided_at", "request_id", "action", "resource_id", "decision", "reason_codes")
                        }
                        for row in timeline
                    ],
                    "report": str(report),
                    "scenarios": [
                        {
                            k: r[k]
                            for k in ("name", "expected", "decision", "reasons", "ok", "request_id", "obligations")
                        }
                        for r in results
                    ],
                },
                indent=2,
            )
        )
    else:
        _print_table(results, version, audit_rows)
        _print_timeline(timeline)
        from streams.audit.verify import format_text

        for line in format_text(trail, limit=10):
            say(f"pdx audit verify: {line.strip()}")
    say(
        f"Risk report written to {report} (open it in a browser; it needs no network). "
        f"Investigate with `.venv/bin/pdx audit timeline --identity {TIMELINE_IDENTITY} --since 1h`."
    )
    say(
        f"The stack keeps running (worker log: {log}). Try `.venv/bin/pdx check agent-intern db:connect "
        "--resource-id orders-db --resource-type database --environment production --ttl 600`; "
        "stop everything with `.venv/bin/pdx dev down`."
    )
    if not ok:
        raise UserError("the demo's decisions or audit rows did not match what was expected (see above)")
    return 0


def _print_table(results: list[dict[str, Any]], version: str, audit_rows: int) -> None:
    console = Console()
    table = Table(title=f"pdx demo — bundle {version[:12]}", show_lines=False)
    for col in ("scenario", "identity → action on resource", "decision", "reasons / obligations", ""):
        table.add_column(col, overflow="fold")
    colour = {"allow": "green", "deny": "red", "step_up": "yellow"}
    for r in results:
        extra = "; ".join(f"{k}={v}" for k, v in r["obligations"].items())
        table.add_row(
            r["name"],
            f"{r['identity']} → {r['action']} on {r['resource']}",
            f"[{colour[r['decision']]}]{r['decision']}[/]",
            ", ".join(r["reasons"]) + (f"\n[dim]{extra}[/dim]" if extra else ""),
            "✓" if r["ok"] else f"✗ expected {r['expected']}",
        )
    console.print(table)
    console.print(f"Audit rows in ClickHouse for these {len(results)} requests: [bold]{audit_rows}[/bold]")


#: how long the demo waits for signed checkpoints to cover its records before verifying the trail
ANCHOR_WAIT_S = 15.0


def _verify_trail(s: config.Settings) -> Any:
    """`pdx audit verify --since 1h` on the demo's trail (an auditor's check that nothing was altered)."""
    from streams.audit.store import connect
    from streams.audit.verify import verify
    from streams.contracts import signing

    client, trusted = connect(s.clickhouse_url, cfg=s, role="reader"), signing.trusted_keys(s)
    # the worker checkpoints its chains every few seconds and the sink batches for a second: wait (a little)
    # until the signed checkpoints anchor the demo's records, so the check covers them too
    deadline = time.monotonic() + ANCHOR_WAIT_S
    while True:
        now = datetime.now(UTC)
        report = verify(client, config.CLICKHOUSE_DATABASE, now - timedelta(hours=1), now + timedelta(minutes=1),
                        trusted=trusted)
        if not report.ok or not report.not_yet_anchored or time.monotonic() >= deadline:
            return report
        time.sleep(1.0)


def _investigate(s: config.Settings, identity: str) -> tuple[list[dict[str, Any]], Path]:
    """An incident responder's view: one identity's timeline, and the analysts' risk report."""
    from streams.audit.queries import Audit
    from streams.audit.report import build_report_data, render_html
    from streams.audit.store import connect

    audit = Audit(connect(s.clickhouse_url, cfg=s, role="reader"))
    now = datetime.now(UTC)
    timeline = audit.timeline(identity, now - timedelta(hours=1), now + timedelta(minutes=1))
    report = s.state_dir / "report.html"
    report.write_text(render_html(build_report_data(audit, now - timedelta(days=7), now)), encoding="utf-8")
    return timeline, report


def _print_timeline(rows: list[dict[str, Any]]) -> None:
    table = Table(title=f"Timeline of {TIMELINE_IDENTITY} (last hour, from ClickHouse)")
    for col in ("decided_at", "action", "resource", "decision", "reasons"):
        table.add_column(col, overflow="fold")
    for row in rows:
        codes = row.get("reason_codes") or []
        reasons = ", ".join(codes) if isinstance(codes, list) else str(codes)
        table.add_row(
            str(row.get("decided_at"))[:23],
            str(row.get("action")),
            str(row.get("resource_id")),
            str(row.get("decision")),
            str(reasons),
        )
    Console().print(table)
