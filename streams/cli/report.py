"""`pdx report risk`: the analysts' self-contained HTML risk report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from streams.cli.audit import _add_window, _parser, audit_session, window
from streams.errors import UserError


def cmd_report_risk(args: argparse.Namespace) -> int:
    from streams.audit.report import build_report_data, render_html

    since, until = window(args, "7d")
    with audit_session(args) as audit:
        data = build_report_data(audit, since, until, top=args.top)
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render_html(data), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write report to {out}: {exc.strerror}") from exc
    print(
        f"wrote {out} ({data['totals'].get('requests', 0)} decisions, {len(data['risk'])} identities scored)",
        file=sys.stderr,
    )
    return 0


def register(sub: Any) -> None:
    group = sub.add_parser("report", help="analyst reports")
    sub = group.add_subparsers(dest="report_command", metavar="SUBCOMMAND", required=True)
    p = _parser(sub, "risk", "self-contained HTML risk report with charts", cmd_report_risk)
    _add_window(p, "7d")
    p.add_argument("--out", default="report.html", help="output file (default: %(default)s)")
    p.add_argument("--top", type=int, default=15, help="identities in the top-risk chart (default: %(default)s)")
