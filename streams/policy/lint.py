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

from streams.policy.compiler import CompiledBundle, CompiledRule, IndexedCond
from streams.policy.language import COMBINATORS, lookup_attribute
from streams.policy.loader import PolicySet, Problem
from streams.policy.operators import OPERATORS, Facts, Ref, is_ref
from streams.policy.testing import run_policy_tests

_PRECEDENCE = {"deny": 0, "step_up": 1, "allow": 2}
_BUILTIN_DENIED = ("suspended", "decommissioned")  # identity statuses the engine denies before any rule runs


def _key(node: Any) -> str:
    return json.dumps(node, sort_keys=True)


def _facts(node: Any) -> tuple[str, Facts] | None:
    """(attribute, what the leaf says about it) for a top-level leaf, else None."""
    if not isinstance(node, dict) or len(node) != 1:
        return None
    ((path, ops),) = node.items()
    if path in COMBINATORS or not isinstance(ops, dict) or len(ops) != 1:
        return None
    ((op, operand),) = ops.items()
    spec = lookup_attribute(path)
    entry = OPERATORS.get(op)
    if spec is None or entry is None:
        return None
    if is_ref(operand):
        return (path, entry.ref.lint(spec, Ref(operand["ref"]))) if entry.ref is not None else None
    return path, entry.lint(spec, operand)


def contradictions(when: list[Any]) -> list[str]:
    """Reasons the conjunction ``when`` can never hold (empty when none found).

    Each leaf contributes its operator's :class:`~streams.policy.operators.Facts`; the checks below only combine
    facts, so a new operator takes part by describing what it implies.
    """
    out: list[str] = []
    keys = {_key(n) for n in when}
    for n in when:
        if isinstance(n, dict) and set(n) == {"not"} and _key(n["not"]) in keys:
            out.append(f"both {_key(n['not'])} and its negation are required")
    leaves = [f for f in map(_facts, when) if f is not None]
    equals: dict[str, Any] = {}
    lower: dict[str, tuple[float, bool]] = {}
    upper: dict[str, tuple[float, bool]] = {}
    presence: dict[str, set[bool]] = {}
    lacks: dict[str, set[Any]] = {}
    for path, f in leaves:
        if f.present is not None:
            presence.setdefault(path, set()).add(f.present)
        if f.lacks is not None:
            lacks.setdefault(path, set()).add(f.lacks)
        if f.equals is not None:
            if path in equals and equals[path] != f.equals:
                out.append(f"{path} cannot equal both {equals[path]!r} and {f.equals!r}")
            equals[path] = f.equals
            if path == "identity.status" and f.equals in _BUILTIN_DENIED:
                out.append(f"the engine denies {f.equals} identities before any rule runs")
        if f.lower is not None:
            cur = lower.get(path)
            v, strict = f.lower
            if cur is None or v > cur[0] or (v == cur[0] and strict):
                lower[path] = f.lower
        if f.upper is not None:
            cur = upper.get(path)
            v, strict = f.upper
            if cur is None or v < cur[0] or (v == cur[0] and strict):
                upper[path] = f.upper
    for path, f in leaves:
        if f.one_of is not None and path in equals and equals[path] not in f.one_of:
            out.append(f"{path} equals {equals[path]!r} but must be in {f.one_of!r}")
        if f.differs is not None and path in equals and equals[path] == f.differs:
            out.append(f"{path} must both equal and not equal {f.differs!r}")
        if f.has is not None and f.has in lacks.get(path, ()):
            out.append(f"{path} must both contain and not contain {f.has!r}")
        if path == "identity.status" and f.one_of is not None and set(f.one_of) <= set(_BUILTIN_DENIED):
            out.append("the engine denies suspended/decommissioned identities before any rule runs")
        if path == "now.hour" and (f.equals is not None or f.one_of is not None):
            hours = f.one_of if f.one_of is not None else [f.equals]
            if all(not (0 <= v <= 23) for v in hours if isinstance(v, (int, float))):
                out.append(f"now.hour is 0-23; {f.equals if f.one_of is None else f.one_of!r} never occurs")
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
