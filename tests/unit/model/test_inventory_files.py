"""Inventory files (`pdx inventory load`): YAML and CSV shapes, relative timestamps, and clear errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streams.errors import UserError
from streams.model import Identity
from streams.model.inventory_file import read_inventory, resolve_relative

NOW = datetime(2025, 6, 3, 10, 0, tzinfo=UTC)
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "inventory.yaml"


def _write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


def _by_id(identities: list[Identity]) -> dict[str, Identity]:
    return {i.id: i for i in identities}


# ---- YAML -----------------------------------------------------------------------------------------


YAML_LIST = """\
- id: agent-a
  kind: agent
  owner: data
  environments: [production, staging]
  scopes: ["db:read"]
  tags: [production]
  risk_tier: high
  attributes: {team: data, pager: true}
  credentials:
    - {id: a-key, type: api_key, created_at: now-90d, rotated_at: now-12h, expires_at: now+30m}
- id: sa-b
  kind: service_account
  status: suspended
  approved_repositories: [payments-service]
  updated_at: "2025-01-01T00:00:00Z"
"""


def test_yaml_list_form_parses_every_field(tmp_path: Path) -> None:
    ids = _by_id(read_inventory(_write(tmp_path, "inv.yaml", YAML_LIST), now=NOW))
    assert list(ids) == ["agent-a", "sa-b"]
    a = ids["agent-a"]
    assert (a.kind, a.owner, a.status, a.risk_tier) == ("agent", "data", "active", "high")
    assert a.environments == ["production", "staging"] and a.scopes == ["db:read"] and a.tags == ["production"]
    assert a.attributes == {"team": "data", "pager": "true"}
    [cred] = a.credentials
    assert (cred.id, cred.type, cred.status) == ("a-key", "api_key", "active")
    assert cred.created_at == NOW - timedelta(days=90)
    assert cred.rotated_at == NOW - timedelta(hours=12)
    assert cred.expires_at == NOW + timedelta(minutes=30)
    assert a.credential_age_days(NOW) == pytest.approx(0.5)
    assert a.updated_at == NOW  # defaulted to the load time
    b = ids["sa-b"]
    assert (b.kind, b.status, b.approved_repositories) == ("service_account", "suspended", ["payments-service"])
    assert b.updated_at == datetime(2025, 1, 1, tzinfo=UTC)  # an explicit updated_at is kept
    assert b.credentials == [] and b.credential_age_days(NOW) is None


def test_yaml_mapping_form_equals_list_form(tmp_path: Path) -> None:
    indented = "".join("  " + line + "\n" for line in YAML_LIST.splitlines())
    mapping = _write(tmp_path, "map.yaml", "# inventory\nidentities:\n" + indented)
    listed = _write(tmp_path, "list.yaml", YAML_LIST)
    assert read_inventory(mapping, now=NOW) == read_inventory(listed, now=NOW)
    assert len(read_inventory(mapping, now=NOW)) == 2


def test_example_inventory_loads() -> None:
    ids = _by_id(read_inventory(EXAMPLE, now=NOW))
    assert {"agent-intern", "agent-config-bot", "wf-release-legacy", "alice"} <= set(ids)
    legacy = ids["wf-release-legacy"]
    assert [c.id for c in legacy.credentials] == ["legacy-deploy-key", "legacy-token"]
    assert legacy.credential_age_days(NOW) == pytest.approx(200.0)  # rotated now-200d beats the 10-day token
    assert ids["alice"].kind == "human" and ids["alice"].credentials == []


def test_iso_timestamps_in_yaml_are_utc(tmp_path: Path) -> None:
    path = _write(tmp_path, "iso.yaml", (
        "- id: w\n  kind: workload\n  credentials:\n"
        "    - {id: k1, type: x509, created_at: 2025-06-01T12:00:00+02:00}\n"
        "    - {id: k2, type: token, created_at: '2025-06-01T10:00:00Z', status: revoked}\n"
    ))
    [w] = read_inventory(path, now=NOW)
    assert [c.created_at for c in w.credentials] == [datetime(2025, 6, 1, 10, tzinfo=UTC)] * 2
    assert w.credentials[1].status == "revoked"
    assert w.credential_age_days(NOW) == pytest.approx(2.0)


def test_unquoted_iso_date_in_yaml_is_accepted(tmp_path: Path) -> None:
    path = _write(tmp_path, "date.yaml",
                  "- id: w\n  kind: workload\n  credentials:\n    - {id: k, type: x509, created_at: 2025-01-01}\n")
    [w] = read_inventory(path, now=NOW)
    assert w.credentials[0].created_at == datetime(2025, 1, 1, tzinfo=UTC)


# ---- relative timestamps ----------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("now", NOW),
    (" now ", NOW),
    ("now-90d", NOW - timedelta(days=90)),
    ("now-12h", NOW - timedelta(hours=12)),
    ("now+30m", NOW + timedelta(minutes=30)),
    ("now-45s", NOW - timedelta(seconds=45)),
    ("now-1.5d", NOW - timedelta(hours=36)),
])
def test_resolve_relative(text: str, expected: datetime) -> None:
    assert resolve_relative(text, NOW) == expected


@pytest.mark.parametrize("value", ["now-90", "now-d", "yesterday", "2025-01-01T00:00:00Z", "nowish", 5, None])
def test_non_relative_values_are_unchanged(value: object) -> None:
    assert resolve_relative(value, NOW) == value


def test_relative_timestamps_follow_the_now_argument(tmp_path: Path) -> None:
    path = _write(tmp_path, "rel.yaml", (
        "- id: a\n  kind: agent\n  updated_at: now-1h\n  credentials:\n"
        "    - {id: k, type: api_key, created_at: now-90d}\n"
    ))
    other = NOW + timedelta(days=7)
    [a1] = read_inventory(path, now=NOW)
    [a2] = read_inventory(path, now=other)
    assert a1.updated_at == NOW - timedelta(hours=1) and a2.updated_at == other - timedelta(hours=1)
    assert a1.credentials[0].created_at == NOW - timedelta(days=90)
    assert a2.credentials[0].created_at == other - timedelta(days=90)


def test_relative_timestamps_default_to_the_current_time(tmp_path: Path) -> None:
    path = _write(tmp_path, "rel.yaml",
                  "- id: a\n  kind: agent\n  credentials: [{id: k, type: token, created_at: now-2d}]\n")
    before = datetime.now(UTC)
    [a] = read_inventory(path)
    after = datetime.now(UTC)
    assert before - timedelta(days=2) <= a.credentials[0].created_at <= after - timedelta(days=2)
    assert before <= a.updated_at <= after


def test_attributes_are_not_treated_as_timestamps(tmp_path: Path) -> None:
    path = _write(tmp_path, "attr.yaml", "- id: a\n  kind: agent\n  attributes: {created_at: now-1d, team: x}\n")
    [a] = read_inventory(path, now=NOW)
    assert a.attributes == {"created_at": "now-1d", "team": "x"}


# ---- CSV ------------------------------------------------------------------------------------------


CSV_TEXT = (
    "id,kind,owner,environments,scopes,tags,approved_repositories,risk_tier,"
    "credential_id,credential_type,credential_created_at,credential_rotated_at\n"
    "wf-a,workload,release,production; staging ;,deploy:*,privileged;deployment,repo-1;repo-2,critical,"
    "key-1,ssh_key,now-400d,now-5d\n"
) + """\
wf-a,,,,,,,,key-2,token,now-10d,
sa-b,service_account,billing,production,,,,medium,,,,
agent-c,agent,data,staging,,,,,key-3,,,
"""


def test_csv_rows_merge_credentials_and_split_lists(tmp_path: Path) -> None:
    ids = _by_id(read_inventory(_write(tmp_path, "inv.csv", CSV_TEXT), now=NOW))
    assert list(ids) == ["wf-a", "sa-b", "agent-c"]
    a = ids["wf-a"]
    assert (a.kind, a.owner, a.risk_tier) == ("workload", "release", "critical")
    assert a.environments == ["production", "staging"]  # ';'-separated, stripped, empty items dropped
    assert a.scopes == ["deploy:*"]
    assert a.tags == ["privileged", "deployment"]
    assert a.approved_repositories == ["repo-1", "repo-2"]
    assert [(c.id, c.type) for c in a.credentials] == [("key-1", "ssh_key"), ("key-2", "token")]
    k1, k2 = a.credentials
    assert k1.created_at == NOW - timedelta(days=400) and k1.rotated_at == NOW - timedelta(days=5)
    assert k2.created_at == NOW - timedelta(days=10) and k2.rotated_at is None
    assert a.credential_age_days(NOW) == pytest.approx(10.0)  # the oldest active credential (after rotation)
    assert a.updated_at == NOW
    b = ids["sa-b"]
    assert (b.kind, b.risk_tier, b.environments, b.credentials) == ("service_account", "medium", ["production"], [])
    assert b.tags == [] and b.scopes == []
    [k3] = ids["agent-c"].credentials  # defaults: api_key created now
    assert (k3.id, k3.type, k3.created_at) == ("key-3", "api_key", NOW)


def test_csv_identity_columns_on_later_rows_win(tmp_path: Path) -> None:
    path = _write(tmp_path, "inv.csv", (
        "id,kind,tags,credential_id,credential_created_at\n"
        "a,agent,x;y,k1,now-1d\n"
        "a,agent,z,k2,2025-05-01T00:00:00Z\n"
    ))
    [a] = read_inventory(path, now=NOW)
    assert a.tags == ["z"]
    assert [c.created_at for c in a.credentials] == [NOW - timedelta(days=1), datetime(2025, 5, 1, tzinfo=UTC)]


def test_csv_empty_id_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "inv.csv", "id,kind\na,agent\nb,agent\n ,agent\n")
    with pytest.raises(UserError) as err:
        read_inventory(path, now=NOW)
    assert f"{path}:4" in str(err.value) and "'id' column is empty" in str(err.value)


def test_csv_empty_id_line_number_counts_blank_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, "inv.csv", "id,kind\na,agent\n\n,agent\n")
    with pytest.raises(UserError, match=rf"{path}:4: the 'id' column is empty"):
        read_inventory(path, now=NOW)


def test_csv_with_utf8_bom_loads(tmp_path: Path) -> None:
    path = _write(tmp_path, "excel.csv", "id,kind\na,agent\n", encoding="utf-8-sig")
    assert [i.id for i in read_inventory(path, now=NOW)] == ["a"]


def test_csv_bad_value_is_reported_per_identity(tmp_path: Path) -> None:
    path = _write(tmp_path, "inv.csv", "id,kind,credential_id,credential_type\na,agent,k1,api_key\nb,agent,k2,magic\n")
    with pytest.raises(UserError) as err:
        read_inventory(path, now=NOW)
    text = str(err.value)
    assert "nothing loaded" in text and "entry 2" in text and "k2" in text and "magic" in text
    assert "entry 1:" not in text


# ---- errors ---------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(UserError, match="does not exist") as err:
        read_inventory(missing, now=NOW)
    assert str(missing) in str(err.value)


def test_missing_csv_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        read_inventory(tmp_path / "nope.csv", now=NOW)


def test_invalid_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad.yaml", "- id: a\n  kind: [agent\n")
    with pytest.raises(UserError) as err:
        read_inventory(path, now=NOW)
    assert str(path) in str(err.value) and "not valid YAML" in str(err.value)


@pytest.mark.parametrize("text", ["", "just a string\n", "identities: {a: 1}\n", "other: []\n", "42\n"])
def test_yaml_that_is_not_a_list_of_identities(tmp_path: Path, text: str) -> None:
    path = _write(tmp_path, "shape.yaml", text)
    with pytest.raises(UserError, match="expected a list of identities"):
        read_inventory(path, now=NOW)


def test_unknown_kind_names_entry_and_identity_and_loads_nothing(tmp_path: Path) -> None:
    path = _write(tmp_path, "inv.yaml", (
        "- {id: good-1, kind: agent}\n"
        "- {id: robo-7, kind: robot}\n"
        "- {id: good-2, kind: human}\n"
    ))
    with pytest.raises(UserError) as err:
        read_inventory(path, now=NOW)
    text = str(err.value)
    assert str(path) in text and "nothing loaded" in text and "1 invalid" in text
    [line] = [ln for ln in text.splitlines() if ln.lstrip().startswith("entry")]
    assert "entry 2" in line and "robo-7" in line and "kind" in line and "'robot'" in line
    assert "agent" in line  # the allowed kinds are listed
    assert "good-1" not in text and "good-2" not in text


def test_every_bad_entry_is_listed(tmp_path: Path) -> None:
    path = _write(tmp_path, "inv.yaml", (
        "- {id: a, kind: agent, risk_tier: extreme}\n"
        "- {id: b, kind: agent}\n"
        "- {kind: agent}\n"
        "- not a mapping\n"
        "- {id: e, kind: agent, credentials: [{id: k, type: api_key, created_at: someday}]}\n"
    ))
    with pytest.raises(UserError) as err:
        read_inventory(path, now=NOW)
    text = str(err.value)
    assert "4 invalid identities" in text
    lines = [ln.strip() for ln in text.splitlines()]
    for n, needle in [(1, "risk_tier"), (3, "identity.id"), (4, "mapping"), (5, "someday")]:
        assert any(ln.startswith(f"entry {n}:") and needle in ln for ln in lines), (n, needle, text)
    assert "entry 2:" not in text


def test_duplicate_ids_are_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "inv.yaml", "- {id: a, kind: agent}\n- {id: b, kind: agent}\n- {id: a, kind: human}\n")
    with pytest.raises(UserError) as err:
        read_inventory(path, now=NOW)
    text = str(err.value)
    assert "nothing loaded" in text and "entry 3" in text and "duplicate identity id 'a'" in text
