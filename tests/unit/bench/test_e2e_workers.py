"""The pure parts of `pdx bench e2e --workers N`: parsing the counts, the partition check, the mix spread over
the partitions, and how per-N results are shaped."""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime
from typing import Any

import pytest

from streams import config
from streams.bench.e2e import (
    Plan,
    _Run,
    check_partitions,
    find_max_result,
    keyed_result,
    parse_workers,
    per_worker,
    worker_ids,
)
from streams.bench.load import (
    MIX,
    CpuMeter,
    check_covers,
    clone_identities,
    cpu_seconds,
    machine_busy_seconds,
    spread_identities,
    spread_mix,
)
from streams.errors import UserError
from streams.kafka.state import partition_for
from streams.model.inventory_file import read_inventory


@pytest.mark.parametrize(("text", "counts"), [("1", [1]), ("1,2,4", [1, 2, 4]), (" 4, 2 ", [4, 2]), ("32", [32])])
def test_worker_counts_are_measured_in_the_order_given(text: str, counts: list[int]) -> None:
    assert parse_workers(text) == counts


@pytest.mark.parametrize("text", ["0", "-1", "two", "1,,2", "1.5", "", "33", "2,1,2"])
def test_a_bad_worker_count_is_refused(text: str) -> None:
    with pytest.raises(UserError, match="--workers"):
        parse_workers(text)


def test_the_first_bench_worker_is_the_one_the_other_benchmarks_use() -> None:
    from streams.bench.load import BENCH_WORKER

    assert worker_ids(3) == [BENCH_WORKER, "bench-worker-2", "bench-worker-3"]


def test_fewer_partitions_than_workers_says_how_to_get_more() -> None:
    check_partitions(4, 4)
    check_partitions(8, 2)
    with pytest.raises(UserError) as err:
        check_partitions(2, 4)
    message = str(err.value)
    assert "2 partition(s)" in message and "4 workers" in message and "2 would idle" in message
    assert f"{config.ENV_REQUEST_PARTITIONS}=4" in message


@pytest.mark.parametrize("partitions", [1, 2, 4, 7, 16])
def test_the_spread_mix_gives_every_partition_every_shape(partitions: int) -> None:
    mix = spread_mix(partitions)
    check_covers(mix, partitions)
    assert len(mix) == len(MIX) * partitions
    per_partition = Counter(p for *_rest, p in mix)
    assert per_partition == dict.fromkeys(range(partitions), len(MIX))
    for j, (ident, action, resource, context, partition) in enumerate(mix):
        original = MIX[j % len(MIX)]
        assert ident.startswith(original[0] + ".") and (action, resource, context) == original[1:]
        assert partition_for(ident, partitions) == partition  # the partition Kafka will route it to


def test_the_copies_are_distinct_and_one_per_partition() -> None:
    copies = spread_identities(4)
    assert set(copies) == {m[0] for m in MIX}
    ids = [i for per in copies.values() for i in per]
    assert len(ids) == len(set(ids)) == 4 * len(copies)


def test_the_mix_alone_cannot_cover_many_partitions() -> None:
    # The reason for the copies: four identities cannot cover eight partitions.
    originals = [(i, a, r, c, partition_for(i, 8)) for i, a, r, c in MIX]
    with pytest.raises(UserError, match="no identity of the mix is keyed to partition"):
        check_covers(originals, 8)


def test_a_mix_entry_on_the_wrong_partition_is_refused() -> None:
    ident, action, resource, context, partition = spread_mix(4)[0]
    with pytest.raises(UserError, match="is keyed to partition"):
        check_covers([(ident, action, resource, context, (partition + 1) % 4)], 4)


def test_copies_are_the_demo_records_under_another_id() -> None:
    copies = spread_identities(2)
    records = clone_identities(copies)
    originals = {i.id: i.to_dict() for i in read_inventory(config.require_demo_inventory("test"))}
    assert [r["id"] for r in records] == [i for per in copies.values() for i in per]
    for record in records:
        original = originals[record["id"].split(".bench-")[0]]
        # Relative times ("now-200d") are resolved at each read: compare all but the timestamps.
        assert _timeless({**record, "id": original["id"]}) == _timeless(original)


def _timeless(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if not isinstance(v, datetime)}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


def test_copying_an_identity_missing_from_the_inventory_is_refused() -> None:
    with pytest.raises(UserError, match="not in the demo inventory"):
        clone_identities({"nobody-here": ["nobody-here.bench-0"]})


def _run(answered: dict[int, Counter[str]], cpu: dict[str, float | None]) -> _Run:
    return _Run([1.0], 1, 1, 1.0, {}, answered, cpu)


def test_each_worker_reports_the_partitions_it_answered() -> None:
    plan = Plan(["w1", "w2", "w3"], 4, [])
    run = _run({0: Counter(w1=5), 1: Counter(w2=5), 2: Counter(w1=4, w2=1), 3: Counter(w2=5)}, {"w1": 0.5})
    out = per_worker(plan, run, {"w1": 80.0, "w2": 81.0})
    assert out["w1"] == {"decisions": 9, "partitions": [0, 2], "rss_mb": 80.0, "cpu_cores": 0.5}
    assert out["w2"] == {"decisions": 11, "partitions": [1, 2, 3], "rss_mb": 81.0, "cpu_cores": None}
    assert out["w3"] == {"decisions": 0, "partitions": [], "rss_mb": None, "cpu_cores": None}  # an idle worker shows


def _step(rate: float, ok: bool, workers: int = 2) -> dict[str, Any]:
    return {"workers": workers, "offered_rps": rate, "achieved_rps": rate - 1, "p50_ms": 3.0, "p99_ms": rate / 100,
            "worker_rss_mb": 80.0, "cpu_cores": {"workers_total": rate / 1000, "load_generator": 0.5,
                                                   "machine": 2.0}, "per_worker": {}, "sustained": ok}


def test_find_max_reports_the_last_sustained_step() -> None:
    out = find_max_result([_step(500, True), _step(750, True), _step(1125, False)], {"start_rps": 500})
    assert out["workers"] == 2 and out["max_sustained_rps"] == 750 and out["achieved_rps_at_max"] == 749
    assert out["p99_ms_at_max"] == 7.5 and out["cpu_cores_at_max"]["workers_total"] == 0.75
    assert out["highest_achieved_rps"] == 1124 and len(out["steps"]) == 3


def test_find_max_with_no_sustained_step_has_no_maximum() -> None:
    out = find_max_result([_step(500, False)], {})
    assert out["max_sustained_rps"] is None and out["p99_ms_at_max"] is None and out["highest_achieved_rps"] == 499


def test_results_for_several_worker_counts_are_keyed_by_count() -> None:
    fixed = {n: {**_step(1000, True, n), "sustained": None} for n in (1, 2, 4)}
    out = keyed_result(fixed, {"echo_p99_ms": 5.0}, 2)
    assert out["cpu_count"] == 2 and out["workers"] == [1, 2, 4] and out["floor"] == {"echo_p99_ms": 5.0}
    assert list(out["by_workers"]) == ["1", "2", "4"] and out["by_workers"]["4"]["workers"] == 4
    assert [r["workers"] for r in out["summary"]] == [1, 2, 4]
    assert out["summary"][0] == {"workers": 1, "max_sustained_rps": None, "achieved_rps": 999, "highest_achieved_rps":
                                 999, "p50_ms": 3.0, "p99_ms": 10.0, "workers_cores": 1.0,
                                 "load_generator_cores": 0.5, "machine_cores": 2.0}


def test_find_max_results_are_summarized_at_their_maximum() -> None:
    results = {n: find_max_result([_step(500, True, n), _step(750 * n, n > 1, n)], {}) for n in (4, 1)}
    rows = keyed_result(results, {}, 2)["summary"]
    assert [r["workers"] for r in rows] == [4, 1]  # the order measured
    assert rows[0]["max_sustained_rps"] == 3000 and rows[0]["achieved_rps"] == 2999 and rows[0]["p99_ms"] == 30
    assert rows[1]["max_sustained_rps"] == 500 and rows[1]["highest_achieved_rps"] == 749


def test_cpu_is_read_from_proc() -> None:
    mine = cpu_seconds(os.getpid())
    assert mine is not None and mine > 0  # this interpreter has imported pytest: it has used some CPU
    assert cpu_seconds(2**22 + 12345) is None  # above the kernel's pid limit
    busy = machine_busy_seconds()
    assert busy is not None and busy >= mine
    meter = CpuMeter({"me": os.getpid(), "gone": 2**22 + 12345})
    meter.start()
    sum(i * i for i in range(10_000))
    out = meter.stop()
    assert out["gone"] is None and out["me"] is not None and out["me"] >= 0
    assert set(out) == {"me", "gone", "machine", "other"}
