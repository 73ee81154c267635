"""Faithful replay (issue 14): traffic replayed under the bundles it was decided with changes nothing.

A mixed stretch of real traffic through the worker — the seed scenarios (allows, denies, step-ups, a
pre-approved write, workload tokens, delegation), a suspended principal, and a bundle change half-way — is
replayed from ClickHouse with ``pdx policy impact --as-recorded``: each record under its own recorded bundle,
with the approvals and principal snapshots its audit record carries. Zero decisions may change. Replaying
without the recorded approvals must change the pre-approved write: the test can fail.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streams import config as settings
from streams.audit.impact import impact, load_candidate
from streams.audit.store import connect, wait_for_audit_rows
from streams.cli.main import main
from streams.client import PolicyClient
from streams.demo.runner import in_change_window, scenario_token, scenarios
from streams.ops import grant_approval, publish_policies, update_identity
from streams.policy.testing import policy_dir_with

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

FREEZE = """
name: replay-test-freeze
owner: tests
mode: enforce
controls: [SP800-207:PDP]
rules:
  - id: replay-test-no-rate-limit-writes
    effect: deny
    when:
      - action: "config:write"
      - resource.type: config
      - resource.id: rate-limits
    reason: {code: rate_limits_frozen, message: Rate limits are frozen for the test.}
"""
FLAGS = {"id": "feature-flags", "type": "config", "environment": "production", "sensitivity": "internal"}


async def _send_scenarios(client: PolicyClient) -> list[Any]:
    # cases approved by a second person while the client waits are the demo's own (and test_delegation's)
    items = [sc for sc in scenarios(in_change_window(datetime.now(UTC))) if sc.approve is None]
    return list(await asyncio.gather(*(
        client.check(sc.identity, sc.action, sc.resource, sc.context, on_behalf_of=sc.on_behalf_of,
                     token=scenario_token(settings.load(), sc)) for sc in items)))


async def _until(client: PolicyClient, check: Any, *args: Any, timeout_s: float = 30.0, **kw: Any) -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        d = await client.check(*args, **kw)
        if check(d) or loop.time() > end:
            return d
        await asyncio.sleep(0.2)


async def test_same_bundle_replay_of_a_mixed_day_changes_nothing(client: PolicyClient, tmp_path: Path) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    shipped = load_candidate(settings.POLICIES_DIR)
    candidate_dir = policy_dir_with(tmp_path / "candidate", {"replay-test-freeze.yaml": FREEZE})
    candidate = load_candidate(candidate_dir)
    await grant_approval("agent-config-bot", "config:write", "rate-limits", timedelta(hours=1), "tests-replay",
                         cfg=settings.load())
    await asyncio.sleep(0.5)
    sent = await _send_scenarios(client)
    assert {d.decision for d in sent} == {"allow", "deny", "step_up"}
    assert any("config_write_preapproved" in d.reason_codes for d in sent)
    # a suspended principal stops the agent acting for them
    await update_identity("bob", lambda i: setattr(i, "status", "suspended"), cfg=settings.load())
    try:
        d = await _until(client, lambda d: "delegator_suspended" in d.reason_codes,
                         "agent-config-bot", "config:read", FLAGS, on_behalf_of=["bob"])
        assert d.reason_codes == ["delegator_suspended"]
    finally:
        await update_identity("bob", lambda i: setattr(i, "status", "active"), cfg=settings.load())
    # a bundle change half-way: the same traffic decided under another bundle
    await publish_policies(str(candidate_dir), "tests-replay", cfg=settings.load())
    try:
        d = await _until(client, lambda d: d.bundle_version == candidate.version,
                         "agent-config-bot", "config:read", FLAGS, on_behalf_of=["alice"])
        assert d.bundle_version == candidate.version
        sent += await _send_scenarios(client)
        assert any("rate_limits_frozen" in d.reason_codes for d in sent)
    finally:
        await publish_policies(str(settings.POLICIES_DIR), "tests-replay", cfg=settings.load())
    ids = [d.request_id for d in sent]
    assert wait_for_audit_rows(len(ids), request_ids=ids, cfg=settings.load(), timeout_s=60) == len(ids)
    until = datetime.now(UTC) + timedelta(seconds=1)

    ch = connect(cfg=settings.load())
    try:
        bundles = {shipped.version: shipped, candidate.version: candidate}
        result = impact(ch, shipped, since, until, recorded_bundles=bundles)
        assert result["errors"] == 0, result["error_examples"]
        assert result["evaluated"] >= len(ids)
        assert (result["changed"], result["by_transition"]) == (0, {}), result["examples"]
        # without the approvals the records carry, the pre-approved write is no longer allowed
        blind = impact(ch, shipped, since, until, recorded_bundles=bundles, approvals="none")
        assert blind["by_transition"].get("allow->step_up", 0) >= 1, (blind, result)
        rows = ch.query(
            f"SELECT approvals, principals_json FROM {settings.CLICKHOUSE_DATABASE}.{settings.AUDIT_TABLE} FINAL "
            "WHERE has(reason_codes, 'config_write_preapproved') AND decided_at >= {since:DateTime64(6)}",
            parameters={"since": since.replace(tzinfo=None)}).result_rows
        assert rows and all(r[0] and r[0][0]["approved_by"] for r in rows)  # the approver is recorded
        assert all(json.loads(r[1])[0]["id"] == "alice" for r in rows)
    finally:
        ch.close()


def test_cli_as_recorded_needs_one_candidate_or_the_flag(capsys: pytest.CaptureFixture[str], pipeline: Path) -> None:
    code = main(["policy", "impact", "--candidate", str(settings.POLICIES_DIR), "--candidate",
                 str(settings.POLICIES_DIR), "--since", "1h"])
    assert code == 2 and "--as-recorded" in capsys.readouterr().err
    code = main(["policy", "impact", "--candidate", str(settings.POLICIES_DIR), "--as-recorded", "--since", "1h",
                 "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    result = json.loads(out.out)  # the whole hour: other modules' traffic too, some under bundles not given
    assert result["candidate_version"] == "as recorded" and result["evaluated"] > 0


def test_timeline_include_delegated_shows_what_agents_did_for_a_human(
    capsys: pytest.CaptureFixture[str], pipeline: Path
) -> None:
    assert main(["audit", "timeline", "--identity", "alice", "--since", "1h", "--json"]) == 0
    own = json.loads(capsys.readouterr().out)
    assert main(["audit", "timeline", "--identity", "alice", "--include-delegated", "--since", "1h", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) > len(own)  # alice asked nothing herself; agents acted for her
    assert all(r["identity_id"] == "alice" or "alice" in r["on_behalf_of"] for r in rows)
    assert {"agent-config-bot", "agent-analytics"} <= {r["identity_id"] for r in rows}
