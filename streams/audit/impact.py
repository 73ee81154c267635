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

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streams import settings
from streams.audit.queries import T64, ch_time
from streams.audit.store import check_identifier
from streams.errors import UserError

NO_RULE = "(no matching rule)"


@contextmanager
def progress_bar(total: int | None, description: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr when ``enabled`` and stderr is a terminal; otherwise a no-op."""
    from rich.console import Console

    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda _n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def load_candidate(path: str | Path) -> Any:
    """Compile the policy directory ``path`` (validation problems raise a UserError listing them)."""
    from streams.policy import compile_bundle, load_policy_dir

    p = Path(path)
    if not p.is_dir():
        raise UserError(f"--candidate {p}: not a directory of policy YAML files")
    return compile_bundle(load_policy_dir(p).to_bundle_content())


def _cited_approvals(request: Any, identity: Any, now: datetime) -> list[Any]:
    from streams.inventory.models import Approval

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
    database: str = settings.CLICKHOUSE_DATABASE,
    table: str = settings.AUDIT_TABLE,
    approvals: str = "cited",
    max_examples: int = 20,
    examples_per_transition: int = 5,
    limit: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Replay the window under ``candidate`` (a compiled bundle) and summarise what would change."""
    from streams.inventory.models import Identity
    from streams.policy import evaluate
    from streams.policy.model import AccessRequest

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
    with progress_bar(total, "replaying decisions", progress) as advance:
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


def cmd_impact(args: argparse.Namespace) -> int:
    from streams.audit.cli import audit_session, window

    since, until = window(args, "7d")
    candidate = load_candidate(args.candidate)
    with audit_session(args) as audit:
        result = impact(
            audit.client,
            candidate,
            since,
            until,
            database=args.database,
            approvals=args.approvals,
            max_examples=args.examples,
            limit=args.limit,
            progress=not args.json,
        )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    pct = f"{result['changed'] / result['evaluated']:.2%}" if result["evaluated"] else "–"
    console.print(
        f"[bold]{result['evaluated']}[/bold] recorded decisions replayed under candidate "
        f"{str(result['candidate_version'])[:12]}: [bold]{result['changed']}[/bold] would change ({pct})"
        + (f", [red]{result['errors']} could not be replayed[/red]" if result["errors"] else "")
    )
    if result["by_transition"]:
        t = Table(title="by transition")
        t.add_column("from -> to")
        t.add_column("decisions", justify="right")
        for k, v in result["by_transition"].items():
            t.add_row(k, str(v))
        console.print(t)
        r = Table(title="by candidate rule")
        r.add_column("rule")
        r.add_column("transitions")
        for rule, c in list(result["by_rule"].items())[:30]:
            r.add_row(rule, ", ".join(f"{k}: {v}" for k, v in c.items()))
        console.print(r)
        e = Table(title="examples")
        for col in ("request_id", "identity_id", "action", "resource_id", "from", "to", "candidate_rules"):
            e.add_column(col, overflow="fold")
        for ex in result["examples"]:
            e.add_row(
                *(
                    ", ".join(ex[c]) if isinstance(ex[c], list) else str(ex[c])
                    for c in ("request_id", "identity_id", "action", "resource_id", "from", "to", "candidate_rules")
                )
            )
        console.print(e)
    for err in result["error_examples"]:
        print(f"pdx: could not replay {err['request_id']}: {err['error']}", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    from streams.audit.cli import _add_conn, _add_window

    p = sub.add_parser(
        "impact",
        help="what-if: replay recorded decisions under a candidate policy directory",
        description="Re-evaluate recorded requests with their recorded identity snapshots under a candidate bundle.",
    )
    p.set_defaults(func=cmd_impact)
    p.add_argument("--candidate", required=True, help="directory of candidate policy YAML files")
    _add_window(p, "7d")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (no progress bar)")
    p.add_argument(
        "--examples", type=int, default=20, help="at most this many example request ids (default: %(default)s)"
    )
    p.add_argument("--limit", type=int, default=None, help="replay at most this many records (oldest first)")
    p.add_argument(
        "--approvals",
        choices=("cited", "none"),
        default="cited",
        help="cited: a request citing context.approval_id replays as approved (default); none: no approvals",
    )
    _add_conn(p)
