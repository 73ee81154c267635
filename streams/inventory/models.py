"""Identity inventory models: identities, their credentials, and pre-approvals.

Field names are the contract's (docs/contracts.md). ``to_dict()`` keeps timestamps as aware-UTC ``datetime``
objects so the Avro layer can encode the dict directly; ``from_dict()`` also accepts ISO-8601 strings because
inventory files are YAML. Bad values raise ``ValueError`` naming the field and the allowed values.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

IDENTITY_KINDS = ("agent", "service_account", "workload", "human")
IDENTITY_STATUSES = ("active", "suspended", "decommissioned")
RISK_TIERS = ("low", "medium", "high", "critical")
CREDENTIAL_TYPES = ("api_key", "oauth_client_secret", "x509", "ssh_key", "token", "password")
CREDENTIAL_STATUSES = ("active", "revoked")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_timestamp(value: Any, what: str) -> datetime:
    """An aware-UTC datetime from a datetime (naive is taken as UTC) or an ISO-8601 string (``Z`` allowed)."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{what}: {value!r} is not an ISO-8601 timestamp (e.g. 2025-06-03T10:00:00Z)") from None
    else:
        raise ValueError(f"{what}: expected an ISO-8601 timestamp or datetime, got {type(value).__name__} {value!r}")
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def optional_timestamp(value: Any, what: str) -> datetime | None:
    return None if value is None else parse_timestamp(value, what)


def iso_utc(dt: datetime) -> str:
    """``2025-06-03T10:00:00Z`` (seconds precision unless the datetime has microseconds)."""
    return dt.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _choice(value: Any, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what}: {value!r} is not one of {', '.join(allowed)}")
    return str(value)


def _str(value: Any, what: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and value == ""):
        raise ValueError(f"{what}: expected a non-empty string, got {value!r}")
    return value


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"{what}: expected a list of strings, got {value!r}")
    out = list(value)
    for item in out:
        if not isinstance(item, str):
            raise ValueError(f"{what}: expected a list of strings, found {item!r}")
    return out


def _str_map(value: Any, what: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{what}: expected a mapping of string to string, got {value!r}")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str):
            raise ValueError(f"{what}: key {k!r} is not a string")
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, (int, float)):
            v = str(v)
        if not isinstance(v, str):
            raise ValueError(f"{what}.{k}: expected a string value, got {v!r}")
        out[k] = v
    return out


def _require_mapping(d: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise ValueError(f"{what}: expected a mapping, got {type(d).__name__}")
    return d


@dataclass(slots=True)
class Credential:
    """A secret an identity holds. Age counts from the last rotation, else from creation."""

    id: str
    type: str
    created_at: datetime
    rotated_at: datetime | None = None
    expires_at: datetime | None = None
    status: str = "active"

    def age_days(self, now: datetime) -> float:
        start = self.rotated_at or self.created_at
        return (now - start).total_seconds() / 86400.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "created_at": self.created_at,
            "rotated_at": self.rotated_at,
            "expires_at": self.expires_at,
            "status": self.status,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Credential:
        d = _require_mapping(d, "credential")
        cid = _str(d.get("id"), "credential.id")
        what = f"credential {cid}"
        return cls(
            id=cid,
            type=_choice(d.get("type"), CREDENTIAL_TYPES, f"{what}: type"),
            created_at=parse_timestamp(d.get("created_at"), f"{what}: created_at"),
            rotated_at=optional_timestamp(d.get("rotated_at"), f"{what}: rotated_at"),
            expires_at=optional_timestamp(d.get("expires_at"), f"{what}: expires_at"),
            status=_choice(d.get("status", "active"), CREDENTIAL_STATUSES, f"{what}: status"),
        )


@dataclass(slots=True)
class Identity:
    """A principal: AI agent, service account, workload or human."""

    id: str
    kind: str
    owner: str = ""
    status: str = "active"
    environments: list[str] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    approved_repositories: list[str] = field(default_factory=list)
    risk_tier: str = "low"
    credentials: list[Credential] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    updated_at: datetime = _EPOCH

    def credential_age_days(self, now: datetime) -> float | None:
        """Age in days of the OLDEST active credential; None when the identity has no active credential."""
        oldest: float | None = None
        for cred in self.credentials:
            if cred.status != "active":
                continue
            age = cred.age_days(now)
            if oldest is None or age > oldest:
                oldest = age
        return oldest

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "owner": self.owner,
            "status": self.status,
            "environments": list(self.environments),
            "scopes": list(self.scopes),
            "tags": list(self.tags),
            "approved_repositories": list(self.approved_repositories),
            "risk_tier": self.risk_tier,
            "credentials": [c.to_dict() for c in self.credentials],
            "attributes": dict(self.attributes),
            "updated_at": self.updated_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Identity:
        d = _require_mapping(d, "identity")
        iid = _str(d.get("id"), "identity.id")
        what = f"identity {iid}"
        creds = d.get("credentials") or []
        if not isinstance(creds, list):
            raise ValueError(f"{what}: credentials must be a list")
        updated = d.get("updated_at")
        return cls(
            id=iid,
            kind=_choice(d.get("kind"), IDENTITY_KINDS, f"{what}: kind"),
            owner=_str(d.get("owner"), f"{what}: owner", required=False),
            status=_choice(d.get("status", "active"), IDENTITY_STATUSES, f"{what}: status"),
            environments=_str_list(d.get("environments"), f"{what}: environments"),
            scopes=_str_list(d.get("scopes"), f"{what}: scopes"),
            tags=_str_list(d.get("tags"), f"{what}: tags"),
            approved_repositories=_str_list(d.get("approved_repositories"), f"{what}: approved_repositories"),
            risk_tier=_choice(d.get("risk_tier", "low"), RISK_TIERS, f"{what}: risk_tier"),
            credentials=[Credential.from_dict(c) for c in creds],
            attributes=_str_map(d.get("attributes"), f"{what}: attributes"),
            updated_at=_EPOCH if updated is None else parse_timestamp(updated, f"{what}: updated_at"),
        )


@lru_cache(maxsize=4096)
def _glob_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


def glob_match(pattern: str, value: str) -> bool:
    """Case-sensitive shell-style glob (``*``, ``?``, ``[...]``); ``*`` also matches ``:`` and ``/``."""
    if pattern == "*":
        return True
    if "*" not in pattern and "?" not in pattern and "[" not in pattern:
        return pattern == value
    return _glob_regex(pattern).match(value) is not None


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
        what = f"approval {aid}"
        revoked = d.get("revoked", False)
        if not isinstance(revoked, bool):
            raise ValueError(f"{what}: revoked must be true or false, got {revoked!r}")
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
