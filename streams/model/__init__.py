"""The data pdx decides about: requests, decisions, identities and approvals (no Kafka, no Avro).

Field names are the contract's (docs/contracts.md); every ``from_dict`` raises ``ValueError`` naming the
field when a value is wrong.
"""

from streams.model.approval import Approval, approval_valid, glob_match
from streams.model.decision import DECISIONS, Decision, MonitorOutcome, Reason, ReasonCode
from streams.model.fields import iso_utc, optional_timestamp, parse_timestamp
from streams.model.identity import (
    CREDENTIAL_STATUSES,
    CREDENTIAL_TYPES,
    IDENTITY_KINDS,
    IDENTITY_STATUSES,
    RISK_TIERS,
    Credential,
    Identity,
)
from streams.model.request import SENSITIVITIES, AccessRequest, RequestContext, Resource

__all__ = [
    "CREDENTIAL_STATUSES",
    "CREDENTIAL_TYPES",
    "DECISIONS",
    "IDENTITY_KINDS",
    "IDENTITY_STATUSES",
    "RISK_TIERS",
    "SENSITIVITIES",
    "AccessRequest",
    "Approval",
    "Credential",
    "Decision",
    "Identity",
    "MonitorOutcome",
    "Reason",
    "ReasonCode",
    "RequestContext",
    "Resource",
    "approval_valid",
    "glob_match",
    "iso_utc",
    "optional_timestamp",
    "parse_timestamp",
]
