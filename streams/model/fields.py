"""Field parsers shared by the models: each raises ValueError naming the field and what was expected."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from streams.errors import quote

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_timestamp(value: Any, what: str) -> datetime:
    """An aware-UTC datetime from a datetime (naive is taken as UTC) or an ISO-8601 string (``Z`` allowed)."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{what}: {quote(value)} is not an ISO-8601 timestamp (e.g. 2025-06-03T10:00:00Z)"
            ) from None
    else:
        kind = type(value).__name__
        raise ValueError(f"{what}: expected an ISO-8601 timestamp or datetime, got {kind} {quote(value)}")
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is before the first representable UTC instant
        raise ValueError(f"{what}: {quote(value)} is outside the representable range of UTC timestamps") from None


def optional_timestamp(value: Any, what: str) -> datetime | None:
    return None if value is None else parse_timestamp(value, what)


def iso_utc(dt: datetime) -> str:
    """``2025-06-03T10:00:00Z`` (seconds precision unless the datetime has microseconds)."""
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _choice(value: Any, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what}: {quote(value)} is not one of {', '.join(allowed)}")
    return str(value)


def _str(value: Any, what: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and value == ""):
        raise ValueError(f"{what}: expected a non-empty string, got {quote(value)}")
    return value


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{what}: expected a list of strings, got {quote(value)}")
    out = list(value)
    for item in out:
        if not isinstance(item, str):
            raise ValueError(f"{what}: expected a list of strings, found {quote(item)}")
    return out


def _str_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what}: expected a mapping of string to string, got {quote(value)}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise ValueError(f"{what}: key {quote(k)} is not a string")
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (int, float)):
            v = str(v)
        if not isinstance(v, str):
            raise ValueError(f"{what}[{quote(k, 60)}]: expected a string value, got {quote(v)}")
        out[k] = v
    return out


def _require_mapping(d: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise ValueError(f"{what}: expected a mapping, got {type(d).__name__}")
    return d


def _req(d: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in d or d[key] is None:
        raise ValueError(f"{what}: missing required field {key!r}")
    return d[key]


def _opt_str(d: Mapping[str, Any], key: str, what: str) -> str | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError(f"{what}.{key}: expected a string, got {quote(v)}")
    return v
