"""The benchmark harness runs and the three scenario encodings (pdx, Cedar, Rego) agree. No timing asserted."""

import json

import pytest

from streams.bench.engine import generate_samples, pdx_bundle, run_engine_bench
from streams.cli.main import main


def test_pdx_only_bench_produces_rows_for_10_and_large_rule_counts():
    rows = run_engine_bench(n=300, large=2000, peers=False)
    assert [(r["engine"], r["rules"]) for r in rows] == [("pdx", 10), ("pdx", 2000)]
    for r in rows:
        assert r["n"] == 300 and r["agreement"] == 1.0
        assert 0 < r["p50_us"] <= r["p99_us"] and r["decisions_per_s"] > 0


def test_generated_workload_has_both_outcomes():
    from streams.bench.engine import NOW
    from streams.policy.evaluator import evaluate

    b = pdx_bundle(10)
    outcomes = {evaluate(b, s.request, s.identity, (), NOW).decision for s in generate_samples(500)}
    assert outcomes == {"allow", "deny"}


def test_peers_agree_with_pdx_on_the_scenario():
    pytest.importorskip("cedarpy")
    pytest.importorskip("regopy")
    rows = run_engine_bench(n=400, large=100, peers=True)
    by_engine = {r["engine"]: r for r in rows if r["engine"] != "pdx"}
    assert by_engine["cedarpy"]["agreement"] == 1.0
    assert by_engine["regopy"]["agreement"] == 1.0


def test_cli_prints_a_json_list(capsys):
    assert main(["bench", "engine", "--json", "-n", "200", "--large-rules", "50", "--no-peers"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list) and {r["engine"] for r in rows} == {"pdx"}
    assert set(rows[0]) >= {"engine", "rules", "n", "p50_us", "p99_us", "decisions_per_s", "agreement"}
