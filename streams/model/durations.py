"""The one duration syntax of pdx: policies (``max_ttl: 1h``, ``token_age_s: {gt: 15m}``), ``pdx approve --ttl``
and the relative times of ``pdx audit --since 7d``.

A duration is one or more ``<number><unit>`` parts in the order weeks, days, hours, minutes, seconds — ``w``,
``d``, ``h``, ``m``, ``s`` — each at most once, e.g. ``90d``, ``1h30m``, ``1.5h``, ``2w``, ``45s`` (spaces between
parts are allowed). Units are lower case: ``M`` is not minutes (nor months). No sign: a duration is never
negative. Callers decide what else they accept (``--ttl`` also takes plain seconds; ``--since`` ignores case).
"""

from __future__ import annotations

import re

from streams.errors import quote

_NUM = r"(\d++(?:\.\d++)?)"  # possessive (Python 3.11): a run of digits is never re-split
#: Matched against the stripped text. Each run of spaces has exactly one place to go — the ``\s*`` after the
#: unit before it — and no quantifier gives back what it took (possessive), so matching is linear. The
#: previous form put a ``\s*`` between every optional part, and ``" " * 100 + "x"`` took about a minute to
#: fail (there were C(105, 5) ways to share the spaces out) — in a worker compiling a published bundle.
_DURATION_RE = re.compile(
    rf"(?:{_NUM}\s*+w\s*+)?(?:{_NUM}\s*+d\s*+)?(?:{_NUM}\s*+h\s*+)?(?:{_NUM}\s*+m\s*+)?(?:{_NUM}\s*+s)?"
)
_PART_SECONDS = (604800.0, 86400.0, 3600.0, 60.0, 1.0)

#: What the error message offers as examples (callers reuse it so every message shows the same syntax).
EXAMPLES = "90d, 12h, 15m, 30s, 1h30m"


def parse_duration_s(text: str) -> float:
    """``90d``, ``1h30m``, ``15m``, ``45s``, ``2w`` → seconds. Raises ValueError with an example on bad input."""
    m = _DURATION_RE.fullmatch(text.strip()) if isinstance(text, str) else None
    if not m or not any(m.groups()):
        raise ValueError(f"{quote(text, 60)} is not a duration (use e.g. {EXAMPLES})")
    return sum(float(g) * unit for g, unit in zip(m.groups(), _PART_SECONDS, strict=True) if g)
