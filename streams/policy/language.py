"""The vocabulary of the policy language: readable attributes, their types, effects, modes, units and times.

One table (``ATTRIBUTES``) drives validation (unknown attribute, operator not valid for the type, operand of the
wrong type), the compiler (how to read the value) and the docs in ``policies/README`` style error messages.
The operators are declared in operators.py (one entry each); durations are parsed by streams.model.durations.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.model import IDENTITY_KINDS, IDENTITY_STATUSES, RISK_TIERS, SENSITIVITIES

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EFFECTS = ("deny", "step_up", "allow")  # in precedence order: deny overrides step_up overrides allow
MODES = ("enforce", "monitor")
OBLIGATIONS = ("expires_at", "require_approval", "audit_review")

# Attribute types.
STR = "string"
ENUM = "enum"
SET = "set"
NUMBER = "number"
BOOL = "boolean"
IP = "ip address"
TIME = "timestamp"


@dataclass(frozen=True, slots=True)
class AttrSpec:
    """What a condition may read: its type, enum values (ordered when ``ordered``), unit, and whether derived."""

    path: str
    type: str
    values: tuple[str, ...] = ()
    ordered: bool = False
    unit: str | None = None  # "s" or "d" for numbers that accept durations
    derived: bool = False
    doc: str = ""


def _a(path: str, type_: str, **kw: object) -> tuple[str, AttrSpec]:
    return path, AttrSpec(path, type_, **kw)  # type: ignore[arg-type]


ATTRIBUTES: dict[str, AttrSpec] = dict(
    [
        _a("action", STR, doc="the requested action, e.g. db:connect"),
        _a("identity.id", STR),
        _a("identity.kind", ENUM, values=IDENTITY_KINDS),
        _a("identity.owner", STR),
        _a("identity.status", ENUM, values=IDENTITY_STATUSES),
        _a("identity.environments", SET),
        _a("identity.scopes", SET),
        _a("identity.tags", SET),
        _a("identity.approved_repositories", SET),
        _a("identity.risk_tier", ENUM, values=RISK_TIERS, ordered=True),
        _a("identity.credentials", SET, doc="types of the identity's active credentials"),
        _a("identity.credential_age_days", NUMBER, unit="d", derived=True, doc="age of the oldest active credential"),
        _a("identity.workload_subjects", SET, doc="token subjects registered for the identity (OIDC sub, SPIFFE ID)"),
        _a("resource.id", STR),
        _a("resource.type", STR),
        _a("resource.environment", STR),
        _a("resource.sensitivity", ENUM, values=SENSITIVITIES, ordered=True),
        _a("resource.repository", STR),
        _a("resource.owner", STR),
        _a("context.source_ip", IP),
        _a("context.token_issued_at", TIME),
        _a("context.requested_ttl_s", NUMBER, unit="s"),
        _a("context.approval_id", STR),
        _a("context.change_ticket", STR),
        _a("context.tool", STR),
        _a("context.on_behalf_of", SET,
           doc="the proven delegation chain, outermost principal first (a principal nothing proves is denied "
               "delegation_unproven before any rule)"),
        _a("context.token_age_s", NUMBER, unit="s", derived=True, doc="now - context.token_issued_at"),
        _a("context.approval_valid", BOOL, derived=True, doc="a matching, unexpired, unrevoked approval exists"),
        _a("context.delegation_depth", NUMBER, derived=True, doc="how many principals context.on_behalf_of names"),
        _a("context.delegation.source", STR, derived=True,
           doc="what proved context.on_behalf_of: token, grant or token+grant (missing without a chain)"),
        _a("context.delegation.id", STR, derived=True,
           doc="the proof: the delegated token's jti and/or the delegation grant ids, outermost hop first"),
        _a("token.verified", BOOL, derived=True, doc="the request carried a workload token and it verified"),
        _a("token.issuer", STR, derived=True, doc="iss of the verified token"),
        _a("token.subject", STR, derived=True, doc="sub of the verified token"),
        _a("token.jti", STR, derived=True, doc="jti of the verified token"),
        _a("token.audience", SET, derived=True, doc="aud of the verified token"),
        _a("token.scopes", SET, derived=True, doc="scope (space-separated) or scp of the verified token"),
        _a("token.act", SET, derived=True, doc="RFC 8693 actor chain (act.sub, outermost first)"),
        _a("token.age_s", NUMBER, unit="s", derived=True, doc="now - iat of the verified token"),
        _a("token.subject_matches_identity", BOOL, derived=True,
           doc="the verified token's subject is one of identity.workload_subjects"),
        # principal.*: one principal of the delegation chain, only inside any_principal / all_principals
        _a("principal.id", STR, doc="a delegating principal's identity id"),
        _a("principal.kind", ENUM, values=IDENTITY_KINDS),
        _a("principal.owner", STR),
        _a("principal.environments", SET),
        _a("principal.scopes", SET),
        _a("principal.tags", SET),
        _a("principal.risk_tier", ENUM, values=RISK_TIERS, ordered=True),
        _a("principal.workload_subjects", SET),
        _a("now.hour", NUMBER, derived=True, doc="0-23 in the rule's timezone"),
        _a("now.minute", NUMBER, derived=True, doc="0-59 in the rule's timezone"),
        _a("now.weekday", ENUM, values=WEEKDAYS, derived=True, doc="mon..sun in the rule's timezone"),
    ]
)

#: ``<prefix><name>`` reads a free string attribute, e.g. ``resource.attributes.team``.
FREE_ATTRIBUTE_PREFIXES = (
    "identity.attributes.", "resource.attributes.", "context.attributes.", "principal.attributes."
)
#: Attributes of one delegating principal: readable only inside a principal quantifier.
PRINCIPAL_PREFIX = "principal."


def lookup_attribute(path: str) -> AttrSpec | None:
    spec = ATTRIBUTES.get(path)
    if spec is not None:
        return spec
    for prefix in FREE_ATTRIBUTE_PREFIXES:
        if path.startswith(prefix) and len(path) > len(prefix):
            return AttrSpec(path, STR)
    return None


#: Keys of a condition mapping that are not attribute paths.
COMBINATORS = ("all", "any", "not", "within", "any_principal", "all_principals")
#: The quantifiers over the delegation chain (context.on_behalf_of, resolved to inventory identities):
#: ``any_principal`` holds when some principal satisfies all its conditions, ``all_principals`` when the chain
#: is non-empty and every principal does (an empty chain never satisfies it: fail closed).
QUANTIFIERS = ("any_principal", "all_principals")

#: Every attribute type, in the order error messages list them.
TYPES = (STR, ENUM, SET, NUMBER, BOOL, IP, TIME)
_UNIT_SECONDS = {"s": 1.0, "d": 86400.0}


def to_unit(value: float, unit: str) -> float:
    """Seconds → the attribute's unit."""
    return value / _UNIT_SECONDS[unit]


def minutes_of_day(hhmm: str) -> int:
    """``"09:30"`` → 570 (schedule windows; validated by the loader, ``24:00`` allowed as an end)."""
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def type_of_literal(v: object) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "mapping"
    if v is None:
        return "null"
    return type(v).__name__
