"""The pure parts of the stream benchmarks: --find-max's step schedule and "sustained" predicate, and the RSS
reader."""

from __future__ import annotations

import os
from typing import Any

import pytest

from streams.bench.e2e import step_rates, sustained
from streams.bench.load import mix_outputs, rss_mb
from streams.errors import UserError


def test_multiplicative_steps_stop_at_the_max_rate() -> None:
    assert step_rates(500, "x1.5", 3000) == [500, 750, 1125, 1688, 2532]
    assert step_rates(500, "*2", 4000) == [500, 1000, 2000, 4000]


def test_additive_steps_include_the_max_rate() -> None:
    assert step_rates(500, "+500", 2000) == [500, 1000, 1500, 2000]
    assert step_rates(50, "+50", 100) == [50, 100]  # the integration test's two tiny steps


def test_a_tiny_factor_still_makes_progress() -> None:
    assert step_rates(1, "x1.01", 4) == [1, 2, 3, 4]


@pytest.mark.parametrize("step", ["1.5", "x1", "x0.5", "+0", "-100", "x", "fast"])
def test_a_step_that_does_not_grow_is_refused(step: str) -> None:
    with pytest.raises(UserError):
        step_rates(500, step, 2000)


def test_start_must_be_within_the_max() -> None:
    with pytest.raises(UserError):
        step_rates(3000, "x1.5", 2000)


def _step(**changes: Any) -> dict[str, Any]:
    step = {"offered_rps": 1000.0, "achieved_rps": 995.0, "p99_ms": 42.0, "requests": 5000, "replies": 5000,
            "audit_rows": 5000}
    return {**step, **changes}


def test_a_step_that_keeps_up_is_sustained() -> None:
    assert sustained(_step())
    assert sustained(_step(achieved_rps=990.0, p99_ms=99.9))


@pytest.mark.parametrize("changes", [
    {"achieved_rps": 989.9},           # below 99% of offered
    {"p99_ms": 100.0},                 # p99 must be below 100 ms
    {"p99_ms": float("nan")},          # no replies at all: no percentile
    {"p99_ms": None},
    {"replies": 4999},                 # a request unanswered
    {"audit_rows": 4999},              # a decision unaudited
    {"requests": 0, "replies": 0, "audit_rows": 0},
])
def test_a_step_that_falls_behind_is_not(changes: dict[str, Any]) -> None:
    assert not sustained(_step(**changes))


def test_rss_of_this_process_and_of_no_process() -> None:
    mine = rss_mb(os.getpid())
    assert mine is not None and mine > 1
    assert rss_mb(2**22 + 12345) is None  # above the kernel's pid limit


def test_the_floor_moves_the_bytes_pdx_moves() -> None:
    outputs = mix_outputs()
    assert set(outputs) == {b"agent-config-bot", b"agent-intern", b"svc-billing", b"wf-release-main"}
    for reply, audit in outputs.values():
        assert 200 < len(reply) < len(audit)  # an audit record holds the request, identity and decision
