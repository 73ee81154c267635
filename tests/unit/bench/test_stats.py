"""The one percentile definition the benchmarks report with: nearest rank."""

from __future__ import annotations

import math

import pytest

from streams.bench.stats import percentile, summary


def test_nearest_rank_is_the_ceil_q_n_th_smallest() -> None:
    values = [15.0, 20.0, 35.0, 40.0, 50.0]  # the textbook example, given out of order below
    shuffled = [40.0, 15.0, 50.0, 35.0, 20.0]
    assert [percentile(shuffled, q) for q in (0, 5, 30, 40, 50, 100)] == [15.0, 15.0, 20.0, 20.0, 35.0, 50.0]
    assert percentile(values, 99) == 50.0


def test_it_is_always_a_measured_value_and_never_decreases() -> None:
    values = [float(v) for v in range(1, 101)]
    picks = [percentile(values, q) for q in range(101)]
    assert all(p in values for p in picks)
    assert picks == sorted(picks)
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50.0, 95.0, 99.0)


def test_one_value_and_no_values() -> None:
    assert percentile([7.0], 50) == percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_q_outside_0_100_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summary_names_scales_and_rounds() -> None:
    ns = [1_234, 2_346, 3_456, 4_567]
    assert summary(ns, unit="us", scale=1e-3) == {"p50_us": 2.35, "p99_us": 4.57}
    out = summary([1.0, 2.0, 3.0], (50, 95, 99), prefix="echo_", ndigits=1)
    assert list(out) == ["echo_p50_ms", "echo_p95_ms", "echo_p99_ms"]
    assert out == {"echo_p50_ms": 2.0, "echo_p95_ms": 3.0, "echo_p99_ms": 3.0}
    assert summary([0.5], (99.9,)) == {"p99.9_ms": 0.5}
