"""Issue 21 through the real Kafka and ClickHouse and a running worker: proven delegation (grants and delegated
tokens), approval requests resolved by a second person, and a caller that waits for them.

Every case uses agent-analytics acting for alice on a resource id of its own run, so grants other tests (or the
demo) recorded never cover it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streams import config as settings
from streams.audit.queries import Audit
from streams.audit.risk import approval_requests_by_identity
from streams.audit.store import connect, wait_for_audit_rows
from streams.cli.dev_token import delegated_claims
from streams.cli.main import main
from streams.client import PolicyClient
from streams.contracts import signing, wire
from streams.devservices import procs
from streams.devservices.issuer import mint
from streams.devservices.workers import spawn_worker, wait_until_ready
from streams.grants import follow, grant_request, pending
from streams.kafka import clients
from streams.kafka.state import put_approval
from streams.model import approval_request as apq

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

AGENT = "agent-analytics"
#: how long a published record may take to reach the worker: one replica fetch, with a loaded machine's margin
PROPAGATION_S = 20.0


def resource(run: str) -> dict[str, Any]:
    return {"id": f"cfg-{run}", "type": "config", "environment": "production", "sensitivity": "internal"}


async def _pdx(*args: str) -> int:
    """The real CLI, in a thread (it runs its own event loop)."""
    return await asyncio.to_thread(main, list(args))


async def _codes(client: PolicyClient, run: str, token: str | None = None, **kw: Any) -> tuple[str, list[str]]:
    d = await client.check(AGENT, "config:write", resource(run), on_behalf_of=["alice"], token=token, **kw)
    return d.decision, list(d.reason_codes)


async def _until(client: PolicyClient, run: str, wanted: str, unwanted: bool = False) -> tuple[str, list[str]]:
    """Decide until the first reason code is (or, with ``unwanted``, is no longer) ``wanted``, or PROPAGATION_S
    passed; returns the last outcome."""
    deadline = asyncio.get_running_loop().time() + PROPAGATION_S
    while True:
        got = await _codes(client, run)
        if ((got[1][:1] == [wanted]) != unwanted) or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.2)


def _audited_attributes(request_id: str) -> dict[str, str]:
    assert wait_for_audit_rows(1, request_ids=[request_id], cfg=settings.load(), timeout_s=60) == 1
    rows = connect(cfg=settings.load()).query(
        f"SELECT request_json FROM {settings.CLICKHOUSE_DATABASE}.{settings.AUDIT_TABLE} WHERE request_id = %(r)s",
        parameters={"r": request_id},
    ).result_rows
    return json.loads(rows[0][0])["context"]["attributes"]  # type: ignore[no-any-return]


async def test_the_bare_claim_is_unproven_and_a_grant_proves_it_until_revoked(client: PolicyClient) -> None:
    run = uuid.uuid4().hex[:8]
    assert await _codes(client, run) == ("deny", ["delegation_unproven"])

    grant = f"dlg-it-{run}"
    assert await _pdx("delegations", "grant", "--delegator", "alice", "--delegate", AGENT, "--action",
                      "config:write", "--resource", f"cfg-{run}", "--ttl", "1h", "--id", grant) == 0
    outcome = await _until(client, run, "delegation_unproven", unwanted=True)
    assert outcome == ("step_up", ["approval_required"])
    d = await client.check(AGENT, "config:write", resource(run), on_behalf_of=["alice"])
    attrs = _audited_attributes(d.request_id)
    delegation_key = signing.SigningKey.load(signing.private_key_path(settings.load(), signing.DELEGATION))
    assert attrs["pdx.delegation.source"] == "grant" and attrs["pdx.delegation.id"] == grant
    assert attrs["pdx.delegation.signer"] == delegation_key.key_id

    assert await _pdx("delegations", "revoke", grant) == 0
    assert await _until(client, run, "delegation_unproven") == ("deny", ["delegation_unproven"])


async def test_an_expired_or_forged_grant_proves_nothing(client: PolicyClient) -> None:
    run = uuid.uuid4().hex[:8]
    assert await _pdx("delegations", "grant", "--delegator", "alice", "--delegate", AGENT, "--action",
                      "config:write", "--resource", f"cfg-{run}", "--ttl", "1s", "--id", f"dlg-old-{run}") == 0
    await asyncio.sleep(1.5)
    assert await _codes(client, run) == ("deny", ["delegation_unproven"])

    # forged: a grant written the way an attacker with a plain Kafka client and a key of their own would
    now = datetime.now(UTC)
    value = wire.encode("DelegationGrant", {
        "grant_id": f"dlg-forged-{run}", "delegator": "alice", "delegate": AGENT, "action": "config:*",
        "resource_id": "*", "granted_by": "mallory", "granted_at": now, "expires_at": now + timedelta(hours=1)})
    key = f"dlg-forged-{run}".encode()
    producer = await clients.start_producer(settings.load())
    try:
        attacker = signing.SigningKey.generate()
        await producer.send_and_wait(settings.TOPIC_DELEGATIONS, value, key=key,
                                     headers=attacker.headers(signing.DELEGATION, key, value, 2**41))
    finally:
        await producer.stop()
    # a trusted grant for another resource after it: once that one is in force, the forged one was read too
    sentinel = uuid.uuid4().hex[:8]
    assert await _pdx("delegations", "grant", "--delegator", "alice", "--delegate", AGENT, "--action",
                      "config:write", "--resource", f"cfg-{sentinel}", "--id", f"dlg-sentinel-{run}") == 0
    assert (await _until(client, sentinel, "delegation_unproven", unwanted=True))[0] == "step_up"
    assert await _codes(client, run) == ("deny", ["delegation_unproven"])
    assert await _pdx("delegations", "revoke", f"dlg-sentinel-{run}") == 0


async def test_a_delegated_token_proves_the_chain_only_for_its_actor(client: PolicyClient) -> None:
    run = uuid.uuid4().hex[:8]
    cfg = settings.load()
    good = mint(cfg, delegated_claims("alice", [AGENT], 600))
    d = await client.check(AGENT, "config:write", resource(run), on_behalf_of=["alice"], token=good)
    assert (d.decision, d.reason_codes) == ("step_up", ["approval_required"])
    attrs = _audited_attributes(d.request_id)
    assert attrs["pdx.delegation.source"] == "token" and attrs["pdx.delegation.id"].startswith("dev-")
    assert attrs["pdx.delegation.signer"] == attrs["pdx.token.issuer"]
    other_actor = mint(cfg, delegated_claims("alice", ["agent-intern"], 600))  # act.sub is another identity
    assert await _codes(client, run, other_actor) == ("deny", ["delegation_unproven"])
    bob_for_alice = mint(cfg, delegated_claims("bob", [AGENT], 600))  # the token says bob, the claim alice
    assert await _codes(client, run, bob_for_alice) == ("deny", ["delegation_unproven"])


async def _step_up_id(client: PolicyClient, run: str, token: str) -> str:
    d = await client.check(AGENT, "config:write", resource(run), on_behalf_of=["alice"], token=token)
    assert d.decision == "step_up"
    return d.obligations[apq.OBLIGATION]


async def test_nobody_approves_their_own_request(client: PolicyClient, capsys: pytest.CaptureFixture[str]) -> None:
    run = uuid.uuid4().hex[:8]
    cfg = settings.load()
    token = mint(cfg, delegated_claims("alice", [AGENT], 600))
    aid = await _step_up_id(client, run, token)
    listed = {r.approval_request_id: r for r in await pending(cfg)}
    assert listed[aid].identity_id == AGENT and listed[aid].on_behalf_of == ["alice"]
    capsys.readouterr()
    for self_approver in (AGENT, "alice"):
        assert await _pdx("approvals", "grant", aid, "--by", self_approver) == 2
        assert "approval_self_granted" in capsys.readouterr().err
    # an approval signed by a trusted approval key but approved by the requester itself is never relied on
    now = datetime.now(UTC)
    producer = await clients.start_producer(cfg)
    try:
        await put_approval(producer, {
            "approval_id": f"apr-self-{run}", "identity_id": AGENT, "action": "config:write",
            "resource_id": f"cfg-{run}", "approved_by": AGENT, "granted_at": now,
            "expires_at": now + timedelta(minutes=30), "revoked": False,
        }, signing.signing_key(cfg, signing.APPROVAL))
    finally:
        await producer.stop()
    await asyncio.sleep(2)
    assert (await _codes(client, run, token))[0] == "step_up"


async def test_the_caller_waits_for_a_second_person(client: PolicyClient) -> None:
    run = uuid.uuid4().hex[:8]
    cfg = settings.load()
    token = mint(cfg, delegated_claims("alice", [AGENT], 600))

    async def approve(status: str, by: str = "carol") -> None:
        while True:
            for r in await pending(cfg):
                if r.resource_id == f"cfg-{run}":
                    if status == apq.GRANTED:
                        await grant_request(cfg, r.approval_request_id, timedelta(minutes=30), by)
                    else:
                        assert await _pdx("approvals", "deny", r.approval_request_id, "--reason", "not today",
                                          "--by", by) == 0
                    return
            await asyncio.sleep(0.2)

    denier = asyncio.create_task(approve(apq.DENIED))
    d = await client.check(AGENT, "config:write", resource(run), on_behalf_of=["alice"], token=token,
                           wait_for_approval=60)
    await denier
    assert (d.decision, d.reason_codes) == ("deny", ["approval_denied"]) and "not today" in d.reasons[0].message

    approver = asyncio.create_task(approve(apq.GRANTED))
    d = await client.check(AGENT, "config:write", resource(run), on_behalf_of=["alice"], token=token,
                           wait_for_approval=60)
    await approver
    assert (d.decision, d.reason_codes) == ("allow", ["config_write_preapproved"])

    # the whole story for an incident responder: step_up → approval request → who granted it → the allow
    assert wait_for_audit_rows(1, request_ids=[d.request_id], cfg=settings.load(), timeout_s=60) == 1
    shown = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "streams.cli.main", "audit", "explain", d.request_id, "--json"],
        capture_output=True, text=True, timeout=120, check=True)
    story = json.loads(shown.stdout)["approval_story"]
    assert story["request"]["state"] == "granted" and story["request"]["resolved_by"] == "carol"
    assert story["request"]["trusted"] and len(story["opened_by"]) == 1
    assert [r["request_id"] for r in story["relied_on_by"]] == [d.request_id]
    assert story["time_to_resolve_s"] >= 0
    now = datetime.now(UTC)
    per_identity = {r["identity_id"]: r for r in approval_requests_by_identity(
        Audit(connect(cfg=settings.load(), role="reader"), settings.CLICKHOUSE_DATABASE),
        now - timedelta(minutes=10), now)}
    assert per_identity[AGENT]["approved"] >= 1


async def test_an_approval_after_the_deadline_is_approval_expired(client: PolicyClient) -> None:
    run = uuid.uuid4().hex[:8]
    cfg = settings.load()
    token = mint(cfg, delegated_claims("alice", [AGENT], 600))
    d = await client.check(AGENT, "config:write", resource(run), on_behalf_of=["alice"], token=token,
                           wait_for_approval=2)
    assert (d.decision, d.reason_codes) == ("deny", ["approval_expired"])
    late = [r for r in await pending(cfg) if r.resource_id == f"cfg-{run}"]
    assert late, "the request is still open: granting it now is too late for that caller"
    await grant_request(cfg, late[0].approval_request_id, timedelta(minutes=30), "carol")
    # the caller already has its deny; a new request relies on the late grant as any pre-approval
    assert d.decision == "deny"


async def test_a_worker_restart_while_the_caller_waits(client: PolicyClient, pipeline: Path) -> None:
    run = uuid.uuid4().hex[:8]
    cfg = settings.load()
    token = mint(cfg, delegated_claims("alice", [AGENT], 600))
    waiting = asyncio.create_task(client.check(AGENT, "config:write", resource(run), on_behalf_of=["alice"],
                                               token=token, wait_for_approval=120))
    deadline = asyncio.get_running_loop().time() + 30
    opened: list[apq.ApprovalRequest] = []
    while not opened and asyncio.get_running_loop().time() < deadline:
        opened = [r for r in await pending(cfg) if r.resource_id == f"cfg-{run}"]
        await asyncio.sleep(0.2)
    assert opened, "the step_up opened no approval request"
    for pid_file in (pipeline / "workers").glob("w1.pid"):
        await asyncio.to_thread(procs.stop, pid_file)
    _, log = spawn_worker(pipeline, "w1")
    await asyncio.to_thread(wait_until_ready, log)
    await grant_request(cfg, opened[0].approval_request_id, timedelta(minutes=30), "carol")
    d = await waiting
    assert (d.decision, d.reason_codes) == ("allow", ["config_write_preapproved"])


async def test_watch_follows_new_approval_requests(client: PolicyClient) -> None:
    """What `pdx approvals watch` (and a chat-ops bot) sees: each new request as it is opened, signed by a worker."""
    run = uuid.uuid4().hex[:8]
    cfg = settings.load()
    seen: list[Any] = []

    async def watch() -> None:
        async for found in follow(cfg):
            if found.record.resource_id == f"cfg-{run}":
                seen.append(found)
                return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(1.0)  # positioned at the end of every partition before the step_up
    aid = await _step_up_id(client, run, mint(cfg, delegated_claims("alice", [AGENT], 600)))
    await asyncio.wait_for(watcher, PROPAGATION_S)
    [found] = seen
    assert found.trusted and found.record.approval_request_id == aid and found.record.status == apq.OPEN
