"""Synthetic AuditRecord dicts (contract shape) for benchmarks, demos and tests.

Deterministic for a given seed. Records look like what the decide agent produces: a mix of agents, service
accounts, workloads and humans acting on resources of every sensitivity, mostly allowed, some denied or stepped up.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

KINDS = ("agent", "service_account", "workload", "human")
ACTIONS = ("db:connect", "secrets:read", "config:write", "api:call", "config:read", "deploy:run", "logs:read")
SENSITIVITY = ("public", "internal", "internal", "confidential", "restricted")
ENVIRONMENTS = ("dev", "staging", "prod")
DENY_CODES = ("no_matching_rule", "environment_not_allowed", "stale_credential", "identity_suspended", "scope_missing")
RULES = (
    "baseline/allow-read",
    "baseline/deny-prod-write",
    "secrets/step-up-restricted",
    "agents/deny-unapproved-repo",
    "creds/deny-stale",
    "baseline/default-deny",
)


def _identity(i: int, rng: random.Random, now: datetime) -> dict[str, Any]:
    kind = KINDS[i % len(KINDS)]
    created = now - timedelta(days=rng.choice((5, 20, 60, 120, 200, 400, 700)))
    return {
        "id": f"{kind.replace('_', '-')}-{i:05d}",
        "kind": kind,
        "owner": f"team-{i % 17}",
        "status": "active" if i % 29 else "suspended",
        "environments": ["dev", "staging"] + (["prod"] if i % 3 else []),
        "scopes": ["db:connect", "api:call"],
        "tags": [f"tier-{i % 3}"] + (["ai"] if kind == "agent" else []),
        "approved_repositories": [f"org/repo-{i % 11}"],
        "risk_tier": ("low", "medium", "high", "critical")[i % 4 if i % 5 else 2],
        "credentials": [
            {
                "id": f"cred-{i}-1",
                "type": "api_key",
                "created_at": created,
                "rotated_at": None,
                "expires_at": None,
                "status": "active",
            },
            {
                "id": f"cred-{i}-0",
                "type": "api_key",
                "created_at": created - timedelta(days=900),
                "rotated_at": None,
                "expires_at": None,
                "status": "revoked",
            },
        ],
        "attributes": {"cost_center": f"cc-{i % 5}"},
        "updated_at": created,
    }


def records(
    n: int,
    *,
    seed: int = 7,
    identities: int = 200,
    start: datetime | None = None,
    end: datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield ``n`` AuditRecord dicts with decided_at spread over [start, end) (default: the last 7 days)."""
    rng = random.Random(seed)
    end = end or datetime.now(UTC)
    start = start or end - timedelta(days=7)
    span = max((end - start).total_seconds(), 1.0)
    people = [_identity(i, rng, start) for i in range(max(identities, 1))]
    for k in range(n):
        ident = people[rng.randrange(len(people))]
        decided = start + timedelta(seconds=rng.random() * span)
        sens = SENSITIVITY[rng.randrange(len(SENSITIVITY))]
        env = ENVIRONMENTS[rng.randrange(3)]
        action = ACTIONS[rng.randrange(len(ACTIONS))]
        roll = rng.random()
        if ident["status"] != "active":
            outcome, code, rule = "deny", "identity_suspended", ""
        elif roll < 0.78:
            outcome, code, rule = "allow", "rule_allow", RULES[0]
        elif roll < 0.93:
            code = DENY_CODES[rng.randrange(len(DENY_CODES))]
            outcome, rule = "deny", RULES[1 + rng.randrange(4)]
        else:
            outcome, code, rule = "step_up", "approval_required", RULES[2]
        rid = uuid.UUID(int=rng.getrandbits(128), version=4).hex
        occurred = decided - timedelta(milliseconds=3)
        yield {
            "request": {
                "request_id": rid,
                "occurred_at": occurred,
                "identity_id": ident["id"],
                "on_behalf_of": ["human-00003"] if ident["kind"] == "agent" and k % 4 == 0 else [],
                "action": action,
                "resource": {
                    "id": f"{env}/{action.split(':')[0]}/res-{rng.randrange(300)}",
                    "type": action.split(":")[0],
                    "environment": env,
                    "sensitivity": sens,
                    "repository": None,
                    "owner": f"team-{rng.randrange(17)}",
                    "attributes": {},
                },
                "context": {
                    "source_ip": f"10.{k % 250}.{rng.randrange(250)}.{rng.randrange(250)}",
                    "token_issued_at": None,
                    "requested_ttl_s": 900,
                    "approval_id": None,
                    "change_ticket": None,
                    "tool": "synthetic",
                    "attributes": {},
                },
                "reply_to": "pdx.decisions",
                "reply_partition": k % 8,
                "deadline": None,
            },
            "identity": ident,
            "decision": {
                "request_id": rid,
                "decision": outcome,
                "reasons": [
                    {
                        "code": code,
                        "message": f"{outcome} by {rule or 'inventory'}",
                        "policy": rule.split("/")[0] or None,
                        "rule": rule or None,
                    }
                ],
                "matched_rules": [rule] if rule else [],
                "obligations": {"expires_at": (decided + timedelta(minutes=15)).isoformat()}
                if outcome == "allow"
                else ({"require_approval": "platform-oncall"} if outcome == "step_up" else {}),
                "monitor": [],
                "bundle_version": "b" * 64,
                "evaluated_at": decided,
                "eval_us": 20 + rng.randrange(200),
                "worker_id": f"worker-{k % 2}",
            },
            "received_at": occurred,
            "decided_at": decided,
            "source_topic": "pdx.requests",
            "source_partition": k % 4,
            "source_offset": k,
            "worker_id": f"worker-{k % 2}",
        }


def make_identity(
    identity_id: str,
    *,
    kind: str = "agent",
    owner: str = "team-a",
    credential_created: datetime | None = None,
    status: str = "active",
    risk_tier: str = "medium",
) -> dict[str, Any]:
    """One Identity dict (contract shape) with a single active api_key credential."""
    created = credential_created or datetime(2026, 1, 1, tzinfo=UTC)
    return {
        "id": identity_id,
        "kind": kind,
        "owner": owner,
        "status": status,
        "environments": ["dev", "staging", "prod"],
        "scopes": ["db:connect"],
        "tags": ["test"],
        "approved_repositories": [],
        "risk_tier": risk_tier,
        "credentials": [
            {
                "id": f"{identity_id}-key",
                "type": "api_key",
                "created_at": created,
                "rotated_at": None,
                "expires_at": None,
                "status": "active",
            }
        ],
        "attributes": {},
        "updated_at": created,
    }


def make_record(
    request_id: str,
    identity_id: str,
    decided_at: datetime,
    *,
    decision: str = "allow",
    action: str = "db:connect",
    resource_id: str = "prod/db/orders",
    resource_type: str = "db",
    environment: str = "prod",
    sensitivity: str = "internal",
    reasons: list[tuple[str, str, str | None, str | None]] | None = None,
    matched_rules: list[str] | None = None,
    obligations: dict[str, str] | None = None,
    identity: dict[str, Any] | bool | None = True,
    source_offset: int = 0,
) -> dict[str, Any]:
    """One AuditRecord dict with explicit fields (tests)."""
    ident: dict[str, Any] | None
    if identity is True:
        ident = make_identity(identity_id)
    elif identity is False or identity is None:
        ident = None
    else:
        ident = identity  # type: ignore[assignment]
    rs = reasons if reasons is not None else [("rule_allow", "allowed", "baseline", "baseline/allow")]
    return {
        "request": {
            "request_id": request_id,
            "occurred_at": decided_at - timedelta(milliseconds=5),
            "identity_id": identity_id,
            "on_behalf_of": [],
            "action": action,
            "resource": {
                "id": resource_id,
                "type": resource_type,
                "environment": environment,
                "sensitivity": sensitivity,
                "repository": None,
                "owner": None,
                "attributes": {},
            },
            "context": {
                "source_ip": "10.0.0.1",
                "token_issued_at": None,
                "requested_ttl_s": None,
                "approval_id": None,
                "change_ticket": None,
                "tool": None,
                "attributes": {},
            },
            "reply_to": "pdx.decisions",
            "reply_partition": 0,
            "deadline": None,
        },
        "identity": ident,
        "decision": {
            "request_id": request_id,
            "decision": decision,
            "reasons": [{"code": c, "message": m, "policy": p, "rule": r} for c, m, p, r in rs],
            "matched_rules": matched_rules if matched_rules is not None else [r for _c, _m, _p, r in rs if r],
            "obligations": obligations or {},
            "monitor": [],
            "bundle_version": "v1",
            "evaluated_at": decided_at,
            "eval_us": 42,
            "worker_id": "w1",
        },
        "received_at": decided_at - timedelta(milliseconds=2),
        "decided_at": decided_at,
        "source_topic": "pdx.requests",
        "source_partition": 0,
        "source_offset": source_offset,
        "worker_id": "w1",
    }
