"""Property tests of the combining algorithm against an independent oracle.

Random rule sets over a small vocabulary of conditions, random requests; the oracle below evaluates the same
conditions directly in Python and applies deny > step_up > allow > default deny.
"""

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.model import Identity, RequestContext, Resource
from streams.policy import AccessRequest, evaluate, policy_set_from_documents

NOW = datetime(2025, 6, 3, 10, 0, tzinfo=UTC)
KINDS = ["agent", "service_account", "workload", "human"]
TAGS = ["a", "b", "c"]
ENVS = ["prod", "dev"]
ACTIONS = ["db:connect", "db:query", "api:call"]

leaf = st.one_of(
    st.tuples(st.just("kind"), st.sampled_from(KINDS)),
    st.tuples(st.just("tag"), st.sampled_from(TAGS)),
    st.tuples(st.just("env"), st.sampled_from(ENVS)),
    st.tuples(st.just("ttl_gt"), st.integers(0, 100)),
    st.tuples(st.just("action"), st.sampled_from(ACTIONS)),
    st.tuples(st.just("glob"), st.just("db:*")),
)
cond = st.one_of(leaf, st.tuples(st.just("not"), leaf))
rule_st = st.tuples(st.sampled_from(["allow", "deny", "step_up"]), st.lists(cond, max_size=3))
rules_st = st.lists(rule_st, max_size=6)
request_st = st.fixed_dictionaries({
    "kind": st.sampled_from(KINDS),
    "tags": st.lists(st.sampled_from(TAGS), unique=True),
    "env": st.sampled_from([*ENVS, None]),
    "ttl": st.one_of(st.none(), st.integers(0, 100)),
    "action": st.sampled_from(ACTIONS),
})


def to_yaml_cond(c):
    kind, v = c
    if kind == "not":
        return {"not": to_yaml_cond(v)}
    return {
        "kind": lambda: {"identity.kind": v},
        "tag": lambda: {"identity.tags": {"contains": v}},
        "env": lambda: {"resource.environment": v},
        "ttl_gt": lambda: {"context.requested_ttl_s": {"gt": v}},
        "action": lambda: {"action": v},
        "glob": lambda: {"action": {"glob": v}},
    }[kind]()


def oracle_cond(c, r):
    kind, v = c
    if kind == "not":
        return not oracle_cond(v, r)
    return {
        "kind": lambda: r["kind"] == v,
        "tag": lambda: v in r["tags"],
        "env": lambda: r["env"] == v,
        "ttl_gt": lambda: r["ttl"] is not None and r["ttl"] > v,
        "action": lambda: r["action"] == v,
        "glob": lambda: r["action"].startswith("db:"),
    }[kind]()


def docs(rules, name="p", mode="enforce", prefix="r"):
    return {"name": name, "owner": "o", "mode": mode, "controls": [], "rules": [
        {"id": f"{prefix}{i}", "effect": eff, "when": [to_yaml_cond(c) for c in conds],
         "reason": {"code": f"code_{prefix}{i}", "message": "m"}} for i, (eff, conds) in enumerate(rules)]}


def compile_rules(*documents):
    documents = [d for d in documents if d["rules"]]
    if not documents:  # a policy set needs a rule: add one that can never apply
        documents = [docs([("allow", [("action", "db:connect"), ("not", ("action", "db:connect"))])],
                          name="filler", prefix="f")]
    return policy_set_from_documents(documents).compile()


def make_request(r):
    ident = Identity(id="i1", kind=r["kind"], owner="o", tags=list(r["tags"]))
    req = AccessRequest("x", NOW, "i1", r["action"], Resource(id="res", type="database", environment=r["env"]),
                        RequestContext(requested_ttl_s=r["ttl"]))
    return req, ident


def oracle(rules, r):
    matched = {eff: [f"r{i}" for i, (e, conds) in enumerate(rules)
                     if e == eff and all(oracle_cond(c, r) for c in conds)]
               for eff in ("deny", "step_up", "allow")}
    for eff in ("deny", "step_up", "allow"):
        if matched[eff]:
            return eff, matched[eff]
    return "deny", []


@settings(max_examples=250, deadline=None)
@given(rules_st, request_st)
def test_combining_matches_the_oracle_deny_overrides_and_default_deny(rules, r):
    b = compile_rules(docs(rules))
    d = evaluate(b, *make_request(r), [], NOW)
    expected, matched = oracle(rules, r)
    assert d.decision == expected
    assert d.matched_rules == matched
    if not matched:
        assert d.reason_codes == ["no_matching_rule"]
    if any(e == "deny" and all(oracle_cond(c, r) for c in conds) for e, conds in rules):
        assert d.decision == "deny"  # deny overrides, stated directly


@settings(max_examples=150, deadline=None)
@given(rules_st, rules_st, request_st)
def test_monitor_policies_never_change_a_decision(rules, monitor_rules, r):
    plain = compile_rules(docs(rules))
    watched = compile_rules(docs(rules), docs(monitor_rules, name="m", mode="monitor", prefix="m"))
    req, ident = make_request(r)
    a, b = evaluate(plain, req, ident, [], NOW), evaluate(watched, req, ident, [], NOW)
    assert (a.decision, a.reasons, a.matched_rules, a.obligations) == (b.decision, b.reasons, b.matched_rules,
                                                                       b.obligations)
    expected_monitor = [f"m{i}" for i, (_e, conds) in enumerate(monitor_rules)
                        if all(oracle_cond(c, r) for c in conds)]
    assert [m.rule for m in b.monitor] == expected_monitor


@settings(max_examples=150, deadline=None)
@given(rules_st, request_st, st.sampled_from(["allow", "deny", "step_up"]), st.lists(cond, max_size=2))
def test_adding_an_unrelated_rule_never_changes_a_decision(rules, r, effect, conds):
    before = compile_rules(docs(rules))
    unrelated = docs([(effect, [("action", "other:thing"), *conds])], name="u", prefix="u")
    after = compile_rules(docs(rules), unrelated)
    req, ident = make_request(r)
    a, b = evaluate(before, req, ident, [], NOW), evaluate(after, req, ident, [], NOW)
    assert (a.decision, a.reasons, a.matched_rules, a.obligations, a.monitor) == (
        b.decision, b.reasons, b.matched_rules, b.obligations, b.monitor)


@settings(max_examples=60, deadline=None)
@given(rules_st)
def test_bundle_round_trip_preserves_version_and_decisions(rules):
    from streams.policy import compile_bundle

    ps = policy_set_from_documents([docs(rules)]) if rules else None
    if ps is None:
        return
    compiled = compile_bundle(ps.to_bundle_content())
    assert compiled.version == ps.version
    assert [r.id for r in compiled.rules] == ps.rule_ids()
