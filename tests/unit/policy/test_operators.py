"""The operator registry (streams.policy.operators): every entry is complete, and validation, the interpreted
closures, the generated code and lint agree on every operator — with no per-operator code in this file, so a new
entry is checked as soon as it exists."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import streams.policy
from streams.model import Approval, Identity, RequestContext, Resource
from streams.policy import AccessRequest, PolicyValidationError, policy_set_from_documents
from streams.policy.language import SET, TYPES, AttrSpec, lookup_attribute
from streams.policy.lint import contradictions
from streams.policy.operators import OPERATORS, Facts, Ref, check_operand, literal, operators_for, ordinal
from streams.policy.runtime import make_getter, new_env

NOW = datetime(2025, 6, 3, 10, 0, tzinfo=UTC)
POLICY_DIR = Path(streams.policy.__file__).parent

#: One attribute per type (two enums: ordered and not), and the values a request may give it (None = missing).
SAMPLES: dict[str, list[Any]] = {
    "resource.environment": [None, "prod", "dev", "db:x", "pr"],
    "identity.kind": ["agent", "human"],
    "resource.sensitivity": [None, "public", "confidential", "restricted"],
    "identity.tags": [[], ["prod"], ["a", "prod"], ["dev"]],
    "context.requested_ttl_s": [None, 0, 60, 3600, 90000],
    "context.approval_valid": [False, True],
    "context.source_ip": [None, "10.1.2.3", "192.168.0.1", "fd00::1", "not-an-ip"],
    "context.token_issued_at": [None, NOW - timedelta(hours=1)],
}

#: Operands to try; the registry's own check decides which are valid for an (operator, attribute).
CANDIDATES: list[Any] = [
    "prod", "dev", "db:*", "d?v", "[pd]*", "agent", "confidential", "public", "10.1.2.3",
    60, 0, "1h", "2d", True, False,
    ["prod"], ["prod", "dev"], ["a", "prod"], ["agent", "workload"], ["public", "internal"], [60, "1h"],
    ["d*", "x?"], "10.0.0.0/8", ["10.0.0.0/8", "fd00::/8"], {"x": 1}, None, [],
]


def _world(path: str, value: Any) -> tuple[AccessRequest, Identity, list[Approval]]:
    """A request and identity where attribute ``path`` has ``value`` (everything else fixed)."""
    ident: dict[str, Any] = {"id": "agent-1", "kind": "agent", "owner": "o"}
    res: dict[str, Any] = {"id": "db-1", "type": "database"}
    ctx: dict[str, Any] = {}
    approvals: list[Approval] = []
    group, _, name = path.partition(".")
    if path == "context.approval_valid":
        if value:
            approvals.append(Approval("a1", "agent-1", "*", "*", "carol", NOW - timedelta(hours=1),
                                      NOW + timedelta(hours=1)))
    elif group == "identity":
        ident[name] = value
    elif group == "resource":
        res[name] = value
    else:
        ctx[name] = value
    request = AccessRequest("r1", NOW, "agent-1", "db:connect", Resource(**res), RequestContext(**ctx))
    return request, Identity.from_dict(ident), approvals


def _worlds(*paths: str) -> Iterator[tuple[AccessRequest, Identity, list[Approval]]]:
    for path in paths:
        for value in SAMPLES[path]:
            yield _world(path, value)


def _spec(path: str) -> AttrSpec:
    spec = lookup_attribute(path)
    assert spec is not None
    return spec


def _valid_operands(op: str, path: str) -> list[Any]:
    spec = _spec(path)
    if spec.type not in OPERATORS[op].types:
        return []
    return [c for c in CANDIDATES if check_operand(spec, op, c) is None]


LEAVES = [(op, path, operand) for op in OPERATORS for path in SAMPLES for operand in _valid_operands(op, path)]


def _bundle(leaves: list[dict[str, Any]]) -> Any:
    rules = [{"id": f"r{i}", "effect": "allow", "when": [{"action": "db:connect"}, leaf],
              "reason": {"code": "r", "message": "m"}} for i, leaf in enumerate(leaves)]
    return policy_set_from_documents([{"name": "p", "owner": "o", "mode": "enforce", "controls": [],
                                       "rules": rules}]).compile()


# ---- completeness -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OPERATORS))
def test_every_operator_has_every_part(name: str) -> None:
    entry = OPERATORS[name]
    assert entry.name == name
    assert entry.types and set(entry.types) <= set(TYPES)
    for part in (entry.check, entry.evaluate, entry.emit, entry.lint):
        assert callable(part)
    if entry.ref is not None:
        for ref_part in (entry.ref.accepts, entry.ref.evaluate, entry.ref.emit, entry.ref.lint):
            assert callable(ref_part)
    assert entry.index in (None, "values", "patterns")


@pytest.mark.parametrize("name", list(OPERATORS))
def test_every_operator_has_a_valid_operand_for_every_type_it_applies_to(name: str) -> None:
    covered = {_spec(path).type for path in SAMPLES if _valid_operands(name, path)}
    assert covered == set(OPERATORS[name].types)


def test_only_the_registry_names_operators() -> None:
    """Compiler, code generator and lint dispatch through the registry; the validator only names the operators
    its shorthand expands to (``attr: value``)."""
    allowed = {"compiler.py": set(), "codegen.py": set(), "lint.py": set(),
               "validation.py": {"equals", "in", "contains", "contains_all"}}
    for file, ok in allowed.items():
        tree = ast.parse((POLICY_DIR / file).read_text(encoding="utf-8"))
        named = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in OPERATORS}
        assert named <= ok, f"{file} names operators {sorted(named - ok)}; put their behaviour in operators.py"


# ---- validation ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OPERATORS))
def test_validation_applies_the_type_rules(name: str) -> None:
    for path in SAMPLES:
        spec = _spec(path)
        if spec.type in OPERATORS[name].types:
            continue
        with pytest.raises(PolicyValidationError) as err:
            _bundle([{path: {name: "x"}}])
        msg = f"operator {name!r} does not apply to {path} (a {spec.type}); use one of: "
        assert msg + ", ".join(operators_for(spec.type)) in str(err.value.problems[0])


@pytest.mark.parametrize("name", list(OPERATORS))
def test_validation_runs_the_operand_check(name: str) -> None:
    for path in SAMPLES:
        spec = _spec(path)
        if spec.type not in OPERATORS[name].types:
            continue
        assert check_operand(spec, name, {"x": 1}) is not None  # a mapping that is not a ref is never an operand
        for operand in CANDIDATES:
            message = check_operand(spec, name, operand)
            if message is None:
                _bundle([{path: {name: operand}}])
            else:
                with pytest.raises(PolicyValidationError) as err:
                    _bundle([{path: {name: operand}}])
                assert f"{path} {name}: {message}" in str(err.value.problems[0])


@pytest.mark.parametrize("name", list(OPERATORS))
def test_refs_follow_the_ref_type_rule(name: str) -> None:
    entry = OPERATORS[name]
    for path in SAMPLES:
        for target in SAMPLES:
            spec = _spec(path)
            if spec.type not in entry.types:
                continue
            message = check_operand(spec, name, {"ref": target})
            if entry.ref is None:
                assert message == f"operator {name!r} does not take a ref"
            else:
                assert (message is None) is entry.ref.accepts(spec, _spec(target))
    unknown = check_operand(_spec("identity.tags"), "contains", {"ref": "no.such"})
    assert unknown == "ref 'no.such' is not a known attribute"


# ---- evaluation: the closure tree and the generated code agree ---------------------------------------------


def test_interpreted_and_generated_forms_agree_on_every_operator() -> None:
    assert {op for op, _p, _o in LEAVES} == set(OPERATORS)
    bundle = _bundle([{path: {op: operand}} for op, path, operand in LEAVES])
    for i, (op, path, operand) in enumerate(LEAVES):
        rule = bundle.rules_by_id[f"r{i}"]
        assert rule.slow_match is not None
        for request, ident, approvals in _worlds(path):
            env = new_env(request, ident, approvals, NOW)
            fast, slow = rule.match(env), rule.slow_match(new_env(request, ident, approvals, NOW))
            assert bool(fast) == bool(slow), (op, path, operand, make_getter(path, ZoneInfo("UTC"))(env))


def test_ref_forms_agree_and_their_lint_facts_are_sound() -> None:
    leaves = [(op, path, target) for op, entry in OPERATORS.items() if entry.ref is not None
              for path in SAMPLES for target in SAMPLES
              if _spec(path).type in entry.types and check_operand(_spec(path), op, {"ref": target}) is None]
    assert {op for op, _p, _t in leaves} == {op for op, e in OPERATORS.items() if e.ref is not None}
    bundle = _bundle([{path: {op: {"ref": target}}} for op, path, target in leaves])
    for i, (op, path, target) in enumerate(leaves):
        rule = bundle.rules_by_id[f"r{i}"]
        assert rule.slow_match is not None
        ref_form = OPERATORS[op].ref
        assert ref_form is not None
        facts = ref_form.lint(_spec(path), Ref(target))
        for request, ident, approvals in _worlds(path, target):
            env = new_env(request, ident, approvals, NOW)
            held = rule.match(env)
            assert bool(held) == bool(rule.slow_match(new_env(request, ident, approvals, NOW))), (op, path, target)
            if held:  # and lint's facts about a ref are sound too
                value = make_getter(path, ZoneInfo("UTC"))(env)
                assert _facts_hold(_spec(path), facts, value, env), (op, path, target, value, facts)


def test_every_operator_is_false_on_a_missing_value_except_missing_and_exists_false() -> None:
    for op, path, operand in LEAVES:
        spec = _spec(path)
        if None not in SAMPLES[path] or spec.type == SET:
            continue
        rule = _bundle([{path: {op: operand}}]).rules[0]
        held = rule.match(new_env(*_world(path, None), NOW))
        assert held == ((op, operand) in (("missing", True), ("exists", False))), (op, path, operand)


# ---- lint: the facts an operator states are true whenever its condition holds -------------------------------


def _facts_hold(spec: AttrSpec, f: Facts, value: Any, env: Any = None) -> bool:
    def resolve(x: Any) -> Any:  # a Ref stands for the referenced attribute's value
        return make_getter(x.path, ZoneInfo("UTC"))(env) if isinstance(x, Ref) else x

    present = bool(value) if spec.type == SET else value is not None
    checks = [
        f.present is None or f.present == present,
        f.equals is None or value == literal(spec, resolve(f.equals)),
        f.one_of is None or value in {literal(spec, x) for x in f.one_of},
        f.differs is None or value != literal(spec, resolve(f.differs)),
        f.has is None or resolve(f.has) in value,
        f.lacks is None or resolve(f.lacks) not in value,
    ]
    n = ordinal(spec, value) if value is not None and spec.type != SET else None
    if f.lower is not None:
        checks.append(n is not None and (n > f.lower[0] if f.lower[1] else n >= f.lower[0]))
    if f.upper is not None:
        checks.append(n is not None and (n < f.upper[0] if f.upper[1] else n <= f.upper[0]))
    return all(checks)


def test_lint_facts_are_sound() -> None:
    bundle = _bundle([{path: {op: operand}} for op, path, operand in LEAVES])
    for i, (op, path, operand) in enumerate(LEAVES):
        spec = _spec(path)
        facts = OPERATORS[op].lint(spec, operand)
        rule = bundle.rules_by_id[f"r{i}"]
        for request, ident, approvals in _worlds(path):
            env = new_env(request, ident, approvals, NOW)
            if rule.match(env):
                value = make_getter(path, ZoneInfo("UTC"))(env)
                assert _facts_hold(spec, facts, value), (op, path, operand, value, facts)


def test_lint_reasons_about_refs() -> None:
    ref = {"ref": "resource.environment"}
    both = [{"identity.scopes": {"contains": ref}}, {"identity.scopes": {"not_contains": ref}}]
    assert contradictions(both) == [
        "identity.scopes must both contain and not contain {'ref': 'resource.environment'}"]
    # an hour compared with another attribute may well be 0-23: nothing to say
    assert contradictions([{"now.hour": {"equals": {"ref": "context.requested_ttl_s"}}}]) == []


# ---- index --------------------------------------------------------------------------------------------------


def _single_rule(leaf: dict[str, Any]) -> Any:
    return policy_set_from_documents([{"name": "p", "owner": "o", "mode": "enforce", "controls": [], "rules": [
        {"id": "r", "effect": "allow", "when": [leaf], "reason": {"code": "r", "message": "m"}}]}]).compile().rules[0]


@pytest.mark.parametrize("name", [n for n, e in OPERATORS.items() if "string" in e.types])
def test_the_index_kind_decides_what_the_index_answers(name: str) -> None:
    operand = next(c for c in (["db:connect", "db:query"], "db:*", True)
                   if check_operand(_spec("action"), name, c) is None)
    index = OPERATORS[name].index
    on_action = _single_rule({"action": {name: operand}})
    assert (on_action.actions is not None) is (index == "values")
    assert (on_action.action_glob is not None) is (index == "patterns")
    on_type = _single_rule({"resource.type": {name: operand}})
    assert (on_type.resource_types is not None) is (index == "values")  # resource types: exact values only


def test_the_docs_table_lists_exactly_the_registered_operators() -> None:
    table = [line for line in (POLICY_DIR / "LANGUAGE.md").read_text(encoding="utf-8").splitlines()
             if line.startswith("| `")]
    documented = {m for line in table for m in re.findall(r"`([a-z_]+)`", line.split("|")[1])}
    assert documented == set(OPERATORS)
