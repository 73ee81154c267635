"""Evaluator semantics: built-ins, combining, operators, derived attributes, schedules, obligations, index."""

import random
from datetime import UTC, datetime, timedelta

import pytest

from streams.model import Approval, Credential, Identity, RequestContext, Resource
from streams.policy import AccessRequest, evaluate, policy_set_from_documents
from streams.policy.runtime import new_env

NOW = datetime(2025, 6, 3, 10, 0, tzinfo=UTC)  # Tuesday


def bundle(*rules, mode="enforce", schedules=None, extra_docs=(), timezone=None):
    doc = {"name": "p", "owner": "o", "mode": mode, "controls": [], "rules": list(rules)}
    if timezone:
        doc["timezone"] = timezone
    if schedules:
        doc["schedules"] = schedules
    return policy_set_from_documents([doc, *extra_docs]).compile()


def rule(rid, effect, when, code=None, **kw):
    return {"id": rid, "effect": effect, "when": when, "reason": {"code": code or rid.replace("-", "_"),
                                                                  "message": "m"}, **kw}


def ident(**kw):
    d = {"id": "agent-1", "kind": "agent", "owner": "o"}
    d.update(kw)
    return Identity.from_dict(d)


def req(action="db:connect", rtype="database", ctx=None, on_behalf_of=(), **res):
    resource = Resource(id=res.pop("id", "db-1"), type=rtype, **res)
    return AccessRequest("r1", NOW, "agent-1", action, resource, ctx or RequestContext(), list(on_behalf_of))


ALLOW_ALL_DB = rule("allow-db", "allow", [{"action": {"glob": "db:*"}}])


# ---- built-ins -------------------------------------------------------------------------------------------


def test_no_bundle_denies_no_policy_loaded():
    d = evaluate(None, req(), ident(), [], NOW)
    assert (d.decision, d.reason_codes, d.bundle_version) == ("deny", ["no_policy_loaded"], "")


def test_unknown_identity_is_denied_even_when_a_rule_allows():
    d = evaluate(bundle(ALLOW_ALL_DB), req(), None, [], NOW)
    assert (d.decision, d.reason_codes) == ("deny", ["unknown_identity"])
    assert d.reasons[0].policy is None and d.reasons[0].rule is None


@pytest.mark.parametrize("status,code", [("suspended", "identity_suspended"),
                                         ("decommissioned", "identity_decommissioned")])
def test_inactive_identities_are_denied_before_rules(status, code):
    d = evaluate(bundle(ALLOW_ALL_DB), req(), ident(status=status), [], NOW)
    assert (d.decision, d.reason_codes, d.matched_rules) == ("deny", [code], [])


def test_request_without_action_is_invalid():
    d = evaluate(bundle(ALLOW_ALL_DB), req(action=""), ident(), [], NOW)
    assert d.reason_codes == ["invalid_request"]


def test_default_deny_and_decision_metadata():
    b = bundle(ALLOW_ALL_DB)
    d = evaluate(b, req(action="api:call", rtype="api"), ident(), [], NOW)
    assert (d.decision, d.reason_codes, d.matched_rules) == ("deny", ["no_matching_rule"], [])
    assert d.bundle_version == b.version and len(b.version) == 64
    assert d.evaluated_at == NOW and d.worker_id == "" and d.eval_us >= 0
    assert d.request_id == "r1"


# ---- combining -------------------------------------------------------------------------------------------


def test_deny_overrides_step_up_overrides_allow():
    always = [{"action": "db:connect"}]
    b = bundle(rule("a", "allow", always), rule("s", "step_up", always), rule("d", "deny", always))
    d = evaluate(b, req(), ident(), [], NOW)
    assert (d.decision, d.matched_rules) == ("deny", ["d"])
    b = bundle(rule("a", "allow", always), rule("s", "step_up", always))
    assert evaluate(b, req(), ident(), [], NOW).decision == "step_up"


def test_all_matching_rules_of_the_deciding_effect_are_reported_with_reasons():
    always = [{"action": "db:connect"}]
    b = bundle(rule("d1", "deny", always), rule("d2", "deny", always), rule("d3", "deny", [{"action": "db:x"}]))
    d = evaluate(b, req(), ident(), [], NOW)
    assert d.matched_rules == ["d1", "d2"]
    assert [(r.code, r.policy, r.rule) for r in d.reasons] == [("d1", "p", "d1"), ("d2", "p", "d2")]


def test_monitor_rules_report_would_have_outcomes_without_changing_the_decision():
    mon = {"name": "m", "owner": "o", "mode": "monitor", "controls": [],
           "rules": [rule("m-deny", "deny", [{"identity.kind": "agent"}], code="would_deny")]}
    b = bundle(ALLOW_ALL_DB, extra_docs=[mon])
    d = evaluate(b, req(), ident(), [], NOW)
    assert d.decision == "allow" and d.matched_rules == ["allow-db"]
    assert [(m.policy, m.rule, m.effect, m.reason_code) for m in d.monitor] == [("m", "m-deny", "deny", "would_deny")]


# ---- obligations -----------------------------------------------------------------------------------------


def test_expires_at_is_min_of_requested_ttl_and_policy_max():
    b = bundle(rule("a", "allow", [{"action": "db:connect"}], obligations={"expires_at": {"max_ttl": "1h"}}))
    short = evaluate(b, req(ctx=RequestContext(requested_ttl_s=600)), ident(), [], NOW)
    assert short.obligations == {"expires_at": "2025-06-03T10:10:00Z"}
    long = evaluate(b, req(ctx=RequestContext(requested_ttl_s=10 ** 6)), ident(), [], NOW)
    assert long.obligations == {"expires_at": "2025-06-03T11:00:00Z"}
    absent = evaluate(b, req(), ident(), [], NOW)
    assert absent.obligations == {"expires_at": "2025-06-03T11:00:00Z"}


def test_obligations_merge_across_deciding_rules():
    w = [{"action": "db:connect"}]
    b = bundle(
        rule("a1", "allow", w, obligations={"expires_at": {"max_ttl": "2h"}, "audit_review": True}),
        rule("a2", "allow", w, obligations={"expires_at": {"max_ttl": "30m"}}),
        rule("s1", "step_up", [{"action": "db:query"}], obligations={"require_approval": ["x", "y"]}),
        rule("s2", "step_up", [{"action": "db:query"}], obligations={"require_approval": ["y", "z"]}),
    )
    d = evaluate(b, req(), ident(), [], NOW)
    assert d.obligations == {"expires_at": "2025-06-03T10:30:00Z", "audit_review": "true"}
    d = evaluate(b, req(action="db:query"), ident(), [], NOW)
    assert d.obligations == {"require_approval": "x,y,z"}


# ---- operators -------------------------------------------------------------------------------------------

OPERATOR_CASES = [
    # (condition, request kwargs, identity kwargs, expected)
    ({"identity.kind": "agent"}, {}, {}, True),
    ({"identity.kind": {"not_equals": "agent"}}, {}, {}, False),
    ({"identity.kind": {"in": ["workload", "agent"]}}, {}, {}, True),
    ({"identity.kind": {"not_in": ["workload", "agent"]}}, {}, {}, False),
    ({"identity.tags": {"contains": "prod"}}, {}, {"tags": ["prod"]}, True),
    ({"identity.tags": {"not_contains": "prod"}}, {}, {"tags": ["prod"]}, False),
    ({"identity.tags": {"contains_any": ["a", "prod"]}}, {}, {"tags": ["prod"]}, True),
    ({"identity.tags": {"contains_all": ["a", "prod"]}}, {}, {"tags": ["prod"]}, False),
    ({"identity.tags": {"exists": True}}, {}, {"tags": []}, False),
    ({"identity.risk_tier": {"gte": "high"}}, {}, {"risk_tier": "critical"}, True),
    ({"identity.risk_tier": {"lt": "medium"}}, {}, {"risk_tier": "medium"}, False),
    ({"resource.sensitivity": {"lte": "internal"}}, {"sensitivity": "public"}, {}, True),
    ({"resource.sensitivity": {"lte": "internal"}}, {}, {}, False),  # missing → false
    ({"resource.environment": {"not_equals": "prod"}}, {}, {}, False),  # missing → negative ops false too
    ({"not": {"resource.environment": {"equals": "prod"}}}, {}, {}, True),
    ({"resource.environment": {"missing": True}}, {}, {}, True),
    ({"resource.environment": {"exists": True}}, {"environment": "prod"}, {}, True),
    ({"resource.id": {"glob": "db-*"}}, {}, {}, True),
    ({"resource.id": {"glob": ["x-*", "db-?"]}}, {}, {}, True),
    ({"resource.id": {"not_glob": "db-*"}}, {}, {}, False),
    ({"resource.id": {"glob": "db-[0-9]"}}, {}, {}, True),
    ({"resource.attributes.team": "data"}, {"attributes": {"team": "data"}}, {}, True),
    ({"resource.attributes.team": "data"}, {}, {}, False),
    ({"identity.attributes.cost_center": {"in": ["42"]}}, {}, {"attributes": {"cost_center": "42"}}, True),
    ({"resource.environment": {"in": {"ref": "identity.environments"}}}, {"environment": "dev"},
     {"environments": ["dev"]}, True),
    ({"resource.environment": {"not_in": {"ref": "identity.environments"}}}, {"environment": "dev"},
     {"environments": ["dev"]}, False),
    ({"identity.environments": {"contains": {"ref": "resource.environment"}}}, {"environment": "dev"},
     {"environments": ["dev"]}, True),
    ({"resource.owner": {"equals": {"ref": "identity.owner"}}}, {"owner": "o"}, {}, True),
    ({"resource.owner": {"not_equals": {"ref": "identity.owner"}}}, {"owner": "o"}, {}, False),
    ({"any": [{"identity.kind": "human"}, {"identity.kind": "agent"}]}, {}, {}, True),
    ({"all": [{"identity.kind": "agent"}, {"identity.owner": "x"}]}, {}, {}, False),
    ({"identity.credentials": {"contains": "x509"}}, {}, {"credentials": [
        {"id": "c", "type": "x509", "created_at": "2025-01-01T00:00:00Z"}]}, True),
    ({"identity.credentials": {"contains": "x509"}}, {}, {"credentials": [
        {"id": "c", "type": "x509", "created_at": "2025-01-01T00:00:00Z", "status": "revoked"}]}, False),
]


@pytest.mark.parametrize("cond,res_kw,ident_kw,expected", OPERATOR_CASES)
def test_operators(cond, res_kw, ident_kw, expected):
    b = bundle(rule("r", "allow", [{"action": "db:connect"}, cond]))
    d = evaluate(b, req(**res_kw), ident(**ident_kw), [], NOW)
    assert (d.decision == "allow") is expected
    # the explain closure tree must agree with the generated fast path
    r = b.rules_by_id["r"]
    env = new_env(req(**res_kw), ident(**ident_kw), [], NOW)
    assert bool(r.slow_match(env)) == bool(r.match(env)) == expected


@pytest.mark.parametrize("ip,expected", [
    ("10.1.2.3", True), ("172.31.255.255", True), ("172.32.0.0", False), ("fd00::1", True),
    ("2001:db8::1", False), ("not-an-ip", False), (None, False),
])
def test_cidr_membership_ipv4_and_ipv6(ip, expected):
    nets = ["10.0.0.0/8", "172.16.0.0/12", "fd00::/8"]
    b = bundle(rule("in", "allow", [{"action": "api:call"}, {"context.source_ip": {"in_cidr": nets}}]),
               rule("out", "step_up", [{"action": "api:x"}, {"context.source_ip": {"not_in_cidr": nets}}]))
    ctx = RequestContext(source_ip=ip)
    assert (evaluate(b, req("api:call", "api", ctx), ident(), [], NOW).decision == "allow") is expected
    outside = evaluate(b, req("api:x", "api", ctx), ident(), [], NOW).decision == "step_up"
    assert outside is (ip in ("172.32.0.0", "2001:db8::1"))  # malformed / missing: neither in nor out


def test_token_age_and_duration_comparisons():
    b = bundle(rule("fresh", "allow", [{"action": "api:call"}, {"context.token_age_s": {"lte": "15m"}}]))
    fresh = RequestContext(token_issued_at=NOW - timedelta(minutes=15))
    stale = RequestContext(token_issued_at=NOW - timedelta(minutes=15, seconds=1))
    assert evaluate(b, req("api:call", "api", fresh), ident(), [], NOW).decision == "allow"
    assert evaluate(b, req("api:call", "api", stale), ident(), [], NOW).decision == "deny"
    assert evaluate(b, req("api:call", "api"), ident(), [], NOW).decision == "deny"


def test_credential_age_days_with_durations():
    b = bundle(rule("old", "step_up", [{"identity.credential_age_days": {"gt": "90d"}}], code="credential_unrotated"))
    young = ident(credentials=[Credential("k", "api_key", NOW - timedelta(days=90)).to_dict()])
    old = ident(credentials=[Credential("k", "api_key", NOW - timedelta(days=91)).to_dict()])
    assert evaluate(b, req(), young, [], NOW).decision == "deny"
    assert evaluate(b, req(), old, [], NOW).reason_codes == ["credential_unrotated"]
    assert evaluate(b, req(), ident(), [], NOW).decision == "deny"  # no credential: missing


def test_approval_valid_derived_attribute():
    b = bundle(rule("w", "allow", [{"action": "config:write"}, {"context.approval_valid": True}]))
    a = Approval("a1", "agent-1", "config:*", "*", "carol", NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    r = req("config:write", "config")
    assert evaluate(b, r, ident(), [a], NOW).decision == "allow"
    assert evaluate(b, r, ident(), [], NOW).decision == "deny"
    assert evaluate(b, r, ident(id="agent-2"), [a], NOW).decision == "deny"


def test_now_attributes_use_the_rules_timezone():
    # 10:00 UTC on a Tuesday is 19:00 in Tokyo
    b = bundle(rule("evening", "allow", [{"action": "db:connect"}, {"now.hour": {"gte": 18}},
                                         {"now.weekday": "tue"}]), timezone="Asia/Tokyo")
    assert evaluate(b, req(), ident(), [], NOW).decision == "allow"
    utc = bundle(rule("evening", "allow", [{"action": "db:connect"}, {"now.hour": {"gte": 18}}]))
    assert evaluate(utc, req(), ident(), [], NOW).decision == "deny"


def test_now_is_normalised_to_utc():
    b = bundle(rule("ten", "allow", [{"action": "db:connect"}, {"now.hour": 10}]))
    berlin_noon = NOW.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert evaluate(b, req(), ident(), [], berlin_noon).decision == "allow"


SCHEDULES = {
    "window": {"timezone": "Europe/Berlin", "windows": [{"days": ["mon", "tue"], "start": "09:00", "end": "17:00"}]},
    "freeze": {"periods": [{"start": "2025-12-20T00:00:00Z", "end": "2026-01-02T00:00:00Z"}]},
}


@pytest.mark.parametrize("now,in_window,in_freeze", [
    (datetime(2025, 6, 3, 6, 59, tzinfo=UTC), False, False),   # 08:59 Berlin (CEST)
    (datetime(2025, 6, 3, 7, 0, tzinfo=UTC), True, False),     # 09:00 Berlin
    (datetime(2025, 6, 3, 14, 59, tzinfo=UTC), True, False),   # 16:59 Berlin
    (datetime(2025, 6, 3, 15, 0, tzinfo=UTC), False, False),   # 17:00 Berlin: end is exclusive
    (datetime(2025, 6, 4, 10, 0, tzinfo=UTC), False, False),   # Wednesday
    (datetime(2025, 12, 22, 10, 0, tzinfo=UTC), True, True),   # Monday inside the freeze (CET)
])
def test_schedules(now, in_window, in_freeze):
    b = bundle(rule("w", "allow", [{"action": "db:connect"}, {"within": "window"}]),
               rule("f", "deny", [{"action": "db:connect"}, {"within": "freeze"}]), schedules=SCHEDULES)
    d = evaluate(b, req(), ident(), [], now)
    expected = "deny" if in_freeze or not in_window else "allow"
    assert d.decision == expected
    assert ("f" in d.matched_rules) is in_freeze


# ---- index -----------------------------------------------------------------------------------------------


def test_index_by_action_and_resource_type_skips_unrelated_rules():
    b = bundle(
        rule("db-db", "allow", [{"action": "db:connect"}, {"resource.type": "database"}]),
        rule("db-cache", "deny", [{"action": "db:connect"}, {"resource.type": {"in": ["cache"]}}]),
        rule("glob-db", "step_up", [{"action": {"glob": "db:*"}}, {"resource.type": "queue"}]),
        rule("other-ns", "deny", [{"action": {"glob": "api:*"}}]),
        rule("anything", "allow", [{"identity.kind": "human"}]),
    )
    assert sorted(r.id for r in b.candidates("db:connect", "database").rules()) == ["anything", "db-db"]
    assert sorted(r.id for r in b.candidates("db:query", "queue").rules()) == ["anything", "glob-db"]
    assert b.candidates("api:call", "x").rules()[0].id == "other-ns"
    assert evaluate(b, req(rtype="cache"), ident(), [], NOW).matched_rules == ["db-cache"]


def test_non_indexable_action_conditions_still_apply():
    b = bundle(rule("not-read", "deny", [{"action": {"not_glob": "*:read"}}]), rule("all", "allow", []))
    assert evaluate(b, req("config:read", "config"), ident(), [], NOW).decision == "allow"
    assert evaluate(b, req("config:write", "config"), ident(), [], NOW).decision == "deny"


def test_generated_fast_path_agrees_with_closure_tree_on_random_requests():
    """The code-generated predicate and the closure tree (explain) are two compilations of one rule."""
    from streams.config import POLICIES_DIR
    from streams.policy import load_policy_dir

    b = load_policy_dir(POLICIES_DIR).compile()
    rng = random.Random(1)
    for _ in range(400):
        identity = ident(
            kind=rng.choice(["agent", "service_account", "workload", "human"]),
            tags=rng.sample(["production", "deployment", "privileged"], rng.randint(0, 3)),
            environments=rng.sample(["production", "staging"], rng.randint(0, 2)),
            approved_repositories=rng.sample(["r1", "r2"], rng.randint(0, 2)),
            scopes=rng.sample(["api:confidential"], rng.randint(0, 1)),
            credentials=[{"id": "k", "type": "api_key", "created_at": NOW - timedelta(days=rng.randint(1, 200))}],
        )
        ctx = RequestContext(
            source_ip=rng.choice([None, "10.0.0.1", "8.8.8.8", "fd00::2"]),
            token_issued_at=rng.choice([None, NOW - timedelta(minutes=rng.randint(0, 30))]),
            requested_ttl_s=rng.choice([None, 0, 60, 9000]),
        )
        r = req(rng.choice(["db:connect", "secrets:read", "api:call", "config:write", "deploy:release"]),
                rng.choice(["database", "secret", "api", "config", "pipeline"]), ctx,
                on_behalf_of=rng.sample(["alice"], rng.randint(0, 1)),
                environment=rng.choice([None, "production", "staging"]),
                sensitivity=rng.choice([None, "public", "confidential", "restricted"]),
                repository=rng.choice([None, "r1", "r3"]))
        now = NOW + timedelta(hours=rng.randint(0, 24 * 7))
        chain = [ident(id=pid, kind="human", scopes=rng.sample(["config:admin"], rng.randint(0, 1)))
                 for pid in r.on_behalf_of]
        for compiled in b.rules:
            env = new_env(r, identity, [], now, None, chain)
            assert bool(compiled.match(env)) == bool(compiled.slow_match(env)), compiled.id
        # and the per-candidate-set generated decider agrees with the closure trees + combining rules
        cands = b.candidates(r.action, r.resource.type)
        env = new_env(r, identity, [], now, None, chain)
        expected_decision, expected_rules = "deny", []
        for effect, tier in (("deny", cands.deny), ("step_up", cands.step), ("allow", cands.allow)):
            hits = [rule.id for _f, rule in tier if rule.slow_match(env)]
            if hits:
                expected_decision, expected_rules = effect, hits
                break
        d = evaluate(b, r, identity, [], now, None, chain)
        assert (d.decision, d.matched_rules) == (expected_decision, expected_rules)
        assert [m.rule for m in d.monitor] == [rule.id for _f, rule in cands.monitor if rule.slow_match(env)]


def test_evaluate_is_pure():
    b = bundle(ALLOW_ALL_DB)
    r, i = req(), ident()
    before = (r.to_dict(), i.to_dict())
    d1, d2 = evaluate(b, r, i, [], NOW), evaluate(b, r, i, [], NOW)
    assert (d1.decision, d1.reasons, d1.obligations) == (d2.decision, d2.reasons, d2.obligations)
    assert (r.to_dict(), i.to_dict()) == before


def test_malformed_request_data_fails_closed_instead_of_raising():
    b = bundle(rule("fresh", "allow", [{"action": "api:call"}, {"context.token_age_s": {"lte": 900}}]))
    naive = RequestContext(token_issued_at=datetime(2025, 6, 3, 9, 59))  # built in code, not via from_dict
    d = evaluate(b, req("api:call", "api", naive), ident(), [], NOW)
    assert d.decision == "deny" and d.reason_codes == ["invalid_request"]
    assert "TypeError" in d.reasons[0].message
