"""Secret redaction: what an audit record must never hold.

Callers put all sorts of things in ``resource.attributes`` and ``context.attributes``, and sooner or later one
of them is an ``authorization: Bearer ...`` header or an API key. The decision may read them (a policy can
test an attribute), but the audit trail is read by many people for years: before an AuditRecord is produced,
the Decider passes the request through :meth:`Redactor.redact`.

A value is replaced when its attribute's *name* matches one of the configured patterns (case-insensitive,
ignoring ``-``/``_``/``.``, as a substring: ``X-Api-Key`` matches ``api_key``), or when the value itself is
*shaped* like a credential whatever its name: a JWT (three base64url parts, the first one a JSON header,
``eyJ...``) or an HTTP authorization value (``Bearer ...``, ``Basic ...``). The replacement is
``[redacted:sha256:<first 12 hex of sha256(value)>]``: the secret is gone, but an investigator can still see
that two requests carried the same value, and check a suspected value by hashing it.

The request's workload token (``token``, a JWT) is always replaced the same way. What the audit keeps of it —
the verified issuer, subject, jti, iat and the full sha256 — the Decider adds as ``context.attributes``
``pdx.token.*`` after redaction; attributes the *caller* named ``pdx.token.*`` are always redacted, so an
audit record's ``pdx.token.*`` values are pdx's own.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from streams.config import DEFAULT_REDACT_ATTRIBUTES

#: Attribute-name patterns redacted by default (PDX_REDACT_ATTRIBUTES replaces the list).
DEFAULT_PATTERNS = DEFAULT_REDACT_ATTRIBUTES

_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_AUTH_SCHEME = re.compile(r"(?i)\b(?:bearer|basic|digest|negotiate)\s+[A-Za-z0-9._~+/=-]{8,}")
_NOT_NAME = re.compile(r"[^a-z0-9]")
#: attribute names reserved for what the Decider records of a verified token (streams.model.tokens.AUDIT_PREFIX)
#: and of a delegation's proof (streams.model.delegation.AUDIT_PREFIX)
_RESERVED_PREFIX = ("pdx.token.", "pdx.delegation.")
#: attribute names seen and whether they match: a handful of names recur, so each is normalised once
_NAME_CACHE_MAX = 4096


def _normal(name: str) -> str:
    return _NOT_NAME.sub("", name.lower())


def redacted(value: str) -> str:
    return f"[redacted:sha256:{hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}]"


def looks_like_secret(value: str) -> bool:
    """Whether a value is shaped like a JWT or an HTTP authorization credential."""
    return bool(_JWT.search(value) or _AUTH_SCHEME.search(value))


class Redactor:
    def __init__(self, patterns: Iterable[str] = DEFAULT_PATTERNS) -> None:
        self.patterns = tuple(p for p in (_normal(x) for x in patterns) if p)
        self._names: dict[str, bool] = {}

    def secret_name(self, name: str) -> bool:
        hit = self._names.get(name)
        if hit is None:
            normal = _normal(name)
            hit = name.startswith(_RESERVED_PREFIX) or any(p in normal for p in self.patterns)
            if len(self._names) < _NAME_CACHE_MAX:
                self._names[name] = hit
        return hit

    def _map(self, attributes: Mapping[str, str] | None) -> dict[str, str] | None:
        """The map with secrets replaced, or None if it holds none."""
        if not attributes:
            return None
        out: dict[str, str] | None = None
        for name, value in attributes.items():
            if isinstance(value, str) and (self.secret_name(name) or looks_like_secret(value)):
                if out is None:
                    out = dict(attributes)
                out[name] = redacted(value)
        return out

    def redact(self, request: Mapping[str, Any]) -> dict[str, Any] | None:
        """A copy of an AccessRequest dict with secret attribute values replaced, or None when there is nothing
        to redact (the common case: the worker then audits the request bytes as received)."""
        resource = request.get("resource") or {}
        context = request.get("context") or {}
        res_attrs = self._map(resource.get("attributes"))
        ctx_attrs = self._map(context.get("attributes"))
        token = request.get("token")
        if token is not None and token.startswith("[redacted:"):
            token = None  # already replaced (a shrunk copy)
        if res_attrs is None and ctx_attrs is None and token is None:
            return None
        out = dict(request)
        if token is not None:
            out["token"] = redacted(token)
        if res_attrs is not None:
            out["resource"] = {**resource, "attributes": res_attrs}
        if ctx_attrs is not None:
            out["context"] = {**context, "attributes": ctx_attrs}
        return out
