"""Identity inventory: identities, credentials, approvals and the attributes derived from them."""

from streams.inventory.models import (
    CREDENTIAL_STATUSES,
    CREDENTIAL_TYPES,
    IDENTITY_KINDS,
    IDENTITY_STATUSES,
    RISK_TIERS,
    Approval,
    Credential,
    Identity,
    approval_valid,
    glob_match,
    iso_utc,
    parse_timestamp,
)

__all__ = [
    "CREDENTIAL_STATUSES",
    "CREDENTIAL_TYPES",
    "IDENTITY_KINDS",
    "IDENTITY_STATUSES",
    "RISK_TIERS",
    "Approval",
    "Credential",
    "Identity",
    "approval_valid",
    "glob_match",
    "iso_utc",
    "parse_timestamp",
]
