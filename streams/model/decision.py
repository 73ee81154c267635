"""Decisions and their reasons (docs/contracts.md). ``to_dict()`` keys are exactly the contract's field names.

:class:`ReasonCode` lists the codes pdx itself decides with, outside any policy rule. The engine, the worker
and the client use these members, so a code is spelled once; policy rules add their own codes as data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from streams.errors import quote
from streams.model.fields import _opt_str, _req, _require_mapping, _str_list, _str_map, parse_timestamp

DECISIONS = ("allow", "deny", "step_up")


class ReasonCode(StrEnum):
    """Reason codes decided by pdx itself (fail closed), not by a policy rule."""

    NO_POLICY_LOADED = "no_policy_loaded"
    UNKNOWN_IDENTITY = "unknown_identity"
    IDENTITY_SUSPENDED = "identity_suspended"
    IDENTITY_DECOMMISSIONED = "identity_decommissioned"
    INVALID_REQUEST = "invalid_request"
    NO_MATCHING_RULE = "no_matching_rule"
    DEADLINE_EXPIRED = "deadline_expired"
    PDP_TIMEOUT = "pdp_timeout"
    INVALID_REPLY_ROUTE = "invalid_reply_route"
    #: the request exceeds a size limit (Settings.request_limits; see streams.contracts.limits)
    REQUEST_TOO_LARGE = "request_too_large"
    #: the request's workload token (AccessRequest.token) failed verification (streams/model/tokens.py): never
    #: an allow, decided before any rule
    TOKEN_MALFORMED = "token_malformed"  # noqa: S105 - a reason code, not a secret
    TOKEN_UNTRUSTED_ISSUER = "token_untrusted_issuer"  # noqa: S105 - a reason code, not a secret
    TOKEN_ALGORITHM_NOT_ALLOWED = "token_algorithm_not_allowed"  # noqa: S105 - a reason code, not a secret
    TOKEN_INVALID_SIGNATURE = "token_invalid_signature"  # noqa: S105 - a reason code, not a secret
    TOKEN_EXPIRED = "token_expired"  # noqa: S105 - a reason code, not a secret
    TOKEN_NOT_YET_VALID = "token_not_yet_valid"  # noqa: S105 - a reason code, not a secret
    TOKEN_WRONG_AUDIENCE = "token_wrong_audience"  # noqa: S105 - a reason code, not a secret
    #: a principal of the delegation chain (context.on_behalf_of) is not in the inventory, or the chain was
    #: not resolved against it; or it is not active (suspending a human stops every agent acting for them)
    DELEGATOR_UNKNOWN = "delegator_unknown"
    DELEGATOR_SUSPENDED = "delegator_suspended"
    #: the chain names more principals than the configured maximum (PDX_MAX_DELEGATION_DEPTH)
    DELEGATION_TOO_DEEP = "delegation_too_deep"
    #: on_behalf_of names a principal that neither the verified token nor a signed delegation grant proves
    #: (streams/model/delegation.py): a claim is not a proof
    DELEGATION_UNPROVEN = "delegation_unproven"
    #: deciding the request failed inside pdx (a bug): fail closed, audited, and the request dead-lettered too
    EVALUATION_FAILED = "evaluation_failed"
    #: the approval request a step_up opened was denied by an approver, or expired before anyone granted it
    #: (decided by the client that waited: PolicyClient.check(wait_for_approval=...))
    APPROVAL_DENIED = "approval_denied"
    APPROVAL_EXPIRED = "approval_expired"
    #: an approver who is the requesting identity or a principal of its chain (separation of duties)
    APPROVAL_SELF_GRANTED = "approval_self_granted"


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
    #: what the decision read beyond the request and the identity snapshot, for the audit record (never part
    #: of the reply): the approval that made context.approval_valid true (Approval objects), and the delegation
    #: chain's principals (Identity objects) — so a replay evaluates with the same state
    relied_on_approvals: list[Any] = field(default_factory=list)
    principals: list[Any] = field(default_factory=list)

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
            raise ValueError(f"decision.decision: {quote(outcome, 60)} is not one of {', '.join(DECISIONS)}")
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
