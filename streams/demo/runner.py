"""`pdx demo`: the whole pipeline on the local stack, end to end through Kafka and ClickHouse.

Brings up Kafka and ClickHouse, creates topics, migrates the audit table, publishes the shipped policies,
loads the demo inventory, starts a worker, and runs the seed scenarios plus the kill switch through Kafka
with the PolicyClient SDK. Prints request → decision → reasons, then the audit rows that reached ClickHouse.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from streams import config as settings
from streams.console import say, step
from streams.errors import UserError

DEMO_INVENTORY = settings.REPO_ROOT / "examples" / "inventory.yaml"
DEMO_WORKER = "demo-worker-1"
AUDIT_SINK = "audit-sink-1"
TIMELINE_IDENTITY = "agent-analytics"


@dataclass
class Scenario:
    name: str
    identity: str
    action: str
    resource: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    expected: str = "deny"
    expected_code: str | None = None
    on_behalf_of: list[str] = field(default_factory=list)


def _fresh_token() -> dict[str, Any]:
    return {"token_issued_at": datetime.now(UTC) - timedelta(minutes=2)}


def scenarios(in_change_window: bool) -> list[Scenario]:
    prod_db = {"id": "orders-db", "type": "database", "environment": "production", "sensitivity": "restricted"}
    secret = {
        "id": "payments/deploy-key",
        "type": "secret",
        "environment": "production",
        "sensitivity": "restricted",
        "repository": "payments-service",
    }
    api = {"id": "invoices-api", "type": "api", "environment": "production", "sensitivity": "confidential"}
    config = {"id": "feature-flags", "type": "config", "environment": "production", "sensitivity": "internal"}
    pipeline = {"id": "release-prod", "type": "pipeline", "environment": "production"}
    return [
        Scenario(
            "1a agent → prod DB, tagged, time-bounded",
            "agent-analytics",
            "db:connect",
            prod_db,
            {"requested_ttl_s": 900},
            "allow",
            "agent_production_time_bounded",
            ["alice"],
        ),
        Scenario(
            "1b agent → prod DB, not tagged for prod",
            "agent-intern",
            "db:connect",
            prod_db,
            {"requested_ttl_s": 900},
            "deny",
            "agent_not_tagged_for_production",
            ["alice"],
        ),
        Scenario(
            "1c agent → prod DB, no time bound",
            "agent-analytics",
            "db:connect",
            prod_db,
            {},
            "deny",
            "time_bound_required",
            ["alice"],
        ),
        Scenario(
            "2a deploy SA → secret, approved repo"
            + (" (in change window)" if in_change_window else " (outside change window)"),
            "sa-deploy-payments",
            "secrets:read",
            secret,
            {},
            "allow" if in_change_window else "deny",
            "deployment_secret_in_window" if in_change_window else "outside_change_window",
        ),
        Scenario(
            "2b deploy SA → secret, repo not approved",
            "sa-deploy-payments",
            "secrets:read",
            {**secret, "id": "ledger/deploy-key", "repository": "ledger-service"},
            {},
            "deny",
            "repository_not_approved",
        ),
        Scenario(
            "3a m2m API call, internal net, fresh token",
            "svc-billing",
            "api:call",
            api,
            {"source_ip": "10.20.30.40", **_fresh_token()},
            "allow",
            "m2m_call_allowed",
        ),
        Scenario(
            "3b m2m API call from the internet",
            "svc-billing",
            "api:call",
            api,
            {"source_ip": "203.0.113.7", **_fresh_token()},
            "deny",
            "untrusted_network",
        ),
        Scenario(
            "3c m2m API call with a 2h-old token",
            "svc-billing",
            "api:call",
            api,
            {"source_ip": "10.20.30.40", "token_issued_at": datetime.now(UTC) - timedelta(hours=2)},
            "deny",
            "stale_token",
        ),
        Scenario(
            "4a agent reads config", "agent-config-bot", "config:read", config, {}, "allow", "config_read", ["alice"]
        ),
        Scenario(
            "4b agent writes config, no approval",
            "agent-config-bot",
            "config:write",
            config,
            {},
            "step_up",
            "approval_required",
            ["alice"],
        ),
        Scenario(
            "4c agent writes config, pre-approved",
            "agent-config-bot",
            "config:write",
            {**config, "id": "rate-limits"},
            {},
            "allow",
            "config_write_preapproved",
            ["alice"],
        ),
        Scenario(
            "5a privileged release, stale credential",
            "wf-release-legacy",
            "deploy:release",
            pipeline,
            {},
            "step_up",
            "credential_unrotated",
        ),
        Scenario(
            "5b privileged release, rotated credentials",
            "wf-release-main",
            "deploy:release",
            pipeline,
            {},
            "allow",
            "privileged_release",
        ),
        Scenario(
            "unknown identity",
            "agent-nobody-knows",
            "db:connect",
            prod_db,
            {"requested_ttl_s": 60},
            "deny",
            "unknown_identity",
        ),
    ]


def in_change_window(now: datetime) -> bool:
    """Whether the shipped `change-window` schedule is open now, asked of the engine itself."""
    from streams.model import AccessRequest, Resource
    from streams.model.inventory_file import read_inventory
    from streams.policy import compile_bundle, evaluate, load_policy_dir

    bundle = compile_bundle(load_policy_dir(settings.POLICIES_DIR).to_bundle_content())
    identity = next(i for i in read_inventory(DEMO_INVENTORY) if i.id == "sa-deploy-payments")
    request = AccessRequest(
        request_id="probe",
        occurred_at=now,
        identity_id=identity.id,
        action="secrets:read",
        resource=Resource(id="x", type="secret", repository="payments-service"),
    )
    return "outside_change_window" not in evaluate(bundle, request, identity, [], now).reason_codes


async def _run_scenarios(items: list[Scenario]) -> list[dict[str, Any]]:
    from streams.client import PolicyClient
    from streams.ops import grant_approval, update_identity

    await grant_approval("agent-config-bot", "config:write", "rate-limits", timedelta(hours=1), "alice@security")
    results: list[dict[str, Any]] = []
    async with PolicyClient(timeout_s=10.0) as client:
        await asyncio.sleep(0.5)  # let the approval reach the worker's table
        for sc in items:
            d = await client.check(sc.identity, sc.action, sc.resource, sc.context, on_behalf_of=sc.on_behalf_of)
            results.append(_result(sc, d))
        # Kill switch: suspend an identity that was just allowed; its next request is denied.
        await update_identity("agent-analytics", lambda i: setattr(i, "status", "suspended"))
        kill = Scenario(
            "kill switch: agent-analytics suspended",
            "agent-analytics",
            "db:connect",
            items[0].resource,
            {"requested_ttl_s": 900},
            "deny",
            "identity_suspended",
            ["alice"],
        )
        deadline = time.monotonic() + 10
        while True:
            d = await client.check(
                kill.identity, kill.action, kill.resource, kill.context, on_behalf_of=kill.on_behalf_of
            )
            if d.decision == "deny" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        results.append(_result(kill, d))
    return results


def _result(sc: Scenario, d: Any) -> dict[str, Any]:
    codes = [r.code for r in d.reasons]
    ok = d.decision == sc.expected and (sc.expected_code is None or sc.expected_code in codes)
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


def prepare_stack(worker_id: str = DEMO_WORKER, *, start_worker: bool = True) -> tuple[str, int, Path]:
    """Local stack up, topics, audit schema, shipped policies, demo inventory, a worker and an audit sink.

    Returns (bundle version, identities loaded, worker log). Shared by the demo and the benchmarks.
    """
    from streams.audit.migrate import migrate
    from streams.audit.store import connect
    from streams.devservices import procs
    from streams.devservices.services import DevStack, Ports
    from streams.devservices.workers import spawn_sink, spawn_worker, wait_until_ready
    from streams.kafka.topics import create_topics
    from streams.ops import load_inventory, publish_policies

    s = settings.load()
    stack = DevStack(s.state_dir)
    stack.up(("kafka", "clickhouse"), Ports.from_settings(s))
    asyncio.run(create_topics(s))
    with step("Migrating the ClickHouse audit schema"):
        migrate(connect(s.clickhouse_url), ttl_days=s.audit_ttl_days)
    with step("Publishing policies/ and loading examples/inventory.yaml"):
        version = asyncio.run(publish_policies(str(settings.POLICIES_DIR), "pdx-demo"))
        n_identities = asyncio.run(load_inventory(str(DEMO_INVENTORY), show_progress=False))
    pid_file = stack.state_dir / "workers" / f"{worker_id}.pid"
    log = stack.state_dir / "workers" / f"{worker_id}.log"
    if not start_worker:
        return version, n_identities, log
    if procs.read_pid(pid_file) is None:
        spawn_worker(stack.state_dir, worker_id, {settings.ENV_AUDIT_SINK: "off"})
    if procs.read_pid(stack.state_dir / "workers" / f"{AUDIT_SINK}.pid") is None:
        spawn_sink(stack.state_dir, AUDIT_SINK)
    with step("Waiting for the pdx worker to answer"):
        wait_until_ready(log)
    return version, n_identities, log


def run_demo(as_json: bool = False) -> int:
    from streams.audit.store import wait_for_audit_rows

    version, n_identities, log = prepare_stack()
    window = in_change_window(datetime.now(UTC))
    with step("Running the scenarios through Kafka"):
        results = asyncio.run(_run_scenarios(scenarios(window)))
    with step("Waiting for the audit records to reach ClickHouse"):
        audit_rows = wait_for_audit_rows(len(results), request_ids=[r["request_id"] for r in results])
    ok = all(r["ok"] for r in results) and audit_rows == len(results)
    timeline, report = _investigate(TIMELINE_IDENTITY)
    if as_json:
        print(
            json.dumps(
                {
                    "bundle_version": version,
                    "identities": n_identities,
                    "audit_rows": audit_rows,
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


def _investigate(identity: str) -> tuple[list[dict[str, Any]], Path]:
    """An incident responder's view: one identity's timeline, and the analysts' risk report."""
    from streams.audit.queries import Audit
    from streams.audit.report import build_report_data, render_html
    from streams.audit.store import connect

    s = settings.load()
    audit = Audit(connect(s.clickhouse_url))
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
