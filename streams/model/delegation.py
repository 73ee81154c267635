"""Proven delegation: whom a request acts for comes from a verified token or a signed grant, never from the
caller's say-so.

``AccessRequest.on_behalf_of`` *asks* for a delegation chain (outermost principal first). Each hop of it,
``chain[0] → chain[1] → … → identity``, must be proven by one of:

* the request's **verified token** in the delegated shape of RFC 8693 token exchange (and the ID-JAG draft):
  ``sub`` = the outermost delegating principal, ``act.sub`` = the requesting identity, nested ``act`` for the
  earlier actors of a longer chain. ``sub: alice, act: {sub: agent}`` proves ``alice → agent``;
  ``sub: alice, act: {sub: agent-2, act: {sub: agent-1}}`` proves ``alice → agent-1 → agent-2``.
* a **signed delegation grant** (:class:`DelegationGrant`, topic pdx.delegations) from the hop's delegator to
  its delegate, covering the request's action and resource id (globs), unexpired at the time of the decision.

A token subject or actor names an identity when it is the identity's id or one of its ``workload_subjects``.
A chain that is not proven hop by hop is denied ``delegation_unproven`` before any rule, quoting the first
principal left unproven. Pure (no Kafka): the worker calls :func:`prove_chain`; replay rebuilds the proof the
decision relied on from the audited ``pdx.delegation.*`` attributes (:meth:`DelegationProof.from_audit_attributes`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Any

from streams.errors import PdxError, quote
from streams.model.fields import _require_mapping, _str, parse_timestamp
from streams.model.glob import glob_match
from streams.model.identity import Identity
from streams.model.tokens import VerifiedToken

#: context.attributes keys the audit record keeps the proof under (set by the worker; a caller's own keys with
#: this prefix are replaced, so they can never pass for a proof)
AUDIT_PREFIX = "pdx.delegation."
SOURCE_TOKEN = "token"  # noqa: S105 - a proof source, not a secret
SOURCE_GRANT = "grant"
SOURCE_MIXED = "token+grant"


@dataclass(slots=True, frozen=True)
class DelegationGrant:
    """``delegator`` lets ``delegate`` act for it on matching actions and resources for a while."""

    grant_id: str
    delegator: str
    delegate: str
    action: str
    resource_id: str
    granted_by: str
    granted_at: datetime
    expires_at: datetime
    #: key id of the signature the worker verified (not part of the record: from its headers)
    signer: str = ""

    def covers(self, delegator: str, delegate: str, action: str, resource_id: str, now: datetime) -> bool:
        return (
            self.delegator == delegator
            and self.delegate == delegate
            and self.granted_at <= now < self.expires_at
            and glob_match(self.action, action)
            and glob_match(self.resource_id, resource_id)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "grant_id": self.grant_id,
            "delegator": self.delegator,
            "delegate": self.delegate,
            "action": self.action,
            "resource_id": self.resource_id,
            "granted_by": self.granted_by,
            "granted_at": self.granted_at,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], signer: str = "") -> DelegationGrant:
        d = _require_mapping(d, "delegation grant")
        gid = _str(d.get("grant_id"), "delegation grant: grant_id")
        what = f"delegation grant {quote(gid, 80)}"
        grant = cls(
            grant_id=gid,
            delegator=_str(d.get("delegator"), f"{what}: delegator"),
            delegate=_str(d.get("delegate"), f"{what}: delegate"),
            action=_str(d.get("action"), f"{what}: action"),
            resource_id=_str(d.get("resource_id"), f"{what}: resource_id"),
            granted_by=_str(d.get("granted_by"), f"{what}: granted_by", required=False),
            granted_at=parse_timestamp(d.get("granted_at"), f"{what}: granted_at"),
            expires_at=parse_timestamp(d.get("expires_at"), f"{what}: expires_at"),
            signer=signer,
        )
        if grant.delegator == grant.delegate:
            raise ValueError(f"{what}: delegator and delegate are both {quote(grant.delegate, 80)}")
        return grant


@dataclass(slots=True, frozen=True)
class DelegationProof:
    """What proved a request's delegation chain: ``context.delegation.*`` for rules, ``pdx.delegation.*`` in the
    audit record."""

    #: token, grant, or token+grant (some hops each)
    source: str
    #: the proofs: the token's jti (or sha256 when it has none) and/or the grant ids, one per hop, outermost first
    ids: tuple[str, ...]
    #: the token's issuer and/or the key ids that signed the grants, one per hop
    signers: tuple[str, ...]

    @property
    def id(self) -> str:
        return " ".join(self.ids)

    def audit_attributes(self) -> dict[str, str]:
        return {AUDIT_PREFIX + "source": self.source, AUDIT_PREFIX + "id": self.id,
                AUDIT_PREFIX + "signer": " ".join(self.signers)}

    @classmethod
    def from_audit_attributes(cls, attributes: Mapping[str, str]) -> DelegationProof | None:
        source = attributes.get(AUDIT_PREFIX + "source")
        if source not in (SOURCE_TOKEN, SOURCE_GRANT, SOURCE_MIXED):
            return None
        return cls(source, tuple(attributes.get(AUDIT_PREFIX + "id", "").split()),
                   tuple(attributes.get(AUDIT_PREFIX + "signer", "").split()))


class DelegationUnproven(PdxError, ValueError):
    """A principal of on_behalf_of that neither the token nor a grant proves."""

    def __init__(self, principal: str, delegate: str) -> None:
        self.principal = principal
        super().__init__(
            f"principal {quote(principal, 80)} of on_behalf_of is not proven: no verified token in the delegated "
            f"shape (sub={principal[:80]}, act.sub={delegate[:80]}) and no valid signed delegation grant from it "
            f"to {quote(delegate, 80)} for this action and resource"
        )


def _names(name: str, who: Identity | None, wanted: str) -> bool:
    return name == wanted or (who is not None and name in who.workload_subjects)


def token_hops(token: VerifiedToken | None) -> list[tuple[str, str]]:
    """The (delegator, delegate) hops a delegated token proves, outermost first; none for a plain token."""
    if token is None or not token.act:
        return []
    chain = [token.subject, *reversed(token.act)]  # sub, then the earliest actor … the current actor
    return list(pairwise(chain))


def prove_chain(
    chain: Sequence[str],
    identity: Identity,
    principals: Sequence[Identity | None],
    token: VerifiedToken | None,
    grants: Iterable[DelegationGrant],
    action: str,
    resource_id: str,
    now: datetime,
) -> DelegationProof | None:
    """The proof of ``chain`` acting through to ``identity`` (None for an empty chain); raises
    :class:`DelegationUnproven` naming the first principal whose hop nothing proves. ``principals`` is the chain
    resolved against the inventory (None for an unknown id, which can still be named by its id)."""
    if not chain:
        return None
    hops_by_token = token_hops(token)
    who = [*principals, identity]
    ids = [*chain, identity.id]
    grant_list = list(grants)
    sources: set[str] = set()
    proof_ids: list[str] = []
    signers: list[str] = []
    for k in range(len(chain)):
        delegator, delegate = ids[k], ids[k + 1]
        if k < len(hops_by_token) and len(hops_by_token) == len(chain):
            t_from, t_to = hops_by_token[k]
            if _names(t_from, who[k], delegator) and _names(t_to, who[k + 1], delegate):
                assert token is not None
                sources.add(SOURCE_TOKEN)
                proof_ids.append(token.jti or f"sha256:{token.sha256[:16]}")
                signers.append(token.issuer)
                continue
        grant = next((g for g in grant_list if g.covers(delegator, delegate, action, resource_id, now)), None)
        if grant is None:
            raise DelegationUnproven(delegator, delegate)
        sources.add(SOURCE_GRANT)
        proof_ids.append(grant.grant_id)
        signers.append(grant.signer or "-")
    source = SOURCE_MIXED if len(sources) > 1 else sources.pop()
    return DelegationProof(source, tuple(proof_ids), tuple(signers))
