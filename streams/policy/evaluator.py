"""The decision function. Pure: same inputs → same decision (``now`` is an argument, not read from a clock).

Combining: any matching deny → deny; else any step_up → step_up; else any allow → allow; else deny
``no_matching_rule``. Rules of ``monitor`` policies are evaluated on every request and reported in
``Decision.monitor`` as would-have outcomes; they never change the decision.

Fail closed before any rule runs (engine built-ins, reported with ``policy``/``rule`` null):
no bundle → ``no_policy_loaded``; no identity → ``unknown_identity``; status suspended / decommissioned →
``identity_suspended`` / ``identity_decommissioned``; a delegation chain (``on_behalf_of``) longer than the
maximum → ``delegation_too_deep``, naming a principal that is not a known identity → ``delegator_unknown``, or
one that is not active → ``delegator_suspended``; empty action or resource type → ``invalid_request``.
``matched_rules`` lists the rules of the deciding effect only (lower tiers are not evaluated once a higher
tier matched — that is what deny-overrides means, and it keeps the hot path short).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from time import perf_counter_ns

from streams.config import DEFAULT_MAX_DELEGATION_DEPTH
from streams.errors import quote
from streams.model import AccessRequest, Approval, Decision, Identity, MonitorOutcome, Reason, ReasonCode
from streams.model.delegation import DelegationProof
from streams.model.tokens import VerifiedToken
from streams.policy.compiler import EMPTY_TIERS, CompiledBundle, merge_obligations
from streams.policy.runtime import approval_relied_on

NO_POLICY = Reason(ReasonCode.NO_POLICY_LOADED.value, "no policy bundle is loaded; failing closed")
UNKNOWN_IDENTITY = Reason(ReasonCode.UNKNOWN_IDENTITY.value, "the identity is not in the inventory; failing closed")
SUSPENDED = Reason(ReasonCode.IDENTITY_SUSPENDED.value, "the identity is suspended")
DECOMMISSIONED = Reason(ReasonCode.IDENTITY_DECOMMISSIONED.value, "the identity is decommissioned")
INVALID = Reason(ReasonCode.INVALID_REQUEST.value, "the request has no action or no resource type")
NO_MATCH = Reason(ReasonCode.NO_MATCHING_RULE.value, "no rule allows this request (default deny)")
_OUTCOMES = ("deny", "step_up", "allow")
#: The codes the engine itself decides with (outside any rule); the worker and client add deadline/timeout codes.
BUILTIN_CODES = tuple(r.code for r in (NO_POLICY, UNKNOWN_IDENTITY, SUSPENDED, DECOMMISSIONED, INVALID, NO_MATCH))


def _builtin_deny(request: AccessRequest, reason: Reason, version: str, now: datetime, t0: int) -> Decision:
    return Decision(request.request_id, "deny", [reason], [], {}, [], version, now,
                    (perf_counter_ns() - t0) // 1000, "")


def _chain_problem(
    chain: Sequence[str], principals: Sequence[Identity | None] | None, max_depth: int
) -> Reason | None:
    """Why the delegation chain stops the request before any rule (None: every principal is a known, active
    identity). Every principal must be: an agent acting for a suspended human is denied."""
    if len(chain) > max_depth:
        return Reason(ReasonCode.DELEGATION_TOO_DEEP.value,
                      f"the request acts through {len(chain)} principals; at most {max_depth} are allowed")
    if principals is None or len(principals) != len(chain):
        return Reason(ReasonCode.DELEGATOR_UNKNOWN.value,
                      "the delegation chain was not resolved against the inventory; failing closed")
    for pid, p in zip(chain, principals, strict=True):
        if p is None or p.id != pid:
            return Reason(ReasonCode.DELEGATOR_UNKNOWN.value,
                          f"principal {quote(pid, 80)} of on_behalf_of is not in the inventory")
        if p.status != "active":
            return Reason(ReasonCode.DELEGATOR_SUSPENDED.value,
                          f"principal {quote(pid, 80)} of on_behalf_of is {p.status}")
    return None


def evaluate(
    bundle: CompiledBundle | None,
    request: AccessRequest,
    identity: Identity | None,
    approvals: Sequence[Approval],
    now: datetime,
    token: VerifiedToken | None = None,
    principals: Sequence[Identity | None] | None = (),
    max_delegation_depth: int = DEFAULT_MAX_DELEGATION_DEPTH,
    delegation: DelegationProof | None = None,
) -> Decision:
    """Decide ``request``. Never raises for bad policy data; always returns a Decision (fail closed).

    ``principals`` is ``request.on_behalf_of`` resolved against the inventory, in the same order (None for an
    id the inventory does not hold); without it (None, or the default) a non-empty chain is denied
    ``delegator_unknown``. The Decision's ``principals`` and ``relied_on_approvals`` say what it read beyond the
    identity.
    ``token`` is the request's verified workload token (``token.*`` attributes), or None when it carried none.
    Verifying ``request.token`` is the caller's job (the worker's Decider, streams/model/tokens.py): a token
    that fails is denied with its reason code before the engine runs, and the engine never reads the raw text.
    ``delegation`` is what proved the chain (``context.delegation.*``): proving it is the caller's job too
    (streams/model/delegation.py); an unproven chain is denied ``delegation_unproven`` before the engine runs."""
    t0 = perf_counter_ns()
    if now.tzinfo is not UTC:
        try:
            now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
        except (OverflowError, ValueError):  # an offset that pushes the clock out of range: fail closed
            clock = Reason(ReasonCode.INVALID_REQUEST.value, "the evaluation time is out of range; failing closed")
            return _builtin_deny(request, clock, bundle.version if bundle else "", now.replace(tzinfo=UTC), t0)
    if bundle is None:
        return _builtin_deny(request, NO_POLICY, "", now, t0)
    version = bundle.version
    if identity is None:
        return _builtin_deny(request, UNKNOWN_IDENTITY, version, now, t0)
    status = identity.status
    if status != "active":
        return _builtin_deny(request, DECOMMISSIONED if status == "decommissioned" else SUSPENDED, version, now, t0)
    chain = request.on_behalf_of
    if chain:
        problem = _chain_problem(chain, principals, max_delegation_depth)
        if problem is not None:
            denied = _builtin_deny(request, problem, version, now, t0)
            denied.principals = [p for p in principals or () if p is not None]  # what a replay needs
            return denied
        resolved: Sequence[Identity] = principals  # type: ignore[assignment]  # every one checked above
    else:
        resolved = ()
    action = request.action
    rtype = request.resource.type
    if not action or not rtype:
        return _builtin_deny(request, INVALID, version, now, t0)
    by_type = bundle._cache.get(action)
    tiers = by_type.get(rtype) if by_type is not None else None
    if tiers is None:
        tiers = bundle.candidates(action, rtype)
    if tiers is EMPTY_TIERS:
        return Decision(request.request_id, "deny", [NO_MATCH], [], {}, [], version, now,
                        (perf_counter_ns() - t0) // 1000, "")
    # Python 3.11 try blocks cost nothing unless something is raised.
    try:
        env = [request, identity, approvals, now, None, token, resolved, None, delegation]  # see runtime.new_env
        decide = tiers.decide
        if decide is not None:
            tier, winners = decide(env)
        else:
            tier, winners = 3, []
        watch = tiers.watch
        monitor: list[MonitorOutcome] = watch(env) if watch is not None else []
        if tier != 3:
            if len(winners) == 1:
                first = winners[0]
                reasons = [first.reason]
                matched = [first.id]
                obligations = merge_obligations(winners, env) if first.obligation_fns else {}
            else:
                reasons = [r.reason for r in winners]
                matched = [r.id for r in winners]
                obligations = {}
                for r in winners:
                    if r.obligation_fns:
                        obligations = merge_obligations(winners, env)
                        break
            decision = Decision(request.request_id, _OUTCOMES[tier], reasons, matched, obligations, monitor,
                                version, now, (perf_counter_ns() - t0) // 1000, "")
        else:
            decision = Decision(request.request_id, "deny", [NO_MATCH], [], {}, monitor, version, now,
                                (perf_counter_ns() - t0) // 1000, "")
        if env[4] is not None:  # a derived attribute was read: maybe context.approval_valid via an approval
            used = approval_relied_on(env)
            if used is not None:
                decision.relied_on_approvals = [used]
        if resolved:
            decision.principals = list(resolved)
        return decision
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError) as exc:
        # Malformed request data built in code (e.g. a naive datetime) must not crash a worker: fail closed.
        reason = Reason("invalid_request", f"the request could not be evaluated: {type(exc).__name__}: {exc}")
        return _builtin_deny(request, reason, version, now, t0)
