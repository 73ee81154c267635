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
from typing import Any
from zoneinfo import ZoneInfo

from streams.policy.language import lookup_attribute
from streams.policy.operators import OPERATORS, is_ref
from streams.policy.runtime import DERIVED, GENERATED_NAMESPACE, Env, Schedule

# ``p`` is the principal a quantifier's generator expression is looking at (any_principal / all_principals)
_PLAIN_PREFIXES = (("identity.", "ident."), ("resource.", "req.resource."), ("context.", "req.context."),
                   ("principal.", "p."))
_FREE_PREFIXES = (("identity.attributes.", "ident"), ("resource.attributes.", "req.resource"),
                  ("context.attributes.", "req.context"), ("principal.attributes.", "p"))


class _Gen:
    """Builds one expression; the :class:`streams.policy.operators.Emitter` the operators' ``emit`` parts use."""

    def __init__(self, tz: ZoneInfo, schedules: dict[str, Schedule], prefix: str = "") -> None:
        self.tz = tz
        self.schedules = schedules
        self.prefix = prefix
        self.ns: dict[str, Any] = dict(GENERATED_NAMESPACE)
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
        if path in DERIVED:
            return f"{DERIVED[path].__name__}(env)"  # GENERATED_NAMESPACE holds it under that name
        if path == "context.on_behalf_of":
            return "req.on_behalf_of"
        for prefix, obj in _FREE_PREFIXES:
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
        if "any_principal" in node and len(node) == 1:  # env[6]: the resolved delegation chain
            return f"any({self.conj(node['any_principal'])} for p in env[6])"
        if "all_principals" in node and len(node) == 1:  # an empty chain never satisfies it (fail closed)
            return f"(bool(env[6]) and all({self.conj(node['all_principals'])} for p in env[6]))"
        ((path, ops),) = node.items()
        ((op, operand),) = ops.items()
        return self.leaf(path, op, operand)

    def conj(self, nodes: list[Any]) -> str:
        parts = [self.cond(n) for n in nodes]
        return "(" + " and ".join(parts) + ")" if parts else "True"

    def leaf(self, path: str, op: str, operand: Any) -> str:
        entry = OPERATORS[op]
        v = self.value(path)
        if is_ref(operand):
            assert entry.ref is not None  # validated
            return entry.ref.emit(self, v, self.value(operand["ref"]))
        spec = lookup_attribute(path)
        assert spec is not None  # validated
        return entry.emit(self, spec, operand, v)


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
