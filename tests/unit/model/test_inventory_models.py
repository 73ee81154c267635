from datetime import UTC, datetime, timedelta

import pytest

from streams.model import Approval, Credential, Identity, approval_valid, parse_timestamp

NOW = datetime(2025, 6, 3, 10, 0, tzinfo=UTC)


def _identity(**kw):
    d = {"id": "agent-1", "kind": "agent", "owner": "team-a"}
    d.update(kw)
    return Identity.from_dict(d)


def test_identity_round_trip_keeps_contract_keys_and_aware_datetimes():
    ident = _identity(
        status="active", environments=["production"], scopes=["db:read"], tags=["production"],
        approved_repositories=["github.com/acme/x"], risk_tier="high",
        credentials=[{"id": "k1", "type": "api_key", "created_at": "2025-01-01T00:00:00Z"}],
        attributes={"team": "data"}, updated_at="2025-06-01T12:00:00+02:00",
    )
    d = ident.to_dict()
    assert list(d) == ["id", "kind", "owner", "status", "environments", "scopes", "tags",
                       "approved_repositories", "risk_tier", "credentials", "attributes", "updated_at",
                       "workload_subjects"]
    assert d["updated_at"] == datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
    assert d["credentials"][0]["created_at"].tzinfo is not None
    assert list(d["credentials"][0]) == ["id", "type", "created_at", "rotated_at", "expires_at", "status"]
    assert Identity.from_dict(d) == ident


@pytest.mark.parametrize("field,value,needle", [
    ("kind", "robot", "kind"),
    ("status", "paused", "status"),
    ("risk_tier", "extreme", "risk_tier"),
    ("tags", "production", "tags"),
    ("updated_at", "yesterday", "updated_at"),
])
def test_identity_rejects_bad_values_with_a_clear_message(field, value, needle):
    with pytest.raises(ValueError, match=needle):
        _identity(**{field: value})


def test_identity_requires_an_id():
    with pytest.raises(ValueError, match=r"identity\.id"):
        Identity.from_dict({"kind": "agent"})


def test_credential_rejects_unknown_type():
    with pytest.raises(ValueError, match="type"):
        Credential.from_dict({"id": "k", "type": "magic", "created_at": "2025-01-01T00:00:00Z"})


def test_credential_age_counts_from_rotation_and_takes_the_oldest_active():
    ident = _identity(credentials=[
        {"id": "new", "type": "api_key", "created_at": NOW - timedelta(days=10)},
        {"id": "rotated", "type": "x509", "created_at": NOW - timedelta(days=400),
         "rotated_at": NOW - timedelta(days=30)},
        {"id": "revoked", "type": "password", "created_at": NOW - timedelta(days=900), "status": "revoked"},
    ])
    assert ident.credential_age_days(NOW) == pytest.approx(30.0)


def test_credential_age_is_none_without_an_active_credential():
    assert _identity().credential_age_days(NOW) is None
    revoked = _identity(credentials=[{"id": "r", "type": "token", "created_at": "2020-01-01T00:00:00Z",
                                      "status": "revoked"}])
    assert revoked.credential_age_days(NOW) is None


def test_parse_timestamp_accepts_z_offsets_and_naive_as_utc():
    assert parse_timestamp("2025-06-03T10:00:00Z", "t") == NOW
    assert parse_timestamp("2025-06-03T12:00:00+02:00", "t") == NOW
    assert parse_timestamp(datetime(2025, 6, 3, 10, 0), "t") == NOW
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_timestamp(12345, "t")


def _approval(**kw):
    d = {"approval_id": "a1", "identity_id": "agent-1", "action": "config:*", "resource_id": "flags-*",
         "approved_by": "carol", "granted_at": NOW - timedelta(hours=1), "expires_at": NOW + timedelta(hours=1)}
    d.update(kw)
    return Approval.from_dict(d)


def test_approval_round_trip():
    a = _approval()
    assert list(a.to_dict()) == ["approval_id", "identity_id", "action", "resource_id", "approved_by",
                                 "granted_at", "expires_at", "revoked"]
    assert Approval.from_dict(a.to_dict()) == a


@pytest.mark.parametrize("kw,args,expected", [
    ({}, ("agent-1", "config:write", "flags-eu"), True),
    ({}, ("agent-2", "config:write", "flags-eu"), False),          # other identity
    ({}, ("agent-1", "db:write", "flags-eu"), False),              # action glob does not match
    ({}, ("agent-1", "config:write", "limits"), False),            # resource glob does not match
    ({"revoked": True}, ("agent-1", "config:write", "flags-eu"), False),
    ({"expires_at": NOW}, ("agent-1", "config:write", "flags-eu"), False),   # expiry is exclusive
    ({"granted_at": NOW + timedelta(minutes=1)}, ("agent-1", "config:write", "flags-eu"), False),
])
def test_approval_valid(kw, args, expected):
    assert approval_valid([_approval(**kw)], *args, NOW) is expected


def test_approval_valid_honours_a_named_approval_id():
    approvals = [_approval()]
    assert approval_valid(approvals, "agent-1", "config:write", "flags-x", NOW, approval_id="a1")
    assert not approval_valid(approvals, "agent-1", "config:write", "flags-x", NOW, approval_id="a2")


def test_approval_revoked_must_be_boolean():
    with pytest.raises(ValueError, match="revoked"):
        _approval(revoked="yes")
