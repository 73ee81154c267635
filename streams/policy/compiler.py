"""Compile a validated policy set into closures, generated functions and an index.

Why this shape: the decision hot path must not grow with unrelated rules. Each rule's ``action`` and
``resource.type`` conditions (the first usable one of each in its top-level ``when``) become index keys instead
of per-request checks: exact actions go into ``action -> rules`` (filtered by resource type); glob actions are
grouped by their namespace (``db:*`` under ``db``) and matched once per distinct (action, resource type), after
which the resulting candidate set is cached. The remaining conditions of every candidate rule are emitted as
Python expressions and compiled into one ``decide`` function per distinct candidate set (codegen.py).
Derived attributes (credential age, token age, approval validity, local time, schedules) are computed lazily
by the env functions of runtime.py only when a candidate rule reads them; what each operator does is its entry
in operators.py.

Each condition is also compiled into a closure tree (:class:`Cond`), which ``explain`` walks to show what held
and what failed; tests check that the tree and the generated code agree.

Semantics of a missing attribute (value null / absent): every operator is false except ``missing`` (and
``exists: false``); negative operators (``not_equals``, ``not_in``, ``not_in_cidr``...) are false too, so write
``not: {...}`` when a missing value must count as a violation (fail closed).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any
from zoneinfo import ZoneInfo

from streams.model import MonitorOutcome, Reason, iso_utc
from streams.model.cache import ENTRY_BYTES, key_bytes
from streams.model.durations import parse_duration_s
from streams.model.glob import glob_predicate, has_wildcards
from streams.policy.codegen import generate_decider, generate_rule_function, generate_watcher, rule_expression
from streams.policy.language import lookup_attribute
from streams.policy.operators import OPERATORS, is_ref
from streams.policy.runtime import NOW, PRINCIPAL, PRINCIPALS, REQ, Env, Pred, Schedule, make_getter, within
from streams.policy.validation import PolicyValidationError, Problem, bundle_version, validate_bundle

# ---- conditions -------------------------------------------------------------------------------------------


@dataclass
class ExplainNode:
    """How one condition fared for one request (``pdx policy explain``)."""

    text: str
    held: bool
    actual: Any = None
    show_actual: bool = False
    children: list[ExplainNode] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"condition": self.text, "held": self.held}
        if self.show_actual:
            d["actual"] = _jsonable(self.actual)
        if self.children:
            d["children"] = [c.to_dict() for c in self.children]
        return d


def _jsonable(v: Any) -> Any:
    if isinstance(v, datetime):
        return iso_utc(v)
    if isinstance(v, (list, tuple, set, frozenset)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


class Cond:
    """A compiled condition: ``fn`` is the predicate, ``explain`` re-evaluates with details."""

    fn: Pred

    def explain(self, env: Env) -> ExplainNode:
        raise NotImplementedError


class Leaf(Cond):
    """``<attribute>: {<operator>: <operand>}``, evaluated by the operator's entry in operators.py."""

    def __init__(self, path: str, op: str, operand: Any, tz: ZoneInfo) -> None:
        self.path, self.op, self.operand = path, op, operand
        self.get = make_getter(path, tz)
        entry = OPERATORS[op]
        if is_ref(operand):
            assert entry.ref is not None  # validated
            self.ref_get: Callable[[Env], Any] | None = make_getter(operand["ref"], tz)
            self.fn = entry.ref.evaluate(self.get, self.ref_get)
        else:
            spec = lookup_attribute(path)
            assert spec is not None  # validated
            self.ref_get = None
            self.fn = entry.evaluate(spec, operand, self.get)

    def text(self) -> str:
        if self.ref_get is not None:
            return f"{self.path} {self.op} {self.operand['ref']}"
        return f"{self.path} {self.op} {json.dumps(self.operand)}"

    def explain(self, env: Env) -> ExplainNode:
        actual = self.get(env)
        if self.ref_get is not None:
            actual = {self.path: actual, self.operand["ref"]: self.ref_get(env)}
        return ExplainNode(self.text(), bool(self.fn(env)), actual, True)


class AllCond(Cond):
    def __init__(self, kids: list[Cond]) -> None:
        self.kids = kids
        self.fn = _all_fn([k.fn for k in kids])

    def explain(self, env: Env) -> ExplainNode:
        ch = [k.explain(env) for k in self.kids]
        return ExplainNode("all of", all(c.held for c in ch), children=ch)


class AnyCond(Cond):
    def __init__(self, kids: list[Cond]) -> None:
        self.kids = kids
        fns = tuple(k.fn for k in kids)

        def any_fn(env: Env) -> bool:
            for f in fns:
                if f(env):
                    return True
            return False

        self.fn = any_fn

    def explain(self, env: Env) -> ExplainNode:
        ch = [k.explain(env) for k in self.kids]
        return ExplainNode("any of", any(c.held for c in ch), children=ch)


class NotCond(Cond):
    def __init__(self, kid: Cond) -> None:
        self.kid = kid
        f = kid.fn
        self.fn = lambda env: not f(env)

    def explain(self, env: Env) -> ExplainNode:
        ch = self.kid.explain(env)
        return ExplainNode("not", not ch.held, children=[ch])


class WithinCond(Cond):
    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.fn = lambda env: within(env, schedule)

    def explain(self, env: Env) -> ExplainNode:
        return ExplainNode(f"within {self.schedule.name}", self.fn(env), iso_utc(env[NOW]), True)


class QuantifierCond(Cond):
    """``any_principal`` / ``all_principals``: the conditions over each principal of the delegation chain
    (``env[PRINCIPALS]``); ``principal.*`` getters read ``env[PRINCIPAL]``, set here while looking at one."""

    def __init__(self, key: str, kids: list[Cond]) -> None:
        self.key = key
        self.every = key == "all_principals"
        self.kid = AllCond(kids)
        self.fn = self._holds

    def _each(self, env: Env, look: Callable[[Env], Any]) -> list[Any]:
        """``look(env)`` once per principal, with ``env[PRINCIPAL]`` set to it."""
        out = []
        try:
            for p in env[PRINCIPALS]:
                env[PRINCIPAL] = p
                out.append(look(env))
        finally:
            env[PRINCIPAL] = None
        return out

    def _verdict(self, held: list[bool]) -> bool:
        return (bool(held) and all(held)) if self.every else any(held)

    def _holds(self, env: Env) -> bool:
        kid = self.kid.fn
        return self._verdict(self._each(env, lambda e: bool(kid(e))))

    def _explain_one(self, env: Env) -> ExplainNode:
        node = self.kid.explain(env)
        node.text = f"principal {env[PRINCIPAL].id} ({env[PRINCIPAL].kind})"
        return node

    def explain(self, env: Env) -> ExplainNode:
        children = self._each(env, self._explain_one)
        text = f"{self.key} of {len(children)} principal(s)" if children else f"{self.key} (no principals)"
        return ExplainNode(text, self._verdict([c.held for c in children]), children=children)


class IndexedCond(Cond):
    """An action / resource.type condition answered by the index (shown by explain, never run per request)."""

    def __init__(self, leaf: Leaf) -> None:
        self.leaf = leaf
        self.fn = leaf.fn

    def explain(self, env: Env) -> ExplainNode:
        node = self.leaf.explain(env)
        node.text += "  (index)"
        return node


def _all_fn(fns: Sequence[Pred]) -> Pred:
    """A conjunction, unrolled for the common small sizes."""
    fs = tuple(fns)
    n = len(fs)
    if n == 0:
        return lambda env: True
    if n == 1:
        return fs[0]
    if n == 2:
        a, b = fs
        return lambda env: a(env) and b(env)
    if n == 3:
        a, b, c = fs
        return lambda env: a(env) and b(env) and c(env)

    def all_fn(env: Env) -> bool:
        for f in fs:
            if not f(env):
                return False
        return True

    return all_fn


def compile_cond(node: Any, tz: ZoneInfo, schedules: dict[str, Schedule]) -> Cond:
    if "all" in node and len(node) == 1:
        return AllCond([compile_cond(n, tz, schedules) for n in node["all"]])
    if "any" in node and len(node) == 1:
        return AnyCond([compile_cond(n, tz, schedules) for n in node["any"]])
    if "not" in node and len(node) == 1:
        return NotCond(compile_cond(node["not"], tz, schedules))
    if "within" in node and len(node) == 1:
        return WithinCond(schedules[node["within"]])
    for key in ("any_principal", "all_principals"):
        if key in node and len(node) == 1:
            return QuantifierCond(key, [compile_cond(n, tz, schedules) for n in node[key]])
    ((path, ops),) = node.items()
    ((op, operand),) = ops.items()
    return Leaf(path, op, operand, tz)


# ---- obligations ------------------------------------------------------------------------------------------

#: Formatted expiries by epoch second. Keys are ints, not text: ``now`` plus at most a rule's max_ttl, so a
#: request cannot choose them. Bound: 8192 entries × (int 28-32 + 20-char str 69 + slot 48 bytes) < 1.2 MiB.
_ISO_CACHE: dict[int, str] = {}


def iso_from_epoch(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SSZ`` for an epoch second, memoised (formatting dominates a time-bounded allow)."""
    text = _ISO_CACHE.get(seconds)
    if text is None:
        if len(_ISO_CACHE) >= 8192:
            _ISO_CACHE.clear()
        text = _ISO_CACHE[seconds] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
    return text


def _constant(value: Any) -> Callable[[Env], Any]:
    return lambda env: value


def _obligation_fns(spec: dict[str, Any]) -> list[tuple[str, Callable[[Env], Any]]]:
    """Per obligation, a function of the request giving its raw value (merged by :func:`merge_obligations`)."""
    out: list[tuple[str, Callable[[Env], Any]]] = []
    for key, value in spec.items():
        if key == "expires_at":
            max_s = parse_duration_s(value["max_ttl"])

            def expires(env: Env, _max: float = max_s) -> int:
                # epoch second, rounded down: an expiry may only ever be earlier than the exact one
                ttl = env[REQ].context.requested_ttl_s
                secs = _max if ttl is None else max(0.0, min(float(ttl), _max))
                return int(env[NOW].timestamp() + secs)

            out.append((key, expires))
        elif key == "require_approval":
            out.append((key, _constant(tuple(value))))
        elif key == "audit_review":
            out.append((key, _constant(True)))
    return out


def merge_obligations(rules: Sequence[CompiledRule], env: Env) -> dict[str, str]:
    """Obligations of the deciding rules: earliest expires_at, union of approvers, audit_review if any asks."""
    expires: int | None = None
    approvers: list[str] = []
    audit = False
    for rule in rules:
        for key, fn in rule.obligation_fns:
            v = fn(env)
            if key == "expires_at":
                expires = v if expires is None or v < expires else expires
            elif key == "require_approval":
                approvers.extend(a for a in v if a not in approvers)
            elif key == "audit_review":
                audit = True
    out: dict[str, str] = {}
    if expires is not None:
        out["expires_at"] = iso_from_epoch(expires)
    if approvers:
        out["require_approval"] = ",".join(approvers)
    if audit:
        out["audit_review"] = "true"
    return out


# ---- rules ------------------------------------------------------------------------------------------------


@dataclass(eq=False)
class CompiledRule:
    id: str
    policy: str
    mode: str
    effect: str
    order: int
    reason: Reason
    conds: list[Cond]
    match: Pred  # generated predicate over the runtime (non-index) conditions
    obligation_fns: list[tuple[str, Callable[[Env], Any]]]
    monitor_outcome: MonitorOutcome
    actions: frozenset[str] | None  # exact actions from the index; None = see action_glob / any action
    action_glob: Callable[[str], bool] | None
    action_ns: str | None  # namespace of all action globs ("db" for db:*), None = unscoped
    resource_types: frozenset[str] | None
    action_patterns: tuple[str, ...] | None = None  # the glob patterns behind action_glob (for lint)
    slow_match: Pred | None = None  # the same predicate as the closure tree (explain's form; tests compare)
    expr: str = "True"  # generated expression (namespace ``ns``) used by the per-candidate-set decider
    ns: dict[str, Any] = field(default_factory=dict)

    def applies_to(self, action: str, rtype: str) -> bool:
        """Whether the index would consider this rule for (action, resource type)."""
        if self.resource_types is not None and rtype not in self.resource_types:
            return False
        if self.actions is not None:
            return action in self.actions
        if self.action_glob is not None:
            return self.action_glob(action)
        return True


def _index_keys(leaves: list[Any]) -> tuple[int | None, int | None]:
    """Positions of the top-level action and resource.type leaves that the index can answer."""
    action_i = type_i = None
    for i, node in enumerate(leaves):
        if len(node) != 1:
            continue
        ((path, ops),) = node.items()
        if path not in ("action", "resource.type") or not isinstance(ops, dict) or len(ops) != 1:
            continue
        ((op, operand),) = ops.items()
        if is_ref(operand):
            continue  # refs are not indexable
        index = OPERATORS[op].index
        if path == "action" and action_i is None and index in ("values", "patterns"):
            action_i = i
        elif path == "resource.type" and type_i is None and index == "values":
            type_i = i
    return action_i, type_i


def _namespace(patterns: list[str]) -> str | None:
    nss = set()
    for p in patterns:
        head = p.split(":", 1)[0]
        if ":" not in p or has_wildcards(head):
            return None
        nss.add(head)
    return nss.pop() if len(nss) == 1 else None


def compile_rule(policy: dict[str, Any], rule: dict[str, Any], order: int,
                 schedules: dict[str, Schedule]) -> CompiledRule:
    tz = ZoneInfo(rule.get("timezone") or policy.get("timezone") or "UTC")
    when = rule["when"]
    action_i, type_i = _index_keys(when)
    conds: list[Cond] = []
    runtime: list[Pred] = []
    actions = rtypes = None
    glob = None
    ns = None
    patterns: tuple[str, ...] | None = None
    for i, node in enumerate(when):
        c = compile_cond(node, tz, schedules)
        if i in (action_i, type_i):
            assert isinstance(c, Leaf)
            conds.append(IndexedCond(c))
            vals = [c.operand] if isinstance(c.operand, str) else list(c.operand)
            if i == action_i:
                if OPERATORS[c.op].index == "patterns":
                    glob = glob_predicate(vals)
                    ns = _namespace(vals)
                    patterns = tuple(vals)
                else:
                    actions = frozenset(vals)
            else:
                rtypes = frozenset(vals)
        else:
            conds.append(c)
            runtime.append(c.fn)
    reason = Reason(rule["reason"]["code"], rule["reason"]["message"], policy["name"], rule["id"])
    runtime_nodes = [node for i, node in enumerate(when) if i not in (action_i, type_i)]
    fast, _expr = generate_rule_function(runtime_nodes, tz, schedules, rule["id"])
    expr, expr_ns = rule_expression(runtime_nodes, tz, schedules, prefix=f"r{order}_")
    return CompiledRule(
        id=rule["id"],
        policy=policy["name"],
        mode=policy["mode"],
        effect=rule["effect"],
        order=order,
        reason=reason,
        conds=conds,
        match=fast,
        obligation_fns=_obligation_fns(rule.get("obligations") or {}),
        monitor_outcome=MonitorOutcome(policy["name"], rule["id"], rule["effect"], rule["reason"]["code"]),
        actions=actions,
        action_glob=glob,
        action_ns=ns,
        resource_types=rtypes,
        action_patterns=patterns,
        slow_match=_all_fn(runtime),
        expr=expr,
        ns=expr_ns,
    )


# ---- the bundle -------------------------------------------------------------------------------------------

Tier = tuple[tuple[Pred, CompiledRule], ...]


class Candidates:
    """The rules that can apply to one (action, resource type), by tier, plus their generated functions.

    ``decide(env)`` → (0 deny | 1 step_up | 2 allow | 3 none, matching rules of that tier); ``watch(env)`` →
    monitor outcomes (None when there are no monitor rules).
    """

    __slots__ = ("allow", "decide", "deny", "monitor", "step", "watch")

    def __init__(self, deny: Tier, step: Tier, allow: Tier, monitor: Tier,
                 decide: Callable[[Env], tuple[int, list[CompiledRule]]] | None,
                 watch: Callable[[Env], list[MonitorOutcome]] | None) -> None:
        self.deny, self.step, self.allow, self.monitor = deny, step, allow, monitor
        self.decide = decide
        self.watch = watch

    def rules(self) -> list[CompiledRule]:
        return [r for tier in (self.deny, self.step, self.allow, self.monitor) for _f, r in tier]


EMPTY_TIERS = Candidates((), (), (), (), None, None)  # identity-compared by the evaluator: no rule can apply


def _candidates_bytes(c: Candidates) -> int:
    """What one cached Candidates holds of its own (the rules and generated functions are the bundle's)."""
    if c is EMPTY_TIERS:
        return 0
    tiers = (c.deny, c.step, c.allow, c.monitor)
    return sys.getsizeof(c) + sum(sys.getsizeof(t) + _PAIR_BYTES * len(t) for t in tiers)


_PAIR_BYTES = sys.getsizeof((None, None))
_INNER_DICT_BYTES = sys.getsizeof({"": None})


class CompiledBundle:
    """A policy set ready to evaluate. Immutable after construction except for its candidate caches."""

    #: The candidate cache (action -> resource type -> Candidates) is keyed by two strings from the wire, so
    #: it is bounded three ways: at most CACHE_MAX entries; neither key longer than CACHE_KEY_CHARS (a longer
    #: action or type is looked up each time, never stored: real ones are a few dozen characters); and at most
    #: CACHE_MAX_BYTES accounted — each key's bytes (sys.getsizeof), each per-action dict, each entry's own
    #: Candidates (see _candidates_bytes) and a dict slot. Worst case: 16 MiB, whatever the requests hold (a
    #: flood of the longest, widest distinct keys empties it after ~6k entries); an ordinary workload of a
    #: few hundred (action, type) pairs takes well under 1 MiB.
    CACHE_MAX = 65536
    CACHE_KEY_CHARS = 256
    CACHE_MAX_BYTES = 16 * 1024 * 1024

    def __init__(self, content: dict[str, Any], version: str) -> None:
        self.version = version
        self.content = content
        self.schedules = {name: Schedule(name, spec) for name, spec in content["schedules"].items()}
        self.rules: list[CompiledRule] = []
        for policy in content["policies"]:
            for rule in policy["rules"]:
                self.rules.append(compile_rule(policy, rule, len(self.rules), self.schedules))
        self.rules_by_id = {r.id: r for r in self.rules}
        # index
        self._exact: dict[str, list[CompiledRule]] = {}
        self._glob_ns: dict[str, list[CompiledRule]] = {}
        self._glob_any: list[CompiledRule] = []
        for r in self.rules:
            if r.actions is not None:
                for a in r.actions:
                    self._exact.setdefault(a, []).append(r)
            elif r.action_ns is not None:
                self._glob_ns.setdefault(r.action_ns, []).append(r)
            else:
                self._glob_any.append(r)
        # action -> resource type -> candidates; read directly by evaluator.evaluate (a hit is two dict gets)
        self._cache: dict[str, dict[str, Candidates]] = {}
        self._cached = 0  # entries (action, type) held
        self._cache_bytes = 0  # accounted bytes held (see CACHE_MAX_BYTES)
        # generated functions per distinct candidate rule set: bounded by the policy's structure (unknown
        # resource types, or actions that hit the same glob rules, share one), not by what requests contain
        self._deciders: dict[tuple[int, ...], tuple[Any, Any]] = {}

    @property
    def rule_count(self) -> int:
        return len(self.rules)

    def candidates(self, action: str, rtype: str) -> Candidates:
        """Rules that can apply to (action, resource type), split by tier, in bundle order (cached)."""
        by_type = self._cache.get(action)
        cached = by_type.get(rtype) if by_type is not None else None
        if cached is not None:
            return cached
        found: list[CompiledRule] = []
        for r in self._exact.get(action, ()):
            if r.resource_types is None or rtype in r.resource_types:
                found.append(r)
        ns = action.split(":", 1)[0] if ":" in action else None
        for group in (self._glob_ns.get(ns, ()) if ns is not None else (), self._glob_any):
            for r in group:
                if r.applies_to(action, rtype):
                    found.append(r)
        found.sort(key=attrgetter("order"))
        deny: list[tuple[Pred, CompiledRule]] = []
        step: list[tuple[Pred, CompiledRule]] = []
        allow: list[tuple[Pred, CompiledRule]] = []
        mon: list[tuple[Pred, CompiledRule]] = []
        for r in found:
            pair = (r.match, r)
            if r.mode == "monitor":
                mon.append(pair)
            elif r.effect == "deny":
                deny.append(pair)
            elif r.effect == "step_up":
                step.append(pair)
            else:
                allow.append(pair)
        if not found:
            result = EMPTY_TIERS
        else:
            key = tuple(r.order for r in found)
            fns = self._deciders.get(key)
            if fns is None:
                enforce = [[r for _f, r in tier] for tier in (deny, step, allow)]
                fns = self._deciders[key] = (
                    generate_decider(enforce) if any(enforce) else None,
                    generate_watcher([r for _f, r in mon]) if mon else None,
                )
            result = Candidates(tuple(deny), tuple(step), tuple(allow), tuple(mon), fns[0], fns[1])
        self._remember(action, rtype, result)
        return result

    def _remember(self, action: str, rtype: str, result: Candidates) -> None:
        """Cache ``result`` for (action, rtype) within the bounds of CACHE_MAX, CACHE_KEY_CHARS and
        CACHE_MAX_BYTES; emptied first when it would not fit (a flood of distinct keys misses anyway)."""
        if len(action) > self.CACHE_KEY_CHARS or len(rtype) > self.CACHE_KEY_CHARS:
            return
        by_type = self._cache.get(action)
        entry = key_bytes(rtype) + ENTRY_BYTES + _candidates_bytes(result)
        new_action = key_bytes(action) + ENTRY_BYTES + _INNER_DICT_BYTES
        cost = entry if by_type is not None else entry + new_action
        if self._cached >= self.CACHE_MAX or self._cache_bytes + cost > self.CACHE_MAX_BYTES:
            self._cache.clear()
            self._cached = 0
            self._cache_bytes = 0
            by_type = None
            cost = entry + new_action
        if by_type is None:
            by_type = self._cache[action] = {}
        by_type[rtype] = result
        self._cached += 1
        self._cache_bytes += cost


def compile_content(content: dict[str, Any], version: str) -> CompiledBundle:
    """Compile an already validated canonical content object."""
    return CompiledBundle(content, version)


def compile_bundle(content: str) -> CompiledBundle:
    """Validate and compile canonical bundle JSON (what the pipeline publishes).

    Raises :class:`PolicyValidationError` on anything wrong, so a holder of a good bundle can keep it.
    """
    return compile_content(validate_bundle(content), bundle_version(content))


class BundleHolder:
    """Keeps the last good compiled bundle: a bad offer is reported and ignored. Compiles each version once."""

    def __init__(self, bundle: CompiledBundle | None = None) -> None:
        self.current = bundle
        self.last_problems: list[Problem] = []

    def offer(self, content: str) -> bool:
        """Compile ``content`` and make it current; on error keep the current bundle and return False."""
        if self.current is not None and self.current.version == bundle_version(content):
            return True
        try:
            bundle = compile_bundle(content)
        except PolicyValidationError as exc:
            self.last_problems = exc.problems
            return False
        self.current = bundle
        self.last_problems = []
        return True
