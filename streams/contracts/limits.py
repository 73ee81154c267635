"""Size limits of an AccessRequest: is a decoded request too large to decide on, and a small copy to audit.

:func:`exceeded` runs per request on the worker's hot path, after ``wire.decode_as("AccessRequest", raw)``;
a request it names a limit for is denied ``request_too_large`` (:class:`streams.model.ReasonCode`), and
:func:`shrink` gives the copy whose AuditRecord stays small (the original bytes are not worth storing).

What needs checking, and what does not:

* **Sizes** — the message's bytes, every string, the one list (``on_behalf_of``) and the two maps
  (``resource.attributes``, ``context.attributes``): the Settings.request_limits.
* **Depth** — nothing: the schema (schemas/access_request.avsc) has fixed records, one array of strings and two
  maps of string to string, and no recursive or union-of-record types, so a decoded request is never deeper
  than ``request.resource.attributes[key]``. No attribute holds JSON or other nested text that pdx parses:
  attribute values are compared as strings only.
* **Types** — nothing: the Avro decoder already guarantees them.

Why it is cheap: it reads a handful of ``len()`` values and, for a message no longer than
``max_string_chars`` bytes, skips the strings entirely — a string of *n* characters takes at least *n* bytes
of UTF-8 in the message that carried it, so none can be over the limit. Most requests are a few hundred bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from streams.contracts.redact import redacted
from streams.errors import quote

if TYPE_CHECKING:  # only the type: the limits are chosen by streams.config, at the edge
    from streams.config import RequestLimits

__all__ = [
    "SHRUNK_ITEM_BYTES",
    "SHRUNK_MAX_ITEMS",
    "SHRUNK_STRING_BYTES",
    "TRUNCATED_ATTRIBUTE",
    "exceeded",
    "shrink",
]

#: Resource and context string fields (nullable: None when absent), in schema order.
_RESOURCE_STRINGS = ("id", "type", "environment", "sensitivity", "repository", "owner")
_CONTEXT_STRINGS = ("source_ip", "approval_id", "change_ticket", "tool")
#: Most characters of an offending value an error message quotes (a short prefix, never the value).
_QUOTED = 32


def _show(text: str) -> str:
    return quote(text[:_QUOTED], 48)


def exceeded(raw_len: int, request: Mapping[str, Any], limits: RequestLimits) -> str | None:
    """None when the request is within ``limits``; else a short message naming the first limit exceeded and
    the field, e.g. ``resource.attributes has 5000 entries (limit 64)``.

    ``raw_len`` is the length of the encoded message, ``request`` what ``wire.decode_as("AccessRequest", raw)``
    returned. Checked in this order: the message's bytes, the list's and maps' sizes, then (only for messages
    longer than ``max_string_chars``) every string in schema order. Never raises for a decoded request.
    """
    if raw_len > limits.max_message_bytes:
        return f"request is {raw_len} bytes (limit {limits.max_message_bytes})"
    resource = request["resource"]
    context = request["context"]
    obo = request["on_behalf_of"]
    r_attrs = resource["attributes"]
    c_attrs = context["attributes"]
    if len(obo) > limits.max_list_items:
        return f"on_behalf_of has {len(obo)} items (limit {limits.max_list_items})"
    most = limits.max_map_entries
    if len(r_attrs) > most:
        return f"resource.attributes has {len(r_attrs)} entries (limit {most})"
    if len(c_attrs) > most:
        return f"context.attributes has {len(c_attrs)} entries (limit {most})"
    cap = limits.max_string_chars
    token = request.get("token")
    if token is not None:  # the token has a limit of its own, and its bytes hold no other string
        if len(token) > limits.max_token_chars:
            return f"token is {len(token)} chars (limit {limits.max_token_chars})"
        raw_len -= len(token)
    if raw_len <= cap:  # no string is longer than the message that carried it
        return None
    return _long_string(request, resource, context, obo, r_attrs, c_attrs, cap)


def _long_string(
    request: Mapping[str, Any],
    resource: Mapping[str, Any],
    context: Mapping[str, Any],
    obo: list[str],
    r_attrs: Mapping[str, str],
    c_attrs: Mapping[str, str],
    cap: int,
) -> str | None:
    """The first string longer than ``cap`` characters, in schema order (None: there is none)."""
    for name in ("request_id", "identity_id"):
        value = request[name]
        if len(value) > cap:
            return f"{name} is {len(value)} chars (limit {cap}): {_show(value)}"
    for i, item in enumerate(obo):
        if len(item) > cap:
            return f"on_behalf_of[{i}] is {len(item)} chars (limit {cap}): {_show(item)}"
    action = request["action"]
    if len(action) > cap:
        return f"action is {len(action)} chars (limit {cap}): {_show(action)}"
    for what, record, names, attrs in (
        ("resource", resource, _RESOURCE_STRINGS, r_attrs),
        ("context", context, _CONTEXT_STRINGS, c_attrs),
    ):
        for name in names:
            value = record[name]
            if value is not None and len(value) > cap:
                return f"{what}.{name} is {len(value)} chars (limit {cap}): {_show(value)}"
        for key, value in attrs.items():
            if len(key) > cap:
                return f"{what}.attributes has a key of {len(key)} chars (limit {cap}): {_show(key)}"
            if len(value) > cap:
                return f"{what}.attributes[{_show(key)}] is {len(value)} chars (limit {cap}): {_show(value)}"
    reply_to = request["reply_to"]
    if len(reply_to) > cap:
        return f"reply_to is {len(reply_to)} chars (limit {cap}): {_show(reply_to)}"
    return None


# ---- the copy to audit ----------------------------------------------------------------------------------

#: Most UTF-8 bytes kept of each string field of a shrunk request (ids, action, resource and context fields).
SHRUNK_STRING_BYTES = 200
#: Most UTF-8 bytes kept of each ``on_behalf_of`` item and of each attribute key and value.
SHRUNK_ITEM_BYTES = 64
#: Most list items / map entries a shrunk request keeps (or the configured limit, if smaller).
SHRUNK_MAX_ITEMS = 16
#: Set to ``"true"`` in ``context.attributes`` of every shrunk request.
TRUNCATED_ATTRIBUTE = "pdx.truncated"


def _cut(text: str, max_bytes: int) -> str:
    """``text`` if it is at most ``max_bytes`` of UTF-8, else its longest whole-character prefix that is, plus a
    marker saying how many characters were cut: ``abc...(+99997 chars)``."""
    if len(text) * 4 <= max_bytes:  # a character is at most 4 bytes of UTF-8: short enough, whatever it holds
        return text
    data = text.encode("utf-8", "replace")
    if len(data) <= max_bytes:
        return text
    head = data[:max_bytes].decode("utf-8", "ignore")  # drops a character split by the cut
    return f"{head}...(+{len(text) - len(head)} chars)"


def _cut_optional(text: str | None, max_bytes: int) -> str | None:
    return None if text is None else _cut(text, max_bytes)


def _cut_map(attrs: Mapping[str, str], most: int) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in attrs.items():
        if len(out) >= most:
            break
        out[_cut(key, SHRUNK_ITEM_BYTES)] = _cut(value, SHRUNK_ITEM_BYTES)
    return out


def _clamp(n: int, low: int, high: int) -> int:
    return low if n < low else high if n > high else n


def shrink(request: Mapping[str, Any], limits: RequestLimits) -> dict[str, Any]:
    """A copy of a decoded request small enough to audit, still a valid AccessRequest.

    Every string is cut to a short prefix plus a marker (:data:`SHRUNK_STRING_BYTES`, list items and map
    entries to :data:`SHRUNK_ITEM_BYTES`); the list and the maps keep their first ``min(limit,``
    :data:`SHRUNK_MAX_ITEMS` ``)`` entries, and ``context.attributes`` gets ``pdx.truncated = "true"``.
    Numbers and timestamps (``occurred_at``, ``deadline``, ``token_issued_at``, ``requested_ttl_s``,
    ``reply_partition``) are kept as they are — except that numbers are clamped into their Avro type's range,
    since the decoder accepts an ``int`` of 64 bits — and so is every string already short (a uuid request id, the
    identity, the action, the resource id and type...), so the audit row still says who asked for what.

    Why cut harder than the limits: the copy's size must be bounded whatever the input — at most about
    14 × 220 + 16 × 84 + 2 × 17 × 168 bytes (≈ 10 KiB) of strings however large or non-ASCII the request was —
    so the audit record of a refused request is small.
    """
    items = min(limits.max_list_items, SHRUNK_MAX_ITEMS)
    entries = min(limits.max_map_entries, SHRUNK_MAX_ITEMS)
    resource = request["resource"]
    context = request["context"]
    c_attrs = _cut_map(context["attributes"], entries)
    c_attrs[TRUNCATED_ATTRIBUTE] = "true"
    ttl = context["requested_ttl_s"]
    n = SHRUNK_STRING_BYTES
    return {
        "request_id": _cut(request["request_id"], n),
        "occurred_at": request["occurred_at"],
        "identity_id": _cut(request["identity_id"], n),
        "on_behalf_of": [_cut(p, SHRUNK_ITEM_BYTES) for p in request["on_behalf_of"][:items]],
        "action": _cut(request["action"], n),
        "resource": {
            "id": _cut(resource["id"], n),
            "type": _cut(resource["type"], n),
            "environment": _cut_optional(resource["environment"], n),
            "sensitivity": _cut_optional(resource["sensitivity"], n),
            "repository": _cut_optional(resource["repository"], n),
            "owner": _cut_optional(resource["owner"], n),
            "attributes": _cut_map(resource["attributes"], entries),
        },
        "context": {
            "source_ip": _cut_optional(context["source_ip"], n),
            "token_issued_at": context["token_issued_at"],
            "requested_ttl_s": None if ttl is None else _clamp(ttl, -(2**63), 2**63 - 1),
            "approval_id": _cut_optional(context["approval_id"], n),
            "change_ticket": _cut_optional(context["change_ticket"], n),
            "tool": _cut_optional(context["tool"], n),
            "attributes": c_attrs,
        },
        "reply_to": _cut(request["reply_to"], n),
        "reply_partition": _clamp(request["reply_partition"], -(2**31), 2**31 - 1),
        "deadline": request["deadline"],
        # the audit never holds a token: its hash, as the Redactor writes it
        "token": None if request.get("token") is None else redacted(request["token"]),
    }
