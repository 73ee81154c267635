"""`pdx policy validate | lint | test | explain | bundle` through the real CLI entry point."""

import json
import shutil
import textwrap

import pytest

from streams.cli.main import main
from streams.cli.policy import read_bundle_file
from streams.config import POLICIES_DIR
from streams.policy import compile_bundle, load_policy_dir
from streams.policy.lint import contradictions

POLICY = """\
name: p
owner: team
mode: enforce
controls: [SP800-207:PDP]
rules:
  - id: deny-agents-db
    effect: deny
    when:
      - action: {glob: "db:*"}
      - identity.kind: agent
    reason: {code: agents_blocked, message: no}
  - id: allow-agents-prod-db
    effect: allow
    when:
      - action: "db:connect"
      - identity.kind: agent
      - resource.environment: production
    reason: {code: allowed, message: yes}
  - id: impossible
    effect: allow
    when:
      - action: "api:call"
      - identity.kind: agent
      - identity.kind: human
    reason: {code: never, message: never}
"""

TESTS = """\
now: "2025-06-03T10:00:00Z"
identities:
  a: {id: agent-1, kind: agent, owner: o}
cases:
  - name: agents are blocked from databases
    identity: a
    request: {action: "db:connect"}
    resource: {id: db, type: database, environment: production}
    expect: {decision: deny, reasons: [agents_blocked]}
"""


@pytest.fixture
def policy_dir(tmp_path):
    (tmp_path / "p.yaml").write_text(POLICY)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "t.yaml").write_text(TESTS)
    return tmp_path


def test_shipped_policies_validate_lint_and_test_clean(capsys):
    assert main(["policy", "validate", str(POLICIES_DIR)]) == 0
    assert main(["policy", "lint", str(POLICIES_DIR)]) == 0
    assert main(["policy", "test", str(POLICIES_DIR), "--min-coverage", "100", "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out[out.index("{"):])
    assert report["passed"] and report["coverage"] == 1.0 and len(report["cases"]) >= 20
    assert all(c["passed"] for c in report["cases"])


def test_validate_fails_with_located_problems(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text(POLICY.replace("identity.kind: human", "identity.knd: human"))
    assert main(["policy", "validate", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "p.yaml:24: [rule impossible] error: unknown attribute 'identity.knd'" in err


def test_lint_reports_shadowed_unreachable_and_untested_rules(policy_dir, capsys):
    assert main(["policy", "lint", str(policy_dir)]) == 1
    err = capsys.readouterr().err
    assert "[rule allow-agents-prod-db] warning: shadowed: whenever it matches, deny-agents-db" in err
    assert "[rule impossible] warning: unreachable: identity.kind cannot equal both 'agent' and 'human'" in err
    assert "[rule impossible] warning: untested" in err
    assert "[rule deny-agents-db] warning: untested" not in err
    assert main(["policy", "lint", str(policy_dir), "--warn-only"]) == 0


@pytest.mark.parametrize("when,expected", [
    ([{"a.b": {"exists": True}}], []),
    ([{"context.requested_ttl_s": {"gt": 10}}, {"context.requested_ttl_s": {"lt": 5}}], ["empty range"]),
    ([{"context.requested_ttl_s": {"gte": 10}}, {"context.requested_ttl_s": {"lte": 10}}], []),
    ([{"resource.environment": {"exists": True}}, {"resource.environment": {"missing": True}}], ["exist"]),
    ([{"identity.status": {"equals": "suspended"}}], ["engine denies suspended"]),
    ([{"identity.kind": {"equals": "agent"}}, {"not": {"identity.kind": {"equals": "agent"}}}], ["negation"]),
    ([{"identity.kind": {"equals": "agent"}}, {"identity.kind": {"in": ["human"]}}], ["must be in"]),
    ([{"now.hour": {"equals": 25}}], ["never occurs"]),
])
def test_contradictions(when, expected):
    found = contradictions(when)
    assert len(found) == len(expected)
    for needle, message in zip(expected, found, strict=True):
        assert needle in message


def test_policy_test_reports_failures_and_exits_non_zero(policy_dir, capsys):
    assert main(["policy", "test", str(policy_dir)]) == 0
    (policy_dir / "tests" / "t.yaml").write_text(TESTS.replace("decision: deny", "decision: allow"))
    assert main(["policy", "test", str(policy_dir)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  agents are blocked from databases" in out
    assert "decision: expected allow, got deny" in out
    assert "rule coverage 1/3" in out


def test_policy_test_coverage_gate(policy_dir):
    assert main(["policy", "test", str(policy_dir), "--min-coverage", "100"]) == 1


def test_policy_test_reports_malformed_cases(policy_dir, capsys):
    (policy_dir / "tests" / "t.yaml").write_text(TESTS.replace("identity: a", "identity: nobody"))
    assert main(["policy", "test", str(policy_dir)]) == 1
    assert "identity 'nobody' is not a fixture" in capsys.readouterr().err


def test_explain_shows_held_and_failed_conditions(policy_dir, tmp_path, capsys):
    (tmp_path / "requests").mkdir()
    request = tmp_path / "requests" / "req.yaml"
    request.write_text(textwrap.dedent("""\
        now: "2025-06-03T10:00:00Z"
        identity: {id: agent-1, kind: agent, owner: o}
        request: {action: "db:connect"}
        resource: {id: db, type: database, environment: staging}
    """))
    assert main(["policy", "explain", "--request", str(request), "--policies", str(policy_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("decision: deny")
    assert "rule deny-agents-db [deny]: DECIDED" in out
    assert "[FAIL] resource.environment equals \"production\"    actual: \"staging\"" in out
    assert "[held] identity.kind equals \"agent\"" in out
    assert main(["policy", "explain", "--request", str(request), "--policies", str(policy_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["decision"]["decision"] == "deny"
    by_rule = {r["rule"]: r for r in data["rules"]}
    assert by_rule["deny-agents-db"]["status"] == "decided"
    assert by_rule["allow-agents-prod-db"]["matched"] is False


def test_explain_of_unknown_identity_names_the_builtin(policy_dir, tmp_path, capsys):
    (tmp_path / "requests").mkdir()
    request = tmp_path / "requests" / "req.yaml"
    request.write_text('now: "2025-06-03T10:00:00Z"\nrequest: {action: x, identity_id: ghost}\n'
                       'resource: {id: r, type: t}\n')
    assert main(["policy", "explain", "--request", str(request), "--policies", str(policy_dir)]) == 0
    assert "unknown_identity" in capsys.readouterr().out


def test_explain_with_a_bad_request_file_is_a_user_error(policy_dir, tmp_path, capsys):
    (tmp_path / "requests").mkdir()
    request = tmp_path / "requests" / "req.yaml"
    request.write_text("identity: null\n")
    assert main(["policy", "explain", "--request", str(request), "--policies", str(policy_dir)]) == 2
    assert "'now' is required" in capsys.readouterr().err


def test_bundle_writes_canonical_content_with_version(tmp_path, capsys):
    out = tmp_path / "bundle.json"
    assert main(["policy", "bundle", str(POLICIES_DIR), "--out", str(out)]) == 0
    version, content = read_bundle_file(out)
    assert version == load_policy_dir(POLICIES_DIR).version == compile_bundle(content).version
    assert version in capsys.readouterr().out
    data = json.loads(out.read_text())
    data["content"] = data["content"].replace("agent", "AGENT", 1)
    out.write_text(json.dumps(data))
    with pytest.raises(Exception, match="version does not match"):
        read_bundle_file(out)


def test_bundle_of_invalid_policies_fails_without_writing(tmp_path):
    shutil.copytree(POLICIES_DIR, tmp_path / "p")
    (tmp_path / "p" / "broken.yaml").write_text("name: broken\nowner: x\nmode: enforce\nrules: []\n")
    out = tmp_path / "bundle.json"
    assert main(["policy", "bundle", str(tmp_path / "p"), "--out", str(out)]) == 1
    assert not out.exists()
