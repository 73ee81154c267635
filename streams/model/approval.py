"""Pre-approvals: an identity may perform matching actions on matching resources for a while."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from streams.errors import quote
from streams.model.fields import _require_mapping, _str, parse_timestamp
from streams.model.glob import glob_match  # re-exported: streams.model.glob_match

__all__ = ["Approval", "approval_valid", "glob_match"]


@dataclass(slots=True)
class Approval:
    """A pre-approval for an identity to perform matching actions on matching resources for a while."""

    approval_id: str
    identity_id: str
    action: str
    resource_id: str
    approved_by: str
    granted_at: datetime
    expires_at: datetime
    revoked: bool = False

    def matches(
        self, identity_id: str, action: str, resource_id: str, now: datetime, approval_id: str | None = None
    ) -> bool:
        """True when this approval covers the request at ``now`` (see contracts: ``context.approval_valid``)."""
        return (
            not self.revoked
            and self.identity_id == identity_id
            and (approval_id is None or self.approval_id == approval_id)
            and self.granted_at <= now < self.expires_at
            and glob_match(self.action, action)
            and glob_match(self.resource_id, resource_id)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "approval_id": self.approval_id,
            "identity_id": self.identity_id,
            "action": self.action,
            "resource_id": self.resource_id,
            "approved_by": self.approved_by,
            "granted_at": self.granted_at,
            "expires_at": self.expires_at,
            "revoked": self.revoked,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Approval:
        d = _require_mapping(d, "approval")
        aid = _str(d.get("approval_id"), "approval.approval_id")
        what = f"approval {quote(aid, 80)}"
        revoked = d.get("revoked", False)
        if not isinstance(revoked, bool):
            raise ValueError(f"{what}: revoked must be true or false, got {quote(revoked, 60)}")
        return cls(
            approval_id=aid,
            identity_id=_str(d.get("identity_id"), f"{what}: identity_id"),
            action=_str(d.get("action"), f"{what}: action"),
            resource_id=_str(d.get("resource_id"), f"{what}: resource_id"),
            approved_by=_str(d.get("approved_by"), f"{what}: approved_by", required=False),
            granted_at=parse_timestamp(d.get("granted_at"), f"{what}: granted_at"),
            expires_at=parse_timestamp(d.get("expires_at"), f"{what}: expires_at"),
            revoked=revoked,
        )


def approval_valid(
    approvals: Iterable[Approval],
    identity_id: str,
    action: str,
    resource_id: str,
    now: datetime,
    approval_id: str | None = None,
) -> bool:
    """``context.approval_valid``: some approval matches, is unexpired and unrevoked (and has the named id)."""
    return any(a.matches(identity_id, action, resource_id, now, approval_id) for a in approvals)
