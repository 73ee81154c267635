"""Error messages quote a bounded prefix of a bad value whatever its size or depth (issue 24, fuzzing)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from streams.errors import quote
from streams.model import AccessRequest, RequestContext, Resource
from streams.policy import evaluate


def test_a_deeply_nested_value_is_quoted_without_recursion_error() -> None:
    root: list[Any] = []
    cur = root
    for _ in range(5000):
        nxt: list[Any] = []
        cur.append(nxt)
        cur = nxt
    text = quote(root, 60)
    assert text.startswith("[[[") and len(text) <= 80


def test_a_huge_list_is_described_by_a_prefix_and_its_length() -> None:
    text = quote(list(range(200_000)), 60)
    assert text.startswith("[0, 1, 2") and "(200000 items)" in text and len(text) < 100
    assert quote({"a": 1}) == "{'a': 1}" and quote(["x"]) == "['x']" and quote("s" * 500, 10).endswith("(500 chars)")


def test_an_out_of_range_clock_is_a_deny_not_an_overflow() -> None:
    req = AccessRequest("r", datetime(2025, 1, 1, tzinfo=UTC), "a", "x", Resource(id="r", type="t"), RequestContext(),
                        [])
    edge = datetime.max.replace(tzinfo=timezone(timedelta(hours=-5)))  # to UTC: past datetime.max
    d = evaluate(None, req, None, [], edge)
    assert (d.decision, d.reason_codes) == ("deny", ["invalid_request"])
