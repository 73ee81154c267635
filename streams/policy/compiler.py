"""Compile a validated policy set into closures, generated functions and an index.

Why this shape: the decision hot path must not grow with unrelated rules. Each rule's ``action`` and
``resource.type`` conditions (the first usable one of each in its top-level ``when``) become index keys instead
of per-request checks: exact actions go into ``action -> rules`` (filtered by resource type); glob actions are
grouped by their namespace (``db:*`` under ``db``) and matched once per distinct (action, resource type), after
which the resulting candidate set is cached. The remaining conditions of every candidate rule are emitted as
Python expressions and compiled into one ``decide`` function per distinct candidate set (codegen.py).
Derived attributes (credential age, token age, approval validity, local time, schedules) are computed lazily
by the env functions below only when a candidate rule reads them.

Each condition is also compiled into a closure tree (:class:`Cond`), which ``explain`` walks to show what held
and what failed; tests check that the tree and the generated code agree.

Semantics of a missing attribute (value null / absent): every operator is false except ``missing`` (and
``exists: false``); negative operators (``not_equals``, ``not_in``, ``not_in_cidr``...) are false too, so write
``not: {...}`` when a missing value must count as a violation (fail closed).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import attrgetter
from typing import Any
from zoneinfo import ZoneInfo

from streams.model import AccessRequest, Approval, Identity, MonitorOutcome, Reason, iso_utc, parse_timestamp
from streams.policy.codegen import generate_decider, generate_rule_function, generate_watcher, rule_expression
from streams.policy.language import (
    ENUM,
    NUMBER,
    SET,
    WEEKDAYS,
    lookup_attribute,
    parse_duration_s,
    to_unit,
)
from streams.policy.loader import PolicyValidationError, Problem, bundle_version, validate_content_obj

Getter = Callable[[list[Any]], Any]
Pred = Callable[[list[Any]], bool]

_UNSET: Any = object()


# ---- evaluation environment --------------------------------------------------------------------------------

# One request's evaluation environment is a plain list (built by a list display, far cheaper than an object):
#   env[REQ] AccessRequest, env[IDENT] Identity, env[APPROVALS] Sequence[Approval], env[NOW] aware-UTC datetime,
#   env[CACHE] dict of derived attributes computed so far (None until the first derived attribute is read).
# Derived attributes are computed lazily by the functions below, only when a candidate rule reads them.
Env = list  # type alias for readability in signatures
REQ, IDENT, APPROVALS, NOW, CACHE = range(5)


def new_env(req: AccessRequest, ident: Identity, approvals: Sequence[Approval], now: datetime) -> Env:
    return [req, ident, approvals, now, None]


def _cache(env: Env) -> dict[Any, Any]:
    c = env[CACHE]
    if c is None:
        c = env[CACHE] = {}
    return c  # type: ignore[no-any-return]


def credential_age_days(env: Env) -> float | None:
    """``identity.credential_age_days``: age of the oldest active credential (None without one)."""
    c = _cache(env)
    v = c.get("cred_age", _UNSET)
    if v is _UNSET:
        v = c["cred_age"] = env[IDENT].credential_age_days(env[NOW])
    return v  # type: ignore[no-any-return]


def token_age_s(env: Env) -> float | None:
    """``context.token_age_s``: seconds since ``context.token_issued_at`` (None when not given)."""
    issued = env[REQ].context.token_issued_at
    if issued is None:
        return None
    return (env[NOW] - issued).total_seconds()  # type: ignore[no-any-return]


def approval_valid(env: Env) -> bool:
    """``context.approval_valid`` (see docs/contracts.md)."""
    c = _cache(env)
    v = c.get("approval")
    if v is None:
        req = env[REQ]
        ident_id = env[IDENT].id
        now = env[NOW]
        v = False
        for a in env[APPROVALS]:
            if a.matches(ident_id, req.action, req.resource.id, now, req.context.approval_id):
                v = True
                break
        c["approval"] = v
    return v  # type: ignore[no-any-return]


def local_time(env: Env, tz: ZoneInfo) -> datetime:
    c = _cache(env)
    v = c.get(tz)
    if v is None:
        v = c[tz] = env[NOW].astimezone(tz)
    return v  # type: ignore[no-any-return]


def within(env: Env, schedule: Schedule) -> bool:
    c = _cache(env)
    v = c.get(schedule)
    if v is None:
        v = c[schedule] = schedule.contains(env[NOW])
    return v  # type: ignore[no-any-return]


def active_credential_types(env: Env) -> list[str]:
    """``identity.credentials``: the types of the identity's active credentials."""
    return [cr.type for cr in env[IDENT].credentials if cr.status == "active"]


# ---- schedules ---------------------------------------------------------------------------------------------


class Schedule:
    """Named change windows (weekly, local time) and/or absolute periods (e.g. a freeze)."""

    __slots__ = ("name", "periods", "tz", "windows")

    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        self.name = name
        self.tz = ZoneInfo(spec.get("timezone", "UTC"))
        self.windows = [
            (frozenset(WEEKDAYS.index(d) for d in w["days"]), _minutes(w["start"]), _minutes(w["end"]))
            for w in spec.get("windows", [])
        ]
        self.periods = [(parse_timestamp(p["start"], "start"), parse_timestamp(p["end"], "end"))
                        for p in spec.get("periods", [])]

    def contains(self, now: datetime) -> bool:
        for start, end in self.periods:
            if start <= now < end:
                return True
        if self.windows:
            local = now.astimezone(self.tz)
            wd = local.weekday()
            minute = local.hour * 60 + local.minute
            for days, start_m, end_m in self.windows:
                if wd in days and start_m <= minute < end_m:
                    return True
        return False


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


# ---- attribute getters ------------------------------------------------------------------------------------


def make_getter(path: str, tz: ZoneInfo) -> Getter:
    """A function reading attribute ``path`` from an env (None when missing). Used by explain and tests;
    the hot path uses the generated code in codegen.py, which reads the same fields."""
    if path == "action":
        return lambda env: env[REQ].action
    derived: dict[str, Getter] = {
        "identity.credentials": active_credential_types,
        "identity.credential_age_days": credential_age_days,
        "context.token_age_s": token_age_s,
        "context.approval_valid": approval_valid,
        "context.on_behalf_of": lambda env: env[REQ].on_behalf_of,
    }
    if path in derived:
        return derived[path]
    if path.startswith("identity.attributes."):
        ikey = path[len("identity.attributes."):]
        return lambda env: env[IDENT].attributes.get(ikey)
    if path.startswith("resource.attributes."):
        rkey = path[len("resource.attributes."):]
        return lambda env: env[REQ].resource.attributes.get(rkey)
    if path.startswith("context.attributes."):
        ckey = path[len("context.attributes."):]
        return lambda env: env[REQ].context.attributes.get(ckey)
    if path.startswith("identity."):
        get_i = attrgetter(path[len("identity."):])
        return lambda env: get_i(env[IDENT])
    if path.startswith("resource."):
        get_r = attrgetter("resource." + path[len("resource."):])
        return lambda env: get_r(env[REQ])
    if path.startswith("context."):
        get_c = attrgetter("context." + path[len("context."):])
        return lambda env: get_c(env[REQ])
    if path.startswith("now."):
        part = path[len("now."):]
        if part == "weekday":
            return lambda env: WEEKDAYS[local_time(env, tz).weekday()]
        return lambda env: getattr(local_time(env, tz), part)
    raise ValueError(f"no getter for attribute {path!r}")  # unreachable after validation


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
    def __init__(self, path: str, op: str, operand: Any, tz: ZoneInfo) -> None:
        self.path, self.op, self.operand = path, op, operand
        self.get = make_getter(path, tz)
        self.ref_get = make_getter(operand["ref"], tz) if isinstance(operand, dict) and "ref" in operand else None
        self.fn = _leaf_fn(path, op, operand, self.get, tz)

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


_IP_CACHE: dict[str, tuple[int, int] | None] = {}


def _parse_ip(text: str | None) -> tuple[int, int] | None:
    """(version, integer) of an address string, cached; None for a missing or malformed address."""
    if text is None:
        return None
    ip = _IP_CACHE.get(text, _UNSET)
    if ip is _UNSET:
        try:
            addr = ipaddress.ip_address(text)
            ip = (addr.version, int(addr))
        except ValueError:
            ip = None  # not an address: every CIDR test is false (fail closed with `not:`)
        if len(_IP_CACHE) > 65536:
            _IP_CACHE.clear()
        _IP_CACHE[text] = ip
    return ip  # type: ignore[no-any-return]


def cidr_checkers(operand: Any) -> tuple[Callable[[str | None], bool], Callable[[str | None], bool]]:
    """(in_cidr, not_in_cidr) predicates over an address string; both false when it is missing or malformed."""
    ranges: list[tuple[int, int, int]] = []
    for text in [operand] if isinstance(operand, str) else operand:
        net = ipaddress.ip_network(text, strict=False)
        ranges.append((net.version, int(net.network_address), int(net.broadcast_address)))
    nets = tuple(ranges)

    def inside(text: str | None) -> bool:
        ip = _parse_ip(text)
        if ip is None:
            return False
        version, value = ip
        for v, lo, hi in nets:
            if v == version and lo <= value <= hi:
                return True
        return False

    def outside(text: str | None) -> bool:
        return _parse_ip(text) is not None and not inside(text)

    return inside, outside


def _glob_pred(patterns: Sequence[str]) -> Callable[[str], bool]:
    """Matcher for one or more globs; ``prefix*`` patterns become ``startswith`` (no regex)."""
    simple: list[str] = []
    regexes: list[re.Pattern[str]] = []
    exact: set[str] = set()
    match_all = False
    for p in patterns:
        if p == "*":
            match_all = True
        elif not any(ch in p for ch in "*?["):
            exact.add(p)
        elif p.endswith("*") and not any(ch in p[:-1] for ch in "*?["):
            simple.append(p[:-1])
        else:
            regexes.append(re.compile(fnmatch.translate(p)))
    prefixes = tuple(simple)

    def pred(value: str) -> bool:
        if match_all:
            return True
        if value in exact:
            return True
        if prefixes and value.startswith(prefixes):
            return True
        for rx in regexes:
            if rx.match(value):
                return True
        return False

    return pred


def _leaf_fn(path: str, op: str, operand: Any, get: Getter, tz: ZoneInfo) -> Pred:
    spec = lookup_attribute(path)
    assert spec is not None
    if isinstance(operand, dict) and "ref" in operand:
        other = make_getter(operand["ref"], tz)
        if op == "equals":
            return lambda env: (x := get(env)) is not None and x == other(env)
        if op == "not_equals":
            return lambda env: (x := get(env)) is not None and (y := other(env)) is not None and x != y
        if op == "in":
            return lambda env: (x := get(env)) is not None and x in (other(env) or ())
        if op == "not_in":
            return lambda env: (x := get(env)) is not None and x not in (other(env) or ())
        if op == "contains":
            return lambda env: (y := other(env)) is not None and y in get(env)
        if op == "not_contains":
            return lambda env: (y := other(env)) is not None and y not in get(env)
        raise ValueError(op)

    def num(v: Any) -> Any:
        if spec.type == NUMBER and isinstance(v, str):
            return to_unit(parse_duration_s(v), spec.unit or "s")
        return v

    if op in ("exists", "missing"):
        want = operand if op == "exists" else not operand
        if spec.type == SET:
            return (lambda env: bool(get(env))) if want else (lambda env: not get(env))
        return (lambda env: get(env) is not None) if want else (lambda env: get(env) is None)
    if op == "equals":
        v = num(operand)
        return lambda env: get(env) == v
    if op == "not_equals":
        v = num(operand)
        return lambda env: (x := get(env)) is not None and x != v
    if op in ("in", "not_in"):
        values = frozenset(num(x) for x in operand)
        if op == "in":
            return lambda env: get(env) in values
        return lambda env: (x := get(env)) is not None and x not in values
    if op == "contains":
        return lambda env: operand in get(env)
    if op == "not_contains":
        return lambda env: operand not in get(env)
    if op == "contains_any":
        wanted = frozenset(operand)
        return lambda env: not wanted.isdisjoint(get(env))
    if op == "contains_all":
        wanted = frozenset(operand)
        return lambda env: wanted.issubset(get(env))
    if op in ("gt", "gte", "lt", "lte"):
        if spec.type == ENUM:
            rank = {val: i for i, val in enumerate(spec.values)}
            r = rank[operand]
            rget = rank.get
            if op == "gt":
                return lambda env: (x := rget(get(env))) is not None and x > r
            if op == "gte":
                return lambda env: (x := rget(get(env))) is not None and x >= r
            if op == "lt":
                return lambda env: (x := rget(get(env))) is not None and x < r
            return lambda env: (x := rget(get(env))) is not None and x <= r
        v = num(operand)
        if op == "gt":
            return lambda env: (x := get(env)) is not None and x > v
        if op == "gte":
            return lambda env: (x := get(env)) is not None and x >= v
        if op == "lt":
            return lambda env: (x := get(env)) is not None and x < v
        return lambda env: (x := get(env)) is not None and x <= v
    if op in ("in_cidr", "not_in_cidr"):
        inside, outside = cidr_checkers(operand)
        check = inside if op == "in_cidr" else outside
        return lambda env: check(get(env))
    if op in ("glob", "not_glob"):
        pred = _glob_pred([operand] if isinstance(operand, str) else operand)
        if op == "glob":
            return lambda env: (x := get(env)) is not None and pred(x)
        return lambda env: (x := get(env)) is not None and not pred(x)
    raise ValueError(f"operator {op!r}")  # unreachable after validation


def compile_cond(node: Any, tz: ZoneInfo, schedules: dict[str, Schedule]) -> Cond:
    if "all" in node and len(node) == 1:
        return AllCond([compile_cond(n, tz, schedules) for n in node["all"]])
    if "any" in node and len(node) == 1:
        return AnyCond([compile_cond(n, tz, schedules) for n in node["any"]])
    if "not" in node and len(node) == 1:
        return NotCond(compile_cond(node["not"], tz, schedules))
    if "within" in node and len(node) == 1:
        return WithinCond(schedules[node["within"]])
    ((path, ops),) = node.items()
    ((op, operand),) = ops.items()
    return Leaf(path, op, operand, tz)


# ---- obligations ------------------------------------------------------------------------------------------

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
        if isinstance(operand, dict):
            continue  # refs are not indexable
        if path == "action" and action_i is None and op in ("equals", "in", "glob"):
            action_i = i
        elif path == "resource.type" and type_i is None and op in ("equals", "in"):
            type_i = i
    return action_i, type_i


def _namespace(patterns: list[str]) -> str | None:
    nss = set()
    for p in patterns:
        head = p.split(":", 1)[0]
        if ":" not in p or any(ch in head for ch in "*?["):
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
                if c.op == "glob":
                    glob = _glob_pred(vals)
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


class CompiledBundle:
    """A policy set ready to evaluate. Immutable after construction except for its candidate caches."""

    CACHE_MAX = 65536

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
        self._cache: dict[str, dict[str, Candidates]] = {}  # action -> resource type -> candidates
        self._cached = 0
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
        if self._cached >= self.CACHE_MAX:
            self._cache.clear()
            self._cached = 0
        self._cache.setdefault(action, {})[rtype] = result
        self._cached += 1
        return result


def compile_content(content: dict[str, Any], version: str) -> CompiledBundle:
    """Compile an already validated canonical content object."""
    return CompiledBundle(content, version)


def compile_bundle(content: str) -> CompiledBundle:
    """Validate and compile canonical bundle JSON (what the pipeline publishes).

    Raises :class:`PolicyValidationError` on anything wrong, so a holder of a good bundle can keep it.
    """
    try:
        obj = json.loads(content)
    except (json.JSONDecodeError, TypeError) as exc:
        raise PolicyValidationError([Problem("<bundle>", None, None, f"bundle content is not JSON: {exc}")]) from None
    ps, problems = validate_content_obj(obj)
    if problems or ps is None:
        raise PolicyValidationError(problems)
    return compile_content(ps.content, bundle_version(content))


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
