"""The README's main command and the stream benchmarks run against the test services and report what they
must (their speed is not asserted here: targets live in the benchmarks' own output)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from streams import config as settings

pytestmark = [pytest.mark.integration, pytest.mark.e2e]



def _pdx(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streams.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=600, check=False)


def test_demo_json(stack_env: dict[str, str]) -> None:
    result = _pdx(stack_env, "demo", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)  # stdout is clean JSON; progress went to stderr
    assert out["requests"] == len(out["scenarios"]) >= 15
    assert out["audit_rows"] == out["requests"]
    assert all(s["ok"] for s in out["scenarios"]), [s for s in out["scenarios"] if not s["ok"]]
    names = " ".join(s["name"] for s in out["scenarios"])
    assert "kill switch" in names and "unknown identity" in names
    assert {s["decision"] for s in out["scenarios"]} == {"allow", "deny", "step_up"}
    assert out["timeline"] and all(row["request_id"] for row in out["timeline"])
    assert open(out["report"], encoding="utf-8").read().lstrip().lower().startswith("<!doctype html")


def test_bench_e2e_reports_every_field(stack_env: dict[str, str]) -> None:
    result = _pdx(stack_env, "bench", "e2e", "--rate", "50", "--duration", "2", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    for key in ("offered_rps", "achieved_rps", "p50_ms", "p95_ms", "p99_ms", "requests", "replies", "audit_rows",
                "echo_p50_ms", "echo_p99_ms"):
        assert key in out, key
    assert out["requests"] == 100 and out["replies"] == out["audit_rows"] == out["requests"]
    assert 0 < out["echo_p50_ms"] <= out["echo_p99_ms"] and 0 < out["p50_ms"] <= out["p99_ms"]
    assert out["worker_rss_mb"] > 20  # a live python worker's resident memory, in MiB


def test_bench_e2e_find_max_reports_every_step(stack_env: dict[str, str]) -> None:
    result = _pdx(stack_env, "bench", "e2e", "--find-max", "--start", "50", "--step", "+50", "--max-rate", "100",
                  "--step-duration", "1", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["schedule"] == {"start_rps": 50, "step": "+50", "max_rps": 100, "step_duration_s": 1}
    steps = out["steps"]
    assert [s["offered_rps"] for s in steps] == [50, 100][: len(steps)] and steps
    for s in steps:
        assert s["requests"] == s["offered_rps"] and 0 < s["p50_ms"] <= s["p99_ms"], s
        assert s["achieved_rps"] > 0 and s["worker_rss_mb"] > 20 and isinstance(s["sustained"], bool), s
    sustained = [s for s in steps if s["sustained"]]
    assert all(s["replies"] == s["audit_rows"] == s["requests"] for s in sustained)
    assert out["max_sustained_rps"] == (sustained[-1]["offered_rps"] if sustained else None)
    assert out["worker_rss_mb"] > 20


def test_bench_propagation_reports_every_field(stack_env: dict[str, str]) -> None:
    result = _pdx(stack_env, "bench", "propagation", "--trials", "2", "--workers", "1", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["trials"] == 2
    for key in ("suspend_p50_ms", "suspend_p99_ms", "publish_p50_ms", "publish_p99_ms"):
        assert out[key] > 0, key


def test_bench_drain_answers_the_whole_backlog(stack_env: dict[str, str]) -> None:
    # Small fetches, so that even this small backlog is answered in many batches and a rate can be timed.
    result = _pdx({**stack_env, settings.ENV_WORKER_BATCH_MAX: "100"}, "bench", "drain", "--requests", "2000", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["requests"] == out["replies"] == 2000 and out["decisions_per_s"] > 0
    assert out["worker_rss_mb"] > 20
    assert out["floor_events"] == 2000 and out["floor_per_s"] > 0 and out["floor_decode_per_s"] > 0
    assert out["ratio_to_floor"] == pytest.approx(out["decisions_per_s"] / out["floor_per_s"], rel=0.01)


def test_bench_floor_passes_every_record_through(stack_env: dict[str, str]) -> None:
    result = _pdx(stack_env, "bench", "floor", "--requests", "500", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["floor_events"] == 500
    for key in ("floor_seconds", "floor_per_s", "floor_decode_seconds", "floor_decode_per_s", "floor_rss_mb"):
        assert out[key] > 0, key


def test_bench_memory_reads_the_ready_workers_rss(stack_env: dict[str, str]) -> None:
    result = _pdx(stack_env, "bench", "memory", "--identities", "2000", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    assert out["identities"] == 2000 and out["demo_identities"] > 0
    assert out["worker_rss_mb"] > 20 and out["baseline_worker_rss_mb"] > 20 and out["worker_ready_s"] > 0
