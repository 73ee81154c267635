"""``pdx policy impact``: replay recorded decisions under a candidate policy bundle (what-if).

Each audit record in the window is rebuilt from its stored ``request_json`` / ``identity_json`` (the identity
snapshot the original decision used) with the engine's ``from_dict``, evaluated with the candidate bundle at the
recorded decision time, and compared with the recorded outcome.

Approvals are not part of an AuditRecord, so they are reconstructed: with ``--approvals cited`` (default) a request
that cites ``context.approval_id`` is replayed as if that approval was valid at the time; with ``--approvals none``
no approval is valid. Records that cannot be rebuilt are counted under ``errors`` (never silently dropped).

``--json`` prints ``{"evaluated", "changed", "unchanged", "errors", "by_transition": {"allow->deny": n, ...},
"by_rule": {rule: {"allow->deny": n}}, "examples": [...], ...}``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streams import config
from streams.audit.queries import T64, ch_time
from streams.audit.store import check_identifier
from streams.errors import UserError

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
    approvals: str = "cited",
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
    from streams.policy import evaluate

    if approvals not in ("cited", "none"):
        raise UserError("--approvals must be 'cited' or 'none'")
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
        "SELECT request_id, identity_id, action, resource_id, decision, matched_rules, decided_at, "
        "request_json, identity_json "
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
    with (progress or _no_progress)(total, "replaying decisions") as advance:
        with client.query_row_block_stream(sql, parameters=params) as stream:
            for block in stream:
                for rid, ident_id, action, resource_id, old, old_rules, decided_at, req_json, ident_json in block:
                    now = decided_at.replace(tzinfo=UTC) if decided_at.tzinfo is None else decided_at
                    try:
                        request = AccessRequest.from_dict(json.loads(req_json))
                        identity = None
                        if ident_json:
                            identity = identity_cache.get(ident_json)
                            if identity is None:
                                if len(identity_cache) > 50_000:
                                    identity_cache.clear()
                                identity = identity_cache[ident_json] = Identity.from_dict(json.loads(ident_json))
                        granted = _cited_approvals(request, identity, now) if approvals == "cited" else []
                        new = evaluate(candidate, request, identity, granted, now)
                    except (ValueError, KeyError, TypeError) as exc:
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
        "candidate_version": getattr(candidate, "version", ""),
        "since": since.isoformat(),
        "until": until.isoformat(),
        "approvals": approvals,
    }
