"""``pdx policy explain``: per rule, which conditions held and which failed (like ``opa eval --explain``).

Explain re-evaluates every condition without short-circuiting (so every failing condition is shown) through
the same compiled leaves the fast path uses; its matched/not-matched verdicts agree with :func:`evaluate`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from streams.model import Decision, iso_utc
from streams.policy.compiler import CompiledBundle, CompiledRule, ExplainNode
from streams.policy.evaluator import evaluate
from streams.policy.runtime import new_env
from streams.policy.testing import RequestCase


@dataclass
class RuleExplanation:
    rule: CompiledRule
    applicable: bool  # the index considers it for this action / resource type
    matched: bool
    status: str  # decided | matched, not deciding (...) | would have <effect> (monitor) | not matched | ...
    conditions: list[ExplainNode] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.rule.policy,
            "rule": self.rule.id,
            "effect": self.rule.effect,
            "mode": self.rule.mode,
            "applicable": self.applicable,
            "matched": self.matched,
            "status": self.status,
            "conditions": [c.to_dict() for c in self.conditions],
        }


@dataclass
class Explanation:
    decision: Decision
    rules: list[RuleExplanation]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = self.decision.to_dict()
        d["evaluated_at"] = iso_utc(self.decision.evaluated_at)
        return {"decision": d, "note": self.note, "delegation": delegation_lines(self.decision),
                "rules": [r.to_dict() for r in self.rules]}


def delegation_lines(d: Decision) -> list[str]:
    """The delegation chain and the approvals a decision relied on, one line each (text and JSON alike)."""
    out = [f"on behalf of {p.id} ({p.kind}, {p.status}; scopes {', '.join(p.scopes) or 'none'})"
           for p in d.principals]
    out += [f"approval relied on: {a.approval_id} by {a.approved_by or '(unknown)'}, expires "
            f"{iso_utc(a.expires_at)}" for a in d.relied_on_approvals]
    return out


def explain(bundle: CompiledBundle, case: RequestCase) -> Explanation:
    decision = evaluate(bundle, case.request, case.identity, case.approvals, case.now, case.token, case.principals,
                        delegation=case.delegation)
    if decision.reasons and decision.reasons[0].rule is None and decision.reasons[0].code != "no_matching_rule":
        return Explanation(decision, [], f"decided by the engine before any rule ran: {decision.reasons[0].code}")
    assert case.identity is not None
    env = new_env(case.request, case.identity, case.approvals, decision.evaluated_at, case.token,
                  [p for p in case.principals if p is not None], case.delegation)
    action, rtype = case.request.action, case.request.resource.type
    deciding = set(decision.matched_rules)
    out: list[RuleExplanation] = []
    for rule in bundle.rules:
        nodes = [c.explain(env) for c in rule.conds]
        matched = all(n.held for n in nodes)
        applicable = rule.applies_to(action, rtype)
        if not matched:
            status = "not matched"
        elif rule.mode == "monitor":
            status = f"would have {rule.effect} (monitor; not applied)"
        elif rule.id in deciding:
            status = "decided"
        else:
            status = "matched, not deciding (a higher-precedence effect decided)"
        out.append(RuleExplanation(rule, applicable, matched, status, nodes))
    return Explanation(decision, out)


def _render_node(node: ExplainNode, depth: int, lines: list[str]) -> None:
    mark = "held" if node.held else "FAIL"
    actual = f"    actual: {json.dumps(_plain(node.actual))}" if node.show_actual else ""
    lines.append(f"{'  ' * depth}[{mark}] {node.text}{actual}")
    for child in node.children:
        _render_node(child, depth + 1, lines)


def _plain(v: Any) -> Any:
    if hasattr(v, "isoformat"):
        return iso_utc(v)
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_plain(x) for x in v]
    return v


def render_text(ex: Explanation, show_all: bool = False) -> str:
    d = ex.decision
    lines = [f"decision: {d.decision}    bundle {d.bundle_version[:12] or '(none)'}    eval {d.eval_us} us"]
    for reason in d.reasons:
        where = f"  ({reason.policy} / {reason.rule})" if reason.rule else "  (engine built-in)"
        lines.append(f"  reason {reason.code}: {reason.message}{where}")
    if d.obligations:
        lines.append("  obligations: " + ", ".join(f"{k}={v}" for k, v in sorted(d.obligations.items())))
    for m in d.monitor:
        lines.append(f"  monitor: {m.policy} / {m.rule} would have {m.effect} ({m.reason_code})")
    lines.extend(f"  {line}" for line in delegation_lines(d))
    if ex.note:
        lines.append(ex.note)
    hidden = 0
    current_policy = None
    for r in ex.rules:
        if not r.applicable and not r.matched and not show_all:
            hidden += 1
            continue
        if r.rule.policy != current_policy:
            current_policy = r.rule.policy
            lines.append("")
            lines.append(f"policy {r.rule.policy} ({r.rule.mode})")
        lines.append(f"  rule {r.rule.id} [{r.rule.effect}]: {r.status.upper() if r.status == 'decided' else r.status}")
        for node in r.conditions:
            _render_node(node, 2, lines)
        if not r.conditions:
            lines.append("    (no conditions: always applies)")
    if hidden:
        lines.append("")
        lines.append(f"{hidden} rule(s) for other actions / resource types not shown (use --all)")
    return "\n".join(lines)
