"""The one glob language (streams.model.glob): engine, approvals and audit search agree with fnmatch."""

from __future__ import annotations

import fnmatch
import random
import re
import warnings
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.audit.queries import SearchFilters, glob_to_regex
from streams.model import Approval, Identity, RequestContext, Resource
from streams.model.glob import glob_match, glob_predicate, glob_to_re2, has_wildcards
from streams.policy import AccessRequest, evaluate, policy_set_from_documents

# every character with a meaning in globs or regexes, plus a little text
PATTERN_CHARS = "ab:x*?[]!-^\\.()+${}|\n "
VALUE_CHARS = "ab:x[]!-^\\.()+${}|\n "
NOW = datetime(2025, 6, 3, 10, 0, tzinfo=UTC)


def _re2_in_python(pattern: str, value: str) -> bool:
    """glob_to_re2's regex run by Python's re (ClickHouse's ``.`` matches newlines, hence re.S)."""
    rx = glob_to_re2(pattern)
    assert rx.startswith("^") and rx.endswith("$")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "possible nested set" for a literal [ in a class
        return re.fullmatch(rx[1:-1], value, flags=re.S) is not None


@given(st.text(alphabet=PATTERN_CHARS, max_size=8), st.text(alphabet=VALUE_CHARS, max_size=6))
def test_every_form_agrees_with_fnmatchcase(pattern: str, value: str) -> None:
    expected = fnmatch.fnmatchcase(value, pattern)
    assert glob_match(pattern, value) is expected
    assert glob_predicate([pattern])(value) is expected
    assert _re2_in_python(pattern, value) is expected


def test_the_audit_search_uses_the_same_translation() -> None:
    assert glob_to_regex is glob_to_re2


@pytest.mark.parametrize("pattern,value,expected", [
    ("db:*", "db:connect", True),
    ("db:*", "db:a/b", True),  # * crosses : and /
    ("*", "", True),
    ("db-?", "db-1", True),
    ("db-?", "db-12", False),
    ("db-[0-9]", "db-7", True),  # a class, as in policies since the beginning
    ("db-[0-9]", "db-[0-9]", False),
    ("db-[!0-9]", "db-x", True),
    ("[[]x]", "[x]", True),  # [[] is a literal [
    ("a[b", "a[b", True),  # an unclosed [ is literal
    ("[]x]", "]", True),
    ("DB:*", "db:x", False),  # case-sensitive
    ("[z-a]", "z", False),  # an empty range never matches
])
def test_examples(pattern: str, value: str, expected: bool) -> None:
    assert glob_match(pattern, value) is expected
    assert _re2_in_python(pattern, value) is expected


def test_many_patterns_in_one_predicate() -> None:
    pred = glob_predicate(["x-*", "db-?", "exact", "a[0-9]b"])
    assert [pred(v) for v in ("x-1", "db-1", "exact", "a5b", "db-12", "exac", "ab")] == [
        True, True, True, True, False, False, False]
    assert glob_predicate(["nope", "*"])("anything")


def test_re2_escapes_brackets_inside_classes() -> None:
    # RE2 would read "[:b]" inside a class as a POSIX class; a leading "]" is escaped for clarity
    assert glob_to_re2("[a[:b]") == r"^[a\[:b]$"
    assert glob_to_re2("[]x]") == r"^[\]x]$"
    assert glob_to_re2("[!a]") == "^[^a]$"
    assert glob_to_re2("a**b") == "^a.*b$"


def test_re2_agrees_with_fnmatch_in_clickhouse() -> None:
    """The regex runs in ClickHouse; chdb is the same engine in process."""
    chdb = pytest.importorskip("chdb")
    rnd = random.Random(7)
    pairs = [("".join(rnd.choice(PATTERN_CHARS) for _ in range(rnd.randint(0, 6))),
              "".join(rnd.choice(VALUE_CHARS) for _ in range(rnd.randint(0, 4)))) for _ in range(1500)]
    pairs += [("[a[:alpha:]]", "a]"), ("[[:alpha:]]", "[:]"), ("[!]x]", "y"), ("x\\y", "x\\y")]

    def lit(s: str) -> str:
        return "'" + s.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"

    sql = "SELECT [" + ",".join(f"match({lit(v)}, {lit(glob_to_re2(p))})" for p, v in pairs) + "]"
    got = str(chdb.query(sql, "TabSeparated")).strip().strip("[]").split(",")
    assert len(got) == len(pairs)
    wrong = [(p, v) for (p, v), g in zip(pairs, got, strict=True) if (g == "1") != fnmatch.fnmatchcase(v, p)]
    assert wrong == []


def test_engine_approvals_and_audit_search_read_brackets_alike() -> None:
    pattern, hit, miss = "orders-[ab]*", "orders-a1", "orders-[ab]1"
    # policy glob
    ps = policy_set_from_documents([{"name": "p", "owner": "o", "mode": "enforce", "controls": [], "rules": [
        {"id": "r", "effect": "allow", "when": [{"action": "db:connect"}, {"resource.id": {"glob": pattern}}],
         "reason": {"code": "r", "message": "m"}}]}])
    bundle = ps.compile()
    ident = Identity.from_dict({"id": "agent-1", "kind": "agent", "owner": "o"})

    def decide(rid: str) -> str:
        req = AccessRequest("r1", NOW, "agent-1", "db:connect", Resource(id=rid, type="database"), RequestContext())
        return evaluate(bundle, req, ident, [], NOW).decision

    assert (decide(hit), decide(miss)) == ("allow", "deny")
    # approval glob
    approval = Approval("a1", "agent-1", "db:connect", pattern, "carol", NOW - timedelta(hours=1),
                        NOW + timedelta(hours=1))
    assert approval.matches("agent-1", "db:connect", hit, NOW)
    assert not approval.matches("agent-1", "db:connect", miss, NOW)
    # audit search: a glob with only [..] is a glob (not an exact resource id)
    assert has_wildcards(pattern) and has_wildcards("a[b]") and not has_wildcards("db:connect")
    where, params = SearchFilters(resource="a[b]", action=pattern).where()
    assert "match(resource_id" in where and params["resource_re"] == "^a[b]$"
    assert _re2_in_python(pattern, hit) and not _re2_in_python(pattern, miss)
