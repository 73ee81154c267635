"""Secure mode (`pdx dev up --secure`): who may write and read the trusted token issuers topic pdx.jwks."""

from __future__ import annotations

from streams import config as settings
from streams.devservices import secure


def _ops_on(topic: str) -> set[tuple[str, str]]:
    return {(r.principal, r.operation) for r in secure.acl_rules() if r.resource_type == "TOPIC" and r.name == topic}


def test_policy_admins_write_pdx_jwks_and_workers_read_it() -> None:
    ops = _ops_on(settings.TOPIC_JWKS)
    assert {p for p, op in ops if op == "WRITE"} == {"pdx-policy"}  # pdx-admin is a super user, outside the ACLs
    assert {p for p, op in ops if op == "READ"} == {"pdx-policy", "pdx-worker"}
    assert ("pdx-worker", "DESCRIBE") in ops
