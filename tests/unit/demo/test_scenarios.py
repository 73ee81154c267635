"""The demo's scenarios.yaml: it loads, names identities the demo inventory has, and every expectation is what
the policy engine decides, so `pdx demo`'s checks are tested here without Kafka, with the `pdx policy test`
machinery. Reasons are checked as the demo checks them: each expected code must be among the decision's
(outside the change window, "2b repo not approved" also collects outside_change_window)."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from streams.demo.runner import in_change_window, scenarios
from streams.demo.scenario_file import DemoScenarios, ScenarioFileError, load_scenarios, parse_scenarios
from streams.model import Approval
from streams.model.delegation import DelegationGrant, DelegationUnproven, prove_chain
from streams.model.inventory_file import read_inventory
from streams.policy import build_request_case, compile_bundle, evaluate, load_policy_dir

CHECKOUT = Path(__file__).resolve().parents[3]
INVENTORY = CHECKOUT / "examples" / "inventory.yaml"
POLICIES = CHECKOUT / "policies"
TUESDAY_NOON_BERLIN = datetime(2025, 6, 3, 10, 0, tzinfo=UTC)  # inside the shipped change window
FRIDAY_NOON_BERLIN = datetime(2025, 6, 6, 10, 0, tzinfo=UTC)  # outside it


@pytest.mark.parametrize("window", [True, False])
def test_packaged_file_loads(window: bool) -> None:
    demo = load_scenarios(window)
    names = [sc.name for sc in [*demo.cases, *demo.then]]
    assert len(demo.cases) >= 13 and len(names) == len(set(names))
    assert [sc.name for sc in scenarios(window)] == [sc.name for sc in demo.cases]
    label = "(in change window)" if window else "(outside change window)"
    assert sum(label in n for n in names) == 1
    assert {sc.expected for sc in demo.cases} == {"allow", "deny", "step_up"}
    assert any(sc.suspend for sc in demo.then) and "kill switch" in demo.then[0].name
    assert demo.approvals and all(a.expires_at > a.granted_at for a in demo.approvals)


def test_every_scenario_names_an_inventory_identity() -> None:
    known = {i.id for i in read_inventory(INVENTORY)}
    demo = load_scenarios(True)
    for sc in [*demo.cases, *demo.then]:
        if sc.in_inventory:
            assert sc.identity in known, sc.name
        else:  # `identity: null`: the point is an id the worker has never heard of
            assert sc.identity not in known, sc.name
        assert sc.suspend is None or sc.suspend in known, sc.name
    assert sum(not sc.in_inventory for sc in demo.cases) == 1


def _fixtures(now: datetime, suspended: str | None = None) -> dict[str, Any]:
    fixtures = {i.id: i.to_dict() for i in read_inventory(INVENTORY, now=now)}
    if suspended:
        fixtures[suspended]["status"] = "suspended"
    return fixtures


@pytest.mark.parametrize("now", [TUESDAY_NOON_BERLIN, FRIDAY_NOON_BERLIN], ids=["in-window", "outside-window"])
def test_expectations_are_what_the_engine_decides(now: datetime) -> None:
    window = in_change_window(now)
    assert window is (now == TUESDAY_NOON_BERLIN)  # both branches of `expect_when` are exercised
    bundle = compile_bundle(load_policy_dir(POLICIES).to_bundle_content())
    demo: DemoScenarios = load_scenarios(window, now=now)
    approvals = demo.approvals  # granted before the first case, so the worker holds them all along
    grants = [DelegationGrant.from_dict({**{k: v for k, v in g.items() if k != "ttl"}, "granted_by": "demo",
                                         "granted_at": now, "expires_at": now + timedelta(hours=8)})
              for g in demo.delegations]  # recorded before the first case too
    failures = []
    for sc in [*demo.cases, *demo.then]:
        rc = build_request_case(sc.case, _fixtures(now, sc.suspend), now, sc.name)
        outcome = _decide(bundle, rc, approvals, grants, now)
        if sc.approve is not None:  # a step_up first; allowed once an approval for exactly this request exists
            assert outcome[0] == "step_up", sc.name
            granted = Approval("apq-x", sc.identity, sc.action, sc.resource["id"], sc.approve["by"], now,
                               now + timedelta(minutes=30))
            outcome = _decide(bundle, rc, [*approvals, granted], grants, now)
        if outcome[0] != sc.expected or not set(sc.expected_reasons) <= set(outcome[1]):
            failures.append((sc.name, sc.expected, sc.expected_reasons, *outcome))
    assert failures == []


def _decide(bundle: Any, rc: Any, approvals: list[Approval], grants: list[DelegationGrant],
            now: datetime) -> tuple[str, list[str]]:
    """What the worker decides: the chain proven first (streams/model/delegation.py), then the engine."""
    chain = rc.request.on_behalf_of
    proof = None
    if chain and rc.identity is not None and all(p is not None for p in rc.principals):
        try:
            proof = prove_chain(chain, rc.identity, rc.principals, rc.token, grants, rc.request.action,
                                rc.request.resource.id, now)
        except DelegationUnproven:
            return "deny", ["delegation_unproven"]
    d = evaluate(bundle, rc.request, rc.identity, approvals, now, rc.token, rc.principals, delegation=proof)
    return d.decision, d.reason_codes


def _parse(cases: str, then: str = "") -> DemoScenarios:
    text = "cases:\n" + textwrap.indent(textwrap.dedent(cases), "  ")
    if then:
        text += "then:\n" + textwrap.indent(textwrap.dedent(then), "  ")
    return parse_scenarios(text, "scenarios.yaml", True, TUESDAY_NOON_BERLIN)


GOOD = """\
- name: ok
  identity: agent-analytics
  request: {action: "db:connect", on_behalf_of: [alice]}
  resource: {id: orders-db, type: database}
  context: {requested_ttl_s: 900, token_issued_at: now-2m}
  expect: {decision: allow, reasons: [agent_production_time_bounded]}
"""


def test_relative_times_and_request_fields() -> None:
    (sc,) = _parse(GOOD).cases
    assert sc.context["token_issued_at"] == datetime(2025, 6, 3, 9, 58, tzinfo=UTC)
    assert (sc.identity, sc.action, sc.on_behalf_of, sc.expected_code) == (
        "agent-analytics", "db:connect", ["alice"], "agent_production_time_bounded")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("  expect: {decision: allow,", "  expect: {decision: permit,", "expect.decision must be one of"),
        ("reasons: [agent_production_time_bounded]}", "reasons: []}", "expect.reasons must be a non-empty list"),
        ("  expect: {decision: allow, reasons: [agent_production_time_bounded]}\n", "", "exactly one of 'expect'"),
        ("  identity: agent-analytics", "  identity: {id: agent-x, kind: agent}", "identity must be an id"),
        ("  identity: agent-analytics", "  identity: null", "request.identity_id names the id"),
        ("requested_ttl_s: 900", "requested_ttl: 900", "unknown context keys ['requested_ttl']"),
        ("type: database}", "type: database, env: production}", "unknown resource keys ['env']"),
        ("on_behalf_of: [alice]", "behalf: [alice]", "unknown request keys ['behalf']"),
        ("now-2m", "now-2x", "context.token_issued_at"),
        ("requested_ttl_s: 900", "requested_ttl_s: soon", "context.requested_ttl_s"),
        ("  resource: {id: orders-db, type: database}\n", "", "resource is required"),
        ("  context:", "  now: \"2025-06-03T10:00:00Z\"\n  context:", "'now' is not supported"),
        ("  context:", "  expected: allow\n  context:", "unknown keys ['expected']"),
    ],
)
def test_bad_cases_name_the_scenario_and_field(old: str, new: str, message: str) -> None:
    assert old in GOOD
    with pytest.raises(ScenarioFileError) as exc:
        _parse(GOOD.replace(old, new))
    assert message in str(exc.value) and "'ok'" in str(exc.value) and "scenarios.yaml:" in str(exc.value)


def test_expect_when_needs_both_windows_and_picks_one() -> None:
    windowed = GOOD.replace(
        "  expect: {decision: allow, reasons: [agent_production_time_bounded]}\n",
        "  expect_when:\n"
        "    in_change_window: {decision: allow, reasons: [a]}\n"
        "    outside_change_window: {decision: deny, reasons: [b]}\n")
    (sc,) = _parse(windowed).cases
    assert (sc.name, sc.expected, sc.expected_reasons) == ("ok (in change window)", "allow", ["a"])
    with pytest.raises(ScenarioFileError, match="expect_when needs exactly the keys"):
        _parse(windowed.replace("    outside_change_window: {decision: deny, reasons: [b]}\n", ""))


def test_file_level_problems() -> None:
    with pytest.raises(ScenarioFileError, match="duplicate scenario name"):
        _parse(GOOD + GOOD)
    with pytest.raises(ScenarioFileError, match=r"'suspend' .* is required in 'then'"):
        _parse(GOOD, then=GOOD.replace("name: ok", "name: later"))
    with pytest.raises(ScenarioFileError, match="unknown top-level keys"):
        parse_scenarios("cases:\n" + textwrap.indent(GOOD, "  ") + "extra: 1\n", "f.yaml", True)
    with pytest.raises(ScenarioFileError, match="non-empty 'cases' list"):
        parse_scenarios("then: []\n", "f.yaml", True)
    with pytest.raises(ScenarioFileError, match="YAML syntax error"):
        parse_scenarios("cases: [\n", "f.yaml", True)
