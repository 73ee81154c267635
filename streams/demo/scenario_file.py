"""The demo's scenarios (streams/demo/scenarios.yaml): load, validate, resolve relative times.

The cases have the shape of ``pdx policy test`` cases (streams/policy/testing.py) so that the demo's
expectations are policy test cases too: tests/unit/demo runs them through the engine without Kafka, with
:func:`streams.policy.build_request_case` on :attr:`Scenario.case`. The header of scenarios.yaml says what the
demo adds to that shape and why. A bad file is a :class:`ScenarioFileError` naming the file, line, case and
field; nothing is sent until the whole file is valid.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams.errors import UserError
from streams.model import Approval, RequestContext, Resource
from streams.model.inventory_file import resolve_relative
from streams.policy.loader import PolicyValidationError, load_yaml
from streams.policy.testing import CASE_KEYS, CaseError, build_request_case

SCENARIO_FILE = "scenarios.yaml"
FILE_KEYS = {"description", "resources", "delegations", "cases", "then"}
#: A demo case: a policy test case without ``now`` (cases run at the current time), plus ``expect_when`` and
#: ``approve`` (the step_up is approved by a second person while the client waits for it).
DEMO_CASE_KEYS = (CASE_KEYS - {"now"}) | {"expect_when", "approve"}
DELEGATION_KEYS = {"grant_id", "delegator", "delegate", "action", "resource_id", "ttl"}
APPROVE_KEYS = {"by", "ttl"}
THEN_KEYS = DEMO_CASE_KEYS | {"suspend"}
#: The demo checks the decision and its reasons only; other test-case expectations would go unchecked.
DEMO_EXPECT_KEYS = {"decision", "reasons"}
REQUEST_KEYS = {"action", "on_behalf_of", "identity_id"}
WINDOW_KEYS = ("in_change_window", "outside_change_window")
DECISIONS = ("allow", "deny", "step_up")
_RESOURCE_KEYS = {f.name for f in dataclasses.fields(Resource)}
_CONTEXT_KEYS = {f.name for f in dataclasses.fields(RequestContext)}


class ScenarioFileError(UserError, ValueError):
    """scenarios.yaml is malformed; the message names the file, line, case and field."""


@dataclass
class Scenario:
    """One request the demo sends, and what it expects back."""

    name: str
    identity: str
    action: str
    resource: dict[str, Any]
    context: dict[str, Any] = field(default_factory=dict)
    expected: str = "deny"
    expected_reasons: list[str] = field(default_factory=list)
    on_behalf_of: list[str] = field(default_factory=list)
    approvals: list[Approval] = field(default_factory=list)
    #: claims of the workload token the runner mints with the dev issuer and sends (None: no token)
    token: dict[str, Any] | None = None
    #: an identity the runner suspends before sending this request (``then:`` entries only)
    suspend: str | None = None
    #: who approves the step_up while the client waits, and for how long (``approve: {by, ttl}``), else None
    approve: dict[str, str] | None = None
    #: the case in ``pdx policy test`` shape: times resolved, ``expect`` chosen, demo-only keys removed
    case: dict[str, Any] = field(default_factory=dict)

    @property
    def expected_code(self) -> str:
        """The reason code the scenario demonstrates (its first expected reason)."""
        return self.expected_reasons[0]

    @property
    def in_inventory(self) -> bool:
        """False for a scenario that sends an id which is deliberately not in the inventory."""
        return self.case.get("identity") is not None


@dataclass
class DemoScenarios:
    cases: list[Scenario]
    then: list[Scenario]
    #: the signed delegation grants the runner records before the first case (``delegations:``)
    delegations: list[dict[str, str]] = field(default_factory=list)

    @property
    def approvals(self) -> list[Approval]:
        """Every approval the runner grants before sending the first case."""
        return [a for sc in [*self.cases, *self.then] for a in sc.approvals]


def load_scenarios(in_change_window: bool, now: datetime | None = None) -> DemoScenarios:
    """The packaged scenarios.yaml, with relative times resolved against ``now`` (default: the current time)."""
    resource = importlib.resources.files("streams.demo").joinpath(SCENARIO_FILE)
    return parse_scenarios(resource.read_text(encoding="utf-8"), str(resource), in_change_window, now)


def parse_scenarios(text: str, filename: str, in_change_window: bool,
                    now: datetime | None = None) -> DemoScenarios:
    now = now or datetime.now(UTC)
    try:
        doc = load_yaml(text, filename)
    except PolicyValidationError as exc:
        raise ScenarioFileError(str(exc.problems[0])) from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("cases"), list) or not doc["cases"]:
        raise ScenarioFileError(f"{filename}: needs a non-empty 'cases' list")
    _no_unknown(doc, FILE_KEYS, f"{filename}:", "top-level keys")
    then = doc.get("then") or []
    if not isinstance(then, list):
        raise ScenarioFileError(f"{filename}:{_line(doc, 'then')}: 'then' must be a list of cases")
    seen: set[str] = set()
    cases = [_scenario(c, i, filename, "cases", in_change_window, now, seen) for i, c in enumerate(doc["cases"], 1)]
    after = [_scenario(c, i, filename, "then", in_change_window, now, seen) for i, c in enumerate(then, 1)]
    return DemoScenarios(cases, after, _delegations(doc.get("delegations") or [], filename))


def _delegations(node: Any, filename: str) -> list[dict[str, str]]:
    if not isinstance(node, list):
        raise ScenarioFileError(f"{filename}: 'delegations' must be a list of grants")
    out = []
    for i, g in enumerate(node, 1):
        where = f"{filename}:{_line(g)}: delegations[{i}]"
        if not isinstance(g, Mapping):
            raise ScenarioFileError(f"{where} must be a mapping ({', '.join(sorted(DELEGATION_KEYS))})")
        _no_unknown(g, DELEGATION_KEYS, where, "keys")
        missing = sorted(DELEGATION_KEYS - set(g))
        if missing or not all(isinstance(g[k], str) and g[k] for k in DELEGATION_KEYS):
            raise ScenarioFileError(f"{where} needs the strings {', '.join(sorted(DELEGATION_KEYS))}"
                                    + (f" (missing {', '.join(missing)})" if missing else ""))
        out.append({k: str(g[k]) for k in DELEGATION_KEYS})
    return out


def _line(node: Any, key: str | None = None) -> int | str:
    lines = getattr(node, "key_lines", {})
    line = lines.get(key) if key is not None else None
    return line or getattr(node, "line", None) or "?"


def _no_unknown(node: Mapping[str, Any], allowed: set[str], where: str, what: str) -> None:
    unknown = sorted(set(node) - allowed)
    if unknown:
        raise ScenarioFileError(f"{where} unknown {what} {unknown} (allowed: {', '.join(sorted(allowed))})")


def _plain(value: Any, now: datetime | None = None) -> Any:
    """YAML mappings → fresh dicts (anchors are shared objects); with ``now``, ``now-2m``-style strings
    become datetimes (done for context and approvals only, so an id that reads "now" stays an id)."""
    if isinstance(value, Mapping):
        return {k: _plain(v, now) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, now) for v in value]
    return value if now is None else resolve_relative(value, now)


def _scenario(node: Any, index: int, filename: str, section: str, in_change_window: bool, now: datetime,
              seen: set[str]) -> Scenario:
    if not isinstance(node, Mapping):
        raise ScenarioFileError(f"{filename}:{_line(node)}: {section}[{index}] must be a mapping (a case)")
    raw_name = node.get("name")
    if not isinstance(raw_name, str) or not raw_name.strip():
        raise ScenarioFileError(f"{filename}:{_line(node)}: {section}[{index}]: 'name' (a string) is required")
    where = f"{filename}:{_line(node)}: {section} {raw_name!r}:"
    duplicates = getattr(node, "duplicate_keys", None)
    if duplicates:
        raise ScenarioFileError(f"{where} duplicate key {duplicates[0][0]!r}")
    if "now" in node:
        raise ScenarioFileError(f"{where} 'now' is not supported: the demo runs at the current time "
                                "(write timestamps relative to it, e.g. now-2m)")
    _no_unknown(node, THEN_KEYS if section == "then" else DEMO_CASE_KEYS, where, "keys")
    expect, label = _expectation(node, where, in_change_window)
    name = f"{raw_name} ({label})" if label else raw_name
    if name in seen:
        raise ScenarioFileError(f"{where} duplicate scenario name")
    seen.add(name)
    suspend = node.get("suspend")
    if section == "then" and (not isinstance(suspend, str) or not suspend):
        raise ScenarioFileError(f"{where} 'suspend' (the identity id to suspend first) is required in 'then'")

    approve = node.get("approve")
    if approve is not None:
        if not isinstance(approve, Mapping) or set(approve) - APPROVE_KEYS or not isinstance(approve.get("by"), str):
            raise ScenarioFileError(f"{where} approve must be a mapping {{by: NAME, ttl: 30m}}")
        if expect["decision"] != "allow":
            raise ScenarioFileError(f"{where} a case with 'approve' expects the final decision: allow")
    case = {k: _plain(v, now if k in ("context", "approvals", "token") else None)
            for k, v in node.items() if k not in ("expect_when", "suspend", "approve")}
    case["name"] = name
    case["expect"] = expect
    request = case.get("request") or {}
    if not isinstance(request, dict):
        raise ScenarioFileError(f"{where} request must be a mapping (action, on_behalf_of)")
    _no_unknown(request, REQUEST_KEYS, where, "request keys")
    for key, allowed in (("resource", _RESOURCE_KEYS), ("context", _CONTEXT_KEYS)):
        if isinstance(case.get(key), dict):
            _no_unknown(case[key], allowed, where, f"{key} keys")
    identity_id = _identity_id(case.get("identity"), request, where)
    # Validate request, resource, context and approvals with the policy test machinery itself.
    probe = {**case, "identity": None, "request": {**request, "identity_id": identity_id}}
    try:
        rc = build_request_case(probe, default_now=now, name=where.rstrip(":"))
    except CaseError as exc:
        raise ScenarioFileError(str(exc)) from None
    return Scenario(
        name=name,
        identity=identity_id,
        action=rc.request.action,
        resource=case["resource"],
        context=case.get("context") or {},
        expected=expect["decision"],
        expected_reasons=list(expect["reasons"]),
        on_behalf_of=list(rc.request.on_behalf_of),
        approvals=rc.approvals,
        suspend=suspend,
        approve={k: str(v) for k, v in approve.items()} if approve is not None else None,
        case=case,
        token=case.get("token"),
    )


def _identity_id(identity: Any, request: Mapping[str, Any], where: str) -> str:
    """The id the demo sends: ``identity`` (an inventory id), or ``request.identity_id`` when it is null."""
    if isinstance(identity, str) and identity:
        if "identity_id" in request:
            raise ScenarioFileError(f"{where} request.identity_id is only for `identity: null` (an id that is "
                                    "not in the inventory); otherwise `identity` names the inventory id")
        return identity
    if identity is None:
        sent = request.get("identity_id")
        if not isinstance(sent, str) or not sent:
            raise ScenarioFileError(f"{where} with `identity: null`, request.identity_id names the id to send")
        return sent
    raise ScenarioFileError(f"{where} identity must be an id from examples/inventory.yaml (a string), or "
                            "null with request.identity_id (inline identities are not supported: the worker "
                            "only knows the loaded inventory)")


def _expectation(node: Mapping[str, Any], where: str, in_change_window: bool) -> tuple[dict[str, Any], str]:
    """The case's ``expect`` (validated), and a name label when it was chosen from ``expect_when``."""
    if ("expect" in node) == ("expect_when" in node):
        raise ScenarioFileError(f"{where} exactly one of 'expect' and 'expect_when' is required")
    if "expect" in node:
        return _expect(node["expect"], f"{where} expect"), ""
    when = node["expect_when"]
    if not isinstance(when, Mapping) or set(when) != set(WINDOW_KEYS):
        raise ScenarioFileError(f"{where} expect_when needs exactly the keys {', '.join(WINDOW_KEYS)}")
    expects = {key: _expect(when[key], f"{where} expect_when.{key}") for key in WINDOW_KEYS}
    key = WINDOW_KEYS[0] if in_change_window else WINDOW_KEYS[1]
    return expects[key], key.replace("_", " ")


def _expect(node: Any, where: str) -> dict[str, Any]:
    if not isinstance(node, Mapping):
        raise ScenarioFileError(f"{where} must be a mapping {{decision, reasons}}")
    _no_unknown(node, DEMO_EXPECT_KEYS, f"{where}:", "keys")
    decision = node.get("decision")
    if decision not in DECISIONS:
        raise ScenarioFileError(f"{where}.decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    reasons = node.get("reasons")
    if not isinstance(reasons, list) or not reasons or not all(isinstance(r, str) and r for r in reasons):
        raise ScenarioFileError(f"{where}.reasons must be a non-empty list of reason codes")
    return {"decision": decision, "reasons": list(reasons)}
