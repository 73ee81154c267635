"""``pdx policy lint``: warnings for rules that cannot matter or are not tested.

- *shadowed*: an enforce rule whose conditions always imply a rule of higher precedence
  (deny > step_up > allow), so it can never decide; or two rules with identical conditions and effect.
- *unreachable*: conditions that contradict each other (``equals a`` and ``equals b``, ``exists`` and
  ``missing``, ``X`` and ``not X``, an empty numeric range, an hour outside 0-23) or that only match
  suspended/decommissioned identities (the engine denies those before rules run).
- *untested*: no case in the tests directory exercises the rule.

The checks are syntactic on the canonical top-level conjunction: sound (a warning is real) but not complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streams.policy.compiler import CompiledBundle, CompiledRule
from streams.policy.language import SET, lookup_attribute, parse_duration_s, to_unit
from streams.policy.loader import PolicySet, Problem
from streams.policy.testing import run_policy_tests

_PRECEDENCE = {"deny": 0, "step_up": 1, "allow": 2}


def _key(node: Any) -> str:
    return json.dumps(node, sort_keys=True)


def _leaf(node: Any) -> tuple[str, str, Any] | None:
    if not isinstance(node, dict) or len(node) != 1:
        return None
    ((path, ops),) = node.items()
    if path in ("all", "any", "not", "within") or not isinstance(ops, dict) or len(ops) != 1:
        return None
    ((op, operand),) = ops.items()
    return path, op, operand


def _num(path: str, v: Any) -> float | None:
    spec = lookup_attribute(path)
    if spec is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str) and spec.unit:
        return to_unit(parse_duration_s(v), spec.unit)
    if spec.ordered and v in spec.values:
        return float(spec.values.index(v))
    return None


def contradictions(when: list[Any]) -> list[str]:
    """Reasons the conjunction ``when`` can never hold (empty when none found)."""
    out: list[str] = []
    keys = {_key(n) for n in when}
    for n in when:
        if isinstance(n, dict) and set(n) == {"not"} and _key(n["not"]) in keys:
            out.append(f"both {_key(n['not'])} and its negation are required")
    equals: dict[str, Any] = {}
    lower: dict[str, tuple[float, bool]] = {}
    upper: dict[str, tuple[float, bool]] = {}
    presence: dict[str, set[bool]] = {}
    for n in when:
        leaf = _leaf(n)
        if leaf is None:
            continue
        path, op, operand = leaf
        if isinstance(operand, dict):
            continue
        spec = lookup_attribute(path)
        if op in ("exists", "missing"):
            presence.setdefault(path, set()).add(operand if op == "exists" else not operand)
        elif spec is not None and spec.type != SET:
            presence.setdefault(path, set()).add(True)  # every other operator is false on a missing value
        if op == "equals":
            if path in equals and equals[path] != operand:
                out.append(f"{path} cannot equal both {equals[path]!r} and {operand!r}")
            equals[path] = operand
            if path == "identity.status" and operand in ("suspended", "decommissioned"):
                out.append(f"the engine denies {operand} identities before any rule runs")
        if op in ("gt", "gte", "lt", "lte", "equals"):
            v = _num(path, operand)
            if v is None:
                continue
            if op in ("gt", "gte", "equals"):
                strict = op == "gt"
                cur = lower.get(path)
                if cur is None or v > cur[0] or (v == cur[0] and strict):
                    lower[path] = (v, strict)
            if op in ("lt", "lte", "equals"):
                strict = op == "lt"
                cur = upper.get(path)
                if cur is None or v < cur[0] or (v == cur[0] and strict):
                    upper[path] = (v, strict)
    for n in when:
        leaf = _leaf(n)
        if leaf is None:
            continue
        path, op, operand = leaf
        if op == "in" and path in equals and isinstance(operand, list) and equals[path] not in operand:
            out.append(f"{path} equals {equals[path]!r} but must be in {operand!r}")
        if op == "not_equals" and path in equals and equals[path] == operand:
            out.append(f"{path} must both equal and not equal {operand!r}")
        if op == "contains" and _key({path: {"not_contains": operand}}) in keys:
            out.append(f"{path} must both contain and not contain {operand!r}")
        if path == "identity.status" and op == "in" and isinstance(operand, list) and set(operand) <= {
                "suspended", "decommissioned"}:
            out.append("the engine denies suspended/decommissioned identities before any rule runs")
        if path == "now.hour" and op in ("equals", "in"):
            vals = operand if isinstance(operand, list) else [operand]
            if all(not (0 <= v <= 23) for v in vals if isinstance(v, (int, float))):
                out.append(f"now.hour is 0-23; {operand!r} never occurs")
    for path, flags in presence.items():
        if flags == {True, False}:
            out.append(f"{path} must both exist and be missing")
    for path in set(lower) & set(upper):
        (lo, lo_strict), (hi, hi_strict) = lower[path], upper[path]
        if lo > hi or (lo == hi and (lo_strict or hi_strict)):
            out.append(f"{path} has an empty range")
    return out


def _covers_index(b: CompiledRule, a: CompiledRule) -> bool:
    """Whether every (action, resource type) the index sends to ``a`` also reaches ``b``."""
    if b.resource_types is not None and (a.resource_types is None or not a.resource_types <= b.resource_types):
        return False
    if b.actions is None and b.action_glob is None:
        return True  # b has no action constraint
    if a.actions is not None:
        if b.actions is not None:
            return a.actions <= b.actions
        return b.action_glob is not None and all(b.action_glob(x) for x in a.actions)
    if a.action_patterns is not None and b.action_patterns is not None:
        return "*" in b.action_patterns or set(a.action_patterns) <= set(b.action_patterns)
    return False


def _runtime_keys(rule: dict[str, Any], compiled: CompiledRule) -> set[str]:
    from streams.policy.compiler import IndexedCond

    return {_key(node) for node, c in zip(rule["when"], compiled.conds, strict=True) if not isinstance(c, IndexedCond)}


def shadowing(ps: PolicySet, bundle: CompiledBundle) -> list[tuple[str, str]]:
    """(rule id, message) for enforce rules that can never decide or duplicate another rule."""
    rules = [(p, r, bundle.rules_by_id[r["id"]]) for p, r in ps.rules() if p["mode"] == "enforce"]
    keys = {r["id"]: _runtime_keys(r, c) for _p, r, c in rules}
    out: list[tuple[str, str]] = []
    for _pa, ra, ca in rules:
        for _pb, rb, cb in rules:
            if ra["id"] == rb["id"]:
                continue
            if not keys[rb["id"]] <= keys[ra["id"]] or not _covers_index(cb, ca):
                continue
            pa, pb = _PRECEDENCE[ra["effect"]], _PRECEDENCE[rb["effect"]]
            if pb < pa:
                out.append((ra["id"], f"shadowed: whenever it matches, {rb['id']} ({rb['effect']}) also matches "
                                      "and takes precedence, so it can never decide"))
                break
            if pb == pa and keys[rb["id"]] == keys[ra["id"]] and _covers_index(ca, cb) and rb["id"] < ra["id"]:
                out.append((ra["id"], f"duplicate: same conditions and effect as {rb['id']}"))
                break
    return out


def lint_policy_set(ps: PolicySet, tests_dir: str | Path | None) -> list[Problem]:
    bundle = ps.compile()
    warnings: list[Problem] = []

    def warn(rule_id: str, message: str) -> None:
        file, line = ps.location(rule_id)
        warnings.append(Problem(file, line, rule_id, message, severity="warning"))

    for _p, r in ps.rules():
        for why in contradictions(r["when"]):
            warn(r["id"], f"unreachable: {why}")
    for rid, msg in shadowing(ps, bundle):
        warn(rid, msg)
    if tests_dir is not None:
        report = run_policy_tests(ps, tests_dir)
        for p in report.problems:
            warnings.append(Problem(p.file, p.line, p.rule_id, p.message, severity="warning"))
        for rid in report.uncovered:
            warn(rid, "untested: no case in the tests exercises this rule")
    return warnings
