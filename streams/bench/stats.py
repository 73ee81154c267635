"""The one percentile definition every benchmark reports with.

**Nearest rank**: the q-th percentile of n values is the ⌈q/100 · n⌉-th smallest (1-based; q = 0 gives the
smallest). It is always a value that was measured (no interpolation between two samples), it never decreases
as q grows, p100 is the maximum, and it needs no minimum sample count — so a two-trial propagation run and a
20,000-request engine run are summarized the same way. With no values it is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 ≤ q ≤ 100) of ``values``; NaN when there are none."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not between 0 and 100")
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def summary(values: Iterable[float], qs: Sequence[float] = (50, 99), *, unit: str = "ms", prefix: str = "",
            scale: float = 1.0, ndigits: int = 2) -> dict[str, float]:
    """``{f"{prefix}p{q}_{unit}": percentile × scale, rounded}`` for each q, in the order given.

    ``summary(latencies_ms, (50, 99), prefix="echo_")`` → ``{"echo_p50_ms": …, "echo_p99_ms": …}``;
    ``summary(times_ns, unit="us", scale=1e-3)`` → ``{"p50_us": …, "p99_us": …}``.
    """
    ordered = sorted(values)
    return {f"{prefix}p{q:g}_{unit}": round(percentile(ordered, q) * scale, ndigits) for q in qs}
