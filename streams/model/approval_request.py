"""Approval requests: a step_up decision opens one; a second person grants or denies it (signed).

Lifecycle, all on the compacted topic pdx.approval-requests keyed by ``approval_request_id``:

* ``open``: written by the worker that decided the step_up (signed with its ``audit`` key), in the same batch
  as the decision's audit record; the Decision carries the id in ``obligations.approval_request_id``.
* ``granted`` / ``denied``: written by an approver (``pdx approvals grant|deny``, signed with an ``approval``
  key). A grant also produces an :class:`~streams.model.Approval` with the same id, scoped to exactly that
  identity, action and resource, which the next decision of that request relies on.
* ``expired``: an ``open`` request past ``expires_at`` (no record is needed for that; readers derive it).

Separation of duties: the requesting identity and every principal of its delegation chain are refused as
approvers (``approval_self_granted``), by the CLI and again by every worker (:func:`self_granted`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from streams.errors import quote
from streams.model.fields import _require_mapping, _str, _str_list, optional_timestamp, parse_timestamp

OPEN, GRANTED, DENIED, EXPIRED = "open", "granted", "denied", "expired"
STATUSES = (OPEN, GRANTED, DENIED)
#: how long an approval request stays grantable unless the policy's obligation says otherwise
DEFAULT_TTL = timedelta(hours=1)
#: the Decision obligation that carries the approval request's id to the caller
OBLIGATION = "approval_request_id"


def approval_request_id(request_id: str) -> str:
    """Deterministic from the request id, so a redelivered request (decided again after a crash) opens the same
    approval request, never a second one."""
    return "apq-" + hashlib.sha256(request_id.encode()).hexdigest()[:20]


@dataclass(slots=True)
class ApprovalRequest:
    approval_request_id: str
    request_id: str
    identity_id: str
    action: str
    resource_type: str
    resource_id: str
    opened_at: datetime
    expires_at: datetime
    on_behalf_of: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    status: str = OPEN
    resolved_by: str | None = None
    resolved_at: datetime | None = None
    resolution: str | None = None
    approval_expires_at: datetime | None = None

    def state(self, now: datetime) -> str:
        """open / granted / denied, or expired for an open request past its expiry."""
        return EXPIRED if self.status == OPEN and now >= self.expires_at else self.status

    def resolved(self, status: str, by: str, at: datetime, resolution: str | None = None,
                 approval_expires_at: datetime | None = None) -> ApprovalRequest:
        return replace(self, status=status, resolved_by=by, resolved_at=at, resolution=resolution,
                       approval_expires_at=approval_expires_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "approval_request_id": self.approval_request_id,
            "request_id": self.request_id,
            "identity_id": self.identity_id,
            "action": self.action,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "on_behalf_of": list(self.on_behalf_of),
            "reasons": list(self.reasons),
            "rules": list(self.rules),
            "opened_at": self.opened_at,
            "expires_at": self.expires_at,
            "status": self.status,
            "resolved_by": self.resolved_by,
            "resolved_at": self.resolved_at,
            "resolution": self.resolution,
            "approval_expires_at": self.approval_expires_at,
        }

    def to_json(self, now: datetime) -> dict[str, Any]:
        """For ``pdx approvals pending --json`` and chat-ops bots: timestamps as ISO text, the derived state."""
        d = self.to_dict()
        for k, v in d.items():
            if isinstance(v, datetime):
                d[k] = v.isoformat()
        d["state"] = self.state(now)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ApprovalRequest:
        d = _require_mapping(d, "approval request")
        aid = _str(d.get("approval_request_id"), "approval request: approval_request_id")
        what = f"approval request {quote(aid, 80)}"
        status = _str(d.get("status"), f"{what}: status")
        if status not in STATUSES:
            raise ValueError(f"{what}: status must be one of {', '.join(STATUSES)}, got {quote(status, 20)}")
        return cls(
            approval_request_id=aid,
            request_id=_str(d.get("request_id"), f"{what}: request_id"),
            identity_id=_str(d.get("identity_id"), f"{what}: identity_id"),
            action=_str(d.get("action"), f"{what}: action"),
            resource_type=_str(d.get("resource_type"), f"{what}: resource_type", required=False),
            resource_id=_str(d.get("resource_id"), f"{what}: resource_id"),
            opened_at=parse_timestamp(d.get("opened_at"), f"{what}: opened_at"),
            expires_at=parse_timestamp(d.get("expires_at"), f"{what}: expires_at"),
            on_behalf_of=_str_list(d.get("on_behalf_of") or [], f"{what}: on_behalf_of"),
            reasons=_str_list(d.get("reasons") or [], f"{what}: reasons"),
            rules=_str_list(d.get("rules") or [], f"{what}: rules"),
            status=status,
            resolved_by=d.get("resolved_by"),
            resolved_at=optional_timestamp(d.get("resolved_at"), f"{what}: resolved_at"),
            resolution=d.get("resolution"),
            approval_expires_at=optional_timestamp(d.get("approval_expires_at"), f"{what}: approval_expires_at"),
        )


def self_granted(approver: str, identity_id: str, on_behalf_of: Sequence[str]) -> bool:
    """Separation of duties: nobody approves a request they make, or one made for them."""
    return approver == identity_id or approver in on_behalf_of
