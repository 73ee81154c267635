"""``pdx policy test``: run the expected-decision cases in ``policies/tests/*.yaml``.

A test file::

    now: "2025-06-03T10:00:00Z"          # default for every case (optional)
    identities:                          # named fixtures (optional)
      reporting-agent: {id: agent-7, kind: agent, tags: [production]}
    cases:
      - name: tagged agent gets a time-bounded allow
        identity: reporting-agent        # a fixture name, an inline identity, {base: name, ...overrides}, or null
        request: {action: "db:connect"}  # AccessRequest fields; identity_id/occurred_at/request_id default
        resource: {id: orders, type: database, environment: production}
        context: {requested_ttl_s: 1800}
        approvals: []                     # Approval mappings (optional)
        principals:                       # the on_behalf_of principals as the inventory holds them (optional)
          bob@example.com: {kind: human, scopes: ["config:admin"]}   # or a fixture name, or null (unknown)
        token: {iss: "https://issuer.example", sub: "spiffe://example/ns/x/sa/y", aud: pdx,
                iat: "2025-06-03T09:55:00Z", scope: "api:read"}   # claims of a VERIFIED token (optional)
        delegation: {source: grant, id: dlg-1}   # what proved on_behalf_of (context.delegation.*; optional)
        now: "2025-06-03T10:00:00Z"      # optional per case
        expect:
          decision: allow                 # required
          reasons: [agent_production_time_bounded]   # reason codes, compared as a set (optional)
          matched_rules: [...]            # compared as a set (optional)
          obligations: {expires_at: "2025-06-03T10:30:00Z"}  # each given key must equal (optional)
          monitor: [rule-id, ...]         # monitor rules that matched, as a set (optional)

A case's ``token`` is taken as a verified token with those claims (``iss``, ``sub``, ``aud``, ``iat``, ``exp``
— timestamps or seconds since the epoch; ``exp`` defaults to an hour after ``now`` — ``jti``, ``scope`` /
``scp``, ``act``): policy tests test policies, while signature and time checks are the worker's
(streams/model/tokens.py, tested with minted tokens). Without ``token`` the case reads ``token.verified`` false.
A principal of ``request.on_behalf_of`` that ``principals`` does not name is the fixture of that name, and unknown
to the inventory without one (as in a worker: the engine then denies ``delegator_unknown``); ``null`` makes a
named one unknown.
A request file for ``pdx policy explain`` has the same keys as one case (``expect`` ignored).
Coverage: a rule is exercised when it is among a case's deciding rules or monitor outcomes.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from streams.errors import PolicyError
from streams.model import AccessRequest, Approval, Decision, Identity, parse_timestamp
from streams.model.delegation import AUDIT_PREFIX, DelegationProof
from streams.model.tokens import VerifiedToken
from streams.policy.compiler import CompiledBundle
from streams.policy.evaluator import evaluate
from streams.policy.loader import PolicySet, PolicyValidationError, Problem, read_yaml_file

CASE_KEYS = {"name", "description", "identity", "request", "resource", "context", "approvals", "token", "now",
             "principals", "delegation", "expect"}
EXPECT_KEYS = {"decision", "reasons", "matched_rules", "obligations", "monitor"}


class CaseError(PolicyError, ValueError):
    """A test case or request file is malformed (message names the case and field)."""


@dataclass
class RequestCase:
    request: AccessRequest
    identity: Identity | None
    approvals: list[Approval]
    now: datetime
    #: the verified token the case gives (None: the request carries no token)
    token: VerifiedToken | None = None
    #: request.on_behalf_of resolved as the case's inventory holds it (None: not in the inventory)
    principals: list[Identity | None] = field(default_factory=list)
    #: what proved the chain (``delegation: {source, id}``), as the worker found it; None: not given
    delegation: DelegationProof | None = None


def _plain(v: Any) -> Any:
    """LineDicts → dicts (so copies and merges behave like plain data)."""
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def build_request_case(case: Mapping[str, Any], fixtures: Mapping[str, Any] | None = None,
                       default_now: Any = None, name: str = "request") -> RequestCase:
    """Turn a case / request-file mapping into evaluate() arguments. Raises CaseError on bad input."""
    fixtures = fixtures or {}
    try:
        now_raw = case.get("now", default_now)
        if now_raw is None:
            raise CaseError(f"{name}: 'now' is required (the evaluation time, e.g. 2025-06-03T10:00:00Z)")
        now = parse_timestamp(now_raw, f"{name}: now")
        ident_node = case.get("identity")
        identity = _case_identity(ident_node, fixtures, f"{name}: identity")
        req = _plain(case.get("request") or {})
        if not isinstance(req, dict):
            raise CaseError(f"{name}: request must be a mapping")
        if "resource" in case:
            req["resource"] = _plain(case["resource"])
        if "context" in case:
            req["context"] = _plain(case["context"])
        req.setdefault("identity_id", identity.id if identity is not None else "unknown-identity")
        req.setdefault("occurred_at", now)
        req.setdefault("request_id", name)
        if "resource" not in req:
            raise CaseError(f"{name}: resource is required ({{id, type, ...}})")
        request = AccessRequest.from_dict(req)
        approvals_node = case.get("approvals") or []
        if not isinstance(approvals_node, list):
            raise CaseError(f"{name}: approvals must be a list")
        approvals = [Approval.from_dict(_plain(a)) for a in approvals_node]
        token = _case_token(case.get("token"), now, name)
        principals = _case_principals(case.get("principals"), request.on_behalf_of, fixtures, name)
        delegation = _case_delegation(case.get("delegation"), name)
    except CaseError:
        raise
    except ValueError as exc:
        raise CaseError(f"{name}: {exc}") from None
    return RequestCase(request, identity, approvals, now, token, principals, delegation)


def _case_delegation(node: Any, name: str) -> DelegationProof | None:
    if node is None:
        return None
    if not isinstance(node, Mapping) or set(node) - {"source", "id"} or not isinstance(node.get("source"), str):
        raise CaseError(f"{name}: delegation must be a mapping {{source: token|grant|token+grant, id: ...}}")
    found = DelegationProof.from_audit_attributes({AUDIT_PREFIX + "source": node["source"],
                                                   AUDIT_PREFIX + "id": str(node.get("id") or "")})
    if found is None:
        raise CaseError(f"{name}: delegation.source must be token, grant or token+grant, got {node['source']!r}")
    return found


def _case_identity(node: Any, fixtures: Mapping[str, Any], what: str, default_id: str | None = None) -> Identity | None:
    """An identity given as a fixture name, a mapping (``base: fixture`` plus overrides) or null."""
    if node is None:
        return None
    if isinstance(node, str):
        if node not in fixtures:
            raise CaseError(f"{what} {node!r} is not a fixture in this file "
                            f"(known: {', '.join(sorted(fixtures)) or 'none'})")
        return Identity.from_dict(_plain(fixtures[node]))
    if isinstance(node, Mapping):
        data = _plain(node)
        base = data.pop("base", None)
        if base is not None:
            if base not in fixtures:
                raise CaseError(f"{what} base {base!r} is not a fixture in this file")
            merged = copy.deepcopy(_plain(fixtures[base]))
            merged.update(data)
            data = merged
        if default_id is not None:
            data.setdefault("id", default_id)
        return Identity.from_dict(data)
    raise CaseError(f"{what} must be a fixture name, a mapping or null")


def _case_principals(node: Any, chain: list[str], fixtures: Mapping[str, Any], name: str) -> list[Identity | None]:
    given = _plain(node) if node is not None else {}
    if not isinstance(given, dict):
        raise CaseError(f"{name}: principals must map principal ids (of on_behalf_of) to identities")
    extra = sorted(set(given) - set(chain))
    if extra:
        raise CaseError(f"{name}: principals names {', '.join(map(repr, extra))}, not in request.on_behalf_of")
    out: list[Identity | None] = []
    for pid in chain:
        spec = given[pid] if pid in given else pid if pid in fixtures else None
        out.append(_case_identity(spec, fixtures, f"{name}: principals[{pid!r}]", default_id=pid))
    return out


def _case_token(node: Any, now: datetime, name: str) -> VerifiedToken | None:
    if node is None:
        return None
    if not isinstance(node, Mapping):
        raise CaseError(f"{name}: token must be a mapping of claims (iss, sub, aud, iat, ...)")
    claims = _plain(node)
    for key in ("iat", "exp"):
        if isinstance(claims.get(key), (str, datetime)):
            claims[key] = parse_timestamp(claims[key], f"{name}: token.{key}")
    claims.setdefault("exp", now + timedelta(hours=1))
    try:
        return VerifiedToken.from_claims(claims)
    except ValueError as exc:
        raise CaseError(f"{name}: token: {exc}") from None


@dataclass
class CaseResult:
    file: str
    name: str
    passed: bool
    decision: Decision | None
    failures: list[str] = field(default_factory=list)


@dataclass
class TestReport:
    results: list[CaseResult]
    rule_ids: list[str]
    exercised: dict[str, int]
    problems: list[Problem] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems and bool(self.results) and all(r.passed for r in self.results)

    @property
    def uncovered(self) -> list[str]:
        return [r for r in self.rule_ids if not self.exercised.get(r)]

    @property
    def coverage(self) -> float:
        if not self.rule_ids:
            return 1.0
        return 1.0 - len(self.uncovered) / len(self.rule_ids)


def _check(expect: Mapping[str, Any], d: Decision) -> list[str]:
    fails: list[str] = []
    if d.decision != expect.get("decision"):
        fails.append(f"decision: expected {expect.get('decision')}, got {d.decision} "
                     f"(reasons {', '.join(d.reason_codes)})")
    if "reasons" in expect and set(expect["reasons"] or []) != set(d.reason_codes):
        fails.append(f"reasons: expected {sorted(expect['reasons'] or [])}, got {sorted(d.reason_codes)}")
    if "matched_rules" in expect and set(expect["matched_rules"] or []) != set(d.matched_rules):
        fails.append(f"matched_rules: expected {sorted(expect['matched_rules'] or [])}, got {sorted(d.matched_rules)}")
    if "obligations" in expect:
        want = expect["obligations"] or {}
        if not want and d.obligations:
            fails.append(f"obligations: expected none, got {d.obligations}")
        for k, v in want.items():
            got = d.obligations.get(k)
            if isinstance(v, bool):
                v = "true" if v else "false"
            if got != str(v):
                fails.append(f"obligation {k}: expected {v!r}, got {got!r}")
    if "monitor" in expect:
        got_m = {m.rule for m in d.monitor}
        if set(expect["monitor"] or []) != got_m:
            fails.append(f"monitor: expected {sorted(expect['monitor'] or [])}, got {sorted(got_m)}")
    return fails


def run_test_file(path: Path, bundle: CompiledBundle,
                  exercised: dict[str, int]) -> tuple[list[CaseResult], list[Problem]]:
    try:
        doc = read_yaml_file(path)
    except PolicyValidationError as exc:
        return [], exc.problems
    file = str(path)
    if not isinstance(doc, Mapping) or not isinstance(doc.get("cases"), list):
        return [], [Problem(file, None, None, "a test file needs a 'cases' list")]
    fixtures = doc.get("identities") or {}
    results: list[CaseResult] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for i, case in enumerate(doc["cases"], 1):
        line = getattr(case, "line", None)
        name = case.get("name") if isinstance(case, Mapping) else None
        name = name if isinstance(name, str) and name else f"case {i}"
        if name in seen:
            problems.append(Problem(file, line, None, f"duplicate case name {name!r}"))
        seen.add(name)
        if not isinstance(case, Mapping):
            problems.append(Problem(file, line, None, f"{name}: a case must be a mapping"))
            continue
        unknown = set(case) - CASE_KEYS
        expect = case.get("expect")
        if unknown:
            problems.append(Problem(file, line, None, f"{name}: unknown keys {sorted(unknown)}"))
            continue
        if not isinstance(expect, Mapping) or expect.get("decision") not in ("allow", "deny", "step_up"):
            problems.append(Problem(file, line, None, f"{name}: expect.decision (allow | deny | step_up) is required"))
            continue
        if set(expect) - EXPECT_KEYS:
            unknown_expect = sorted(set(expect) - EXPECT_KEYS)
            problems.append(Problem(file, line, None, f"{name}: unknown expect keys {unknown_expect}"))
            continue
        try:
            rc = build_request_case(case, fixtures, doc.get("now"), name)
        except CaseError as exc:
            problems.append(Problem(file, line, None, str(exc)))
            continue
        d = evaluate(bundle, rc.request, rc.identity, rc.approvals, rc.now, rc.token, rc.principals,
                     delegation=rc.delegation)
        for rid in d.matched_rules:
            exercised[rid] = exercised.get(rid, 0) + 1
        for m in d.monitor:
            exercised[m.rule] = exercised.get(m.rule, 0) + 1
        fails = _check(expect, d)
        results.append(CaseResult(file, name, not fails, d, fails))
    return results, problems


def run_policy_tests(policy_set: PolicySet, tests_dir: str | Path) -> TestReport:
    """Run every ``tests_dir/*.yaml`` case against ``policy_set``."""
    bundle = policy_set.compile()
    exercised: dict[str, int] = {}
    results: list[CaseResult] = []
    problems: list[Problem] = []
    root = Path(tests_dir)
    files = sorted([*root.glob("*.yaml"), *root.glob("*.yml")]) if root.is_dir() else []
    if not files:
        problems.append(Problem(str(root), None, None, "no test files (*.yaml) found"))
    for f in files:
        r, p = run_test_file(f, bundle, exercised)
        results.extend(r)
        problems.extend(p)
    return TestReport(results, policy_set.rule_ids(), exercised, problems)


def policy_dir_with(dest: Path, extra_files: Mapping[str, str], source: Path | None = None) -> Path:
    """A copy of a policy directory (default: the shipped policies/) plus extra policy files: a candidate
    for `pdx policy publish` or `impact` in tests and benchmarks."""
    from streams.config import require_policies_dir

    dest.mkdir(parents=True, exist_ok=True)
    for f in (source or require_policies_dir("policy_dir_with() without a source")).glob("*.yaml"):
        (dest / f.name).write_text(f.read_text())
    for name, text in extra_files.items():
        (dest / name).write_text(text)
    return dest
