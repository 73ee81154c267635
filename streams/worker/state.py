"""The worker's decoded view of inventory, approvals and the policy bundle (fed by streams.worker.replica).

A bad record never replaces a good one: an identity that cannot be decoded keeps its previous value (and
is logged), a bundle that does not compile leaves the last good bundle in force.
"""

from __future__ import annotations

import logging

from streams.contracts import wire
from streams.model import Approval, Identity
from streams.policy import CompiledBundle, compile_bundle

log = logging.getLogger("pdx.state")


def check_bundle(raw: bytes) -> CompiledBundle:
    """Decode and compile a PolicyBundle message; ValueError (with the reason) if it is not usable."""
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
    return compiled


class WorkerState:
    def __init__(self) -> None:
        self.identities: dict[str, Identity] = {}
        #: the Identity messages as received, spliced into audit records without re-encoding
        self.identity_messages: dict[str, bytes] = {}
        self.approvals: dict[str, dict[str, Approval]] = {}
        self.bundle: CompiledBundle | None = None
        self.rejected_bundles = 0

    # ---- appliers (key, value) from the compacted topics ---------------------------------------
    def apply_identity(self, key: bytes | None, value: bytes | None) -> None:
        if not key:
            log.error("inventory record without a key ignored (the key must be the identity id)")
            return
        identity_id = key.decode()
        if value is None:
            self.identities.pop(identity_id, None)  # tombstone: the identity is gone
            self.identity_messages.pop(identity_id, None)
            return
        try:
            self.identities[identity_id] = Identity.from_dict(wire.decode_as("Identity", value))
            self.identity_messages[identity_id] = value
        except ValueError as exc:  # WireError is a ValueError
            log.error("inventory record for %s rejected, keeping the previous one: %s", identity_id, exc)

    def apply_approval(self, key: bytes | None, value: bytes | None) -> None:
        identity_id, _, approval_id = (key or b"").decode(errors="replace").partition("/")
        if not identity_id or not approval_id:
            log.error("approval key %r ignored: it must be '<identity_id>/<approval_id>'", key)
            return
        if value is None:
            self.approvals.get(identity_id, {}).pop(approval_id, None)
            return
        try:
            approval = Approval.from_dict(wire.decode_as("Approval", value))
        except ValueError as exc:
            log.error("approval %s rejected: %s", approval_id, exc)
            return
        self.approvals.setdefault(identity_id, {})[approval_id] = approval

    def apply_bundle(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            return
        try:
            compiled = check_bundle(value)
        except ValueError as exc:
            self.rejected_bundles += 1
            log.error("rejected policy bundle; keeping %s: %s", self.bundle_version() or "(none)", exc)
            return
        if self.bundle is None or compiled.version != self.bundle.version:
            log.info("policy bundle %s in force", compiled.version[:12])
        self.bundle = compiled

    # ---- reads on the hot path -----------------------------------------------------------------
    def approvals_for(self, identity_id: str) -> list[Approval]:
        found = self.approvals.get(identity_id)
        return list(found.values()) if found else []

    def bundle_version(self) -> str:
        return self.bundle.version if self.bundle is not None else ""
