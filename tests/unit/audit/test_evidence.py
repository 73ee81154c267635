"""The pure parts of `pdx report evidence`: catalogue, bundle verification, attribution map, threshold, HTML."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from streams import config
from streams.audit import evidence
from streams.audit.queries import jsonable
from streams.contracts import signing, wire
from streams.errors import UserError
from streams.policy import load_policy_dir
from streams.policy.loader import policy_set_from_documents


def _bundle_record(key: signing.SigningKey, content: str, version: str, serial: int) -> tuple[bytes, bytes, list]:
    value = wire.encode("PolicyBundle", {"version": version, "created_at": datetime.now(UTC),
                                         "published_by": "tests", "content": content, "serial": serial})
    return b"current", value, key.headers(signing.POLICY, b"current", value, 1_700_000_000_000 + serial)


def _policy(name: str, controls: list[str], rule: str, **extra: object) -> dict[str, object]:
    return {"name": name, "owner": "t", "mode": "enforce", "controls": controls, **extra,
            "rules": [{"id": rule, "effect": "allow", "when": [{"action": "x:read"}],
                       "reason": {"code": "ok", "message": "ok"}}]}


def test_shipped_catalogue_covers_every_control_the_shipped_policies_use() -> None:
    cat = evidence.load_catalogue()
    used = {c for p in load_policy_dir(config.POLICIES_DIR).policies for c in p["controls"]}
    assert used <= set(cat.controls)
    assert {f.id for f in cat.frameworks} >= {"owasp-nhi-top10-2025", "nist-csf-2.0", "nist-sp-800-207"}
    assert [c for c in cat.controls if c.startswith("OWASP-NHI-")] == [f"OWASP-NHI-{i:02d}" for i in range(1, 11)]
    assert cat.controls["NIST-CSF-2.0:PR.AC-4"].superseded_by == "NIST-CSF-2.0:PR.AA-05"
    assert cat.framework_of("OWASP-NHI-99") == "owasp-nhi-top10-2025" and cat.framework_of("ISO:1") == "other"


def test_bad_catalogues_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot read control catalogue"):
        evidence.load_catalogue(tmp_path / "missing.yaml")
    bad = tmp_path / "c.yaml"
    bad.write_text(yaml.safe_dump({"frameworks": [{"id": "f", "controls": [{"id": "A"}, {"id": "A"}]}]}))
    with pytest.raises(UserError, match="'A' is listed twice"):
        evidence.load_catalogue(bad)
    bad.write_text("frameworks: 3")
    with pytest.raises(UserError, match="expected"):
        evidence.load_catalogue(bad)


def test_only_verified_bundles_are_used_and_the_highest_serial_is_current() -> None:
    trusted, attacker = signing.SigningKey.generate(), signing.SigningKey.generate()
    trust = signing.TrustedKeys({signing.POLICY: [trusted.public]})
    a = policy_set_from_documents([_policy("a", ["C1"], "a-r")])
    b = policy_set_from_documents([_policy("b", ["C2"], "b-r")])
    forged = policy_set_from_documents([_policy("f", ["C9"], "f-r")])
    records = [
        _bundle_record(trusted, a.to_bundle_content(), a.version, 5),
        _bundle_record(attacker, forged.to_bundle_content(), forged.version, 99),
        _bundle_record(trusted, b.to_bundle_content(), "0" * 64, 7),  # content does not hash to the version
        _bundle_record(trusted, b.to_bundle_content(), b.version, 6),
        (b"current", None, None),
    ]
    found, current, refused = evidence.bundles_from_records(records, trust)
    assert set(found) == {a.version, b.version} and current == b.version
    assert found[a.version].signer == trusted.key_id and found[a.version].serial == 5
    assert len(refused) == 2 and "not trusted" in refused[0] and "hash" in refused[1]


def test_attribution_maps_known_versions_exactly_and_infers_unknown_ones() -> None:
    a = policy_set_from_documents([_policy("a", ["C1", "C2"], "a-r")])
    b = policy_set_from_documents([_policy("a", ["C1"], "a-r"), _policy("b", [], "b-r")])
    info_a = evidence.BundleInfo(a.version, config.TOPIC_POLICIES, "k1", policies=a.policies)
    info_b = evidence.BundleInfo(b.version, config.TOPIC_POLICIES, "k2", policies=b.policies)
    bundles = evidence.BundleSet("kafka", "", {a.version: info_a, b.version: info_b}, b.version)
    att = evidence.attribution(bundles, [a.version, "gone", ""])
    pairs = dict(zip(att.keys, att.controls, strict=True))
    assert pairs[f"{a.version}\na-r"] == ["C1", "C2"]
    assert pairs["gone\na-r"] == ["C1"]  # inferred with the current bundle b
    assert f"{b.version}\nb-r" not in pairs  # a policy without controls adds nothing
    assert att.versions["gone"] == {"content": "inferred", "mapped_with": b.version, "source": None, "signer": None}
    assert att.versions[a.version]["signer"] == "k1" and att.versions[""]["content"] == "none"
    impl = evidence.implementations(att.used)
    assert impl["C2"] == [{"policy": "a", "mode": "enforce", "owner": "t", "rules": ["a-r"],
                           "bundle_versions": [a.version], "signers": ["k1"]}]
    assert sorted(impl["C1"][0]["signers"]) == ["k1", "k2"]


def test_a_local_directory_with_the_same_hash_supplies_a_compacted_version() -> None:
    a = policy_set_from_documents([_policy("a", ["C1"], "a-r")])
    local = evidence.BundleInfo(a.version, "local", evidence.LOCAL_SIGNER, policies=a.policies)
    bundles = evidence.BundleSet("kafka", "", {}, None, local=local)
    att = evidence.attribution(bundles, [a.version])
    assert att.versions[a.version]["content"] == "known"
    assert att.versions[a.version]["signer"] == evidence.HASH_MATCH_SIGNER


def test_stale_threshold_comes_from_the_credential_hygiene_rule() -> None:
    shipped = evidence.bundle_from_dir(config.POLICIES_DIR)
    days, where = evidence.stale_threshold(shipped)
    assert days == 90 and where.startswith("credential-hygiene/")
    assert evidence.stale_threshold(None)[0] == evidence.DEFAULT_STALE_DAYS
    p = _policy("credential-hygiene", ["C"], "r")
    p["rules"][0]["when"] = [{"identity.credential_age_days": {"gte": "30d"}}]  # type: ignore[index]
    other = evidence.BundleInfo("v", "local", "x", policies=[p])
    assert evidence.stale_threshold(other) == (30.0, "credential-hygiene/r")


def test_local_source_never_asks_kafka_and_says_unsigned() -> None:
    bundles = evidence.load_bundles(None, source="local")
    assert bundles.kind == "local" and "unsigned (local policies/)" in bundles.note
    only = next(iter(bundles.bundles.values()))
    assert only.signer == evidence.LOCAL_SIGNER
    with pytest.raises(UserError, match="--policy-source must be"):
        evidence.load_bundles(None, source="s3")


def _report() -> dict[str, object]:
    control = {
        "id": "OWASP-NHI-07", "title": "Long-Lived <Secrets>", "framework": "owasp-nhi-top10-2025",
        "in_catalogue": True, "superseded_by": None, "status": "exercised",
        "implemented_by": [{"policy": "p", "mode": "enforce", "owner": "o", "rules": ["r"],
                            "bundle_versions": ["a" * 64], "signers": ["k"]}],
        "decisions": {"total": 3, "allow": 2, "deny": 1, "step_up": 0, "monitor": 1},
        "examples": {"allow": ["<script>x</script>"], "deny": [], "step_up": []},
        "exceptions": {
            "monitor_hits": {"decisions": 1, "by_rule": [{"policy": "m", "rule": "mr", "would_have": "deny",
                                                          "hits": 1, "examples": ["q"]}]},
            "approvals": {"available": True, "decisions": 1, "by_approver": [
                {"approved_by": "bob", "decisions": 1, "approval_ids": ["apr-1"], "grants": [{"request_id": "g"}]}]},
            "stale_credentials": {"threshold_days": 90.0, "allows": 1, "identities_count": 1, "identities": [
                {"identity_id": "old", "allows": 1, "max_credential_age_days": 200.0, "last_allowed": None,
                 "examples": ["s"]}]},
        },
    }
    now = datetime(2026, 1, 2, tzinfo=UTC)
    return {
        "since": now, "until": now, "generated_at": now, "database": "pdx",
        "policy_source": {"kind": "kafka", "note": "n", "refused": []}, "catalogue": {"path": "c.yaml"},
        "stale_credentials": {"threshold_days": 90.0, "threshold_from": "credential-hygiene/r"},
        "totals": {"decisions": 3, "without_control": 0}, "bundles": [],
        "frameworks": [{"id": "owasp-nhi-top10-2025", "title": "OWASP", "controls": ["OWASP-NHI-07"],
                        "implemented": 1, "exercised": 1, "gaps": 0, "decisions": 3, "monitor_hits": 1}],
        "controls": [control], "gaps": [], "uncatalogued": [], "notes": [],
    }


def test_html_is_escaped_self_contained_and_draws_a_bar_per_exercised_control() -> None:
    page = evidence.render_html(_report())
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "Long-Lived &lt;Secrets&gt;" in page
    assert not re.search(r"<(script|img|link|iframe)[^>]+(src|href)=", page) and "url(" not in page
    m = re.search(r'data-control="OWASP-NHI-07" data-marks="(\d+)"', page)
    assert m and int(m.group(1)) == 3  # allow, deny, monitor
    assert "approved by <b>bob</b>" in page and 'data-framework="owasp-nhi-top10-2025" data-decisions="3"' in page
    assert json.loads(json.dumps(jsonable(_report())))["since"] == "2026-01-02T00:00:00+00:00"
