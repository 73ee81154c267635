"""The worker's decoded view of inventory, approvals, the policy bundle and the trusted token issuers published on
pdx.jwks (fed by streams.worker.replica).

Only signed state is applied (streams/contracts/signing.py): every record must carry a valid Ed25519
signature by a key trusted for its kind, and must not be older than what is in force for its key (a replayed
record: the signing time for identities and approvals, the bundle serial for bundles). A record refused for
any reason (unsigned, badly signed, replayed, undecodable, not compiling) never replaces a good one: the last
good state stays in force, the refusal is counted by kind (``rejected``) and logged, at most once a second
per kind, so a flood of forged records cannot flood the log.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence

from streams.contracts import signing, wire
from streams.errors import UserError
from streams.model import Approval, Identity
from streams.model.delegation import DelegationGrant
from streams.model.tokens import TokenVerifier, TrustedIssuer
from streams.policy import CompiledBundle, compile_bundle

log = logging.getLogger("pdx.state")


def check_bundle(raw: bytes) -> tuple[CompiledBundle, int]:
    """Decode and compile a PolicyBundle message: (compiled bundle, serial); ValueError (with the reason) if it
    is not usable."""
    try:
        bundle = wire.decode_as("PolicyBundle", raw)
    except wire.WireError as exc:
        raise ValueError(str(exc)) from exc
    try:
        compiled = compile_bundle(bundle["content"])
    except Exception as exc:
        raise ValueError(f"bundle {bundle.get('version', '?')[:12]} does not compile: {exc}") from exc
    if bundle.get("version") and compiled.version != bundle["version"]:
        raise ValueError(
            f"bundle says version {bundle['version'][:12]} but its content hashes to {compiled.version[:12]}"
        )
    return compiled, int(bundle.get("serial") or 0)


Headers = Sequence[tuple[str, bytes]] | None


class _Refusals:
    """Counts refused records by kind and logs them at most once a second per kind."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.counts: Counter[str] = Counter()
        self.clock = clock
        self._next_at: dict[str, float] = {}
        self._left_out: Counter[str] = Counter()

    def __call__(self, kind: str, what: str, why: object) -> None:
        self.counts[kind] += 1
        now = self.clock()
        if now < self._next_at.get(kind, 0.0):
            self._left_out[kind] += 1
            return
        more = f" (and {self._left_out[kind]} more {kind} records since the last line)" if self._left_out[kind] else ""
        log.error("refused %s: %s%s", what, str(why)[:300], more)
        self._next_at[kind] = now + 1.0
        self._left_out[kind] = 0


class WorkerState:
    def __init__(self, trust: signing.TrustedKeys | None = None, tokens: TokenVerifier | None = None) -> None:
        #: the keys trusted per kind of record; none (the default): nothing is applied, every request is denied
        self.trust = trust if trust is not None else signing.TrustedKeys()
        #: the workload-token verifier the Decider uses: pinned issuers (the JWKS file) given here, published ones
        #: (pdx.jwks) applied by :meth:`apply_jwks` as they arrive
        self.tokens = tokens if tokens is not None else TokenVerifier()
        self.identities: dict[str, Identity] = {}
        #: the Identity messages as received, spliced into audit records without re-encoding
        self.identity_messages: dict[str, bytes] = {}
        self.approvals: dict[str, dict[str, Approval]] = {}
        #: signed delegation grants (pdx.delegations) by delegate, then grant id
        self.delegations: dict[str, dict[str, DelegationGrant]] = {}
        self._grant_delegate: dict[str, str] = {}
        self.bundle: CompiledBundle | None = None
        #: serial and signer (key id) of the bundle in force
        self.bundle_serial = -1
        self.bundle_signer = ""
        #: signing time of the record in force per identity id / approval key (kept after a tombstone, so an
        #: older record replayed after a delete is refused too)
        self._signed_at: dict[tuple[str, bytes], int] = {}
        self.refused = _Refusals()

    @property
    def rejected(self) -> Counter[str]:
        """Refused records by kind (policy, inventory, approval, jwks, delegation)."""
        return self.refused.counts

    @property
    def rejected_bundles(self) -> int:
        return self.refused.counts[signing.POLICY]

    def _verified(self, kind: str, key: bytes | None, value: bytes | None, headers: Headers, what: str) -> bool:
        """Whether the record is signed by a key trusted for ``kind`` and not older than the one in force."""
        try:
            verified = self.trust.verify(kind, key, value, headers)
        except signing.SignatureError as exc:
            self.refused(kind, what, exc)
            return False
        if kind == signing.POLICY:
            return True  # bundles are ordered by their serial (apply_bundle)
        slot = (kind, key or b"")
        if verified.signed_at_ms < self._signed_at.get(slot, -1):
            self.refused(kind, what, f"signed at {verified.signed_at_ms}, older than the record in force (a replay)")
            return False
        self._signed_at[slot] = verified.signed_at_ms
        return True

    def _keyed(self, kind: str, key: bytes | None, value: bytes | None, headers: Headers, noun: str,
               key_is: str) -> str | None:
        """The record's key as text when it has one and the record is signed and in order (else refused: None)."""
        name = (key or b"").decode(errors="replace")
        if not name:
            self.refused(kind, f"{noun} record without a key", f"the key must be {key_is}")
            return None
        return name if self._verified(kind, key, value, headers, f"{noun} {name[:80]!r}") else None

    # ---- appliers (key, value, headers) from the compacted topics --------------------------------
    def apply_identity(self, key: bytes | None, value: bytes | None, headers: Headers = None) -> None:
        if not key:
            self.refused(signing.INVENTORY, "inventory record without a key", "the key must be the identity id")
            return
        identity_id = key.decode(errors="replace")
        what = f"inventory record for {identity_id[:80]!r}"
        if not self._verified(signing.INVENTORY, key, value, headers, what):
            return
        if value is None:
            self.identities.pop(identity_id, None)  # tombstone: the identity is gone
            self.identity_messages.pop(identity_id, None)
            return
        try:
            identity = Identity.from_dict(wire.decode_as("Identity", value))
        except ValueError as exc:  # WireError is a ValueError
            self.refused(signing.INVENTORY, what + " (keeping the previous one)", exc)
            return
        if identity.id != identity_id:
            self.refused(signing.INVENTORY, what, f"its value is identity {identity.id[:80]!r}")
            return
        self.identities[identity_id] = identity
        self.identity_messages[identity_id] = value

    def apply_approval(self, key: bytes | None, value: bytes | None, headers: Headers = None) -> None:
        identity_id, _, approval_id = (key or b"").decode(errors="replace").partition("/")
        if not identity_id or not approval_id:
            shown = f"approval key {(key or b'')[:80]!r}"
            self.refused(signing.APPROVAL, shown, "it must be '<identity_id>/<approval_id>'")
            return
        what = f"approval {approval_id[:80]!r}"
        if not self._verified(signing.APPROVAL, key, value, headers, what):
            return
        if value is None:
            self.approvals.get(identity_id, {}).pop(approval_id, None)
            return
        try:
            approval = Approval.from_dict(wire.decode_as("Approval", value))
        except ValueError as exc:
            self.refused(signing.APPROVAL, what, exc)
            return
        if approval.identity_id != identity_id or approval.approval_id != approval_id:
            self.refused(signing.APPROVAL, what, "its value names another identity or approval than its key")
            return
        self.approvals.setdefault(identity_id, {})[approval_id] = approval

    def apply_delegation(self, key: bytes | None, value: bytes | None, headers: Headers = None) -> None:
        """A delegation grant from pdx.delegations (key = grant id); a tombstone revokes it."""
        grant_id = self._keyed(signing.DELEGATION, key, value, headers, "delegation grant", "the grant id")
        if grant_id is None:
            return
        what = f"delegation grant {grant_id[:80]!r}"
        previous = self._grant_delegate.pop(grant_id, None)
        if previous is not None:
            self.delegations.get(previous, {}).pop(grant_id, None)
        if value is None:
            return  # tombstone: revoked
        try:
            grant = DelegationGrant.from_dict(wire.decode_as("DelegationGrant", value),
                                              signing.header_value(headers, signing.HEADER_KEY_ID))
        except ValueError as exc:
            self.refused(signing.DELEGATION, what, exc)
            return
        if grant.grant_id != grant_id:
            self.refused(signing.DELEGATION, what, "its value names another grant id than its key")
            return
        self.delegations.setdefault(grant.delegate, {})[grant_id] = grant
        self._grant_delegate[grant_id] = grant.delegate

    def grants_to(self, delegates: Sequence[str]) -> list[DelegationGrant]:
        """The grants whose delegate is one of ``delegates`` (the hops of one chain)."""
        out: list[DelegationGrant] = []
        for d in delegates:
            found = self.delegations.get(d)
            if found:
                out.extend(found.values())
        return out

    def apply_bundle(self, key: bytes | None, value: bytes | None, headers: Headers = None) -> None:
        if value is None:
            return
        keeping = f"policy bundle (keeping {self.bundle_version()[:12] or '(none)'})"
        if not self._verified(signing.POLICY, key, value, headers, keeping):
            return
        try:
            compiled, serial = check_bundle(value)
        except ValueError as exc:
            self.refused(signing.POLICY, keeping, exc)
            return
        if serial < self.bundle_serial or (serial == self.bundle_serial and compiled.version != self.bundle_version()):
            why = f"serial {serial} is not above {self.bundle_serial} in force (a replayed bundle)"
            self.refused(signing.POLICY, keeping, why)
            return
        if self.bundle is None or compiled.version != self.bundle.version:
            log.info("policy bundle %s (serial %d) in force", compiled.version[:12], serial)
        self.bundle = compiled
        self.bundle_serial = serial
        self.bundle_signer = signing.header_value(headers, signing.HEADER_KEY_ID)

    def apply_jwks(self, key: bytes | None, value: bytes | None, headers: Headers = None) -> None:
        """A trusted token issuer from pdx.jwks: key = the issuer, value = its JWKS-file entry (JSON), a tombstone
        withdraws it. Verified and parsed here, once; a refused record leaves the issuer as it was (kept, or
        still absent), so the last good issuer set stays in force."""
        name = self._keyed(signing.JWKS, key, value, headers, "trusted issuer", "the issuer ('iss')")
        if name is None:
            return
        what = f"trusted issuer {name[:80]!r}"
        if value is None:
            if self.tokens.withdraw(name):
                log.info("%s withdrawn (pdx.jwks tombstone)%s", what,
                         "; still pinned by the JWKS file" if name in self.tokens.pinned else "")
            return
        try:
            issuer = TrustedIssuer.from_json(value, f"pdx.jwks record {name[:80]!r}")
        except UserError as exc:
            self.refused(signing.JWKS, what + " (keeping the previous entry)", exc)
            return
        if issuer.issuer != name:
            self.refused(signing.JWKS, what, f"its value is issuer {issuer.issuer[:80]!r}")
            return
        if self.tokens.publish(issuer):
            log.info("%s in force from pdx.jwks: keys %s", what, ", ".join(sorted(issuer.keys)) or "-")
        else:
            log.warning("%s on pdx.jwks is ignored: the JWKS file pins that issuer, and the file wins", what)

    # ---- reads on the hot path -----------------------------------------------------------------
    def approvals_for(self, identity_id: str) -> list[Approval]:
        found = self.approvals.get(identity_id)
        return list(found.values()) if found else []

    def bundle_version(self) -> str:
        return self.bundle.version if self.bundle is not None else ""
