"""Identities and their credentials (the inventory). Field names are the contract's (docs/contracts.md).

``to_dict()`` keeps timestamps as aware-UTC ``datetime`` objects so the Avro layer can encode the dict
directly; ``from_dict()`` also accepts ISO-8601 strings because inventory files are YAML. Bad values raise
``ValueError`` naming the field and the allowed values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streams.model.fields import (
    EPOCH,
    _choice,
    _require_mapping,
    _str,
    _str_list,
    _str_map,
    optional_timestamp,
    parse_timestamp,
)

IDENTITY_KINDS = ("agent", "service_account", "workload", "human")
IDENTITY_STATUSES = ("active", "suspended", "decommissioned")
RISK_TIERS = ("low", "medium", "high", "critical")
CREDENTIAL_TYPES = ("api_key", "oauth_client_secret", "x509", "ssh_key", "token", "password")
CREDENTIAL_STATUSES = ("active", "revoked")


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
    updated_at: datetime = EPOCH
    #: token subjects registered for this identity (OIDC ``sub``, SPIFFE ID); see token.subject_matches_identity
    workload_subjects: list[str] = field(default_factory=list)

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
            "workload_subjects": list(self.workload_subjects),
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
            updated_at=EPOCH if updated is None else parse_timestamp(updated, f"{what}: updated_at"),
            workload_subjects=_str_list(d.get("workload_subjects"), f"{what}: workload_subjects"),
        )
