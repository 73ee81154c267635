"""The operators of the policy language, each declared once.

Why a registry: an operator used to be spread over five places — its type table (language.py), its operand
check (loader.py), its closure (compiler.py), its source template (codegen.py) and special cases in lint.py — so
adding one meant five coordinated edits, and a forgotten one showed only when a policy used it. Here, as OPA
declares each builtin once (name, type signature, implementation in one place), one :class:`Operator` entry
holds everything about an operator, and the validator, the compiler, the code generator and lint look the
operator up here instead of naming it. As with Cedar's exhaustive ``match`` over its operators, no part may be
left out: every part except ``ref`` and ``index`` is a required field (an entry without, say, ``lint`` fails at
import time), and tests/unit/policy/test_operators.py runs every entry through validation, both evaluation
forms and lint and checks that they agree.

The parts of an entry:

- ``types``: the attribute types it applies to (validation names the fitting operators otherwise);
- ``check(spec, operand)``: the operand's type rules → an error message for a person, or None;
- ``evaluate(spec, operand, get)``: the interpreted form, a predicate over the env (compiler.py's closure tree,
  which ``explain`` walks);
- ``emit(gen, spec, operand, value)``: the generated form, a Python expression over ``value`` (the source that
  reads the attribute) — what the hot path runs. It must compute exactly what ``evaluate`` computes. Policy values
  go into the namespace through ``gen.const``, never into the source;
- ``lint(spec, operand)``: :class:`Facts`, what a holding condition says about the value (lint.py combines the
  facts of a conjunction to find contradictions);
- ``ref``: how it compares with another attribute (``{ref: <attribute>}``): its type rule, both evaluation
  forms and lint facts — or None when it takes no ref;
- ``index``: ``"values"`` when its operand lists the exact values (usable as an index key on ``action`` /
  ``resource.type``), ``"patterns"`` when it lists glob patterns (``action`` only), else None.

Every operator is false on a missing (None) value except ``missing`` and ``exists: false``; sets are never
missing (an absent set reads as empty).

Adding an operator:

1. write one entry in ``_ENTRIES`` below (reuse a family factory such as :func:`_comparison` if it fits);
2. add its row to the table in LANGUAGE.md (a test checks every operator is documented);
3. add cases with expected outcomes to ``OPERATOR_CASES`` in tests/unit/test_policy_engine.py (they run both
   evaluation forms); the generic checks of tests/unit/policy/test_operators.py cover it automatically.
"""

from __future__ import annotations

import ipaddress
import operator as op_
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from streams.model.durations import parse_duration_s
from streams.model.glob import glob_predicate
from streams.policy.language import (
    BOOL,
    ENUM,
    IP,
    NUMBER,
    SET,
    STR,
    TIME,
    AttrSpec,
    is_number,
    lookup_attribute,
    to_unit,
    type_of_literal,
)
from streams.policy.runtime import Getter, Pred, cidr_checkers


class Emitter(Protocol):
    """What codegen offers an operator's ``emit``: namespace constants and fresh temporary names."""

    def const(self, value: Any) -> str: ...

    def temp(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Facts:
    """What a holding condition says about its attribute's value (for lint; None = says nothing)."""

    present: bool | None = None  # the value exists (True) / is missing (False)
    equals: Any = None  # the value is this
    one_of: list[Any] | None = None  # the value is one of these
    differs: Any = None  # the value is not this
    has: Any = None  # the set contains this
    lacks: Any = None  # the set does not contain this
    lower: tuple[float, bool] | None = None  # (bound, strict): value > bound (strict) or >= bound
    upper: tuple[float, bool] | None = None  # (bound, strict): value < bound (strict) or <= bound


@dataclass(frozen=True, slots=True)
class Ref:
    """In :class:`Facts`: "the value of attribute ``path``" (shown as the operand it came from)."""

    path: str

    def __repr__(self) -> str:
        return repr({"ref": self.path})


@dataclass(frozen=True, slots=True)
class RefForm:
    """How an operator compares an attribute with another one (operand ``{ref: <attribute>}``)."""

    accepts: Callable[[AttrSpec, AttrSpec], bool]  # (attribute, ref target) types that may be compared
    evaluate: Callable[[Getter, Getter], Pred]  # (attribute getter, target getter) → predicate
    emit: Callable[[Emitter, str, str], str]  # (gen, attribute source, target source) → expression
    lint: Callable[[AttrSpec, Ref], Facts]  # what a holding condition says (facts may hold the Ref)


Check = Callable[[AttrSpec, Any], str | None]
Evaluate = Callable[[AttrSpec, Any, Getter], Pred]
Emit = Callable[[Emitter, AttrSpec, Any, str], str]
Lint = Callable[[AttrSpec, Any], Facts]


@dataclass(frozen=True, slots=True)
class Operator:
    """One operator of the language: everything validation, both evaluation forms and lint need (see above)."""

    name: str
    types: tuple[str, ...]
    check: Check
    evaluate: Evaluate
    emit: Emit
    lint: Lint
    ref: RefForm | None = None
    index: str | None = None


# ---- shared pieces ----------------------------------------------------------------------------------------

_SCALAR = (STR, ENUM)


def is_ref(operand: Any) -> bool:
    """Whether an operand is ``{ref: <attribute>}`` (canonical content keeps it as a one-key dict)."""
    return isinstance(operand, dict) and set(operand) == {"ref"}


def literal(spec: AttrSpec, v: Any) -> Any:
    """An operand as the value it is compared with: durations become numbers in the attribute's unit."""
    if spec.type == NUMBER and isinstance(v, str):
        return to_unit(parse_duration_s(v), spec.unit or "s")
    return v


def ordinal(spec: AttrSpec, v: Any) -> float | None:
    """A number for range reasoning in lint: numbers, durations, and the position of an ordered enum value."""
    if is_number(v):
        return float(v)
    if isinstance(v, str) and spec.unit:
        return to_unit(parse_duration_s(v), spec.unit)
    if spec.ordered and v in spec.values:
        return float(spec.values.index(v))
    return None


def _scalar_error(spec: AttrSpec, v: Any) -> str | None:
    """Why ``v`` cannot be compared with attribute ``spec`` (None when it can)."""
    t = spec.type
    if t in (STR, ENUM):
        if not isinstance(v, str):
            return f"type error: {spec.path} is a string but {v!r} is a {type_of_literal(v)}"
        if t == ENUM and v not in spec.values:
            return f"{v!r} is not a value of {spec.path} (one of: {', '.join(spec.values)})"
        return None
    if t == NUMBER:
        if is_number(v):
            return None
        if isinstance(v, str) and spec.unit is not None:
            try:
                parse_duration_s(v)
            except ValueError as exc:
                return f"type error: {exc}"
            return None
        extra = " or a duration such as 15m" if spec.unit else ""
        return f"type error: {spec.path} is a number but {v!r} is a {type_of_literal(v)} (give a number{extra})"
    if t == BOOL:
        if not isinstance(v, bool):
            return f"type error: {spec.path} is true/false but {v!r} is a {type_of_literal(v)}"
        return None
    if t == IP:
        try:
            ipaddress.ip_address(v)
        except (ValueError, TypeError):
            return f"{v!r} is not an IPv4 or IPv6 address"
        return None
    return f"{spec.path} (a {t}) cannot be compared with a value"


def _one_or_many(v: Any) -> Any:
    return [v] if isinstance(v, str) else v


def _present(spec: AttrSpec, operand: Any) -> Facts:
    """Lint default of a scalar operator: it only holds on a present value."""
    return Facts(present=True)


def _no_facts(spec: AttrSpec, operand: Any) -> Facts:
    return Facts()


# ---- presence ---------------------------------------------------------------------------------------------


def _check_bool(spec: AttrSpec, v: Any) -> str | None:
    return None if isinstance(v, bool) else f"takes true or false, got {v!r}"


def _presence(name: str, positive: bool) -> Operator:
    """``exists: true`` / ``missing: false`` hold on a present value (a set: a non-empty one)."""

    def wants(operand: Any) -> bool:
        return bool(operand) if positive else not operand

    def evaluate(spec: AttrSpec, operand: Any, get: Getter) -> Pred:
        if spec.type == SET:
            return (lambda env: bool(get(env))) if wants(operand) else (lambda env: not get(env))
        return (lambda env: get(env) is not None) if wants(operand) else (lambda env: get(env) is None)

    def emit(gen: Emitter, spec: AttrSpec, operand: Any, v: str) -> str:
        if spec.type == SET:
            return f"(not not {v})" if wants(operand) else f"(not {v})"
        return f"({v} is not None)" if wants(operand) else f"({v} is None)"

    return Operator(name, (STR, ENUM, SET, NUMBER, BOOL, IP, TIME), _check_bool, evaluate, emit,
                    lambda spec, operand: Facts(present=wants(operand)))


# ---- equality and membership ------------------------------------------------------------------------------


def _equal_types(spec: AttrSpec, target: AttrSpec) -> bool:
    return target.type == spec.type or {target.type, spec.type} <= set(_SCALAR)


def _member_types(spec: AttrSpec, target: AttrSpec) -> bool:
    return target.type == SET and spec.type in _SCALAR


def _check_list(spec: AttrSpec, v: Any) -> str | None:
    if not isinstance(v, list) or not v:
        return f"takes a non-empty list (or {{ref: <set attribute>}}), got {v!r}"
    for item in v:
        msg = _scalar_error(spec, item)
        if msg:
            return msg
    return None


def _values(spec: AttrSpec, operand: Any) -> frozenset[Any]:
    return frozenset(literal(spec, x) for x in operand)


def _literal_forms(positive: bool, value_of: Callable[[AttrSpec, Any], Any], test: Callable[[Any, Any], bool],
                   symbol: str, negated: str) -> tuple[Evaluate, Emit]:
    """``evaluate`` and ``emit`` of ``value <symbol> operand`` and, for the negative operator, ``value is present
    and value <negated> operand`` (``test`` is the Python form of ``symbol``)."""

    def evaluate(spec: AttrSpec, operand: Any, get: Getter) -> Pred:
        c = value_of(spec, operand)
        if positive:
            return lambda env: test(get(env), c)
        return lambda env: (x := get(env)) is not None and not test(x, c)

    def emit(gen: Emitter, spec: AttrSpec, operand: Any, v: str) -> str:
        c = gen.const(value_of(spec, operand))
        if positive:
            return f"({v} {symbol} {c})"
        t = gen.temp()
        return f"(({t} := {v}) is not None and {t} {negated} {c})"

    return evaluate, emit


def _equality(name: str, positive: bool) -> Operator:
    """``equals`` / ``not_equals`` a literal or another attribute (``not_equals`` is false on a missing value)."""

    evaluate, emit = _literal_forms(positive, literal, op_.eq, "==", "!=")

    def lint(spec: AttrSpec, operand: Any) -> Facts:
        if not positive:
            return Facts(present=True, differs=operand)
        n = ordinal(spec, operand)
        bound = None if n is None else (n, False)
        return Facts(present=True, equals=operand, lower=bound, upper=bound)

    def evaluate_ref(get: Getter, other: Getter) -> Pred:
        if positive:
            return lambda env: (x := get(env)) is not None and x == other(env)
        return lambda env: (x := get(env)) is not None and (y := other(env)) is not None and x != y

    def emit_ref(gen: Emitter, v: str, w: str) -> str:
        t = gen.temp()
        if positive:
            return f"(({t} := {v}) is not None and {t} == {w})"
        u = gen.temp()
        return f"(({t} := {v}) is not None and ({u} := {w}) is not None and {t} != {u})"

    return Operator(name, (STR, ENUM, NUMBER, BOOL, IP), _scalar_error, evaluate, emit, lint,
                    RefForm(_equal_types, evaluate_ref, emit_ref, _no_facts),
                    index="values" if positive else None)


def _membership(name: str, positive: bool) -> Operator:
    """``in`` / ``not_in`` a list of literals or a set attribute (``not_in`` is false on a missing value)."""

    evaluate, emit = _literal_forms(positive, _values, lambda x, values: x in values, "in", "not in")

    def lint(spec: AttrSpec, operand: Any) -> Facts:
        return Facts(present=True, one_of=operand) if positive else Facts(present=True)

    def evaluate_ref(get: Getter, other: Getter) -> Pred:
        if positive:
            return lambda env: (x := get(env)) is not None and x in (other(env) or ())
        return lambda env: (x := get(env)) is not None and x not in (other(env) or ())

    def emit_ref(gen: Emitter, v: str, w: str) -> str:
        t = gen.temp()
        return f"(({t} := {v}) is not None and {t} {'in' if positive else 'not in'} ({w} or ()))"

    return Operator(name, (STR, ENUM, NUMBER), _check_list, evaluate, emit, lint,
                    RefForm(_member_types, evaluate_ref, emit_ref, _no_facts),
                    index="values" if positive else None)


# ---- sets -------------------------------------------------------------------------------------------------


def _element_types(spec: AttrSpec, target: AttrSpec) -> bool:
    return target.type in _SCALAR


def _check_element(spec: AttrSpec, v: Any) -> str | None:
    if not isinstance(v, str):
        return f"type error: {spec.path} is a set of strings; {v!r} is a {type_of_literal(v)}" + (
            " (use contains_any / contains_all for a list)" if isinstance(v, list) else "")
    return None


def _check_elements(spec: AttrSpec, v: Any) -> str | None:
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        return f"takes a non-empty list of strings, got {v!r}"
    return None


def _containment(name: str, positive: bool) -> Operator:
    """``contains`` / ``not_contains`` one string or another attribute's value (false when that is missing)."""

    def evaluate(spec: AttrSpec, operand: Any, get: Getter) -> Pred:
        if positive:
            return lambda env: operand in get(env)
        return lambda env: operand not in get(env)

    def emit(gen: Emitter, spec: AttrSpec, operand: Any, v: str) -> str:
        return f"({gen.const(operand)} {'in' if positive else 'not in'} {v})"

    def lint(spec: AttrSpec, operand: Any) -> Facts:  # also the ref form's: then operand is a Ref
        return Facts(has=operand) if positive else Facts(lacks=operand)

    def evaluate_ref(get: Getter, other: Getter) -> Pred:
        if positive:
            return lambda env: (y := other(env)) is not None and y in get(env)
        return lambda env: (y := other(env)) is not None and y not in get(env)

    def emit_ref(gen: Emitter, v: str, w: str) -> str:
        u = gen.temp()
        return f"(({u} := {w}) is not None and {u} {'in' if positive else 'not in'} {v})"

    return Operator(name, (SET,), _check_element, evaluate, emit, lint,
                    RefForm(_element_types, evaluate_ref, emit_ref, lint))


def _eval_contains_any(spec: AttrSpec, operand: Any, get: Getter) -> Pred:
    wanted = frozenset(operand)
    return lambda env: not wanted.isdisjoint(get(env))


def _emit_contains_any(gen: Emitter, spec: AttrSpec, operand: Any, v: str) -> str:
    return f"(not {gen.const(frozenset(operand))}.isdisjoint({v}))"


def _eval_contains_all(spec: AttrSpec, operand: Any, get: Getter) -> Pred:
    wanted = frozenset(operand)
    return lambda env: wanted.issubset(get(env))


def _emit_contains_all(gen: Emitter, spec: AttrSpec, operand: Any, v: str) -> str:
    return f"{gen.const(frozenset(operand))}.issubset({v})"


# ---- order ------------------------------------------------------------------------------------------------


def _ranks(spec: AttrSpec) -> dict[str, int]:
    """An ordered enum's values → their position (``low`` < ``medium`` < ...)."""
    return {val: i for i, val in enumerate(spec.values)}


def _check_ordered(spec: AttrSpec, v: Any) -> str | None:
    if spec.type == ENUM and not spec.ordered:
        return f"{spec.path} has no order; use equals or in"
    return _scalar_error(spec, v)


def _comparison(name: str, symbol: str, compare: Callable[[Any, Any], bool], is_lower: bool,
                strict: bool) -> Operator:
    """``gt``/``gte``/``lt``/``lte`` on numbers (durations where the attribute has a unit) and ordered enums."""

    def evaluate(spec: AttrSpec, operand: Any, get: Getter) -> Pred:
        if spec.type == ENUM:
            rank = _ranks(spec).get
            r = rank(operand)
            return lambda env: (x := rank(get(env))) is not None and compare(x, r)
        v = literal(spec, operand)
        return lambda env: (x := get(env)) is not None and compare(x, v)

    def emit(gen: Emitter, spec: AttrSpec, operand: Any, v: str) -> str:
        t = gen.temp()
        if spec.type == ENUM:
            rank = _ranks(spec)
            return f"(({t} := {gen.const(rank)}.get({v})) is not None and {t} {symbol} {rank[operand]})"
        return f"(({t} := {v}) is not None and {t} {symbol} {gen.const(literal(spec, operand))})"

    def lint(spec: AttrSpec, operand: Any) -> Facts:
        n = ordinal(spec, operand)
        bound = None if n is None else (n, strict)
        return Facts(present=True, lower=bound) if is_lower else Facts(present=True, upper=bound)

    return Operator(name, (NUMBER, ENUM), _check_ordered, evaluate, emit, lint)


# ---- networks and patterns --------------------------------------------------------------------------------


def _check_cidrs(spec: AttrSpec, v: Any) -> str | None:
    items = _one_or_many(v)
    if not isinstance(items, list) or not items:
        return f"takes a CIDR or a list of CIDRs, got {v!r}"
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except (ValueError, TypeError):
            return f"{item!r} is not an IPv4 or IPv6 network (e.g. 10.0.0.0/8 or fd00::/8)"
    return None


def _cidr(name: str, inside: bool) -> Operator:
    """``in_cidr`` / ``not_in_cidr``: both false on a missing or malformed address."""

    def checker(operand: Any) -> Callable[[str | None], bool]:
        return cidr_checkers(operand)[0 if inside else 1]

    def evaluate(spec: AttrSpec, operand: Any, get: Getter) -> Pred:
        check = checker(operand)
        return lambda env: check(get(env))

    def emit(gen: Emitter, spec: AttrSpec, operand: Any, v: str) -> str:
        return f"{gen.const(checker(operand))}({v})"

    return Operator(name, (IP,), _check_cidrs, evaluate, emit, _present)


def _check_globs(spec: AttrSpec, v: Any) -> str | None:
    items = _one_or_many(v)
    if not isinstance(items, list) or not items or not all(isinstance(x, str) and x for x in items):
        return f"takes a glob pattern or a list of them, e.g. 'db:*'; got {v!r}"
    return None


def _glob(name: str, positive: bool) -> Operator:
    """``glob`` / ``not_glob``: the glob language of streams.model.glob (``*``, ``?``, ``[...]``)."""

    def evaluate(spec: AttrSpec, operand: Any, get: Getter) -> Pred:
        pred = glob_predicate(_one_or_many(operand))
        if positive:
            return lambda env: (x := get(env)) is not None and pred(x)
        return lambda env: (x := get(env)) is not None and not pred(x)

    def emit(gen: Emitter, spec: AttrSpec, operand: Any, v: str) -> str:
        t = gen.temp()
        pred = gen.const(glob_predicate(_one_or_many(operand)))
        return f"(({t} := {v}) is not None and {'' if positive else 'not '}{pred}({t}))"

    return Operator(name, (STR, ENUM), _check_globs, evaluate, emit, _present,
                    index="patterns" if positive else None)


# ---- the registry -----------------------------------------------------------------------------------------

_ENTRIES: tuple[Operator, ...] = (
    _equality("equals", positive=True),
    _equality("not_equals", positive=False),
    _membership("in", positive=True),
    _membership("not_in", positive=False),
    _containment("contains", positive=True),
    _containment("not_contains", positive=False),
    Operator("contains_any", (SET,), _check_elements, _eval_contains_any, _emit_contains_any, _no_facts),
    Operator("contains_all", (SET,), _check_elements, _eval_contains_all, _emit_contains_all, _no_facts),
    _comparison("gt", ">", op_.gt, is_lower=True, strict=True),
    _comparison("gte", ">=", op_.ge, is_lower=True, strict=False),
    _comparison("lt", "<", op_.lt, is_lower=False, strict=True),
    _comparison("lte", "<=", op_.le, is_lower=False, strict=False),
    _cidr("in_cidr", inside=True),
    _cidr("not_in_cidr", inside=False),
    _glob("glob", positive=True),
    _glob("not_glob", positive=False),
    _presence("exists", positive=True),
    _presence("missing", positive=False),
)

#: Every operator by name, in the order messages and docs list them.
OPERATORS: dict[str, Operator] = {o.name: o for o in _ENTRIES}


def operators_for(type_: str) -> list[str]:
    """The operators that apply to an attribute type (for "use one of: ..." messages)."""
    return [o.name for o in _ENTRIES if type_ in o.types]


def check_operand(spec: AttrSpec, name: str, operand: Any) -> str | None:
    """Why ``operand`` is not a valid operand of operator ``name`` on attribute ``spec`` (None when it is).

    The operator must exist and apply to ``spec.type`` (the validator checks that first, with its own messages).
    """
    entry = OPERATORS[name]
    if is_ref(operand):
        ref = operand["ref"]
        target = lookup_attribute(ref) if isinstance(ref, str) else None
        if target is None:
            return f"ref {ref!r} is not a known attribute"
        if entry.ref is None:
            return f"operator {name!r} does not take a ref"
        if not entry.ref.accepts(spec, target):
            return f"type error: {spec.path} (a {spec.type}) cannot be compared with ref {ref} (a {target.type})"
        return None
    return entry.check(spec, operand)
