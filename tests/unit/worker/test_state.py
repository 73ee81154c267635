"""WorkerState: what the replicas apply, and that a bad record never replaces a good one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from streams.contracts import signing, wire
from streams.model import Identity
from streams.policy import bundle_version
from streams.worker.state import WorkerState
from tests.unit.worker.conftest import (
    TEST_KEYS,
    apply_approval,
    apply_bundle,
    apply_identity,
    bundle_message,
    identity_message,
    signed,
    trusted_state,
)


def test_identity_is_applied_replaced_and_removed_by_a_tombstone(demo_identities: dict[str, Identity]) -> None:
    state = trusted_state()
    ident = demo_identities["agent-intern"]
    msg = identity_message(ident)
    apply_identity(state, b"agent-intern", msg)
    assert state.identities["agent-intern"].status == "active"
    assert state.identity_messages["agent-intern"] == msg
    apply_identity(state, b"agent-intern", wire.encode("Identity", {**ident.to_dict(), "status": "suspended"}))
    assert state.identities["agent-intern"].status == "suspended"
    apply_identity(state, b"agent-intern", None)
    assert "agent-intern" not in state.identities and "agent-intern" not in state.identity_messages


def test_a_bad_identity_record_keeps_the_previous_one(demo_identities: dict[str, Identity]) -> None:
    state = trusted_state()
    good = identity_message(demo_identities["agent-intern"])
    apply_identity(state, b"agent-intern", good)
    apply_identity(state, b"agent-intern", b"garbage")
    apply_identity(state, None, good)  # no key: ignored
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
    state = trusted_state()
    apply_approval(state, b"agent-config-bot/apr-1", _approval())
    apply_approval(state, b"agent-config-bot/apr-2", _approval(approval_id="apr-2"))
    assert sorted(a.approval_id for a in state.approvals_for("agent-config-bot")) == ["apr-1", "apr-2"]
    apply_approval(state, b"agent-config-bot/apr-1", None)  # tombstone: revoked for good
    assert [a.approval_id for a in state.approvals_for("agent-config-bot")] == ["apr-2"]
    apply_approval(state, b"no-slash", _approval())  # malformed key: ignored
    apply_approval(state, b"agent-config-bot/apr-3", b"garbage")  # undecodable: ignored
    assert [a.approval_id for a in state.approvals_for("agent-config-bot")] == ["apr-2"]
    assert state.approvals_for("someone-else") == []


def test_a_bundle_that_does_not_compile_or_lies_about_its_version_leaves_the_last_good_in_force(
    shipped_bundle: bytes,
) -> None:
    state = trusted_state()
    assert state.bundle_version() == ""
    apply_bundle(state, shipped_bundle)
    good = state.bundle_version()
    assert good
    apply_bundle(state, bundle_message("policies: [{not: valid"))
    apply_bundle(state, bundle_message('{"policies": []}', version="0" * 64))
    apply_bundle(state, b"garbage")
    apply_bundle(state, None)
    assert state.bundle_version() == good
    assert state.rejected_bundles == 3


# ---- signed state (issue 12): forged, unsigned, replayed and wrongly keyed records are refused ------------
def _suspended(ident: Identity) -> bytes:
    return wire.encode("Identity", {**ident.to_dict(), "status": "suspended"})


def test_unsigned_and_forged_records_are_refused_and_counted(
    demo_identities: dict[str, Identity], shipped_bundle: bytes
) -> None:
    state = trusted_state()
    apply_bundle(state, shipped_bundle)
    key = b"agent-intern"
    good = identity_message(demo_identities["agent-intern"])
    apply_identity(state, key, _suspended(demo_identities["agent-intern"]))
    attacker = signing.SigningKey.generate()
    pwned = bundle_message('{"policies": []}', serial=10**12)
    state.apply_identity(key, good)  # unsigned: the forged revival of a suspended identity
    state.apply_identity(key, good, attacker.headers(signing.INVENTORY, key, good, 2**60))  # untrusted key
    headers = signed(signing.INVENTORY, key, _suspended(demo_identities["agent-intern"]))
    state.apply_identity(key, good, headers)  # a trusted signature over other bytes
    state.apply_identity(key, good, signed(signing.POLICY, key, good))  # signed by the policy key, not inventory
    state.apply_bundle(b"current", pwned)
    state.apply_bundle(b"current", pwned, attacker.headers(signing.POLICY, b"current", pwned, 2**60))
    state.apply_approval(b"agent-intern/apr-x", _approval(identity_id="agent-intern", approval_id="apr-x"))
    assert state.identities["agent-intern"].status == "suspended"
    assert state.bundle_version() == wire.decode_as("PolicyBundle", shipped_bundle)["version"]
    assert state.approvals_for("agent-intern") == []
    assert dict(state.rejected) == {"inventory": 4, "policy": 2, "approval": 1}


def test_nothing_is_applied_without_trusted_keys(shipped_bundle: bytes) -> None:
    state = WorkerState()  # no trust configured: fail closed
    apply_bundle(state, shipped_bundle)
    assert state.bundle is None and state.rejected_bundles == 1


def test_an_older_signed_record_replayed_over_a_newer_one_is_refused(demo_identities: dict[str, Identity]) -> None:
    state = trusted_state()
    key = b"agent-intern"
    active = identity_message(demo_identities["agent-intern"])
    old_headers = signed(signing.INVENTORY, key, active)  # captured by an attacker
    state.apply_identity(key, active, old_headers)
    apply_identity(state, key, _suspended(demo_identities["agent-intern"]))
    state.apply_identity(key, active, old_headers)  # replayed after the suspension
    assert state.identities["agent-intern"].status == "suspended"
    apply_identity(state, key, None)  # deleted; the old record replayed after the delete is refused too
    state.apply_identity(key, active, old_headers)
    assert "agent-intern" not in state.identities
    # an approval revoked, then its earlier grant replayed
    grant = _approval()
    grant_headers = signed(signing.APPROVAL, b"agent-config-bot/apr-1", grant)
    state.apply_approval(b"agent-config-bot/apr-1", grant, grant_headers)
    apply_approval(state, b"agent-config-bot/apr-1", _approval(revoked=True))
    state.apply_approval(b"agent-config-bot/apr-1", grant, grant_headers)
    assert [a.revoked for a in state.approvals_for("agent-config-bot")] == [True]
    assert state.rejected == {"inventory": 2, "approval": 1}


def test_a_record_keyed_for_another_identity_is_refused(demo_identities: dict[str, Identity]) -> None:
    state = trusted_state()
    apply_identity(state, b"agent-intern", identity_message(demo_identities["agent-config-bot"]))
    apply_approval(state, b"agent-intern/apr-1", _approval())  # value is for agent-config-bot
    assert state.identities == {} and state.approvals_for("agent-intern") == []


def test_an_older_bundle_serial_is_refused_and_the_newer_stays_in_force(shipped_bundle: bytes) -> None:
    state = trusted_state()
    content = wire.decode_as("PolicyBundle", shipped_bundle)["content"]
    newer = bundle_message(content, serial=5)
    older = bundle_message('{"policies": []}', serial=4)
    apply_bundle(state, newer)
    apply_bundle(state, older)  # validly signed, but older: a replay
    apply_bundle(state, bundle_message('{"policies": []}', serial=5))  # same serial, other content
    assert state.bundle_version() == bundle_version(content) and state.bundle_serial == 5
    apply_bundle(state, newer)  # the same bundle read again (a restart) is fine
    assert state.rejected_bundles == 2
    assert state.bundle_signer == TEST_KEYS[signing.POLICY].key_id


def test_two_trusted_keys_at_once_rotate_a_key(shipped_bundle: bytes) -> None:
    old, new = signing.SigningKey.generate(), signing.SigningKey.generate()
    state = WorkerState(signing.TrustedKeys({signing.POLICY: [old.public, new.public]}))
    state.apply_bundle(b"current", shipped_bundle, old.headers(signing.POLICY, b"current", shipped_bundle, 1))
    content = wire.decode_as("PolicyBundle", shipped_bundle)["content"]
    rotated = bundle_message(content, serial=2)
    state.apply_bundle(b"current", rotated, new.headers(signing.POLICY, b"current", rotated, 2))
    assert state.bundle_serial == 2 and state.bundle_signer == new.key_id and state.rejected_bundles == 0
