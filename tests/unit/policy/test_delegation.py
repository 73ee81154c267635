"""Delegation chains in the engine: principal quantifiers, the built-in chain checks, and what a decision relied on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams.model import AccessRequest, Approval, Identity, RequestContext, Resource
from streams.policy import evaluate, policy_set_from_documents
from streams.policy.explain import explain
from streams.policy.loader import PolicyValidationError
from streams.policy.runtime import new_env
from streams.policy.testing import RequestCase

NOW = datetime(2025, 6, 3, 10, 0, tzinfo=UTC)
PROD_CONFIG = Resource(id="feature-flags", type="config", environment="production")
AGENT = Identity(id="agent-1", kind="agent", owner="sre")


def bundle(when: list[Any], effect: str = "allow") -> Any:
    docs = [{"name": "p", "owner": "t", "mode": "enforce", "controls": [], "rules": [
        {"id": "r", "effect": effect, "when": [{"action": "config:write"}, {"resource.type": "config"}, *when],
         "reason": {"code": "ok", "message": "held"}}]}]
    return policy_set_from_documents(docs).compile()


def request(*chain: str) -> AccessRequest:
    return AccessRequest("r1", NOW, "agent-1", "config:write", PROD_CONFIG, RequestContext(), list(chain))


def human(pid: str, **kw: Any) -> Identity:
    return Identity(id=pid, kind=kw.pop("kind", "human"), owner="o", **kw)


ADMIN_HUMAN = [{"any_principal": [{"principal.kind": "human"}, {"principal.scopes": {"contains": "config:admin"}}]}]


def test_any_principal_needs_one_principal_satisfying_every_condition() -> None:
    b = bundle(ADMIN_HUMAN)
    admin, plain = human("alice", scopes=["config:admin"]), human("bob")
    robot = human("sa", kind="service_account", scopes=["config:admin"])
    assert evaluate(b, request("alice"), AGENT, [], NOW, None, [admin]).decision == "allow"
    assert evaluate(b, request("bob", "alice"), AGENT, [], NOW, None, [plain, admin]).decision == "allow"
    assert evaluate(b, request("bob"), AGENT, [], NOW, None, [plain]).decision == "deny"
    # kind and scope must hold for the same principal
    assert evaluate(b, request("sa", "bob"), AGENT, [], NOW, None, [robot, plain]).decision == "deny"
    assert evaluate(b, request(), AGENT, [], NOW).decision == "deny"


def test_all_principals_is_false_for_an_empty_chain() -> None:
    b = bundle([{"all_principals": [{"principal.risk_tier": {"lte": "medium"}}]}])
    low, high = human("a", risk_tier="low"), human("b", risk_tier="high")
    assert evaluate(b, request("a"), AGENT, [], NOW, None, [low]).decision == "allow"
    assert evaluate(b, request("a", "b"), AGENT, [], NOW, None, [low, high]).decision == "deny"
    assert evaluate(b, request(), AGENT, [], NOW).decision == "deny"  # fail closed: no principal, no "all"


def test_generated_code_and_closure_tree_agree_on_quantifiers() -> None:
    b = bundle([{"not": {"any_principal": [{"principal.tags": {"contains": "oncall"}},
                                           {"principal.attributes.team": "sre"}]}},
                {"all_principals": [{"principal.kind": {"in": ["human", "agent"]}}]}])
    (rule,) = b.rules
    chains = [[], [human("a", tags=["oncall"], attributes={"team": "sre"})], [human("b", tags=["oncall"])],
              [human("c", kind="agent"), human("d", kind="workload")], [human("e", attributes={"team": "sre"})]]
    for chain in chains:
        env = new_env(request(*(p.id for p in chain)), AGENT, [], NOW, None, chain)
        assert bool(rule.match(env)) == bool(rule.slow_match(env)), [p.id for p in chain]


@pytest.mark.parametrize(("chain", "principals", "code"), [
    (["ghost"], [None], "delegator_unknown"),
    (["alice"], [], "delegator_unknown"),  # the caller did not resolve the chain: fail closed
    (["alice"], [human("mallory")], "delegator_unknown"),  # resolved to someone else
    (["alice"], [human("alice", status="suspended")], "delegator_suspended"),
    (["alice"], [human("alice", status="decommissioned")], "delegator_suspended"),
    (["a", "b", "c", "d", "e"], [human(x) for x in "abcde"], "delegation_too_deep"),
])
def test_a_chain_with_an_unknown_or_inactive_principal_is_denied_before_any_rule(
    chain: list[str], principals: list[Identity | None], code: str
) -> None:
    d = evaluate(bundle([]), request(*chain), AGENT, [], NOW, None, principals)
    assert (d.decision, d.reason_codes, d.matched_rules) == ("deny", [code], [])


def test_the_maximum_depth_is_configurable() -> None:
    chain = [human(x) for x in "ab"]
    assert evaluate(bundle([]), request("a", "b"), AGENT, [], NOW, None, chain, 1).reason_codes \
        == ["delegation_too_deep"]
    assert evaluate(bundle([]), request("a", "b"), AGENT, [], NOW, None, chain, 2).decision == "allow"


def test_the_decision_names_the_principals_and_the_approval_it_relied_on() -> None:
    b = bundle([{"context.approval_valid": True}])
    approval = Approval("apr-1", "agent-1", "config:*", "feature-*", "carol", NOW - timedelta(hours=1),
                        NOW + timedelta(hours=1))
    other = Approval("apr-0", "agent-1", "db:*", "*", "dave", NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    alice = human("alice")
    d = evaluate(b, request("alice"), AGENT, [other, approval], NOW, None, [alice])
    assert d.decision == "allow"
    assert d.relied_on_approvals == [approval] and d.principals == [alice]
    assert "relied_on_approvals" not in d.to_dict() and "principals" not in d.to_dict()  # never in the reply
    assert evaluate(b, request(), AGENT, [other], NOW).relied_on_approvals == []


def test_explain_shows_each_principal() -> None:
    b = bundle(ADMIN_HUMAN)
    chain = [human("bob"), human("alice", scopes=["config:admin"])]
    case = RequestCase(request("bob", "alice"), AGENT, [], NOW, None, chain)
    ex = explain(b, case)
    assert ex.decision.decision == "allow"
    node = ex.rules[0].conditions[-1].to_dict()
    assert [c["held"] for c in node["children"]] == [False, True]
    assert any("on behalf of alice" in line for line in ex.to_dict()["delegation"])


@pytest.mark.parametrize(("when", "message"), [
    ([{"principal.kind": "human"}], "inside `any_principal"),
    ([{"any_principal": [{"all_principals": [{"principal.kind": "human"}]}]}], "cannot be used inside"),
    ([{"any_principal": []}], "non-empty list"),
])
def test_principal_attributes_only_inside_one_quantifier(when: list[Any], message: str) -> None:
    with pytest.raises(PolicyValidationError) as err:
        bundle(when)
    assert message in str(err.value)


def test_delegation_depth_is_readable() -> None:
    b = bundle([{"context.delegation_depth": {"lte": 1}}])
    assert evaluate(b, request(), AGENT, [], NOW).decision == "allow"
    assert evaluate(b, request("a"), AGENT, [], NOW, None, [human("a")]).decision == "allow"
    assert evaluate(b, request("a", "b"), AGENT, [], NOW, None, [human("a"), human("b")]).decision == "deny"


def test_rules_read_what_proved_the_chain() -> None:
    """context.delegation.source / .id: e.g. production writes only with a delegated token, not a standing grant."""
    from streams.model.delegation import DelegationProof

    b = bundle([{"context.delegation.source": "token"}, {"context.delegation.id": {"missing": False}}])
    alice = human("alice")
    by_token = DelegationProof("token", ("jti-1",), ("https://idp",))
    by_grant = DelegationProof("grant", ("dlg-1",), ("k1",))
    assert evaluate(b, request("alice"), AGENT, [], NOW, None, [alice], delegation=by_token).decision == "allow"
    assert evaluate(b, request("alice"), AGENT, [], NOW, None, [alice], delegation=by_grant).decision == "deny"
    assert evaluate(b, request(), AGENT, [], NOW).decision == "deny"  # no chain: nothing proved, attribute missing
    ids = bundle([{"context.delegation.id": "dlg-1"}])
    assert evaluate(ids, request("alice"), AGENT, [], NOW, None, [alice], delegation=by_grant).decision == "allow"
