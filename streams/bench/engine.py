"""``pdx bench engine``: decision latency of pdx vs cedarpy and regopy on one scenario, and pdx at scale.

The scenario (``engine_scenario/``) is written three times — pdx YAML, Cedar, Rego — with the same meaning;
requests are generated with a fixed seed. Every engine gets its inputs pre-built in its own native form
outside the timed region (pdx: model objects; cedarpy: request dict + a pre-parsed ``Entities`` handle per
request and a pre-parsed ``PolicySet``; regopy: a pre-built ``Input`` and a built bundle), so only the decision
call is timed — the most favourable setting for the peers. Each call is timed with ``perf_counter_ns``
(so timer overhead is included, the same for all engines) with the garbage collector paused, as ``timeit``
does. Engines are interleaved in blocks of 1000 requests so load from elsewhere hits all alike.
``agreement`` is the fraction of requests on which the engine's allow/deny equals pdx's; ``p50_us`` and
``p99_us`` are nearest-rank percentiles (:mod:`streams.bench.stats`).

pdx is also measured with the scenario padded to 10 and to 10,000 rules by generated rules for other actions
and resource types (and some for the same actions but other resource types), to show that the index keeps
cost independent of unrelated rules.
"""

from __future__ import annotations

import gc
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from time import perf_counter_ns
from typing import Any

from streams.bench.stats import summary
from streams.model import AccessRequest, Identity, RequestContext, Resource
from streams.policy.compiler import CompiledBundle
from streams.policy.evaluator import evaluate
from streams.policy.loader import policy_set_from_documents, read_yaml_file

SCENARIO_DIR = Path(__file__).resolve().parent / "engine_scenario"
NOW = datetime(2025, 6, 3, 10, 0, 0, tzinfo=UTC)
NOW_S = int(NOW.timestamp())


@dataclass
class Sample:
    request: AccessRequest
    identity: Identity


# ---- workload ----------------------------------------------------------------------------------------------


def _identities(rng: random.Random, n: int = 60) -> list[Identity]:
    repos = [f"github.com/acme/repo{i}" for i in range(6)]
    out = []
    for i in range(n):
        kind = rng.choice(["agent", "agent", "service_account", "service_account", "workload", "human"])
        out.append(Identity(
            id=f"{kind}-{i}",
            kind=kind,
            owner="team-" + str(i % 5),
            status="active" if rng.random() > 0.05 else rng.choice(["suspended", "decommissioned"]),
            environments=rng.sample(["production", "staging", "dev"], rng.randint(0, 3)),
            scopes=rng.sample(["api:read", "api:write", "api:confidential"], rng.randint(0, 3)),
            tags=rng.sample(["production", "privileged", "deployment"], rng.randint(0, 3)),
            approved_repositories=rng.sample(repos, rng.randint(0, 3)),
            risk_tier=rng.choice(["low", "medium", "high"]),
        ))
    return out


def generate_samples(n: int, seed: int = 7) -> list[Sample]:
    """``n`` requests over the scenario's actions with a mix of allowed and denied attributes."""
    rng = random.Random(seed)
    idents = _identities(rng)
    ips = ["10.1.2.3", "10.200.0.9", "172.20.1.1", "10.9.9.9", "172.32.0.1", "192.168.1.1", "203.0.113.5",
           "2001:db8::1", None]
    by_kind: dict[str, list[Identity]] = {}
    for ident in idents:
        by_kind.setdefault(ident.kind, []).append(ident)
    likely = {"db": ["agent"], "api": ["service_account", "workload"], "config": ["agent"],
              "secrets": ["service_account"]}
    out: list[Sample] = []
    for i in range(n):
        action = rng.choice(["db:connect", "db:query", "api:call", "config:read", "config:write", "secrets:read"])
        if rng.random() < 0.8:  # mostly the kinds the rules are about, so allows and denies both occur
            ident = rng.choice(by_kind[rng.choice(likely[action.split(":")[0]])])
        else:
            ident = rng.choice(idents)
        ctx = RequestContext()
        if action.startswith("db:"):
            res = Resource(id=f"db-{i % 13}", type="database",
                           environment=rng.choice(["production", "production", "staging", None]))
            ctx.requested_ttl_s = rng.choice([None, 0, 600, 7200, 1800])
        elif action == "api:call":
            res = Resource(id=f"api-{i % 17}", type="api",
                           sensitivity=rng.choice(["public", "internal", "internal", "confidential", "restricted",
                                                   None]))
            ctx.source_ip = rng.choice(ips)
            age = rng.choice([None, 60, 120, 600, 900, 901, 3600])
            ctx.token_issued_at = None if age is None else NOW - timedelta(seconds=age)
        elif action.startswith("config:"):
            res = Resource(id=f"cfg-{i % 7}", type="config", environment="staging")
        else:
            res = Resource(id=f"secret-{i % 11}", type="secret",
                           repository=rng.choice([None, *[f"github.com/acme/repo{k}" for k in range(6)]]))
        req = AccessRequest(request_id=f"r{i}", occurred_at=NOW, identity_id=ident.id, action=action,
                            resource=res, context=ctx)
        out.append(Sample(req, ident))
    return out


def scenario_documents() -> list[dict[str, Any]]:
    return [read_yaml_file(SCENARIO_DIR / "policies.yaml")]


def padding_documents(count: int, seed: int = 11) -> list[dict[str, Any]]:
    """``count`` generated rules for other actions / resource types, 100 rules per policy."""
    rng = random.Random(seed)
    docs: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = []
    for i in range(count):
        shape = i % 10
        if shape < 6:
            action: Any = {"equals": f"svc{i % 700}:op{i % 9}"}
            rtype = f"type{i % 40}"
        elif shape < 8:
            action = {"glob": f"ns{i % 300}:*"}
            rtype = f"type{i % 40}"
        else:  # same actions as the scenario, other resource types
            action = {"equals": rng.choice(["db:connect", "api:call", "secrets:read", "config:read"])}
            rtype = f"other{i}"
        rules.append({
            "id": f"gen-{i}",
            "effect": rng.choice(["allow", "deny", "step_up"]),
            "when": [
                {"action": action},
                {"resource.type": {"equals": rtype}},
                {"identity.kind": {"in": rng.sample(["agent", "service_account", "workload", "human"], 2)}},
                {"identity.tags": {"contains": rng.choice(["production", "privileged", "deployment"])}},
            ],
            "reason": {"code": "generated", "message": "generated rule"},
        })
        if len(rules) == 100 or i == count - 1:
            docs.append({"name": f"generated-{len(docs)}", "owner": "bench", "mode": "enforce",
                         "controls": [], "rules": rules})
            rules = []
    return docs


def pdx_bundle(total_rules: int) -> CompiledBundle:
    docs = scenario_documents()
    base = sum(len(d["rules"]) for d in docs)
    return policy_set_from_documents(docs + padding_documents(max(0, total_rules - base)), "<bench>").compile()


# ---- timing ------------------------------------------------------------------------------------------------


def _time_interleaved(calls: list[Callable[[int], str]], n: int, warmup: int,
                      block: int = 1000) -> list[tuple[list[int], list[str]]]:
    """Time every engine on the same requests, alternating engines block by block.

    Interleaving means a burst of load from elsewhere on the machine hits every engine alike, so the ratios
    between engines are trustworthy even when absolute numbers wobble.
    """
    for fn in calls:
        for i in range(min(warmup, n)):
            fn(i)
    results = [([0] * n, [""] * n) for _ in calls]
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for start in range(0, n, block):
            stop = min(n, start + block)
            for fn, (times, outcomes) in zip(calls, results, strict=True):
                for i in range(start, stop):
                    t0 = perf_counter_ns()
                    out = fn(i)
                    times[i] = perf_counter_ns() - t0
                    outcomes[i] = out
    finally:
        if gc_was_enabled:
            gc.enable()
    return results


def _row(engine: str, rules: int, times: list[int], outcomes: Sequence[str], reference: Sequence[str],
             **extra: Any) -> dict[str, Any]:
    n = len(times)
    total_s = sum(times) / 1e9
    agree = sum(1 for a, b in zip(outcomes, reference, strict=True) if a == b) / n if n else 0.0
    out = {
        "engine": engine,
        "rules": rules,
        "n": n,
        **summary(times, (50, 99), unit="us", scale=1e-3),
        "decisions_per_s": round(n / total_s) if total_s else 0,
        "agreement": round(agree, 6),
    }
    out.update(extra)
    return out


def pdx_call(samples: list[Sample], bundle: CompiledBundle) -> Callable[[int], str]:
    no_approvals: tuple[()] = ()
    prepared = [(s.request, s.identity) for s in samples]

    def call(i: int) -> str:
        request, identity = prepared[i]
        return evaluate(bundle, request, identity, no_approvals, NOW).decision

    return call


def _cedar_inputs(s: Sample) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    ident, req = s.identity, s.request
    res = req.resource
    r_attrs: dict[str, Any] = {"rtype": res.type}
    for k in ("environment", "sensitivity", "repository"):
        v = getattr(res, k)
        if v is not None:
            r_attrs[k] = v
    entities = [
        {"uid": {"type": "Identity", "id": ident.id}, "parents": [], "attrs": {
            "kind": ident.kind, "status": ident.status, "tags": ident.tags, "environments": ident.environments,
            "scopes": ident.scopes, "approved_repositories": ident.approved_repositories}},
        {"uid": {"type": "Resource", "id": res.id}, "parents": [], "attrs": r_attrs},
    ]
    ctx = _peer_context(req)
    request = {"principal": {"type": "Identity", "id": ident.id}, "action": {"type": "Action", "id": req.action},
               "resource": {"type": "Resource", "id": res.id}, "context": ctx}
    return request, entities


def _peer_context(req: Any) -> dict[str, Any]:
    """The request context as the Cedar and Rego scenarios read it (times as epoch seconds)."""
    ctx: dict[str, Any] = {"now_s": NOW_S}
    c = req.context
    if c.requested_ttl_s is not None:
        ctx["requested_ttl_s"] = c.requested_ttl_s
    if c.source_ip is not None:
        ctx["source_ip"] = c.source_ip
    if c.token_issued_at is not None:
        ctx["token_issued_at_s"] = int(c.token_issued_at.timestamp())
    return ctx


def _rego_input(s: Sample) -> dict[str, Any]:
    ident, req = s.identity, s.request
    res = req.resource
    resource = {k: v for k, v in (("id", res.id), ("type", res.type), ("environment", res.environment),
                                  ("sensitivity", res.sensitivity), ("repository", res.repository)) if v is not None}
    ctx = _peer_context(req)
    identity = {"id": ident.id, "kind": ident.kind, "status": ident.status, "tags": ident.tags,
                "approved_repositories": ident.approved_repositories}
    return {"action": req.action, "identity": identity, "resource": resource, "context": ctx}


def cedar_call(samples: list[Sample]) -> Callable[[int], str]:
    import cedarpy

    policies = cedarpy.PolicySet.from_str((SCENARIO_DIR / "scenario.cedar").read_text())
    prepared = []
    for s in samples:
        request, entities = _cedar_inputs(s)
        prepared.append((request, cedarpy.Entities.from_json_str(json.dumps(entities))))
    allow = cedarpy.Decision.Allow

    def call(i: int) -> str:
        request, entities = prepared[i]
        result = cedarpy.is_authorized(request, policies, entities)
        if result.diagnostics.errors:
            raise RuntimeError(f"cedar evaluation error on request {i}: {result.diagnostics.errors}")
        return "allow" if result.decision == allow else "deny"

    return call


def rego_call(samples: list[Sample]) -> Callable[[int], str]:
    import regopy

    interp = regopy.Interpreter()
    interp.add_module("scenario", (SCENARIO_DIR / "scenario.rego").read_text())
    bundle = interp.build("data.pdx.bench.decision")
    if not bundle.ok:
        raise RuntimeError("regopy could not build the scenario bundle")
    inputs = [regopy.Input(_rego_input(s)) for s in samples]

    def call(i: int) -> str:
        interp.set_input(inputs[i])
        out = interp.query_bundle(bundle)
        if not out.results:
            raise RuntimeError(f"rego returned no result for request {i}: {out}")
        return str(out.results[0].expressions[0])

    return call


def run_engine_bench(n: int = 20000, seed: int = 7, large: int = 10000, peers: bool = True,
                     log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Rows for pdx (10 rules), cedarpy, regopy (same scenario) and pdx at ``large`` rules."""
    log = log or (lambda _m: None)
    samples = generate_samples(n, seed)
    small, big = pdx_bundle(10), pdx_bundle(large)
    engines: list[tuple[str, int, Callable[[int], str]]] = [("pdx", small.rule_count, pdx_call(samples, small))]
    if peers:
        for name, make in (("cedarpy", cedar_call), ("regopy", rego_call)):
            try:
                engines.append((name, small.rule_count, make(samples)))
            except ImportError:
                log(f"{name}: not installed, skipped (install the optional 'bench' extra)")
    engines.append(("pdx", big.rule_count, pdx_call(samples, big)))
    timed = _time_interleaved([fn for _n, _r, fn in engines], n, warmup=min(1000, n))
    ref = timed[0][1]
    rows = [_row(name, rules, times, outs, ref) for (name, rules, _fn), (times, outs) in
            zip(engines, timed, strict=True)]
    base = rows[0]["p50_us"]
    for row in rows[1:]:
        if row["engine"] != "pdx":
            row["pdx_speedup"] = round(row["p50_us"] / base, 1) if base else None
        else:
            row["p50_vs_10_rules"] = round(row["p50_us"] / base, 2) if base else None
    allow_share = sum(1 for o in ref if o == "allow") / len(ref) if ref else 0.0
    log(f"{n} requests, {allow_share:.0%} allowed by pdx; engines timed interleaved in blocks of 1000")
    return rows
