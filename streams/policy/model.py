"""Access requests and decisions (docs/contracts.md). ``to_dict()`` keys are exactly the contract's field names."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams.inventory.models import _require_mapping, _str_list, _str_map, optional_timestamp, parse_timestamp

DECISIONS = ("allow", "deny", "step_up")
SENSITIVITIES = ("public", "internal", "confidential", "restricted")


def _req(d: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in d or d[key] is None:
        raise ValueError(f"{what}: missing required field {key!r}")
    return d[key]


def _opt_str(d: Mapping[str, Any], key: str, what: str) -> str | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, str):
        raise ValueError(f"{what}.{key}: expected a string, got {v!r}")
    return v


@dataclass(slots=True)
class Resource:
    id: str
    type: str
    environment: str | None = None
    sensitivity: str | None = None
    repository: str | None = None
    owner: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "environment": self.environment,
            "sensitivity": self.sensitivity,
            "repository": self.repository,
            "owner": self.owner,
            "attributes": dict(self.attributes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Resource:
        d = _require_mapping(d, "resource")
        rid = _req(d, "id", "resource")
        rtype = _req(d, "type", "resource")
        if not isinstance(rid, str) or not isinstance(rtype, str):
            raise ValueError("resource: id and type must be strings")
        sens = _opt_str(d, "sensitivity", "resource")
        if sens is not None and sens not in SENSITIVITIES:
            raise ValueError(f"resource.sensitivity: {sens!r} is not one of {', '.join(SENSITIVITIES)}")
        return cls(
            id=rid,
            type=rtype,
            environment=_opt_str(d, "environment", "resource"),
            sensitivity=sens,
            repository=_opt_str(d, "repository", "resource"),
            owner=_opt_str(d, "owner", "resource"),
            attributes=_str_map(d.get("attributes"), "resource.attributes"),
        )


@dataclass(slots=True)
class RequestContext:
    source_ip: str | None = None
    token_issued_at: datetime | None = None
    requested_ttl_s: int | None = None
    approval_id: str | None = None
    change_ticket: str | None = None
    tool: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_ip": self.source_ip,
            "token_issued_at": self.token_issued_at,
            "requested_ttl_s": self.requested_ttl_s,
            "approval_id": self.approval_id,
            "change_ticket": self.change_ticket,
            "tool": self.tool,
            "attributes": dict(self.attributes),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> RequestContext:
        if d is None:
            return cls()
        d = _require_mapping(d, "context")
        ttl = d.get("requested_ttl_s")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int)):
            raise ValueError(f"context.requested_ttl_s: expected an integer number of seconds, got {ttl!r}")
        return cls(
            source_ip=_opt_str(d, "source_ip", "context"),
            token_issued_at=optional_timestamp(d.get("token_issued_at"), "context.token_issued_at"),
            requested_ttl_s=ttl,
            approval_id=_opt_str(d, "approval_id", "context"),
            change_ticket=_opt_str(d, "change_ticket", "context"),
            tool=_opt_str(d, "tool", "context"),
            attributes=_str_map(d.get("attributes"), "context.attributes"),
        )


@dataclass(slots=True)
class AccessRequest:
    request_id: str
    occurred_at: datetime
    identity_id: str
    action: str
    resource: Resource
    context: RequestContext = field(default_factory=RequestContext)
    on_behalf_of: list[str] = field(default_factory=list)
    reply_to: str = ""
    reply_partition: int = 0
    deadline: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "occurred_at": self.occurred_at,
            "identity_id": self.identity_id,
            "on_behalf_of": list(self.on_behalf_of),
            "action": self.action,
            "resource": self.resource.to_dict(),
            "context": self.context.to_dict(),
            "reply_to": self.reply_to,
            "reply_partition": self.reply_partition,
            "deadline": self.deadline,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AccessRequest:
        d = _require_mapping(d, "request")
        rid = d.get("request_id") or uuid.uuid4().hex
        action = _req(d, "action", "request")
        identity_id = _req(d, "identity_id", "request")
        if not isinstance(action, str) or not isinstance(identity_id, str):
            raise ValueError("request: action and identity_id must be strings")
        part = d.get("reply_partition", 0)
        if isinstance(part, bool) or not isinstance(part, int):
            raise ValueError(f"request.reply_partition: expected an integer, got {part!r}")
        return cls(
            request_id=str(rid),
            occurred_at=parse_timestamp(_req(d, "occurred_at", "request"), "request.occurred_at"),
            identity_id=identity_id,
            on_behalf_of=_str_list(d.get("on_behalf_of"), "request.on_behalf_of"),
            action=action,
            resource=Resource.from_dict(_req(d, "resource", "request")),
            context=RequestContext.from_dict(d.get("context")),
            reply_to=str(d.get("reply_to") or ""),
            reply_partition=part,
            deadline=optional_timestamp(d.get("deadline"), "request.deadline"),
        )


@dataclass(slots=True, frozen=True)
class Reason:
    code: str
    message: str
    policy: str | None = None
    rule: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "policy": self.policy, "rule": self.rule}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Reason:
        d = _require_mapping(d, "reason")
        return cls(
            code=str(_req(d, "code", "reason")),
            message=str(d.get("message") or ""),
            policy=_opt_str(d, "policy", "reason"),
            rule=_opt_str(d, "rule", "reason"),
        )


@dataclass(slots=True, frozen=True)
class MonitorOutcome:
    """A rule of a ``monitor`` policy that matched: what it *would have* done, never applied."""

    policy: str
    rule: str
    effect: str
    reason_code: str

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "rule": self.rule, "effect": self.effect, "reason_code": self.reason_code}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MonitorOutcome:
        d = _require_mapping(d, "monitor outcome")
        return cls(
            policy=str(_req(d, "policy", "monitor")),
            rule=str(_req(d, "rule", "monitor")),
            effect=str(_req(d, "effect", "monitor")),
            reason_code=str(_req(d, "reason_code", "monitor")),
        )


@dataclass(slots=True)
class Decision:
    request_id: str
    decision: str
    reasons: list[Reason]
    matched_rules: list[str]
    obligations: dict[str, str]
    monitor: list[MonitorOutcome]
    bundle_version: str
    evaluated_at: datetime
    eval_us: int = 0
    worker_id: str = ""

    @property
    def reason_codes(self) -> list[str]:
        return [r.code for r in self.reasons]

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "decision": self.decision,
            "reasons": [r.to_dict() for r in self.reasons],
            "matched_rules": list(self.matched_rules),
            "obligations": dict(self.obligations),
            "monitor": [m.to_dict() for m in self.monitor],
            "bundle_version": self.bundle_version,
            "evaluated_at": self.evaluated_at,
            "eval_us": self.eval_us,
            "worker_id": self.worker_id,
        }

    @classmethod
    def fail_closed(
        cls, request_id: str, code: str, message: str, *, bundle_version: str = "", worker_id: str = ""
    ) -> Decision:
        """A deny decided outside the rules (deadline passed, invalid request, client timeout...)."""
        return cls(request_id, "deny", [Reason(code=code, message=message)], [], {}, [], bundle_version,
                   datetime.now(UTC), 0, worker_id)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Decision:
        d = _require_mapping(d, "decision")
        outcome = _req(d, "decision", "decision")
        if outcome not in DECISIONS:
            raise ValueError(f"decision.decision: {outcome!r} is not one of {', '.join(DECISIONS)}")
        return cls(
            request_id=str(_req(d, "request_id", "decision")),
            decision=outcome,
            reasons=[Reason.from_dict(r) for r in d.get("reasons") or []],
            matched_rules=_str_list(d.get("matched_rules"), "decision.matched_rules"),
            obligations=_str_map(d.get("obligations"), "decision.obligations"),
            monitor=[MonitorOutcome.from_dict(m) for m in d.get("monitor") or []],
            bundle_version=str(d.get("bundle_version") or ""),
            evaluated_at=parse_timestamp(_req(d, "evaluated_at", "decision"), "decision.evaluated_at"),
            eval_us=int(d.get("eval_us") or 0),
            worker_id=str(d.get("worker_id") or ""),
        )
