"""`pdx policy impact`: replay recorded decisions under a candidate bundle, against a real ClickHouse."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streams import config as settings
from streams.audit.impact import impact, load_candidate
from streams.bench import synthetic
from streams.bench.auditdb import AuditDB, fresh_database
from streams.cli.main import main
from streams.model import AccessRequest, Identity

pytestmark = pytest.mark.integration

pol = pytest.importorskip("streams.policy")

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=3)


@pytest.fixture(scope="module")
def ch_url(request: pytest.FixtureRequest) -> str:
    return os.environ.get("PDX_TEST_CLICKHOUSE_URL") or str(request.getfixturevalue("clickhouse_url"))


def _recorded(bundle: object, i: int, *, age_days: int, kind: str) -> dict[str, object]:
    """An audit record whose decision is what the given bundle really decides."""
    t = T0 + timedelta(minutes=i)
    ident = synthetic.make_identity(f"{kind}-{i}", kind=kind, credential_created=t - timedelta(days=age_days))
    ident["tags"] = ["privileged"]
    rec = synthetic.make_record(
        f"imp-{i:03d}",
        ident["id"],
        t,
        action="deploy:release",
        resource_type="pipeline",
        resource_id="pipelines/payments",
        environment="prod",
        identity=ident,
        source_offset=i,
    )
    decision = pol.evaluate(bundle, AccessRequest.from_dict(rec["request"]), Identity.from_dict(ident), [], t)
    rec["decision"] = decision.to_dict()
    return rec


@pytest.fixture(scope="module")
def db(ch_url: str) -> Iterator[AuditDB]:
    current = load_candidate(settings.POLICIES_DIR)
    recs = (
        [_recorded(current, i, age_days=10, kind="service_account") for i in range(6)]  # allow: privileged-release
        + [_recorded(current, i, age_days=200, kind="service_account") for i in range(6, 10)]  # step_up: unrotated
        + [_recorded(current, i, age_days=10, kind="agent") for i in range(10, 13)]  # deny: no matching rule
    )
    assert [r["decision"]["decision"] for r in recs] == ["allow"] * 6 + ["step_up"] * 4 + ["deny"] * 3  # type: ignore[index]
    with fresh_database(ch_url, "pdx_t_impact", cfg=settings.load()) as handle:
        handle.writer.insert(recs)
        yield handle


def test_same_policies_change_nothing(db: AuditDB) -> None:
    result = impact(
        db.client, load_candidate(settings.POLICIES_DIR), T0 - timedelta(hours=1), NOW, database=db.database
    )
    assert (result["evaluated"], result["changed"], result["errors"]) == (13, 0, 0)
    assert result["by_transition"] == {} and result["examples"] == []


def test_candidate_without_a_policy_reports_transitions_by_rule(db: AuditDB, tmp_path: Path) -> None:
    cand = tmp_path / "candidate"
    shutil.copytree(settings.POLICIES_DIR, cand, ignore=shutil.ignore_patterns("tests"))
    text = (cand / "credential-hygiene.yaml").read_text()
    # the candidate turns the unrotated-credential step-up into a hard deny
    (cand / "credential-hygiene.yaml").write_text(text.replace("effect: step_up", "effect: deny", 1))
    result = impact(db.client, load_candidate(cand), T0 - timedelta(hours=1), NOW, database=db.database)
    assert result["evaluated"] == 13
    assert result["by_transition"] == {"step_up->deny": 4}
    assert result["changed"] == 4
    assert result["by_rule"] == {"privileged-credential-unrotated": {"step_up->deny": 4}}
    assert {e["request_id"] for e in result["examples"]} <= {f"imp-{i:03d}" for i in range(6, 10)}
    assert result["examples"][0]["from"] == "step_up" and result["examples"][0]["to"] == "deny"


def test_cli_impact_json_is_clean(db: AuditDB, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cand = tmp_path / "candidate"
    shutil.copytree(settings.POLICIES_DIR, cand, ignore=shutil.ignore_patterns("tests"))
    (cand / "credential-hygiene.yaml").unlink()
    code = main(
        [
            "policy",
            "impact",
            "--candidate",
            str(cand),
            "--since",
            "1d",
            "--json",
            "--url",
            db.url,
            "--database",
            db.database,
        ]
    )
    out = capsys.readouterr()
    assert code == 0, out.err
    result = json.loads(out.out)  # stdout is exactly one JSON document
    assert {"evaluated", "changed", "by_transition", "examples"} <= set(result)
    assert result["evaluated"] == 13
    assert result["by_transition"].get("allow->deny") == 6
    assert result["by_transition"].get("step_up->deny") == 4
    assert "\x1b[" not in out.err  # no progress bar escape codes when not on a terminal


def test_cli_impact_bad_candidate_is_a_clear_error(
    db: AuditDB, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["policy", "impact", "--candidate", str(tmp_path / "nope"), "--url", db.url, "--database", db.database])
    assert code == 2 and "not a directory" in capsys.readouterr().err
