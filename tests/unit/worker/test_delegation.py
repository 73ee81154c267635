"""Proven delegation (issue 21): a principal enters a decision's chain only with a verified delegated token or a
signed delegation grant; a step_up opens an approval request; nobody approves their own request."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from streams import config
from streams.contracts import signing, wire
from streams.model import RequestContext, Resource
from streams.model import approval_request as apq
from streams.model.delegation import DelegationProof
from streams.model.tokens import TokenVerifier
from streams.worker.decide import Decider
from streams.worker.loop import ReplyRoutes, RequestLoop
from streams.worker.state import WorkerState
from tests.unit.worker.conftest import (
    TEST_KEYS,
    FakeMetadata,
    FakeProducer,
    apply_approval,
    apply_delegation,
    delegation_message,
    signed,
)
from tests.unit.worker.test_decider import incoming, request
from tests.unit.worker.test_workload_tokens import EC_KEY, ISSUER, JWKS_CONFIG

PROD_CONFIG = Resource(id="payments-config", type="config", environment="production", sensitivity="confidential")


def delegated_token(sub: str = "alice", act: Any = None, **claims: Any) -> str:
    now = int(datetime.now(UTC).timestamp())
    body = {"iss": ISSUER, "sub": sub, "aud": "pdx", "iat": now - 10, "exp": now + 600, "jti": "tok-42",
            "act": act if act is not None else {"sub": "agent-config-bot"}, **claims}
    return jwt.encode(body, EC_KEY, algorithm="ES256", headers={"kid": "ec-1"})


async def decide(state: WorkerState, token: str | None = None, **changes: Any) -> FakeProducer:
    changes.setdefault("action", "config:write")
    changes.setdefault("resource", PROD_CONFIG)
    req = request(**changes)
    req.token = token
    producer = FakeProducer()
    routes = ReplyRoutes(config.Settings.from_env({}), FakeMetadata())
    signer = signing.SigningKey.generate()
    decider = Decider(state, "w-test", routes, tokens=TokenVerifier.from_dict(JWKS_CONFIG), approval_signer=signer)
    await RequestLoop(decider, producer).process([incoming(wire.encode("AccessRequest", req.to_dict()))])
    return producer


def decision(out: FakeProducer) -> dict[str, Any]:
    return wire.decode_as("Decision", out.on(config.TOPIC_DECISIONS)[0].value)


def outcome(out: FakeProducer) -> tuple[str, list[str]]:
    d = decision(out)
    return d["decision"], [r["code"] for r in d["reasons"]]


def audited_attributes(out: FakeProducer) -> dict[str, str]:
    rec = wire.decode_as("AuditRecord", out.on(config.TOPIC_AUDIT)[0].value)
    return rec["request"]["context"]["attributes"]  # type: ignore[no-any-return]


def without_grants(state: WorkerState) -> WorkerState:
    apply_delegation(state, b"dlg-alice-bot", None)  # the fixture's grant, revoked by tombstone
    return state


async def test_a_bare_claim_is_denied_delegation_unproven_quoting_the_principal(loaded_state: WorkerState) -> None:
    out = await decide(without_grants(loaded_state), on_behalf_of=["alice"])
    assert outcome(out) == ("deny", ["delegation_unproven"])
    assert "'alice'" in decision(out)["reasons"][0]["message"]
    assert out.on(config.TOPIC_AUDIT), "the deny is audited"


async def test_bob_cannot_be_swapped_for_alice_without_proof(loaded_state: WorkerState) -> None:
    """The attack of the issue: naming a human with config:admin used to lift the deny to a step_up."""
    state = without_grants(loaded_state)
    assert outcome(await decide(state, on_behalf_of=["alice"]))[1] == ["delegation_unproven"]
    apply_delegation(state, b"dlg-bob", delegation_message("dlg-bob", delegator="bob"))
    assert outcome(await decide(state, on_behalf_of=["bob"])) == ("deny", ["delegator_lacks_config_admin"])


async def test_a_signed_grant_proves_the_hop_and_the_audit_keeps_its_id_and_signer(loaded_state: WorkerState) -> None:
    out = await decide(loaded_state, on_behalf_of=["alice"])
    assert outcome(out)[0] == "step_up"
    attrs = audited_attributes(out)
    assert attrs["pdx.delegation.source"] == "grant" and attrs["pdx.delegation.id"] == "dlg-alice-bot"
    assert attrs["pdx.delegation.signer"] == signing.key_id_of(TEST_KEYS[signing.DELEGATION].public)
    assert DelegationProof.from_audit_attributes(attrs) == DelegationProof("grant", ("dlg-alice-bot",),
                                                                           (attrs["pdx.delegation.signer"],))


async def test_an_expired_or_out_of_scope_grant_proves_nothing(loaded_state: WorkerState) -> None:
    state = without_grants(loaded_state)
    apply_delegation(state, b"dlg-old", delegation_message("dlg-old", ttl=timedelta(seconds=-1)))
    assert outcome(await decide(state, on_behalf_of=["alice"]))[1] == ["delegation_unproven"]
    apply_delegation(state, b"dlg-read", delegation_message("dlg-read", action="config:read"))
    assert outcome(await decide(state, on_behalf_of=["alice"]))[1] == ["delegation_unproven"]
    apply_delegation(state, b"dlg-other", delegation_message("dlg-other", delegate="agent-analytics"))
    assert outcome(await decide(state, on_behalf_of=["alice"]))[1] == ["delegation_unproven"]


async def test_a_forged_grant_is_refused_and_proves_nothing(loaded_state: WorkerState) -> None:
    state = without_grants(loaded_state)
    value = delegation_message("dlg-forged")
    forger = signing.SigningKey.generate()
    state.apply_delegation(b"dlg-forged", value, forger.headers(signing.DELEGATION, b"dlg-forged", value, 1))
    state.apply_delegation(b"dlg-unsigned", delegation_message("dlg-unsigned"), None)
    assert state.rejected[signing.DELEGATION] == 2
    assert outcome(await decide(state, on_behalf_of=["alice"]))[1] == ["delegation_unproven"]


async def test_a_grant_whose_key_names_another_grant_is_refused(loaded_state: WorkerState) -> None:
    state = without_grants(loaded_state)
    value = delegation_message("dlg-a")
    state.apply_delegation(b"dlg-b", value, signed(signing.DELEGATION, b"dlg-b", value))
    assert state.rejected[signing.DELEGATION] == 1
    assert outcome(await decide(state, on_behalf_of=["alice"]))[1] == ["delegation_unproven"]


async def test_a_delegated_token_proves_the_chain(loaded_state: WorkerState) -> None:
    out = await decide(without_grants(loaded_state), delegated_token(), on_behalf_of=["alice"])
    assert outcome(out)[0] == "step_up"
    attrs = audited_attributes(out)
    assert attrs["pdx.delegation.source"] == "token" and attrs["pdx.delegation.id"] == "tok-42"
    assert attrs["pdx.delegation.signer"] == ISSUER and attrs["pdx.token.jti"] == "tok-42"


async def test_a_token_whose_act_is_another_identity_proves_nothing(loaded_state: WorkerState) -> None:
    token = delegated_token(act={"sub": "agent-analytics"})
    assert outcome(await decide(without_grants(loaded_state), token, on_behalf_of=["alice"]))[1] == [
        "delegation_unproven"]
    token = delegated_token(sub="bob")  # alice is claimed, bob is what the token says
    assert outcome(await decide(without_grants(loaded_state), token, on_behalf_of=["alice"]))[1] == [
        "delegation_unproven"]


async def test_a_nested_act_proves_a_two_hop_chain(loaded_state: WorkerState) -> None:
    """sub alice, act {sub agent-config-bot, act {sub agent-config-tuner}}: alice → tuner → bot."""
    token = delegated_token(act={"sub": "agent-config-bot", "act": {"sub": "agent-analytics"}})
    out = await decide(without_grants(loaded_state), token, on_behalf_of=["alice", "agent-analytics"],
                       action="config:read", resource=Resource(id="feature-flags", type="config",
                                                                environment="production", sensitivity="internal"))
    assert audited_attributes(out)["pdx.delegation.source"] == "token"
    out = await decide(without_grants(loaded_state), token, on_behalf_of=["agent-analytics", "alice"])
    assert outcome(out)[1] == ["delegation_unproven"]


async def test_a_caller_cannot_forge_the_audited_proof(loaded_state: WorkerState) -> None:
    req_attrs = {"pdx.delegation.source": "grant", "pdx.delegation.id": "dlg-fake"}
    state = without_grants(loaded_state)
    out = await decide(state, on_behalf_of=[], context=RequestContext(attributes=req_attrs))
    attrs = audited_attributes(out)
    assert attrs["pdx.delegation.source"].startswith("[redacted:")
    assert DelegationProof.from_audit_attributes(attrs) is None


async def test_suspending_the_delegator_still_stops_the_agent(loaded_state: WorkerState) -> None:
    from tests.unit.worker.conftest import apply_identity, identity_message

    alice = loaded_state.identities["alice"]
    alice.status = "suspended"
    apply_identity(loaded_state, b"alice", identity_message(alice))
    assert outcome(await decide(loaded_state, on_behalf_of=["alice"]))[1] == ["delegator_suspended"]


async def test_a_step_up_opens_an_approval_request_and_the_reply_names_it(loaded_state: WorkerState) -> None:
    out = await decide(loaded_state, on_behalf_of=["alice"], request_id="req-step")
    d = decision(out)
    assert d["decision"] == "step_up"
    aid = d["obligations"][apq.OBLIGATION]
    assert aid == apq.approval_request_id("req-step")
    [opened] = out.on(config.TOPIC_APPROVAL_REQUESTS)
    assert opened.key == aid.encode() and signing.header_value(opened.headers, signing.HEADER_KEY_ID)
    record = apq.ApprovalRequest.from_dict(wire.decode_as("ApprovalRequest", opened.value))
    assert (record.identity_id, record.action, record.resource_id, record.status) == (
        "agent-config-bot", "config:write", "payments-config", "open")
    assert record.on_behalf_of == ["alice"] and record.reasons and record.expires_at > record.opened_at
    assert record.state(record.expires_at) == apq.EXPIRED


async def test_an_allow_or_deny_opens_no_approval_request(loaded_state: WorkerState) -> None:
    out = await decide(loaded_state, on_behalf_of=["alice"], action="config:read")
    assert decision(out)["decision"] == "allow" and not out.on(config.TOPIC_APPROVAL_REQUESTS)


def approval(approved_by: str) -> bytes:
    now = datetime.now(UTC)
    return wire.encode("Approval", {
        "approval_id": "apr-x", "identity_id": "agent-config-bot", "action": "config:write",
        "resource_id": "payments-config", "approved_by": approved_by, "granted_at": now - timedelta(minutes=1),
        "expires_at": now + timedelta(minutes=30), "revoked": False})


async def test_a_self_granted_approval_is_never_relied_on(loaded_state: WorkerState) -> None:
    for self_approver in ("agent-config-bot", "alice"):
        apply_approval(loaded_state, b"agent-config-bot/apr-x", approval(self_approver))
        assert outcome(await decide(loaded_state, on_behalf_of=["alice"]))[0] == "step_up", self_approver
    apply_approval(loaded_state, b"agent-config-bot/apr-x", approval("carol"))
    assert outcome(await decide(loaded_state, on_behalf_of=["alice"]))[0] == "allow"

