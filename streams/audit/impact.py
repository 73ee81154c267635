"""``pdx policy impact``: replay recorded decisions under a candidate policy bundle (what-if).

Each audit record in the window is rebuilt from its stored ``request_json`` / ``identity_json`` (the identity
snapshot the original decision used) with the engine's ``from_dict``, evaluated with the candidate bundle at the
recorded decision time, and compared with the recorded outcome.

Faithful replay: the audit record carries what the decision read beyond its request and identity (``relied_on``,
migration 008): the approval that made ``context.approval_valid`` true (``approvals``) and the snapshots of the
delegation chain's principals (``principals_json``); a verified workload token's claims are in the request's
``pdx.token.*`` attributes. With ``--approvals recorded`` (default) the replay uses exactly these; ``cited`` (the
behaviour before 008) replays a request citing ``context.approval_id`` as if that approval was valid; ``none``
grants no approval. A principal missing from the snapshots replays as unknown to the inventory (records from
before 008 carry none). Decisions the worker made before any policy ran — a rejected workload token, a passed
deadline, an invalid reply route, an oversized request, or one that does not rebuild and was denied
``invalid_request`` — cannot change under a candidate bundle: they
are counted as ``decided_before_policy`` and as unchanged.

``recorded_bundles`` (``pdx policy impact --as-recorded``): instead of one candidate, each record is replayed under
the bundle of its own recorded ``bundle_version``; records whose bundle is not among those given are counted as
``skipped_bundle_unavailable``. Replaying traffic under the bundles it was decided with must change nothing.
Records that cannot be rebuilt are counted under ``errors`` (never silently dropped).

``--json`` prints ``{"evaluated", "changed", "unchanged", "errors", "by_transition": {"allow->deny": n, ...},
"by_rule": {rule: {"allow->deny": n}}, "examples": [...], ...}``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from streams import config
from streams.audit.queries import T64, ch_time
from streams.audit.store import APPROVAL_FIELDS, check_identifier, named_fields, to_utc
from streams.errors import UserError
from streams.model import ReasonCode

NO_RULE = "(no matching rule)"

#: ``progress(total, description)`` -> a context manager yielding ``advance(n)``.
ProgressFactory = Callable[[int | None, str], AbstractContextManager[Callable[[int], None]]]


@contextmanager
def _no_progress(total: int | None, description: str) -> Iterator[Callable[[int], None]]:
    yield lambda _n: None


def load_candidate(path: str | Path) -> Any:
    """Compile the policy directory ``path`` (validation problems raise a UserError listing them)."""
    from streams.policy import compile_bundle, load_policy_dir

    p = Path(path)
    if not p.is_dir():
        raise UserError(f"--candidate {p}: not a directory of policy YAML files")
    return compile_bundle(load_policy_dir(p).to_bundle_content())


#: Reason codes the worker decides with before any policy runs (a candidate bundle cannot change these).
PRE_POLICY_CODES = frozenset(
    code.value for code in ReasonCode
    if code.name.startswith("TOKEN_")
    or code in (ReasonCode.DEADLINE_EXPIRED, ReasonCode.INVALID_REPLY_ROUTE, ReasonCode.REQUEST_TOO_LARGE,
                ReasonCode.DELEGATION_UNPROVEN, ReasonCode.EVALUATION_FAILED)
)


def _recorded_approvals(request: Any, identity: Any, rows: Any) -> list[Any]:
    """The approvals the recorded decision relied on, as Approvals covering exactly this request."""
    from streams.model import Approval

    if identity is None:
        return []
    out = []
    for a in rows:
        approval_id, approved_by, granted_at, expires_at = named_fields(a, APPROVAL_FIELDS)
        out.append(Approval(approval_id=approval_id, identity_id=identity.id, action=request.action,
                            resource_id=request.resource.id, approved_by=approved_by,
                            granted_at=to_utc(granted_at, "granted_at"), expires_at=to_utc(expires_at, "expires_at")))
    return out


def _recorded_principals(request: Any, principals_json: str | None) -> list[Any]:
    """request.on_behalf_of resolved against the recorded principal snapshots (None: not recorded, unknown)."""
    from streams.model import Identity

    if not request.on_behalf_of:
        return []
    known = {p["id"]: p for p in json.loads(principals_json or "[]")}
    return [Identity.from_dict(known[pid]) if pid in known else None for pid in request.on_behalf_of]


def _cited_approvals(request: Any, identity: Any, now: datetime) -> list[Any]:
    from streams.model import Approval

    aid = request.context.approval_id
    if not aid or identity is None:
        return []
    return [
        Approval(
            approval_id=aid,
            identity_id=identity.id,
            action=request.action,
            resource_id=request.resource.id,
            approved_by="(replayed)",
            granted_at=now - timedelta(seconds=1),
            expires_at=now + timedelta(seconds=1),
        )
    ]


def impact(
    client: Any,
    candidate: Any,
    since: datetime,
    until: datetime,
    *,
    database: str = config.CLICKHOUSE_DATABASE,
    table: str = config.AUDIT_TABLE,
    approvals: str = "recorded",
    recorded_bundles: dict[str, Any] | None = None,
    max_delegation_depth: int = config.DEFAULT_MAX_DELEGATION_DEPTH,
    max_examples: int = 20,
    examples_per_transition: int = 5,
    limit: int | None = None,
    progress: ProgressFactory | None = None,
) -> dict[str, Any]:
    """Replay the window under ``candidate`` (a compiled bundle) and summarise what would change.

    ``progress(total, description)``, when given, is a context manager yielding ``advance(n)``; the CLI passes
    a progress bar (streams/console.py), so this module prints nothing itself.
    """
    from streams.model import AccessRequest, Identity
    from streams.model.delegation import DelegationProof
    from streams.model.tokens import VerifiedToken
    from streams.policy import evaluate

    if approvals not in ("recorded", "cited", "none"):
        raise UserError("--approvals must be 'recorded', 'cited' or 'none'")
    full = f"{check_identifier(database, 'database name')}.{check_identifier(table, 'table name')}"
    where = f"decided_at >= {{since:{T64}}} AND decided_at < {{until:{T64}}}"
    params: dict[str, Any] = {"since": ch_time(since), "until": ch_time(until)}
    total = int(
        client.query(f"SELECT uniqExact(request_id) FROM {full} WHERE {where}", parameters=params).result_rows[0][0]
    )
    if limit is not None:
        total = min(total, limit)
        params["limit"] = int(limit)
    sql = (
        "SELECT request_id, identity_id, action, resource_id, decision, matched_rules, evaluated_at, "
        "request_json, identity_json, bundle_version, reason_codes, approvals, principals_json "
        f"FROM {full} FINAL WHERE {where} ORDER BY decided_at, request_id"
        + (" LIMIT {limit:UInt64}" if limit is not None else "")
    )
    evaluated = changed = 0
    errors: list[dict[str, str]] = []
    error_count = 0
    by_transition: Counter[str] = Counter()
    by_rule: dict[str, Counter[str]] = defaultdict(Counter)
    examples: list[dict[str, Any]] = []
    per_transition: Counter[str] = Counter()
    identity_cache: dict[str, Any] = {}
    pre_policy = skipped = 0
    with (progress or _no_progress)(total, "replaying decisions") as advance:
        with client.query_row_block_stream(sql, parameters=params) as stream:
            for block in stream:
                for (rid, ident_id, action, resource_id, old, old_rules, evaluated_at, req_json, ident_json, version,
                     old_codes, used_approvals, principals_json) in block:
                    now = to_utc(evaluated_at, "evaluated_at")  # the engine's `now` when it decided
                    bundle = candidate
                    if recorded_bundles is not None:
                        bundle = recorded_bundles.get(version)
                        if bundle is None:
                            skipped += 1
                            continue
                    if PRE_POLICY_CODES.intersection(old_codes):
                        pre_policy += 1
                        evaluated += 1
                        continue
                    try:
                        request = AccessRequest.from_dict(json.loads(req_json))
                        identity = None
                        if ident_json:
                            identity = identity_cache.get(ident_json)
                            if identity is None:
                                if len(identity_cache) > 50_000:
                                    identity_cache.clear()
                                identity = identity_cache[ident_json] = Identity.from_dict(json.loads(ident_json))
                        if approvals == "recorded":
                            granted = _recorded_approvals(request, identity, used_approvals)
                        elif approvals == "cited":
                            granted = _cited_approvals(request, identity, now)
                        else:
                            granted = []
                        token = VerifiedToken.from_audit_attributes(request.context.attributes)
                        principals = _recorded_principals(request, principals_json)
                        proof = DelegationProof.from_audit_attributes(request.context.attributes)
                        new = evaluate(bundle, request, identity, granted, now, token, principals, max_delegation_depth,
                                       proof)
                    except (ValueError, KeyError, TypeError) as exc:
                        if "invalid_request" in old_codes:  # the worker could not read it either: denied as such
                            pre_policy += 1
                            evaluated += 1
                            continue
                        error_count += 1
                        if len(errors) < 10:
                            errors.append({"request_id": rid, "error": str(exc)})
                        continue
                    evaluated += 1
                    if new.decision != old:
                        changed += 1
                        key = f"{old}->{new.decision}"
                        by_transition[key] += 1
                        for rule in new.matched_rules or [NO_RULE]:
                            by_rule[rule][key] += 1
                        if per_transition[key] < examples_per_transition and len(examples) < max_examples:
                            per_transition[key] += 1
                            examples.append(
                                {
                                    "request_id": rid,
                                    "identity_id": ident_id,
                                    "action": action,
                                    "resource_id": resource_id,
                                    "decided_at": now.isoformat(),
                                    "from": old,
                                    "to": new.decision,
                                    "recorded_rules": list(old_rules),
                                    "candidate_rules": list(new.matched_rules),
                                    "candidate_reasons": [f"{r.code}: {r.message}" for r in new.reasons],
                                }
                            )
                advance(len(block))
    return {
        "evaluated": evaluated,
        "changed": changed,
        "unchanged": evaluated - changed,
        "errors": error_count,
        "error_examples": errors,
        "by_transition": dict(by_transition.most_common()),
        "by_rule": {
            rule: dict(c.most_common()) for rule, c in sorted(by_rule.items(), key=lambda kv: -sum(kv[1].values()))
        },
        "examples": examples,
        "candidate_version": "as recorded" if recorded_bundles is not None else getattr(candidate, "version", ""),
        "decided_before_policy": pre_policy,
        "skipped_bundle_unavailable": skipped,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "approvals": approvals,
    }
