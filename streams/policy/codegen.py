"""Generate one Python function per rule for the hot path.

The closure tree in compiler.py (one closure per condition) is what ``explain`` walks; calling it costs two
Python calls per condition. For deciding, each rule's runtime conditions are instead emitted as a single
boolean expression over ``env`` and compiled once per bundle, so a condition costs an attribute read and a
comparison. Safety: the emitted source contains only fixed templates and generated names; every value from
the policy (strings, lists, attribute keys, schedules) is passed in through the function's namespace, never
spliced into the source. tests/unit/test_policy_engine.py checks that both forms agree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from streams.policy.language import ENUM, NUMBER, SET, WEEKDAYS, lookup_attribute, parse_duration_s, to_unit

if TYPE_CHECKING:
    from streams.policy.compiler import Env, Schedule

_PLAIN_PREFIXES = (("identity.", "ident."), ("resource.", "req.resource."), ("context.", "req.context."))
_DERIVED_CALLS = {
    "identity.credentials": "active_credential_types(env)",
    "identity.credential_age_days": "credential_age_days(env)",
    "context.token_age_s": "token_age_s(env)",
    "context.approval_valid": "approval_valid(env)",
}


class _Gen:
    def __init__(self, tz: ZoneInfo, schedules: dict[str, Schedule], prefix: str = "") -> None:
        self.tz = tz
        self.schedules = schedules
        self.prefix = prefix
        from streams.policy import compiler as c

        self.ns: dict[str, Any] = {
            "WEEKDAYS": WEEKDAYS, "active_credential_types": c.active_credential_types,
            "credential_age_days": c.credential_age_days, "token_age_s": c.token_age_s,
            "approval_valid": c.approval_valid, "local_time": c.local_time, "within": c.within,
        }
        self.n = 0

    def const(self, value: Any) -> str:
        name = f"{self.prefix}c{len(self.ns)}"
        self.ns[name] = value
        return name

    def temp(self) -> str:
        self.n += 1
        return f"{self.prefix}t{self.n}"

    def value(self, path: str) -> str:
        if path == "action":
            return "req.action"
        if path in _DERIVED_CALLS:
            return _DERIVED_CALLS[path]
        if path == "context.on_behalf_of":
            return "req.on_behalf_of"
        for prefix, obj in (("identity.attributes.", "ident"), ("resource.attributes.", "req.resource"),
                            ("context.attributes.", "req.context")):
            if path.startswith(prefix):
                return f"{obj}.attributes.get({self.const(path[len(prefix):])})"
        if path.startswith("now."):
            part = path[len("now."):]
            # env[3] is `now`, normalised to UTC by evaluate(); other zones convert once per request (cached)
            base = "env[3]" if self.tz.key == "UTC" else f"local_time(env, {self.const(self.tz)})"
            if part == "weekday":
                return f"WEEKDAYS[{base}.weekday()]"
            return f"{base}.{part}"
        for prefix, obj in _PLAIN_PREFIXES:
            if path.startswith(prefix):
                field = path[len(prefix):]
                if not field.isidentifier():
                    raise ValueError(f"bad attribute {path!r}")
                return obj + field
        raise ValueError(f"no value expression for {path!r}")

    def cond(self, node: Any) -> str:
        if "all" in node and len(node) == 1:
            return self.conj(node["all"])
        if "any" in node and len(node) == 1:
            parts = [self.cond(n) for n in node["any"]]
            return "(" + " or ".join(parts) + ")" if parts else "False"
        if "not" in node and len(node) == 1:
            return f"(not {self.cond(node['not'])})"
        if "within" in node and len(node) == 1:
            return f"within(env, {self.const(self.schedules[node['within']])})"
        ((path, ops),) = node.items()
        ((op, operand),) = ops.items()
        return self.leaf(path, op, operand)

    def conj(self, nodes: list[Any]) -> str:
        parts = [self.cond(n) for n in nodes]
        return "(" + " and ".join(parts) + ")" if parts else "True"

    def leaf(self, path: str, op: str, operand: Any) -> str:
        spec = lookup_attribute(path)
        assert spec is not None
        v = self.value(path)
        t = self.temp()
        if isinstance(operand, dict) and "ref" in operand:
            w = self.value(operand["ref"])
            u = self.temp()
            return {
                "equals": f"(({t} := {v}) is not None and {t} == {w})",
                "not_equals": f"(({t} := {v}) is not None and ({u} := {w}) is not None and {t} != {u})",
                "in": f"(({t} := {v}) is not None and {t} in ({w} or ()))",
                "not_in": f"(({t} := {v}) is not None and {t} not in ({w} or ()))",
                "contains": f"(({u} := {w}) is not None and {u} in {v})",
                "not_contains": f"(({u} := {w}) is not None and {u} not in {v})",
            }[op]

        def num(x: Any) -> Any:
            if spec.type == NUMBER and isinstance(x, str):
                return to_unit(parse_duration_s(x), spec.unit or "s")
            return x

        if op in ("exists", "missing"):
            want = operand if op == "exists" else not operand
            if spec.type == SET:
                return f"(not not {v})" if want else f"(not {v})"
            return f"({v} is not None)" if want else f"({v} is None)"
        if op == "equals":
            return f"({v} == {self.const(num(operand))})"
        if op == "not_equals":
            return f"(({t} := {v}) is not None and {t} != {self.const(num(operand))})"
        if op == "in":
            return f"({v} in {self.const(frozenset(num(x) for x in operand))})"
        if op == "not_in":
            return f"(({t} := {v}) is not None and {t} not in {self.const(frozenset(num(x) for x in operand))})"
        if op == "contains":
            return f"({self.const(operand)} in {v})"
        if op == "not_contains":
            return f"({self.const(operand)} not in {v})"
        if op == "contains_any":
            return f"(not {self.const(frozenset(operand))}.isdisjoint({v}))"
        if op == "contains_all":
            return f"{self.const(frozenset(operand))}.issubset({v})"
        cmp = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}.get(op)
        if cmp is not None:
            if spec.type == ENUM:
                rank = {val: i for i, val in enumerate(spec.values)}
                return f"(({t} := {self.const(rank)}.get({v})) is not None and {t} {cmp} {rank[operand]})"
            return f"(({t} := {v}) is not None and {t} {cmp} {self.const(num(operand))})"
        if op in ("in_cidr", "not_in_cidr"):
            from streams.policy.compiler import cidr_checkers

            inside, outside = cidr_checkers(operand)
            return f"{self.const(inside if op == 'in_cidr' else outside)}({v})"
        if op in ("glob", "not_glob"):
            from streams.policy.compiler import _glob_pred

            pred = self.const(_glob_pred([operand] if isinstance(operand, str) else operand))
            neg = "not " if op == "not_glob" else ""
            return f"(({t} := {v}) is not None and {neg}{pred}({t}))"
        raise ValueError(f"operator {op!r}")


def rule_expression(nodes: list[Any], tz: ZoneInfo, schedules: dict[str, Schedule],
                    prefix: str = "") -> tuple[str, dict[str, Any]]:
    """(expression over ``env``/``req``/``ident``, namespace) for the conjunction of canonical ``nodes``.

    Names in the namespace start with ``prefix`` (plus shared helper functions), so the expressions of many
    rules can be combined into one function.
    """
    gen = _Gen(tz, schedules, prefix)
    return gen.conj(nodes), gen.ns


def _compile(lines: list[str], namespace: dict[str, Any], filename: str, name: str) -> Any:
    source = "\n".join(lines) + "\n"
    code = compile(source, filename, "exec")
    exec(code, namespace)  # noqa: S102 - source is built from fixed templates; policy values are namespace constants
    return namespace[name]


def _preamble(body: str) -> list[str]:
    lines = []
    if "req." in body:
        lines.append("    req = env[0]")
    if "ident." in body:
        lines.append("    ident = env[1]")
    return lines


def generate_rule_function(nodes: list[Any], tz: ZoneInfo, schedules: dict[str, Schedule],
                           name: str = "rule") -> tuple[Callable[[Env], bool], str]:
    """(function, expression) deciding the conjunction of canonical condition ``nodes``."""
    expr, ns = rule_expression(nodes, tz, schedules)
    fn = _compile(["def _rule(env):", *_preamble(expr), f"    return {expr}"], dict(ns), f"<pdx rule {name}>", "_rule")
    return fn, expr


def generate_decider(tiers: Sequence[Sequence[Any]]) -> Callable[[Env], tuple[int, list[Any]]]:
    """One function for a candidate set: ``(tier, matching rules)`` with tier 0 deny, 1 step_up, 2 allow, 3 none.

    ``tiers`` are (deny, step_up, allow) sequences of CompiledRule (with ``.expr``/``.ns``/``.order``). A tier is
    only evaluated when no higher tier matched, exactly like the per-rule loop it replaces.
    """
    namespace: dict[str, Any] = {}
    body: list[str] = ["    w = []"]
    for tier_no, rules in enumerate(tiers):
        if not rules:
            continue
        for rule in rules:
            namespace.update(rule.ns)
            ref = f"R{rule.order}"
            namespace[ref] = rule
            body.append(f"    if {rule.expr}:")
            body.append(f"        w.append({ref})")
        body.append("    if w:")
        body.append(f"        return {tier_no}, w")
    body.append("    return 3, w")
    text = "\n".join(body)
    return _compile(["def _decide(env):", *_preamble(text), *body], namespace, "<pdx decider>", "_decide")  # type: ignore[no-any-return]


def generate_watcher(rules: Sequence[Any]) -> Callable[[Env], list[Any]]:
    """One function returning the MonitorOutcomes of the matching monitor-mode ``rules``."""
    namespace: dict[str, Any] = {}
    body: list[str] = ["    out = []"]
    for rule in rules:
        namespace.update(rule.ns)
        ref = f"M{rule.order}"
        namespace[ref] = rule.monitor_outcome
        body.append(f"    if {rule.expr}:")
        body.append(f"        out.append({ref})")
    body.append("    return out")
    text = "\n".join(body)
    return _compile(["def _watch(env):", *_preamble(text), *body], namespace, "<pdx monitor>", "_watch")  # type: ignore[no-any-return]
