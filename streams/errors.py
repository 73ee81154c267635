"""One root for every error pdx raises on purpose, in families a caller can catch.

* :class:`PdxError` — the root: ``except PdxError`` catches every deliberate pdx error.
* :class:`UserError` — something a person can fix; the CLI prints it as one line (no traceback), exit 2.
* :class:`ConfigError` — a ``PDX_*`` setting is wrong (a UserError: the message names the variable).
* :class:`PolicyError` — a policy document or bundle is not usable (a UserError: the message names the file).
* :class:`ContractError` — bytes or values do not fit the Avro contracts. It is also a ``ValueError``, so the
  hot path can treat "bad input" uniformly; it is not a UserError, because it usually describes a message on
  the wire, not something the person at the terminal typed.

Why families and not one class per module: callers decide by family (print it, deny the request, dead-letter
the bytes), and codes that travel (deny reasons) are data, in :class:`streams.model.ReasonCode`.
"""

import reprlib

#: Most characters of a bad value an error message quotes: messages travel into deny reasons, logs and DLQ
#: headers, and must never repeat a huge input.
MAX_QUOTED_CHARS = 200


def _bounded_repr(limit: int) -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxlevel, r.maxdict, r.maxlist, r.maxtuple, r.maxset, r.maxfrozenset = 3, 6, 6, 6, 6, 6
    r.maxstring = r.maxother = max(limit, 8)
    r.maxlong = 40
    return r


_REPRS: dict[int, reprlib.Repr] = {}
_CONTAINERS = (list, tuple, dict, set, frozenset)


def quote(value: object, limit: int = MAX_QUOTED_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters with the full length noted. The cost is bounded by ``limit``,
    not by the value: a long string is cut before its repr is built, and a container is shown a few levels and
    items deep (reprlib), so a 200k-item list or a value nested 1000 deep is described as cheaply as a short one
    and never raises RecursionError."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} chars)"
    try:
        if isinstance(value, _CONTAINERS):
            r = _REPRS.get(limit) or _REPRS.setdefault(limit, _bounded_repr(limit))
            text = r.repr(value)
            more = f" ({len(value)} items)" if len(value) > 6 else ""
            return f"{text[:limit]}...{more}" if len(text) > limit else text + more
        text = repr(value)
    except (ValueError, RecursionError):  # e.g. an int of more than 4300 digits
        return f"<{type(value).__name__} too large to show>"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} chars)"


class PdxError(Exception):
    """Root of every deliberate pdx error."""


class UserError(PdxError):
    """Something the user can fix; the message says what was wrong and what to do."""


class ConfigError(UserError):
    """A setting (``PDX_*`` environment variable) has a value pdx cannot use."""


class PolicyError(UserError):
    """A policy document, directory or bundle cannot be used."""


class ContractError(PdxError, ValueError):
    """A message or value does not fit the Avro contracts (schemas/)."""


def kafka_unreachable(bootstrap: str, detail: str = "") -> UserError:
    """The one message for 'Kafka is not there', with what to do about it."""
    why = f" ({detail})" if detail else ""
    return UserError(
        f"cannot reach Kafka at {bootstrap}{why}: start it with `pdx dev up` or set PDX_KAFKA_BOOTSTRAP"
    )
