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


#: Most characters of a bad value an error message quotes: messages travel into deny reasons, logs and DLQ
#: headers, and must never repeat a huge input.
MAX_QUOTED_CHARS = 200


def quote(value: object, limit: int = MAX_QUOTED_CHARS) -> str:
    """``repr(value)``, cut to ``limit`` characters with the full length noted (a long string is cut before
    its repr is built: quoting a 1 MB value costs no more than quoting a short one)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} chars)"
    try:
        text = repr(value)
    except ValueError:  # e.g. an int of more than 4300 digits
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
