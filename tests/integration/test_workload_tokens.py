"""Issue 14 part 1 through the real Kafka and a running worker: a caller's workload token is verified before any
rule runs; a bad one is a deny with its precise reason, and the audit keeps the token's hash, never the token."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import jwt
import pytest

from streams import config as settings
from streams.audit.store import connect, wait_for_audit_rows
from streams.client import PolicyClient
from tests.conftest import TEST_AUDIENCE, TEST_ISSUER

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SUBJECT = "spiffe://pdx.dev/ns/billing/sa/svc-billing"  # svc-billing's workload subject (examples/inventory.yaml)
INVOICES = {"id": "invoices-api", "type": "api", "environment": "production", "sensitivity": "internal"}
INTERNAL = {"source_ip": "10.20.30.40"}


def _mint(key: Any, age_s: int = 60, **claims: Any) -> str:
    now = int(datetime.now(UTC).timestamp())
    body = {"iss": TEST_ISSUER, "sub": SUBJECT, "aud": TEST_AUDIENCE, "iat": now - age_s, "exp": now + 600,
            "jti": "it-1", **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="ES256",
                      headers={"kid": "test-1"})


async def test_tokens_are_verified_through_kafka(client: PolicyClient, services: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = services.token_issuer_key
    if key is None:
        pytest.skip("needs the local test services (their workers trust the test issuer)")
    good = _mint(key)
    cases = {
        "m2m_token_allowed": good,
        "stale_token": _mint(key, age_s=7200),  # verified iat two hours ago
        "token_expired": _mint(key, exp=int(datetime.now(UTC).timestamp()) - 3600),
        "token_wrong_audience": _mint(key, aud="someone-else"),
        "token_untrusted_issuer": _mint(key, iss="https://evil.example"),
        "token_invalid_signature": _mint(ec.generate_private_key(ec.SECP256R1())),
        "token_subject_mismatch": _mint(key, sub="spiffe://pdx.dev/ns/other/sa/intruder"),
        "token_malformed": "not.a.jwt",
    }
    decisions = {}
    for expected, token in cases.items():
        decisions[expected] = await client.check("svc-billing", "api:call", INVOICES, INTERNAL, token=token)
    assert decisions.pop("m2m_token_allowed").decision == "allow"
    for expected, d in decisions.items():
        assert d.decision == "deny" and expected in d.reason_codes, (expected, d.reason_codes)
    allowed = await client.check("svc-billing", "api:call", INVOICES, INTERNAL, token=good)
    assert wait_for_audit_rows(1, request_ids=[allowed.request_id], cfg=settings.load(), timeout_s=60) == 1
    stored = connect(cfg=settings.load(), role="reader").query(
        f"SELECT request_json FROM {settings.CLICKHOUSE_DATABASE}.{settings.AUDIT_TABLE} WHERE request_id = %(r)s",
        parameters={"r": allowed.request_id},
    ).result_rows[0][0]
    assert good not in stored and good.split(".")[2] not in stored  # neither the token nor its signature
    assert SUBJECT in stored and "[redacted:sha256:" in stored
