"""The one glob language of pdx: policy ``glob`` / ``not_glob``, approvals' action and resource, ``pdx audit search``.

A glob matches a *whole* string, case-sensitively, and means exactly what Python's ``fnmatch.fnmatchcase`` means:

- ``*`` any run of characters, including none and including ``:``, ``/`` and newlines (``db:*`` matches
  ``db:connect`` and ``db:a/b``);
- ``?`` exactly one character;
- ``[seq]`` one character of ``seq``, where ``a-z`` is a range (``db-[0-9]``); ``[!seq]`` one character *not*
  in ``seq``; a ``]`` right after ``[`` or ``[!`` is a member (``[]x]``); a ``[`` without a closing ``]`` is
  a literal ``[``;
- every other character stands for itself. There is no escape character; write ``[*]``, ``[?]`` or ``[[]``
  to match ``*``, ``?`` or ``[`` literally.

Why fnmatch: it is the standard library's definition, its regexes are built once and cached, and it avoids
pathological backtracking for patterns with several ``*``. Two consumers need more than a yes/no:

- the engine matches many patterns per condition (:func:`glob_predicate`, with fast paths for ``*``, exact
  strings and ``prefix*``);
- the audit search runs in ClickHouse (``match(column, re2)``), so :func:`glob_to_re2` writes the same glob as
  an RE2 regular expression. It is derived from the same tokens fnmatch reads (classes are translated by
  ``fnmatch.translate`` itself); tests/unit/policy/test_glob.py checks that it agrees with fnmatch.

Before this module the audit search read ``[`` literally while policies and approvals read it as a class; now
all three read it as a class (see streams/policy/LANGUAGE.md).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Iterator

from streams.model.cache import TextCache

# Characters RE2 (and Python's re) treat specially outside a class; escaping only these keeps other text as is.
_RE2_SPECIAL = frozenset("\\.+*?()|[]{}^$")


def has_wildcards(pattern: str) -> bool:
    """Whether ``pattern`` is a glob rather than one exact string."""
    return "*" in pattern or "?" in pattern or "[" in pattern


#: Longest pattern whose regex is cached. Patterns come from policies (compiled once, into the bundle's
#: predicates) and approvals (matched per request), written by people, and are a few dozen characters; a longer
#: one is compiled again on each use rather than held here (Python's ``re`` module keeps its own 512 most
#: recent regexes, whatever their size).
MAX_CACHED_PATTERN_CHARS = 1024
#: Compiled regexes by pattern. Bound: 4096 entries and 4 MiB accounted, counting each regex as 512 + 12 bytes
#: per pattern character (tracemalloc: ~430 bytes for ``db:abc*``, ~10.5 bytes per character of long ones).
_REGEX_CACHE: TextCache[re.Pattern[str]] = TextCache(
    max_entries=4096, max_key_chars=MAX_CACHED_PATTERN_CHARS, max_bytes=4 * 1024 * 1024
)


def _regex(pattern: str) -> re.Pattern[str]:
    rx = _REGEX_CACHE.get(pattern)
    if rx is None:
        rx = _REGEX_CACHE.put(pattern, re.compile(fnmatch.translate(pattern)), 512 + 12 * len(pattern))
    return rx


def glob_match(pattern: str, value: str) -> bool:
    """Whether ``value`` matches the glob ``pattern`` (the language described in this module's docstring)."""
    if pattern == "*":
        return True
    if not has_wildcards(pattern):
        return pattern == value
    return _regex(pattern).match(value) is not None


def glob_predicate(patterns: Iterable[str]) -> Callable[[str], bool]:
    """One matcher for "any of ``patterns``" (the engine's hot path).

    ``*`` matches everything, a pattern without wildcards is a set lookup and ``prefix*`` a ``startswith``; only
    the rest go through fnmatch's regexes.
    """
    exact: set[str] = set()
    prefixes: list[str] = []
    regexes: list[re.Pattern[str]] = []
    match_all = False
    for p in patterns:
        if p == "*":
            match_all = True
        elif not has_wildcards(p):
            exact.add(p)
        elif p.endswith("*") and not has_wildcards(p[:-1]):
            prefixes.append(p[:-1])
        else:
            regexes.append(_regex(p))
    if match_all:
        return lambda value: True
    starts = tuple(prefixes)

    def pred(value: str) -> bool:
        if value in exact:
            return True
        if starts and value.startswith(starts):
            return True
        for rx in regexes:
            if rx.match(value):
                return True
        return False

    return pred


def _tokens(pattern: str) -> Iterator[str]:
    """The pattern as fnmatch reads it: ``*``, ``?``, whole ``[...]`` classes, and single literal characters.

    The bracket scan is fnmatch.translate's: an optional ``!``, then an optional ``]``, then up to the next ``]``;
    without a closing ``]`` the ``[`` is a literal.
    """
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "[":
            j = i + 1
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j < n:
                yield pattern[i:j + 1]
                i = j + 1
                continue
        yield c
        i += 1


def _class_re2(token: str) -> str:
    """A ``[...]`` token as a regex class, translated by fnmatch (ranges, ``!``, escapes) and made RE2-safe."""
    translated = fnmatch.translate(token)  # "(?s:" + one class + ")\\Z"
    body = translated[len("(?s:"):-len(")\\Z")]
    if body == "(?!)":  # an empty range such as [z-a] never matches; RE2 has no lookahead, so an empty class
        return r"[^\s\S]"
    if not body.startswith("["):
        return body  # [!] is fnmatch's "any character": "."
    # fnmatch escapes with a backslash before punctuation (valid RE2). A bare "[" or "]" inside the class is
    # escaped too: RE2 could read "[:alpha:]" as a POSIX class, and a leading "]" is clearer escaped.
    head = 2 if body.startswith("[^") else 1
    out = [body[:head]]
    i = head
    while i < len(body) - 1:
        ch = body[i]
        if ch == "\\":
            out.append(body[i:i + 2])
            i += 2
            continue
        out.append("\\" + ch if ch in "[]" else ch)
        i += 1
    out.append("]")
    return "".join(out)


def glob_to_re2(pattern: str) -> str:
    """The glob as an anchored RE2 regular expression (for ClickHouse ``match()``, where ``.`` matches newlines)."""
    out: list[str] = []
    for tok in _tokens(pattern):
        if tok == "*":
            if not out or out[-1] != ".*":
                out.append(".*")
        elif tok == "?":
            out.append(".")
        elif len(tok) > 1:
            out.append(_class_re2(tok))
        else:
            out.append("\\" + tok if tok in _RE2_SPECIAL else tok)
    return "^" + "".join(out) + "$"
