"""``pdx audit ...`` (incident response) and ``pdx report risk`` (analysts).

Output: a rich table on a terminal by default, ``--json`` (one JSON document on stdout) or ``--csv``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from streams import config
from streams.errors import UserError
from streams.model.durations import parse_duration_s


def parse_when(text: str | None, *, now: datetime | None = None, default: datetime | None = None) -> datetime:
    """A duration ago (``7d``, ``24h``, ``1h30m``: streams.model.durations; any case), ``now``, or an ISO-8601 time
    (naive = UTC)."""
    now = now or datetime.now(UTC)
    if text is None or text == "":
        if default is None:
            raise UserError("a time is required")
        return default
    if text.strip().lower() == "now":
        return now
    try:
        # relative times were always case-insensitive here ("7D"); in a --since there is no month to confuse
        return now - timedelta(seconds=parse_duration_s(text.lower()))
    except ValueError:
        pass
    except OverflowError:
        raise UserError(f"time {text!r} is too far in the past") from None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"cannot read time {text!r}: use e.g. 7d, 24h, 1h30m, now or 2026-01-31T12:00:00Z") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def window(args: argparse.Namespace, default_since: str = "24h") -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    since = parse_when(getattr(args, "since", None) or default_since, now=now)
    until = parse_when(getattr(args, "until", None), now=now, default=now)
    if since >= until:
        raise UserError(f"--since ({since.isoformat()}) must be before --until ({until.isoformat()})")
    return since, until


# ---- output ----------------------------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    from streams.audit.queries import jsonable

    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple, dict)):
        if isinstance(value, list) and value and isinstance(value[0], dict) and "message" in value[0]:
            return "; ".join(f"{r.get('code')}: {r.get('message')}" for r in value)
        if isinstance(value, list):
            return ", ".join(_cell(v) for v in value)
        return json.dumps(jsonable(value), separators=(",", ":"))
    return str(value)


def emit(args: argparse.Namespace, rows: list[dict[str, Any]], columns: Sequence[str], *, title: str = "") -> None:
    from streams.audit.queries import jsonable

    if getattr(args, "json", False):
        json.dump(jsonable(rows), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    if getattr(args, "csv", False):
        w = csv.writer(sys.stdout)
        w.writerow(columns)
        for row in rows:
            w.writerow([_cell(row.get(c)) for c in columns])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or None, show_lines=False, header_style="bold")
    for c in columns:
        table.add_column(c, overflow="fold")
    for row in rows:
        style = {"deny": "red", "step_up": "yellow", "allow": "green"}.get(str(row.get("decision", "")), "")
        table.add_row(*[_cell(row.get(c)) for c in columns], style=style or None)
    console = Console()
    console.print(table)
    if not rows:
        console.print("[dim]no matching records[/dim]")


def _add_output(p: argparse.ArgumentParser, csv_ok: bool = True) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="print JSON on stdout")
    if csv_ok:
        g.add_argument("--csv", action="store_true", help="print CSV on stdout")


def _add_conn(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--url", default=None, help=f"ClickHouse HTTP URL (default: ${config.ENV_CLICKHOUSE_URL} or the dev server)"
    )
    p.add_argument(
        "--database", default=config.CLICKHOUSE_DATABASE, help="ClickHouse database (default: %(default)s)"
    )


@contextmanager
def audit_session(args: argparse.Namespace) -> Iterator[Any]:
    """An :class:`Audit` for the CLI args; ClickHouse errors become one clear UserError line."""

    from streams.audit.queries import Audit
    from streams.audit.store import connect

    cfg = config.load()
    url = args.url or cfg.clickhouse_url
    client = connect(url, cfg=cfg, role="reader")
    try:
        with clickhouse_errors(url, args.database):
            yield Audit(client, args.database)
    finally:
        client.close()


@contextmanager
def clickhouse_errors(url: str, database: str, tables: str = "audit tables") -> Iterator[None]:
    """ClickHouse errors as one clear UserError line: missing tables, an unreachable server, a failed query."""
    from clickhouse_connect.driver.exceptions import ClickHouseError

    from streams.audit.store import unreachable

    try:
        yield
    except ClickHouseError as exc:
        text = str(exc)
        if "UNKNOWN_TABLE" in text or "UNKNOWN_DATABASE" in text:
            raise UserError(f"{tables} are missing in database {database!r} at {url}: run `pdx audit migrate`") from exc
        if "Connection" in text or ("connect" in text.lower() and "refused" in text.lower()):
            raise unreachable(url) from exc
        raise UserError(f"ClickHouse query failed: {text.splitlines()[0][:500]}") from exc


# ---- handlers ----------------------------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    from streams.audit.migrate import migrate
    from streams.audit.store import connect

    cfg = config.load()
    client = connect(args.url, cfg=cfg, role="admin")
    try:
        applied = migrate(client, args.database, cluster=cfg.clickhouse_cluster,
                          ttl_days=cfg.audit_ttl_days if args.ttl_days is None else args.ttl_days)
    finally:
        client.close()
    if args.json:
        print(json.dumps({"database": args.database, "applied": applied}))
    elif applied:
        print(f"applied migrations {', '.join(applied)} to {args.database}")
    else:
        print(f"{args.database} is up to date")
    return 0


def cmd_timeline(args: argparse.Namespace) -> int:
    from streams.audit.queries import TIMELINE_COLUMNS

    since, until = window(args)
    with audit_session(args) as audit:
        rows = audit.timeline(args.identity, since, until, limit=args.limit,
                              include_delegated=args.include_delegated)
    cols = (
        TIMELINE_COLUMNS
        if (args.json or args.csv)
        else ("decided_at", "request_id", "action", "resource_id", "decision", "reasons", "matched_rules")
    )
    if args.include_delegated:  # who asked, and for whom
        cols = ("identity_id", *cols) if args.json or args.csv else (
            "decided_at", "identity_id", "on_behalf_of", "request_id", "action", "resource_id", "decision", "reasons")
    emit(args, rows, cols, title=f"timeline of {args.identity} {since:%Y-%m-%d %H:%M} → {until:%Y-%m-%d %H:%M} UTC")
    return 0


def _print_approval_story(console: Any, st: dict[str, Any] | None) -> None:
    if not st:
        return
    console.print(f"[bold]approval request {st['approval_request_id']}:[/bold]")
    for d in st["opened_by"]:
        console.print(f"  {_cell(d['decided_at'])}  opened by the step_up of request {d['request_id']}")
    rec = st.get("request")
    if rec is None:
        console.print("  (its record on the approval-requests topic could not be read)")
    else:
        who = f" by {rec['resolved_by']} at {rec['resolved_at']}" if rec.get("resolved_by") else ""
        why = f": {rec['resolution']}" if rec.get("resolution") else ""
        trust = "" if rec.get("trusted") else "  [NOT signed by a trusted key]"
        console.print(f"  {rec['state']}{who}{why}{trust}")
    if st.get("time_to_resolve_s") is not None:
        console.print(f"  time to resolve: {st['time_to_resolve_s']} s")
    for d in st["relied_on_by"]:
        console.print(f"  {_cell(d['decided_at'])}  {d['decision']} for request {d['request_id']}, relying on it")


def cmd_explain(args: argparse.Namespace) -> int:
    from streams.audit.approvals import story
    from streams.audit.queries import jsonable

    with audit_session(args) as audit:
        row = audit.explain(args.request_id)
        if row is not None:  # step_up → approval request → who resolved it → the decision that relied on it
            row["approval_story"] = story(audit, row, config.load())
    if row is None:
        raise UserError(f"no audit record with request_id {args.request_id!r} in {args.database}")
    if args.json:
        print(json.dumps(jsonable(row), indent=2))
        return 0
    from rich.console import Console
    from rich.json import JSON
    from rich.table import Table

    console = Console()
    summary = Table(show_header=False, title=f"decision {row['request_id']}")
    summary.add_column("field", style="bold")
    summary.add_column("value", overflow="fold")
    for key in (
        "decision",
        "identity_id",
        "action",
        "resource_id",
        "resource_type",
        "resource_environment",
        "resource_sensitivity",
        "on_behalf_of",
        "source_ip",
        "occurred_at",
        "received_at",
        "decided_at",
        "bundle_version",
        "worker_id",
        "source_topic",
        "source_partition",
        "source_offset",
        "credential_age_days",
    ):
        summary.add_row(key, _cell(row.get(key)))
    summary.add_row("timings", _cell(row["timings"]))
    for p in row.get("principals") or ():  # the delegation chain as the inventory held it
        summary.add_row("on behalf of", f"{p['id']} ({p['kind']}, {p['status']}; scopes "
                                        f"{', '.join(p.get('scopes') or ()) or 'none'})")
    for a in row.get("approvals") or ():  # what made context.approval_valid true (named tuples come as dicts)
        summary.add_row("approval relied on", f"{a['approval_id']} by {a['approved_by']}, expires {a['expires_at']}")
    console.print(summary)
    reasons = Table(title="reasons")
    for c in ("code", "message", "policy", "rule"):
        reasons.add_column(c, overflow="fold")
    for r in row["reasons"]:
        reasons.add_row(*(str(r.get(c, "")) for c in ("code", "message", "policy", "rule")))
    console.print(reasons)
    console.print(f"[bold]matched rules:[/bold] {_cell(row['matched_rules']) or '(none)'}")
    console.print(f"[bold]obligations:[/bold] {_cell(row['obligations']) or '(none)'}")
    if row["monitor"]:
        console.print(f"[bold]monitor:[/bold] {_cell(row['monitor'])}")
    _print_approval_story(console, row.get("approval_story"))
    console.print("[bold]request:[/bold]")
    console.print(JSON(json.dumps(row["request"])))
    console.print("[bold]identity snapshot:[/bold]")
    console.print(JSON(json.dumps(row["identity"])) if row["identity"] else "(unknown identity)")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from streams.audit.queries import SEARCH_COLUMNS, SearchFilters

    since, until = window(args)
    filters = SearchFilters(
        since=since,
        until=until,
        decision=args.decision,
        reason_code=args.reason,
        action=args.action,
        resource=args.resource,
        environment=args.environment,
        identity=args.identity,
        policy=args.policy,
        rule=args.rule,
    )
    with audit_session(args) as audit:
        rows = audit.search(filters, limit=args.limit)
    emit(args, rows, SEARCH_COLUMNS, title="audit search")
    return 0


def cmd_top(args: argparse.Namespace) -> int:
    since, until = window(args, "7d")
    with audit_session(args) as audit:
        rows = audit.top(args.by, since, until, limit=args.limit)
    emit(
        args, rows, ("identity_id", "kind", "owner", args.by, "requests", "share"), title=f"top identities by {args.by}"
    )
    return 0


def cmd_risk(args: argparse.Namespace) -> int:
    from streams.audit.risk import risk_scores

    since, until = window(args, "7d")
    with audit_session(args) as audit:
        rows = risk_scores(audit, since, until, limit=args.limit)
    cols = (
        "identity_id",
        "kind",
        "owner",
        "score",
        "requests",
        "deny_rate",
        "step_up_rate",
        "restricted_rate",
        "off_hours_rate",
        "stale_credentials",
        "resource_breadth",
        "credential_age_days",
    )
    emit(args, rows, cols, title="risk score per identity (0-100)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0: the trail is intact; 1: a broken, missing, altered or forged record or checkpoint (or, with
    --require-signed / --require-anchored, unsigned checkpoints / unanchored records); 2: cannot check."""

    from streams.audit.store import connect
    from streams.audit.verify import format_text, verify
    from streams.contracts import signing

    since, until = window(args, "7d")
    cfg = config.load()
    url = args.url or cfg.clickhouse_url
    trusted = signing.trusted_keys(cfg)
    client = connect(url, cfg=cfg, role="reader")
    try:
        with clickhouse_errors(url, args.database, "audit chain tables"):
            report = verify(
                client, args.database, since, until, trusted=trusted, grace_s=args.grace,
                require_signed=args.require_signed, require_anchored=args.require_anchored,
            )  # fmt: skip
    finally:
        client.close()
    if args.json:
        print(json.dumps(report.to_json(args.limit), indent=2))
    else:
        for line in format_text(report, args.limit):
            print(line)
        if not trusted.key_ids(signing.AUDIT):
            print(f"note: no key is trusted for audit checkpoints (put audit*.pub in {cfg.signing_keys_dir} or "
                  f"set {config.ENV_TRUSTED_KEYS_PREFIX}AUDIT): signed checkpoints cannot be checked", file=sys.stderr)
    return 0 if report.ok else 1


# ---- registration ----------------------------------------------------------------------------------------------


def _parser(sub: Any, name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    p.set_defaults(func=func)
    _add_conn(p)
    return p


def _add_window(p: argparse.ArgumentParser, since: str) -> None:
    p.add_argument("--since", default=since, help="start: 7d, 24h, 30m or ISO time (default: %(default)s ago)")
    p.add_argument("--until", default=None, help="end (exclusive): same forms (default: now)")


def register(sub: Any) -> None:
    group = sub.add_parser("audit", help="investigate recorded decisions in ClickHouse")
    sub = group.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)
    p = _parser(sub, "migrate", "create/upgrade the audit tables and rollups in ClickHouse (idempotent)", cmd_migrate)
    p.add_argument(
        "--ttl-days",
        type=int,
        default=None,
        help=f"retention in days (default: ${config.ENV_AUDIT_TTL_DAYS} or {config.DEFAULT_AUDIT_TTL_DAYS})",
    )
    p.add_argument("--json", action="store_true", help="print the applied versions as JSON")

    p = _parser(sub, "timeline", "what an identity asked, what was decided and why, in order", cmd_timeline)
    p.add_argument("--identity", required=True, help="identity id")
    p.add_argument("--include-delegated", action="store_true",
                   help="also what agents did on this identity's behalf (it is in their on_behalf_of chain)")
    _add_window(p, "24h")
    p.add_argument("--limit", type=int, default=1000, help="at most this many rows (default: %(default)s)")
    _add_output(p)

    p = _parser(sub, "explain", "the whole audit record of one decision", cmd_explain)
    p.add_argument("request_id")
    _add_output(p, csv_ok=False)

    p = _parser(
        sub, "search", "find decisions by outcome, reason, action, resource, environment, policy/rule, time", cmd_search
    )
    p.add_argument("--decision", choices=("allow", "deny", "step_up"))
    p.add_argument("--reason", help="reason code, e.g. no_matching_rule")
    p.add_argument("--action", help="action glob, e.g. 'secrets:*'")
    p.add_argument("--resource", help="resource id or glob")
    p.add_argument("--environment", help="resource environment")
    p.add_argument("--identity", help="identity id")
    p.add_argument("--policy", help="policy id (from reasons or matched rule prefix)")
    p.add_argument("--rule", help="matched rule id")
    _add_window(p, "24h")
    p.add_argument("--limit", type=int, default=200, help="at most this many rows, newest first (default: %(default)s)")
    _add_output(p)

    p = _parser(sub, "top", "identities with the most denies, step-ups or restricted-resource requests", cmd_top)
    p.add_argument("--by", required=True, choices=("denies", "step_ups", "restricted_access"))
    _add_window(p, "7d")
    p.add_argument("--limit", type=int, default=20)
    _add_output(p)

    p = _parser(
        sub, "verify",
        "recompute the audit hash chains and check the signed checkpoints; exit 1 on a broken, missing, "
        "altered or forged record (streams/audit/verify.py)",
        cmd_verify,
    )  # fmt: skip
    _add_window(p, "7d")
    p.add_argument("--grace", type=float, default=60.0,
                   help="seconds a checkpoint may wait for its records to reach ClickHouse (default: %(default)s)")
    p.add_argument("--require-signed", action="store_true", help="fail when a checkpoint is unsigned")
    p.add_argument("--require-anchored", action="store_true",
                   help="fail when records follow their chain's last signed checkpoint")
    p.add_argument("--limit", type=int, default=50, help="problems listed at most (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")

    p = _parser(sub, "risk", "risk score per identity (see streams/audit/risk.py for the formula)", cmd_risk)
    _add_window(p, "7d")
    p.add_argument("--limit", type=int, default=50)
    _add_output(p)
