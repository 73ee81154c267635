"""The `pdx` CLI of the decision pipeline, run as real subprocesses against the real Kafka (and one worker):
topics, policy publish, inventory load/suspend/rotate, approve and check."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streams import config as settings
from streams.client import PolicyClient
from streams.contracts import wire
from streams.devservices import procs
from streams.devservices.workers import spawn_worker, wait_until_ready
from streams.kafka.state import latest_value
from streams.policy import bundle_version, load_policy_dir
from streams.policy.testing import policy_dir_with

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

EXAMPLE_INVENTORY = settings.REPO_ROOT / "examples" / "inventory.yaml"
WORKER = "cli-w1"
PROD_PIPELINE = ["--resource-type", "pipeline", "--resource-id", "release-prod", "--environment", "production"]


def _cmd(args: tuple[str, ...]) -> list[str]:
    return [sys.executable, "-m", "streams.cli.main", *args]


def pdx(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run the real `pdx` command; the env is the test process's (pointed at the test services)."""
    return subprocess.run(_cmd(args), cwd=settings.REPO_ROOT, env=dict(os.environ), capture_output=True,
                          text=True, timeout=timeout, check=False)


def pdx_many(*commands: tuple[str, ...], timeout: float = 90) -> list[subprocess.CompletedProcess[str]]:
    """Run several independent `pdx` commands at once (each CLI start costs about a second of imports)."""
    started = [(c, subprocess.Popen(_cmd(c), cwd=settings.REPO_ROOT, env=dict(os.environ), text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)) for c in commands]
    done = []
    for c, proc in started:
        out, err = proc.communicate(timeout=timeout)
        done.append(subprocess.CompletedProcess(_cmd(c), proc.returncode, out, err))
    return done


def no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, f"{result.args[3:]} exited {result.returncode}: {result.stderr}"
    return result


def check_args(identity: str, action: str, *opts: str) -> tuple[str, ...]:
    return ("check", identity, action, *opts, "--json", "--timeout", "10")


def parsed(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    no_traceback(result)
    try:
        decision: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"`pdx check --json` did not print JSON (exit {result.returncode}): "
                    f"{result.stdout!r} {result.stderr!r}")
    expected_rc = {"allow": 0, "deny": 1, "step_up": 3}[decision["decision"]]
    assert result.returncode == expected_rc, (decision, result.stderr)
    return decision


def check(identity: str, action: str, *opts: str) -> dict[str, Any]:
    """`pdx check ... --json`, parsed; asserts the exit code matches the decision."""
    return parsed(pdx(*check_args(identity, action, *opts)))


def codes(decision: dict[str, Any]) -> list[str]:
    return [r["code"] for r in decision["reasons"]]


def check_until(identity: str, action: str, *opts: str, until: Callable[[dict[str, Any]], bool],
                timeout_s: float = 15.0) -> dict[str, Any]:
    """Re-run `pdx check` until `until(decision)` holds (state changes take a moment to reach the worker)."""
    end = time.monotonic() + timeout_s
    while True:
        d = check(identity, action, *opts)
        if until(d) or time.monotonic() > end:
            return d
        time.sleep(0.2)


def known(d: dict[str, Any]) -> bool:
    return "unknown_identity" not in codes(d)


@dataclass
class CliStack:
    version: str
    state: Path


@pytest.fixture(scope="module")
def cli_stack(services: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliStack]:
    """Topics, the shipped policies and the example inventory, all through the CLI, and one worker."""
    no_traceback(ok(pdx("topics", "create")))
    state = tmp_path_factory.mktemp("cli-workers")
    try:
        _, log = spawn_worker(state, WORKER)  # boots while the CLI publishes and loads
        publish, load = pdx_many(("policy", "publish", str(settings.POLICIES_DIR), "--by", "tests"),
                                 ("inventory", "load", str(EXAMPLE_INVENTORY)))
        version = ok(publish).stdout.strip()
        assert re.fullmatch(r"[0-9a-f]{64}", version), publish.stdout
        assert version == bundle_version(load_policy_dir(settings.POLICIES_DIR).to_bundle_content())
        assert "loaded 9 identities" in ok(load).stderr
        wait_until_ready(log)
        asyncio.run(_wait_for_state(version))
        yield CliStack(version, state)
    finally:
        for pid_file in (state / "workers").glob("*.pid"):
            procs.stop(pid_file)


async def _wait_for_state(version: str, timeout_s: float = 60.0) -> None:
    """The worker has the published bundle and the loaded inventory."""
    end = time.monotonic() + timeout_s
    async with PolicyClient(timeout_s=5.0) as client:
        while True:
            d = await client.check("agent-config-bot", "config:read", {"id": "feature-flags", "type": "config"})
            if (d.decision == "allow" and d.bundle_version == version) or time.monotonic() > end:
                break
            await asyncio.sleep(0.2)
    assert d.decision == "allow" and d.bundle_version == version, (d.reason_codes, d.bundle_version)


def _identity_in_topic(identity_id: str) -> dict[str, Any] | None:
    raw = asyncio.run(latest_value(settings.load(), settings.TOPIC_INVENTORY, identity_id))
    return None if raw is None else wire.decode_as("Identity", raw)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# ---- check ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("identity,action,opts,outcome,code,rule", [
    ("agent-config-bot", "config:read", ["--resource-id", "feature-flags", "--resource-type", "config"],
     "allow", "config_read", "agent-config-read"),
    ("agent-analytics", "db:connect", ["--resource-id", "orders-db", "--resource-type", "database",
                                       "--environment", "production"], "deny", "time_bound_required",
     "agent-prod-db-unbounded"),
    ("agent-config-bot", "config:write", ["--resource-id", "feature-flags", "--resource-type", "config"],
     "step_up", "approval_required", "agent-config-write-needs-approval"),
], ids=["allow", "deny", "step_up"])
def test_check_json_and_exit_code(cli_stack: CliStack, identity: str, action: str, opts: list[str],
                                  outcome: str, code: str, rule: str) -> None:
    d = check(identity, action, *opts)  # also asserts exit code 0 / 1 / 3
    assert {"request_id", "decision", "reasons", "obligations", "matched_rules", "monitor", "bundle_version",
            "evaluated_at", "eval_us", "worker_id"} <= set(d)
    assert d["decision"] == outcome and code in codes(d), d
    assert d["worker_id"] == WORKER and d["bundle_version"] == cli_stack.version  # a real decision, no timeout
    assert re.fullmatch(r"[0-9a-f]{32}", d["request_id"])
    assert all({"code", "message", "policy", "rule"} <= set(r) for r in d["reasons"])
    assert rule in d["matched_rules"] and any(r["code"] == code and r["rule"] == rule for r in d["reasons"]), d
    assert isinstance(d["obligations"], dict)
    evaluated = datetime.fromisoformat(d["evaluated_at"])
    assert abs(datetime.now(UTC) - evaluated) < timedelta(minutes=2)
    if outcome == "step_up":
        assert d["obligations"]["require_approval"] == "config-owners,security-oncall"
    else:
        assert "require_approval" not in d["obligations"]


def test_check_human_output(cli_stack: CliStack) -> None:
    result = pdx("check", "agent-config-bot", "config:write", "--resource-id", "feature-flags",
                 "--resource-type", "config", "--timeout", "10")
    no_traceback(result)
    assert result.returncode == 3, result.stderr
    assert result.stdout.startswith("STEP_UP") and cli_stack.version[:12] in result.stdout
    assert "reason  approval_required:" in result.stdout
    assert "obligation  require_approval = config-owners,security-oncall" in result.stdout


# ---- inventory suspend / rotate ---------------------------------------------------------------------


def test_suspend_denies_the_next_request(cli_stack: CliStack) -> None:
    db = ["--resource-id", "orders-db", "--resource-type", "database", "--environment", "staging"]
    before = check("agent-intern", "db:connect", *db)
    assert before["decision"] == "allow" and "identity_suspended" not in codes(before), before
    result = ok(pdx("inventory", "suspend", "agent-intern"))
    no_traceback(result)
    assert "agent-intern" in result.stderr and "suspended" in result.stderr
    after = check_until("agent-intern", "db:connect", *db, until=lambda d: d["decision"] == "deny")
    assert after["decision"] == "deny" and codes(after) == ["identity_suspended"], after
    assert after["worker_id"] == WORKER
    stored = _identity_in_topic("agent-intern")
    assert stored is not None and stored["status"] == "suspended"
    assert [c["id"] for c in stored["credentials"]] == ["intern-key-1"]  # the rest of the record is kept


def test_rotate_clears_the_unrotated_credential_step_up(cli_stack: CliStack) -> None:
    before = check("wf-release-legacy", "deploy:release", *PROD_PIPELINE)
    assert before["decision"] == "step_up" and "credential_unrotated" in codes(before), before
    result = ok(pdx("inventory", "rotate", "wf-release-legacy", "legacy-deploy-key"))
    no_traceback(result)
    assert "legacy-deploy-key" in result.stderr
    after = check_until("wf-release-legacy", "deploy:release", *PROD_PIPELINE,
                        until=lambda d: d["decision"] == "allow")
    # the other credential (legacy-token, 10 days old) is within the 90-day policy
    assert after["decision"] == "allow" and "privileged_release" in codes(after), after
    assert after["obligations"].get("audit_review") == "true"
    stored = _identity_in_topic("wf-release-legacy")
    assert stored is not None
    creds = {c["id"]: c for c in stored["credentials"]}
    assert datetime.now(UTC) - creds["legacy-deploy-key"]["rotated_at"] < timedelta(minutes=2)
    assert creds["legacy-token"]["rotated_at"] is None


def test_rotate_unknown_credential_or_identity_is_a_clear_error(cli_stack: CliStack) -> None:
    missing_id = _unique("nobody")
    bad_cred, bad_ident = pdx_many(("inventory", "rotate", "wf-release-main", "nonexistent-credential"),
                                   ("inventory", "rotate", missing_id, "some-key"))
    for result in (bad_cred, bad_ident):
        no_traceback(result)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("pdx: ") and result.stdout == ""
    assert "nonexistent-credential" in bad_cred.stderr and "main-deploy-key" in bad_cred.stderr
    assert missing_id in bad_ident.stderr and "not in the inventory" in bad_ident.stderr
    stored = _identity_in_topic("wf-release-main")
    assert stored is not None and stored["credentials"][0]["rotated_at"] < datetime.now(UTC) - timedelta(days=14)


# ---- approve --------------------------------------------------------------------------------------


def test_approve_allows_the_write_with_audit_review(cli_stack: CliStack) -> None:
    write = ["--resource-id", "rate-limits", "--resource-type", "config"]
    granted = datetime.now(UTC)
    # a request naming an approval id nobody granted is stepped up whatever else is approved, so it can run
    # alongside the approval
    result, unapproved_r = pdx_many(
        ("approve", "--identity", "agent-config-bot", "--action", "config:write", "--resource", "rate-limits",
         "--ttl", "10m"),
        check_args("agent-config-bot", "config:write", *write, "--approval-id", "apr-never-granted"),
    )
    unapproved = parsed(unapproved_r)
    assert unapproved["decision"] == "step_up" and "approval_required" in codes(unapproved), unapproved
    ok(result)
    no_traceback(result)
    approval_id = result.stdout.strip()
    assert re.fullmatch(r"apr-[0-9a-f]{12}", approval_id), result.stdout
    until = re.search(r"until (\S+)", result.stderr)
    assert until, result.stderr
    expires = datetime.fromisoformat(until.group(1))
    assert timedelta(minutes=9) < expires - granted < timedelta(minutes=11)

    d = check_until("agent-config-bot", "config:write", *write, until=lambda d: d["decision"] == "allow")
    assert d["decision"] == "allow" and "config_write_preapproved" in codes(d), d
    assert d["obligations"].get("audit_review") == "true"
    named, other = (parsed(r) for r in pdx_many(
        check_args("agent-config-bot", "config:write", *write, "--approval-id", approval_id),
        check_args("agent-config-bot", "config:write", "--resource-id", "feature-flags", "--resource-type",
                   "config", "--approval-id", approval_id),
    ))
    assert named["decision"] == "allow" and named["obligations"].get("audit_review") == "true", named
    assert other["decision"] == "step_up", other  # the approval covers rate-limits only


# ---- inventory load -------------------------------------------------------------------------------


def test_load_csv_inventory(cli_stack: CliStack, tmp_path: Path) -> None:
    fresh, stale = _unique("wf-csv-fresh"), _unique("wf-csv-stale")
    path = tmp_path / "inventory.csv"
    path.write_text(
        "id,kind,owner,environments,tags,risk_tier,credential_id,credential_type,credential_created_at,"
        "credential_rotated_at\n"
        f"{fresh},workload,release,staging; production,privileged,high,f-key,ssh_key,now-300d,now-20d\n"
        f"{fresh},,,,,,f-token,token,now-3d,\n"
        f"{stale},workload,release,production,privileged,high,s-key,ssh_key,now-120d,\n"
        f"{stale},,,,,,s-token,token,now-1d,\n"
    )
    result = ok(pdx("inventory", "load", str(path)))
    no_traceback(result)
    assert f"loaded 2 identities from {path}" in result.stderr
    end = time.monotonic() + 15
    while True:
        a, b = (parsed(r) for r in pdx_many(check_args(fresh, "deploy:release", *PROD_PIPELINE),
                                            check_args(stale, "deploy:release", *PROD_PIPELINE)))
        if (known(a) and known(b)) or time.monotonic() > end:
            break
        time.sleep(0.2)
    assert a["decision"] == "allow" and "privileged_release" in codes(a), a  # ';' list holds production
    # both rows' credentials were merged: the 120-day-old one still counts although the last row is fresh
    assert b["decision"] == "step_up" and "credential_unrotated" in codes(b), b
    stored = _identity_in_topic(stale)
    assert stored is not None and [c["id"] for c in stored["credentials"]] == ["s-key", "s-token"]


def test_load_bad_files_is_a_clear_error_and_loads_nothing(cli_stack: CliStack, tmp_path: Path) -> None:
    good, bad = _unique("agent-good"), _unique("robo")
    bad_kind = tmp_path / "bad-kind.yaml"
    bad_kind.write_text(f"identities:\n  - {{id: {good}, kind: agent}}\n  - {{id: {bad}, kind: robot}}\n")
    empty_id = tmp_path / "empty-id.csv"
    empty_id.write_text(f"id,kind\n{good},agent\n,agent\n")
    missing = tmp_path / "missing.yaml"
    kind_r, csv_r, missing_r = pdx_many(("inventory", "load", str(bad_kind)), ("inventory", "load", str(empty_id)),
                                        ("inventory", "load", str(missing)))
    for result in (kind_r, csv_r, missing_r):
        no_traceback(result)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("pdx: ") and "loaded" not in result.stderr.replace("nothing loaded", "")
    assert "nothing loaded" in kind_r.stderr and "entry 2" in kind_r.stderr
    assert bad in kind_r.stderr and "'robot'" in kind_r.stderr and "kind" in kind_r.stderr
    assert f"{empty_id}:3" in csv_r.stderr and "'id' column is empty" in csv_r.stderr
    assert str(missing) in missing_r.stderr and "does not exist" in missing_r.stderr
    assert _identity_in_topic(good) is None  # the valid entry was not produced either


# ---- policy publish -------------------------------------------------------------------------------


def test_publish_invalid_policy_dir_fails_naming_file_and_problem(cli_stack: CliStack, tmp_path: Path) -> None:
    candidate = policy_dir_with(tmp_path / "policies", {"broken.yaml": (
        "name: broken\ndescription: an invalid effect\nowner: tests\nmode: enforce\nrules:\n"
        "  - id: maybe-rule\n    effect: maybe\n    when:\n      - action: \"x:y\"\n"
        "    reason: {code: broken, message: broken}\n")})
    result = pdx("policy", "publish", str(candidate), "--by", "tests")
    no_traceback(result)
    assert result.returncode != 0
    assert result.stdout == ""  # no version printed
    assert "broken.yaml:7" in result.stderr and "effect" in result.stderr and "'maybe'" in result.stderr
    raw = asyncio.run(latest_value(settings.load(), settings.TOPIC_POLICIES, "current"))
    assert raw is not None and wire.decode_as("PolicyBundle", raw)["version"] == cli_stack.version
