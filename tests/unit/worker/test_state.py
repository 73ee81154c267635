"""WorkerState: what the replicas apply, and that a bad record never replaces a good one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from streams.contracts import wire
from streams.model import Identity
from streams.worker.state import WorkerState
from tests.unit.worker.conftest import bundle_message, identity_message


def test_identity_is_applied_replaced_and_removed_by_a_tombstone(demo_identities: dict[str, Identity]) -> None:
    state = WorkerState()
    ident = demo_identities["agent-intern"]
    msg = identity_message(ident)
    state.apply_identity(b"agent-intern", msg)
    assert state.identities["agent-intern"].status == "active"
    assert state.identity_messages["agent-intern"] == msg
    state.apply_identity(b"agent-intern", wire.encode("Identity", {**ident.to_dict(), "status": "suspended"}))
    assert state.identities["agent-intern"].status == "suspended"
    state.apply_identity(b"agent-intern", None)
    assert "agent-intern" not in state.identities and "agent-intern" not in state.identity_messages


def test_a_bad_identity_record_keeps_the_previous_one(demo_identities: dict[str, Identity]) -> None:
    state = WorkerState()
    good = identity_message(demo_identities["agent-intern"])
    state.apply_identity(b"agent-intern", good)
    state.apply_identity(b"agent-intern", b"garbage")
    state.apply_identity(None, good)  # no key: ignored
    assert state.identity_messages == {"agent-intern": good}


def _approval(**changes: Any) -> bytes:
    now = datetime.now(UTC)
    approval = {
        "approval_id": "apr-1",
        "identity_id": "agent-config-bot",
        "action": "config:write",
        "resource_id": "rate-limits",
        "approved_by": "alice",
        "granted_at": now,
        "expires_at": now + timedelta(hours=1),
        "revoked": False,
        **changes,
    }
    return wire.encode("Approval", approval)


def test_approvals_are_keyed_identity_slash_approval() -> None:
    state = WorkerState()
    state.apply_approval(b"agent-config-bot/apr-1", _approval())
    state.apply_approval(b"agent-config-bot/apr-2", _approval(approval_id="apr-2"))
    assert sorted(a.approval_id for a in state.approvals_for("agent-config-bot")) == ["apr-1", "apr-2"]
    state.apply_approval(b"agent-config-bot/apr-1", None)  # tombstone: revoked for good
    assert [a.approval_id for a in state.approvals_for("agent-config-bot")] == ["apr-2"]
    state.apply_approval(b"no-slash", _approval())  # malformed key: ignored
    state.apply_approval(b"agent-config-bot/apr-3", b"garbage")  # undecodable: ignored
    assert [a.approval_id for a in state.approvals_for("agent-config-bot")] == ["apr-2"]
    assert state.approvals_for("someone-else") == []


def test_a_bundle_that_does_not_compile_or_lies_about_its_version_leaves_the_last_good_in_force(
    shipped_bundle: bytes,
) -> None:
    state = WorkerState()
    assert state.bundle_version() == ""
    state.apply_bundle(b"current", shipped_bundle)
    good = state.bundle_version()
    assert good
    state.apply_bundle(b"current", bundle_message("policies: [{not: valid"))
    state.apply_bundle(b"current", bundle_message('{"policies": []}', version="0" * 64))
    state.apply_bundle(b"current", b"garbage")
    state.apply_bundle(b"current", None)
    assert state.bundle_version() == good
    assert state.rejected_bundles == 3
