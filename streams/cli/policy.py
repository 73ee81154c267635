"""``pdx policy validate | lint | test | explain | bundle | publish | impact``.

Exit codes: 0 success; 1 the check found problems (invalid policies, lint warnings, failing cases);
2 a usage error (raised as UserError and printed as one line by streams.cli.main).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import getpass
import json
import sys
from pathlib import Path
from typing import Any

from streams import config
from streams.cli.audit import _add_conn, _add_window
from streams.console import progress_bar, say
from streams.errors import UserError
from streams.policy.loader import (
    PolicySet,
    PolicyValidationError,
    Problem,
    bundle_version,
    load_policy_dir,
    read_yaml_file,
)


class _DefaultDir:
    """The DIR default, looked up when a command opens it (``Path(args.dir)``), not when the parsers are
    built (that happens for every command, --help too): the checkout's policies/, else ./policies, else a
    UserError saying to pass DIR (an installed pdx run outside a checkout)."""

    def __fspath__(self) -> str:
        found = config.default_policies_dir()
        if found is None:
            raise UserError("no policy directory given and ./policies does not exist: pass DIR "
                            "(e.g. pdx policy validate path/to/policies)")
        return str(found)

    def __str__(self) -> str:
        found = config.default_policies_dir()
        return "./policies" if found is None else str(found)


def _default_dir() -> _DefaultDir:
    return _DefaultDir()


def _print_problems(problems: list[Problem]) -> None:
    for p in problems:
        print(str(p), file=sys.stderr)


def _load(path: Path) -> PolicySet | None:
    """The policy set, or None after printing every validation problem."""
    try:
        return load_policy_dir(path)
    except PolicyValidationError as exc:
        _print_problems(exc.problems)
        print(f"{len(exc.problems)} problem(s) in {path}", file=sys.stderr)
        return None


def cmd_validate(args: argparse.Namespace) -> int:
    ps = _load(Path(args.dir))
    if ps is None:
        return 1
    policies = ps.policies
    print(f"ok: {len(policies)} policies, {len(ps.rule_ids())} rules, {len(ps.schedules)} schedules "
          f"in {args.dir}; bundle version {ps.version}")
    return 0


def _tests_dir(args: argparse.Namespace) -> Path:
    return Path(args.tests) if args.tests else Path(args.dir) / "tests"


def cmd_lint(args: argparse.Namespace) -> int:
    from streams.policy.lint import lint_policy_set

    ps = _load(Path(args.dir))
    if ps is None:
        return 1
    tests = _tests_dir(args)
    warnings = lint_policy_set(ps, tests)
    _print_problems(warnings)
    if warnings:
        print(f"{len(warnings)} warning(s)", file=sys.stderr)
        return 0 if args.warn_only else 1
    print(f"ok: no warnings ({len(ps.rule_ids())} rules, tests in {tests})")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from streams.policy.testing import run_policy_tests

    ps = _load(Path(args.dir))
    if ps is None:
        return 1
    report = run_policy_tests(ps, _tests_dir(args))
    if args.json:
        print(json.dumps({
            "passed": report.passed,
            "cases": [{"file": r.file, "name": r.name, "passed": r.passed, "failures": r.failures,
                       "decision": r.decision.decision if r.decision else None} for r in report.results],
            "coverage": report.coverage,
            "uncovered_rules": report.uncovered,
            "problems": [p.to_dict() for p in report.problems],
        }, indent=2))
    else:
        current = None
        for r in report.results:
            if r.file != current:
                current = r.file
                print(f"{r.file}")
            print(f"  {'PASS' if r.passed else 'FAIL'}  {r.name}")
            for f in r.failures:
                print(f"        {f}")
        _print_problems(report.problems)
        n_pass = sum(r.passed for r in report.results)
        print(f"{n_pass}/{len(report.results)} cases passed; rule coverage "
              f"{len(report.rule_ids) - len(report.uncovered)}/{len(report.rule_ids)} ({report.coverage:.0%})")
        if report.uncovered:
            print("  rules no case exercises: " + ", ".join(report.uncovered))
    if not report.passed:
        return 1
    if report.coverage * 100 + 1e-9 < args.min_coverage:
        print(f"rule coverage {report.coverage:.0%} is below --min-coverage {args.min_coverage}%", file=sys.stderr)
        return 1
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from streams.policy.explain import explain, render_text
    from streams.policy.testing import CaseError, build_request_case

    if args.bundle:
        from streams.policy.compiler import compile_bundle

        _version, content = read_bundle_file(args.bundle)
        bundle = compile_bundle(content)
    else:
        ps = _load(Path(args.policies))
        if ps is None:
            return 1
        bundle = ps.compile()
    doc = read_yaml_file(Path(args.request))
    if not isinstance(doc, dict):
        raise UserError(f"{args.request}: a request file is a mapping with request, identity, resource, context, now")
    try:
        case = build_request_case(doc, doc.get("identities") or {}, None, Path(args.request).name)
    except CaseError as exc:
        raise UserError(str(exc)) from None
    ex = explain(bundle, case)
    if args.json:
        print(json.dumps(ex.to_dict(), indent=2, default=str))
    else:
        print(render_text(ex, show_all=args.all))
    return 0


def write_bundle_file(ps: PolicySet, out: str) -> str:
    """Write ``{"version", "content"}`` JSON (content = canonical policy JSON); returns the version."""
    content = ps.to_bundle_content()
    version = bundle_version(content)
    payload = json.dumps({"version": version, "content": content}, indent=None) + "\n"
    if out == "-":
        sys.stdout.write(payload)
    else:
        try:
            Path(out).write_text(payload, encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write bundle to {out}: {exc.strerror}") from None
    return version


def read_bundle_file(path: str | Path) -> tuple[str, str]:
    """(version, content) from a file written by ``pdx policy bundle``; checks the version matches."""
    try:
        data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read bundle {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not a bundle file (not JSON: {exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("content"), str) or not isinstance(
            data.get("version"), str):
        raise UserError(f"{path} is not a bundle file (expected {{\"version\", \"content\"}}; make one with "
                        "`pdx policy bundle DIR --out FILE`)")
    if bundle_version(data["content"]) != data["version"]:
        raise UserError(f"{path}: version does not match the content's sha256 (the file was edited); rebuild it")
    return data["version"], data["content"]


def cmd_bundle(args: argparse.Namespace) -> int:
    ps = _load(Path(args.dir))
    if ps is None:
        return 1
    version = write_bundle_file(ps, args.out)
    if args.out != "-":
        print(f"wrote {args.out}: {len(ps.rule_ids())} rules, version {version}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from streams.ops import publish_policies

    version = asyncio.run(
        publish_policies(args.directory, args.by or getpass.getuser(), cfg=config.load(), key=args.key)
    )
    print(version)
    say(f"published policy bundle {version[:12]} from {args.directory} to {config.TOPIC_POLICIES}")
    return 0


def cmd_impact(args: argparse.Namespace) -> int:
    from streams.audit.impact import impact, load_candidate
    from streams.cli.audit import audit_session, window

    since, until = window(args, "7d")
    candidates = [load_candidate(c) for c in args.candidate]
    if len(candidates) > 1 and not args.as_recorded:
        raise UserError("give one --candidate, or several with --as-recorded (each record replays under the one "
                        "with its recorded bundle version)")
    recorded = {c.version: c for c in candidates} if args.as_recorded else None
    with audit_session(args) as audit:
        result = impact(
            audit.client,
            candidates[0],
            since,
            until,
            database=args.database,
            approvals=args.approvals,
            recorded_bundles=recorded,
            max_delegation_depth=config.Settings.from_env().max_delegation_depth,
            max_examples=args.examples,
            limit=args.limit,
            progress=None if args.json else functools.partial(progress_bar, enabled=True),
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


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    group = sub.add_parser("policy", help="validate, lint, test, explain, bundle, publish policies; what-if impact")
    policy_subparsers = group.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)
    default = _default_dir()

    p = policy_subparsers.add_parser("validate", help="check policy files: schema, attributes, operators, types")
    p.add_argument("dir", nargs="?", default=default, help=f"policy directory (default {default})")
    p.set_defaults(func=cmd_validate)

    p = policy_subparsers.add_parser("lint", help="warn about unreachable, shadowed and untested rules")
    p.add_argument("dir", nargs="?", default=default)
    p.add_argument("--tests", help="test-case directory (default DIR/tests)")
    p.add_argument("--warn-only", action="store_true", help="exit 0 even when there are warnings")
    p.set_defaults(func=cmd_lint)

    p = policy_subparsers.add_parser("test", help="run the expected-decision cases in DIR/tests/*.yaml")
    p.add_argument("dir", nargs="?", default=default)
    p.add_argument("--tests", help="test-case directory (default DIR/tests)")
    p.add_argument("--min-coverage", type=float, default=0.0, metavar="PCT",
                   help="fail when fewer than PCT%% of rules are exercised (e.g. 100)")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=cmd_test)

    p = policy_subparsers.add_parser("explain", help="show which condition of each rule held or failed")
    p.add_argument("--request", required=True, help="YAML request file (request, identity, resource, context, now)")
    p.add_argument("--policies", default=default, help=f"policy directory (default {default})")
    p.add_argument("--bundle", help="explain against a bundle file instead of a policy directory")
    p.add_argument("--all", action="store_true", help="also show rules for other actions / resource types")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_explain)

    p = policy_subparsers.add_parser("bundle", help="write the canonical bundle (what the pipeline publishes)")
    p.add_argument("dir", nargs="?", default=default)
    p.add_argument("--out", required=True, help="output file ('-' for stdout)")
    p.set_defaults(func=cmd_bundle)

    p = policy_subparsers.add_parser(
        "publish", help="validate, bundle and publish a policy directory; prints the version"
    )
    p.add_argument("directory", nargs="?", default=default)
    p.add_argument("--by", help="publisher recorded in the bundle (default: current user)")
    p.add_argument(
        "--key", help="private key that signs the bundle (default: PDX_SIGNING_KEY_POLICY or <keys dir>/policy.key)"
    )
    p.set_defaults(func=cmd_publish)

    p = policy_subparsers.add_parser(
        "impact",
        help="what-if: replay recorded decisions under a candidate policy directory",
        description="Re-evaluate recorded requests with their recorded identity snapshots under a candidate bundle.",
    )
    p.set_defaults(func=cmd_impact)
    p.add_argument("--candidate", required=True, action="append",
                   help="directory of candidate policy YAML files (repeat with --as-recorded)")
    p.add_argument("--as-recorded", action="store_true",
                   help="faithful replay: each record under the --candidate whose bundle version it was decided "
                        "with (records of other bundles are skipped and counted); expect 0 changes")
    _add_window(p, "7d")
    p.add_argument("--json", action="store_true", help="print the summary as JSON (no progress bar)")
    p.add_argument(
        "--examples", type=int, default=20, help="at most this many example request ids (default: %(default)s)"
    )
    p.add_argument("--limit", type=int, default=None, help="replay at most this many records (oldest first)")
    p.add_argument(
        "--approvals",
        choices=("recorded", "cited", "none"),
        default="recorded",
        help="recorded: the approvals each decision relied on, from its audit record (default); cited: a request "
             "citing context.approval_id replays as approved; none: no approvals",
    )
    _add_conn(p)
