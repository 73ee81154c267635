"""Issue 12, found by testing: a context attribute ``authorization: Bearer ...`` was stored verbatim in
``request_json`` and printed by ``pdx audit explain``. Secrets are now redacted before the audit record exists."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from streams import config as settings
from streams.audit.store import connect, wait_for_audit_rows
from streams.client import PolicyClient

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

SECRET = "Bearer s3cr3t-abcdefghijklmnopqrstuvwxyz"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZ2VudC1jb25maWctYm90In0.c2lnbmF0dXJlLWJ5dGVzLWhlcmU"



async def test_secrets_never_reach_clickhouse_or_explain(client: PolicyClient) -> None:
    resource = {"id": "feature-flags", "type": "config", "environment": "production",
                "attributes": {"x-api-key": "ak-123456", "owner": "sre"}}
    context = {"attributes": {"authorization": SECRET, "forwarded": JWT, "ticket": "CHG-7"}}
    d = await client.check("agent-config-bot", "config:read", resource, context, on_behalf_of=["alice"])
    assert d.decision == "allow"
    assert wait_for_audit_rows(1, request_ids=[d.request_id], cfg=settings.load(), timeout_s=60) == 1
    rows = connect(cfg=settings.load()).query(
        f"SELECT request_json FROM {settings.CLICKHOUSE_DATABASE}.{settings.AUDIT_TABLE} WHERE request_id = %(r)s",
        parameters={"r": d.request_id},
    ).result_rows
    stored = rows[0][0]
    for secret in (SECRET, "s3cr3t", JWT, "ak-123456"):
        assert secret not in stored
    digest = hashlib.sha256(SECRET.encode()).hexdigest()[:12]
    assert f"[redacted:sha256:{digest}]" in stored and "CHG-7" in stored and '"owner":"sre"' in stored
    shown = subprocess.run([sys.executable, "-m", "streams.cli.main", "audit", "explain", d.request_id, "--json"],
                           capture_output=True, text=True, timeout=120, check=True).stdout
    assert d.request_id in shown and "s3cr3t" not in shown and JWT not in shown and digest in shown
