"""The one duration syntax (streams.model.durations): policies, `pdx approve --ttl`, `pdx audit --since`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from streams.cli.approve import parse_ttl
from streams.cli.audit import parse_when
from streams.errors import UserError
from streams.model.durations import parse_duration_s
from streams.policy import PolicyValidationError, policy_set_from_documents

NOW = datetime(2026, 1, 10, tzinfo=UTC)


@pytest.mark.parametrize("text,seconds", [
    ("45s", 45), ("15m", 900), ("12h", 43200), ("90d", 7776000), ("2w", 1209600), ("1h30m", 5400),
    ("1.5h", 5400), ("1d 2h", 93600), ("1w2d3h4m5s", 788645), ("0s", 0),
])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "90", "5M", "1m1h", "-5m", "4hours", "h4", "1e3s", "1h1h"])
def test_parse_duration_rejects_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a duration \(use e\.g\. .*1h30m"):
        parse_duration_s(text)


def test_approve_ttl_takes_the_policy_syntax() -> None:
    assert parse_ttl("1h30m") == timedelta(minutes=90)
    assert parse_ttl("2d12h") == timedelta(days=2, hours=12)
    assert parse_ttl("90") == timedelta(seconds=90)  # plain seconds still work
    with pytest.raises(UserError, match="must be positive"):
        parse_ttl("-1h30m")
    with pytest.raises(UserError, match="'5M': give a duration like 30m, 4h, 2d or 1h30m"):
        parse_ttl("5M")


def test_audit_times_take_the_policy_syntax() -> None:
    assert parse_when("1h30m", now=NOW) == NOW - timedelta(minutes=90)
    assert parse_when("1w2d", now=NOW) == NOW - timedelta(days=9)
    assert parse_when("7D", now=NOW) == NOW - timedelta(days=7)  # relative times stay case-insensitive
    with pytest.raises(UserError, match="too far in the past"):
        parse_when("999999999w", now=NOW)
    with pytest.raises(UserError, match=re.escape("cannot read time 'soon': use e.g. 7d, 24h, 1h30m")):
        parse_when("soon", now=NOW)


def test_policies_take_the_same_syntax() -> None:
    def doc(max_ttl: str) -> dict[str, object]:
        return {"name": "p", "owner": "o", "mode": "enforce", "controls": [], "rules": [
            {"id": "r", "effect": "allow", "when": [{"context.token_age_s": {"lt": max_ttl}}],
             "obligations": {"expires_at": {"max_ttl": max_ttl}}, "reason": {"code": "r", "message": "m"}}]}

    policy_set_from_documents([doc("1h30m")])
    with pytest.raises(PolicyValidationError, match="'5M' is not a duration"):
        policy_set_from_documents([doc("5M")])
