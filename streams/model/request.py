"""Access requests (docs/contracts.md). ``to_dict()`` keys are exactly the contract's field names."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streams.errors import quote
from streams.model.fields import (
    _opt_str,
    _req,
    _require_mapping,
    _str_list,
    _str_map,
    optional_timestamp,
    parse_timestamp,
)

SENSITIVITIES = ("public", "internal", "confidential", "restricted")
#: Range of an Avro ``int`` (reply_partition).
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def _int_text(n: int) -> str:
    """``n`` for an error message; a huge one by its size (``str()`` of a 5000-digit int raises ValueError)."""
    return str(n) if n.bit_length() <= 64 else f"an integer of {n.bit_length()} bits"


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
            raise ValueError(f"resource.sensitivity: {quote(sens, 60)} is not one of {', '.join(SENSITIVITIES)}")
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
            raise ValueError(f"context.requested_ttl_s: expected an integer number of seconds, got {quote(ttl, 60)}")
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
    #: the caller's workload token (a JWT), verified by the worker before any rule runs (streams/model/tokens.py)
    token: str | None = None

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
            "token": self.token,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> AccessRequest:
        """An AccessRequest from a dict decoded by the Avro codec (the worker's hot path).

        Why a second constructor: the schema already guarantees every type (strings are str, timestamps
        aware UTC datetimes, maps of strings), so only what Avro cannot express is checked here — the
        sensitivity vocabulary and a non-empty request id — plus the one thing the decoder does not enforce:
        fastavro reads an Avro ``int`` as any 64-bit varint, so ``reply_partition`` may arrive outside the
        32-bit range (and then could not be encoded again, e.g. into an audit record). ``from_dict``
        re-checked every type and cost more than evaluating the request. Raises ValueError like ``from_dict``.
        """
        r = d["resource"]
        sens = r["sensitivity"]
        if sens is not None and sens not in SENSITIVITIES:
            raise ValueError(f"resource.sensitivity: {str(sens)[:60]!r} is not one of {', '.join(SENSITIVITIES)}")
        part = d["reply_partition"]
        if not INT32_MIN <= part <= INT32_MAX:
            raise ValueError(f"request.reply_partition: {_int_text(part)} is outside the range of an Avro int")
        c = d["context"]
        return cls(
            d["request_id"] or uuid.uuid4().hex,
            d["occurred_at"],
            d["identity_id"],
            d["action"],
            Resource(r["id"], r["type"], r["environment"], sens, r["repository"], r["owner"], r["attributes"]),
            RequestContext(
                c["source_ip"],
                c["token_issued_at"],
                c["requested_ttl_s"],
                c["approval_id"],
                c["change_ticket"],
                c["tool"],
                c["attributes"],
            ),
            d["on_behalf_of"],
            d["reply_to"],
            part,
            d["deadline"],
            d.get("token"),
        )

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
            raise ValueError(f"request.reply_partition: expected an integer, got {quote(part, 60)}")
        if not INT32_MIN <= part <= INT32_MAX:
            raise ValueError(f"request.reply_partition: {_int_text(part)} is outside the range of an Avro int")
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
            token=_opt_str(d, "token", "request"),
        )
