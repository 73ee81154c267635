"""Secret redaction before audit (streams/contracts/redact.py)."""

from __future__ import annotations

import hashlib
from typing import Any

from streams.contracts.redact import Redactor, looks_like_secret, redacted

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZ2VudCJ9.c2lnbmF0dXJlLWJ5dGVz"


def _request(res: dict[str, str], ctx: dict[str, str]) -> dict[str, Any]:
    return {"request_id": "r", "resource": {"id": "x", "attributes": res}, "context": {"tool": "t", "attributes": ctx}}


def test_secret_names_and_secret_shaped_values_are_replaced_by_a_short_hash() -> None:
    req = _request(
        {"owner": "sre", "X-Api-Key": "k-123", "note": f"sent {JWT}"},
        {"Authorization": "Bearer abcdefghijklmnop", "session_cookie": "c", "db_password": "hunter2",
         "ticket": "CHG-1", "header": "basic dXNlcjpwYXNzd29yZA==", "refresh-token": "r", "aws_secret": "s",
         "credential_id": "cred-1"},
    )
    out = Redactor().redact(req)
    assert out is not None
    res, ctx = out["resource"]["attributes"], out["context"]["attributes"]
    assert res["owner"] == "sre" and ctx["ticket"] == "CHG-1"
    for name in ("X-Api-Key", "note"):
        assert res[name] == redacted(req["resource"]["attributes"][name])
    for name in ("Authorization", "session_cookie", "db_password", "header", "refresh-token", "aws_secret",
                 "credential_id"):
        assert ctx[name].startswith("[redacted:sha256:"), name
    expected = hashlib.sha256(b"Bearer abcdefghijklmnop").hexdigest()[:12]
    assert ctx["Authorization"] == f"[redacted:sha256:{expected}]"
    assert req["context"]["attributes"]["Authorization"] == "Bearer abcdefghijklmnop"  # input untouched
    assert out["context"]["tool"] == "t" and out["resource"]["id"] == "x"


def test_nothing_to_redact_returns_none_and_patterns_are_configurable() -> None:
    assert Redactor().redact(_request({"env": "prod"}, {"ticket": "CHG-1"})) is None
    assert Redactor().redact({"request_id": "r"}) is None
    only_ticket = Redactor(["ticket"])
    out = only_ticket.redact(_request({}, {"ticket": "CHG-1", "password": "p"}))
    assert out is not None and out["context"]["attributes"]["password"] == "p"
    assert out["context"]["attributes"]["ticket"].startswith("[redacted:")


def test_secret_shapes() -> None:
    assert looks_like_secret(JWT) and looks_like_secret("Authorization: Bearer abc.def-ghi_jkl")
    assert not looks_like_secret("eyJ")
    assert not looks_like_secret("a.b.c") and not looks_like_secret("bearer of bad news")
