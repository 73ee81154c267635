"""Validation (problems with file, line, rule id), the canonical bundle, and keeping a good bundle."""

import hashlib
import json
import textwrap

import pytest

from streams.config import POLICIES_DIR
from streams.errors import UserError
from streams.policy import (
    BundleHolder,
    PolicyValidationError,
    bundle_version,
    compile_bundle,
    load_policy_dir,
    validate_policy_dir,
)

HEADER = """\
name: p
owner: team
mode: enforce
controls: [OWASP-NHI-04]
rules:
"""


def write(tmp_path, text, name="p.yaml"):
    (tmp_path / name).write_text(textwrap.dedent(text))
    return tmp_path


def problems_for(tmp_path, rules_yaml, extra=""):
    write(tmp_path, HEADER + textwrap.indent(textwrap.dedent(rules_yaml), "  ") + extra)
    return validate_policy_dir(tmp_path)


def test_shipped_policies_are_valid():
    assert validate_policy_dir(POLICIES_DIR) == []
    ps = load_policy_dir(POLICIES_DIR)
    assert len(ps.rule_ids()) == len(set(ps.rule_ids())) >= 15


@pytest.mark.parametrize("rules_yaml,line,needle", [
    ("""\
     - id: r1
       effect: allow
       when:
         - identity.kindd: agent
       reason: {code: ok, message: m}
     """, 9, "unknown attribute 'identity.kindd' (did you mean 'identity.kind'?)"),
    ("""\
     - id: r1
       effect: allow
       when:
         - identity.kind: {is: agent}
       reason: {code: ok, message: m}
     """, 9, "unknown operator 'is'"),
    ("""\
     - id: r1
       effect: allow
       when:
         - context.requested_ttl_s: {gt: "abc"}
       reason: {code: ok, message: m}
     """, 9, "type error"),
    ("""\
     - id: r1
       effect: allow
       when:
         - identity.owner: {gt: 5}
       reason: {code: ok, message: m}
     """, 9, "does not apply to identity.owner"),
    ("""\
     - id: r1
       effect: allow
       when:
         - identity.owner: 5
       reason: {code: ok, message: m}
     """, 9, "identity.owner is a string but 5 is a number"),
    ("""\
     - id: r1
       effect: allow
       when:
         - now.hour: {gt: "late"}
       reason: {code: ok, message: m}
     """, 9, "now.hour is a number"),
    ("""\
     - id: r1
       effect: allow
       when:
         - identity.kind: robot
       reason: {code: ok, message: m}
     """, 9, "'robot' is not a value of identity.kind"),
    ("""\
     - id: r1
       effect: allow
       when:
         - context.source_ip: {in_cidr: 10.0.0.0/33}
       reason: {code: ok, message: m}
     """, 9, "not an IPv4 or IPv6 network"),
    ("""\
     - id: r1
       effect: allow
       when:
         - within: lunch
       reason: {code: ok, message: m}
     """, 9, "undefined schedule 'lunch'"),
    ("""\
     - id: r1
       effect: permit
       when: []
       reason: {code: ok, message: m}
     """, 7, "'effect' must be one of"),
    ("""\
     - id: r1
       effect: deny
       when: []
       reason: {code: ok, message: m}
       obligations: {expires_at: {max_ttl: 1h}}
     """, 10, "expires_at only applies to allow rules"),
    ("""\
     - id: r1
       effect: allow
       when: []
       reason: {code: ok, message: m}
       obligation: {}
     """, 10, "unknown rule key 'obligation' (did you mean 'obligations'?)"),
    ("""\
     - id: r1
       effect: allow
       when:
         - identity.tags: {contains: [a, b]}
       reason: {code: ok, message: m}
     """, 9, "use contains_any / contains_all"),
    ("""\
     - id: r1
       effect: allow
       when:
         - resource.repository: {in: {ref: identity.nothing}}
       reason: {code: ok, message: m}
     """, 9, "ref 'identity.nothing' is not a known attribute"),
])
def test_validation_problems_name_file_line_rule_and_cause(tmp_path, rules_yaml, line, needle):
    problems = problems_for(tmp_path, rules_yaml)
    assert problems, "expected a problem"
    p = problems[0]
    assert p.file.endswith("p.yaml") and p.rule_id == "r1" and p.line == line
    assert needle in p.message, p.message


def test_duplicate_rule_ids_across_files(tmp_path):
    rule = "  - id: same\n    effect: allow\n    when: []\n    reason: {code: ok, message: m}\n"
    write(tmp_path, HEADER + rule, "a.yaml")
    write(tmp_path, HEADER.replace("name: p", "name: q") + rule, "b.yaml")
    problems = validate_policy_dir(tmp_path)
    assert len(problems) == 1
    assert problems[0].file.endswith("b.yaml") and "duplicate rule id 'same'" in problems[0].message
    assert "a.yaml:6" in problems[0].message


def test_yaml_syntax_error_reports_the_line(tmp_path):
    write(tmp_path, "name: p\nrules: [\n  - id: x\n")
    problems = validate_policy_dir(tmp_path)
    assert problems and "YAML syntax error" in problems[0].message and problems[0].line is not None


def test_duplicate_yaml_keys_are_reported(tmp_path):
    problems = problems_for(tmp_path, """\
        - id: r1
          effect: allow
          effect: deny
          when: []
          reason: {code: ok, message: m}
        """)
    assert any("duplicate key 'effect'" in p.message and p.line == 8 for p in problems)


def test_unquoted_times_and_timestamps_stay_strings(tmp_path):
    problems = problems_for(tmp_path, """\
        - id: r1
          effect: allow
          when: [{within: w}]
          reason: {code: ok, message: m}
        """, extra="schedules:\n  w:\n    windows: [{days: [mon], start: 09:00, end: 17:00}]\n"
                   "    periods: [{start: 2025-12-20T00:00:00Z, end: 2026-01-01T00:00:00Z}]\n")
    assert problems == []


def test_missing_and_empty_directories(tmp_path):
    assert "not a directory" in validate_policy_dir(tmp_path / "nope")[0].message
    assert "no policy files" in validate_policy_dir(tmp_path)[0].message


def test_load_raises_policy_validation_error_which_is_a_user_error(tmp_path):
    write(tmp_path, "name: p\n")
    with pytest.raises(PolicyValidationError) as info:
        load_policy_dir(tmp_path)
    assert isinstance(info.value, UserError)
    assert info.value.problems and "p.yaml" in str(info.value)


def test_canonical_bundle_is_deterministic_and_versioned_by_sha256(tmp_path):
    ps = load_policy_dir(POLICIES_DIR)
    content = ps.to_bundle_content()
    assert bundle_version(content) == hashlib.sha256(content.encode()).hexdigest() == ps.version
    obj = json.loads(content)
    assert obj["format"] == 1 and {p["name"] for p in obj["policies"]} >= {"agent-production-data"}
    # same content from a copy of the files in another order/location → same version
    for f in POLICIES_DIR.glob("*.yaml"):
        (tmp_path / ("z-" + f.name)).write_text(f.read_text())
    assert load_policy_dir(tmp_path).version == ps.version
    compiled = compile_bundle(content)
    assert compiled.version == ps.version and compiled.rule_count == len(ps.rule_ids())


def test_compile_bundle_rejects_bad_content():
    for bad in ("not json", "{}", json.dumps({"format": 1, "policies": [{"name": "x"}], "schedules": {}})):
        with pytest.raises(PolicyValidationError):
            compile_bundle(bad)


def test_bundle_holder_keeps_the_good_bundle_when_offered_a_bad_one():
    good = load_policy_dir(POLICIES_DIR).to_bundle_content()
    holder = BundleHolder()
    assert holder.offer(good) and holder.current is not None
    version = holder.current.version
    bad = good.replace('"effect":"deny"', '"effect":"maybe"', 1)
    assert not holder.offer(bad)
    assert holder.current.version == version and holder.last_problems
    assert not holder.offer("{truncated")
    assert holder.current.version == version
