"""``pdx policy validate | lint | test | explain | bundle``.

Exit codes: 0 success; 1 the check found problems (invalid policies, lint warnings, failing cases);
2 a usage error (raised as UserError and printed as one line by streams.cli).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from streams.errors import UserError
from streams.policy.loader import (
    PolicySet,
    PolicyValidationError,
    Problem,
    bundle_version,
    load_policy_dir,
    read_yaml_file,
)


def _default_dir() -> Path:
    from streams.settings import POLICIES_DIR

    return POLICIES_DIR


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


def register(policy_subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    default = str(_default_dir())

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
