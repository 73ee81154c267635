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


def cmd_report_evidence(args: argparse.Namespace) -> int:
    """Evidence per control (streams/audit/evidence.py): JSON on stdout with --json, else an HTML file."""
    import json

    from streams import config
    from streams.audit.evidence import build_evidence, load_bundles, load_catalogue, render_html
    from streams.audit.queries import jsonable

    since, until = window(args, "30d")
    catalogue = load_catalogue(args.catalogue)
    bundles = load_bundles(None if args.policy_source == "local" else config.load(), source=args.policy_source,
                           policies_dir=args.policies, timeout_s=args.kafka_timeout)
    with audit_session(args) as audit:
        data = build_evidence(audit, bundles, catalogue, since, until, examples=args.examples)
    if args.json:
        json.dump(jsonable(data), sys.stdout, indent=2)
        sys.stdout.write("\n")
    if args.out or not args.json:
        out = Path(args.out or "evidence.html")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(render_html(data), encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write report to {out}: {exc.strerror}") from exc
        print(f"wrote {out}", file=sys.stderr)
    exercised = sum(1 for c in data["controls"] if c["status"].startswith("exercised"))
    print(
        f"{data['totals']['decisions']} decisions; {exercised} controls exercised, {len(data['gaps'])} gaps; "
        f"policies from {data['policy_source']['kind']}: {data['policy_source']['note']}",
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
    p = _parser(sub, "evidence", "evidence per control: decisions, exceptions and gaps (JSON or HTML)",
                cmd_report_evidence)
    _add_window(p, "30d")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument("--out", default=None, help="HTML output file (default: evidence.html unless --json)")
    p.add_argument("--catalogue", default=None, help="control catalogue YAML (default: the shipped controls.yaml)")
    p.add_argument("--policy-source", choices=("auto", "kafka", "local"), default="auto",
                   help="bundle content and signers: the signed pdx.policies topic, the local directory, or "
                        "Kafka falling back to the directory (default: %(default)s)")
    p.add_argument("--policies", default=str(config_policies_dir()),
                   help="local policy directory (default: %(default)s)")
    p.add_argument("--kafka-timeout", type=float, default=15.0, help="seconds to read pdx.policies (default: 15)")
    p.add_argument("--examples", type=int, default=5, help="example request ids per list (default: 5)")


def config_policies_dir() -> Path:
    from streams import config

    return config.POLICIES_DIR
