"""streams.contracts.limits: which limit a decoded AccessRequest exceeds, and the small copy that is audited."""

from __future__ import annotations

import copy
import timeit
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config import RequestLimits
from streams.contracts import wire
from streams.contracts.limits import SHRUNK_MAX_ITEMS, TRUNCATED_ATTRIBUTE, exceeded, shrink
from streams.model import AccessRequest, ReasonCode

NOW = datetime(2026, 3, 1, 9, 30, 15, 123000, tzinfo=UTC)
LIMITS = RequestLimits()


def request(**changes: Any) -> dict[str, Any]:
    """A decoded typical request (what the worker holds after wire.decode_as), with ``changes`` applied to a
    dotted path: ``request(**{"resource.attributes": {...}})``."""
    d: dict[str, Any] = {
        "request_id": "0123456789abcdef0123456789abcdef",
        "occurred_at": NOW,
        "identity_id": "agent-orders-etl",
        "on_behalf_of": ["alice@example.com"],
        "action": "db:connect",
        "resource": {
            "id": "orders-db",
            "type": "database",
            "environment": "production",
            "sensitivity": "restricted",
            "repository": "github.com/acme/orders",
            "owner": "data-platform",
            "attributes": {"team": "data", "region": "eu-west-1"},
        },
        "context": {
            "source_ip": "10.1.2.3",
            "token_issued_at": NOW - timedelta(minutes=2),
            "requested_ttl_s": 900,
            "approval_id": None,
            "change_ticket": "CHG-1234",
            "tool": "langchain",
            "attributes": {"session": "s-1"},
        },
        "reply_to": "pdx.decisions",
        "reply_partition": 3,
        "deadline": NOW + timedelta(seconds=5),
    }
    for path, value in changes.items():
        *parents, last = path.split(".")
        node = d
        for p in parents:
            node = node[p]
        node[last] = value
    return decoded(d)


def decoded(d: dict[str, Any]) -> dict[str, Any]:
    return wire.decode_as("AccessRequest", wire.encode("AccessRequest", d))


def check(d: dict[str, Any], limits: RequestLimits = LIMITS) -> str | None:
    return exceeded(len(wire.encode("AccessRequest", d)), d, limits)


def test_a_typical_request_is_within_the_limits() -> None:
    assert check(request()) is None
    assert check(request(**{"resource.attributes": {f"k{i}": "v" * 4096 for i in range(12)}})) is None


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("on_behalf_of", [f"p{i}" for i in range(65)], "on_behalf_of has 65 items (limit 64)"),
        ("resource.attributes", {f"k{i}": "" for i in range(5000)}, "resource.attributes has 5000 entries (limit 64)"),
        ("context.attributes", {f"k{i}": "" for i in range(65)}, "context.attributes has 65 entries (limit 64)"),
        ("request_id", "r" * 4097, "request_id is 4097 chars (limit 4096): 'rrrr"),
        ("identity_id", "i" * 5000, "identity_id is 5000 chars"),
        ("on_behalf_of", ["ok", "p" * 4097], "on_behalf_of[1] is 4097 chars"),
        ("action", "a" * 4097, "action is 4097 chars"),
        ("resource.id", "x" * 10_000, "resource.id is 10000 chars"),
        ("resource.type", "t" * 4097, "resource.type is 4097 chars"),
        ("resource.owner", "o" * 4097, "resource.owner is 4097 chars"),
        ("resource.attributes", {"k" * 4097: "v"}, "resource.attributes has a key of 4097 chars"),
        ("resource.attributes", {"team": "v" * 4097}, "resource.attributes['team'] is 4097 chars"),
        ("context.source_ip", "1" * 4097, "context.source_ip is 4097 chars"),
        ("context.tool", "é" * 4097, "context.tool is 4097 chars"),
        ("context.attributes", {"s": "v" * 4097}, "context.attributes['s'] is 4097 chars"),
        ("reply_to", "pdx.replies." + "x" * 4097, "reply_to is 4109 chars"),
    ],
)
def test_the_first_limit_exceeded_is_named_with_its_field(path: str, value: Any, message: str) -> None:
    found = check(request(**{path: value}))
    assert found is not None
    assert found.startswith(message), found
    assert len(found) < 200  # quotes a short prefix, never the value


def test_the_message_size_is_checked_first_without_looking_inside() -> None:
    big = request(**{"resource.attributes": {"blob": "x" * 1_000_000}})
    raw_len = len(wire.encode("AccessRequest", big))
    assert exceeded(raw_len, big, LIMITS) == f"request is {raw_len} bytes (limit 65536)"
    # within a larger byte limit, the string itself is named
    roomy = RequestLimits(max_message_bytes=2_000_000)
    assert (exceeded(raw_len, big, roomy) or "").startswith("resource.attributes['blob'] is 1000000 chars")


def test_a_huge_quoted_value_is_cut_even_when_it_is_all_escapes() -> None:
    found = check(request(**{"resource.attributes": {"\x00" * 5000: "\U0001f600" * 5000}}),
                  RequestLimits(max_message_bytes=1 << 20))
    assert found is not None and len(found) < 200 and "(limit 4096)" in found


# A reference checker with no shortcut: every size compared with its limit, in the same order.
def _naive(raw_len: int, d: dict[str, Any], lim: RequestLimits) -> str | None:
    if raw_len > lim.max_message_bytes:
        return "bytes"
    if len(d["on_behalf_of"]) > lim.max_list_items:
        return "list"
    for m in (d["resource"]["attributes"], d["context"]["attributes"]):
        if len(m) > lim.max_map_entries:
            return "map"
    strings = [d["request_id"], d["identity_id"], *d["on_behalf_of"], d["action"]]
    for rec, names, attrs in (
        (d["resource"], ("id", "type", "environment", "sensitivity", "repository", "owner"), "attributes"),
        (d["context"], ("source_ip", "approval_id", "change_ticket", "tool"), "attributes"),
    ):
        strings += [rec[n] for n in names if rec[n] is not None]
        for k, v in rec[attrs].items():
            strings += [k, v]
    strings.append(d["reply_to"])
    return "string" if any(len(s) > lim.max_string_chars for s in strings) else None


_text = st.text(max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    ids=st.lists(_text, min_size=6, max_size=6),
    obo=st.lists(_text, max_size=6),
    r_attrs=st.dictionaries(_text, _text, max_size=6),
    c_attrs=st.dictionaries(_text, _text, max_size=6),
    optional=st.lists(st.none() | _text, min_size=8, max_size=8),
    caps=st.tuples(st.integers(60, 400), st.integers(0, 45), st.integers(0, 7), st.integers(0, 7)),
)
def test_the_shortcut_agrees_with_checking_every_string(
    ids: list[str], obo: list[str], r_attrs: dict[str, str], c_attrs: dict[str, str],
    optional: list[str | None], caps: tuple[int, int, int, int],
) -> None:
    d = request(
        request_id=ids[0], identity_id=ids[1], action=ids[2], reply_to=ids[3], on_behalf_of=obo,
        **{
            "resource.id": ids[4], "resource.type": ids[5], "resource.attributes": r_attrs,
            "context.attributes": c_attrs,
            "resource.environment": optional[0], "resource.sensitivity": optional[1],
            "resource.repository": optional[2], "resource.owner": optional[3],
            "context.source_ip": optional[4], "context.approval_id": optional[5],
            "context.change_ticket": optional[6], "context.tool": optional[7],
        },
    )
    raw_len = len(wire.encode("AccessRequest", d))
    limits = RequestLimits(*caps)
    found = exceeded(raw_len, d, limits)
    expected = _naive(raw_len, d, limits)
    assert (found is None) == (expected is None), (found, expected)
    if found is not None:
        assert {"bytes": "request is", "list": "on_behalf_of has", "map": "attributes has"}.get(
            expected or "", ""
        ) in found


def test_exceeded_is_cheap_on_the_hot_path() -> None:
    """Budget 5 µs for a typical request (it is a few len() calls: ~0.5 µs); generous for a loaded CI box."""
    d = request()
    raw_len = len(wire.encode("AccessRequest", d))
    per_call = min(timeit.repeat(lambda: exceeded(raw_len, d, LIMITS), number=2000, repeat=5)) / 2000
    assert per_call < 5e-6, f"exceeded() took {per_call * 1e6:.2f} µs"


# ---- shrink ---------------------------------------------------------------------------------------------


def test_a_million_byte_attribute_request_shrinks_to_a_small_valid_audit_copy() -> None:
    big = request(**{"resource.attributes": {"blob": "x" * 1_000_000, "team": "data"}})
    original = copy.deepcopy(big)
    small = shrink(big, LIMITS)
    encoded = wire.encode("AccessRequest", small)
    assert len(encoded) < 16 * 1024
    assert big == original  # a copy: the request itself is untouched
    again = wire.decode_as("AccessRequest", encoded)
    assert exceeded(len(encoded), again, LIMITS) is None
    assert again["context"]["attributes"][TRUNCATED_ATTRIBUTE] == "true"
    assert again["resource"]["attributes"]["team"] == "data"
    assert again["resource"]["attributes"]["blob"].startswith("x" * 60)
    assert again["resource"]["attributes"]["blob"].endswith("...(+999936 chars)")
    for path in ("request_id", "identity_id", "action", "reply_to", "reply_partition", "occurred_at", "deadline"):
        assert again[path] == big[path], path
    for path in ("id", "type", "environment", "sensitivity"):
        assert again["resource"][path] == big["resource"][path]
    assert again["context"]["token_issued_at"] == big["context"]["token_issued_at"]
    assert again["context"]["requested_ttl_s"] == 900
    AccessRequest.from_avro(again)  # still a request the model accepts


def test_many_attributes_and_every_field_huge_still_shrink_below_16_kib() -> None:
    huge = "\U0001f600" * 250_000  # 1,000,000 bytes of 4-byte characters
    fields = {
        "request_id": huge, "identity_id": huge, "action": huge, "reply_to": huge,
        "on_behalf_of": [huge] * 100,
        **{f"resource.{k}": huge for k in ("id", "type", "environment", "sensitivity", "repository", "owner")},
        **{f"context.{k}": huge for k in ("source_ip", "approval_id", "change_ticket", "tool")},
        "resource.attributes": {f"{i}{huge[:1000]}": huge[:2000] for i in range(5000)},
        "context.attributes": {f"k{i}": huge[:100] for i in range(5000)},
    }
    big = request(**fields)
    encoded = wire.encode("AccessRequest", shrink(big, LIMITS))
    assert len(encoded) < 16 * 1024
    small = wire.decode_as("AccessRequest", encoded)
    assert len(small["on_behalf_of"]) == SHRUNK_MAX_ITEMS
    assert len(small["resource"]["attributes"]) == SHRUNK_MAX_ITEMS
    assert len(small["context"]["attributes"]) == SHRUNK_MAX_ITEMS + 1  # + pdx.truncated
    assert small["request_id"].startswith("\U0001f600" * 50) and small["request_id"].endswith("chars)")
    assert exceeded(len(encoded), small, LIMITS) is None


def test_shrink_keeps_short_strings_whole_and_respects_smaller_limits() -> None:
    d = request(on_behalf_of=["a", "b", "c"], **{"resource.attributes": {f"k{i}": "v" for i in range(5)}})
    small = shrink(d, RequestLimits(max_list_items=2, max_map_entries=3))
    assert small["on_behalf_of"] == ["a", "b"]
    assert small["resource"]["attributes"] == {"k0": "v", "k1": "v", "k2": "v"}
    assert small["context"]["attributes"] == {"session": "s-1", TRUNCATED_ATTRIBUTE: "true"}
    assert small["resource"]["repository"] == "github.com/acme/orders"
    wire.encode("AccessRequest", small)


def test_request_too_large_is_a_reason_code() -> None:
    assert ReasonCode.REQUEST_TOO_LARGE == "request_too_large"


def test_shrink_clamps_an_int_the_decoder_let_through() -> None:
    """fastavro reads an Avro int as any 64-bit varint; the audited copy must still encode."""
    d = request(reply_partition=0, deadline=None)
    raw = wire.encode("AccessRequest", d)
    assert raw.endswith(b"\x00\x00\x00")
    big = wire.decode_as("AccessRequest", raw[:-3] + b"\x80\x80\x80\x80\x80\x80\x80\x01" + b"\x00\x00")  # 2**48
    assert big["reply_partition"] == 2**48
    small = shrink(big, LIMITS)
    assert small["reply_partition"] == 2**31 - 1
    wire.encode("AccessRequest", small)
