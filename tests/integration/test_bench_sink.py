"""`pdx bench sink` end to end on a few records: the real sink (Kafka consumer, ClickHouse writer) moves every record
once, commits every offset, and prints the JSON it promises. Not a timing test: speed targets live in the bench."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from streams.cli.main import main

pytestmark = [pytest.mark.integration]

RECORDS = 2_000


def test_the_sink_bench_moves_every_record_and_prints_its_json(
    services: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "sink", "--records", str(RECORDS), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["records"] == RECORDS
    assert result["rows_in_clickhouse"] == RECORDS == result["rows_total"] == result["offsets_committed"]
    assert result["dead_lettered"] == 0
    for key in ("seconds", "rows_per_s", "floor_rows_per_s", "ratio_to_floor", "peak_rss_mb"):
        assert isinstance(result[key], (int, float)) and result[key] > 0, key
    assert set(result["targets"]) >= {"rows_per_s", "ratio_to_floor", "rows_in_clickhouse"}
    for check in result["targets"].values():
        assert set(check) == {"value", "target", "pass"}
    assert result["targets"]["rows_in_clickhouse"]["pass"] and result["targets"]["offsets_committed"]["pass"]
    assert result["topic"] is None and result["database"] is None  # removed afterwards



@pytest.mark.e2e
def test_a_killed_pipelined_sink_loses_and_duplicates_nothing(stack_env: dict[str, str]) -> None:
    """`pdx bench faults --only sink_kill`: SIGKILL the sink (`pdx sink`, pipelined) under load, start it again."""
    result = subprocess.run(
        [sys.executable, "-m", "streams.cli.main", "bench", "faults", "--only", "sink_kill", "--rate", "100", "--json"],
        env=stack_env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [s] = json.loads(result.stdout)["scenarios"]
    assert s["name"] == "sink_kill" and s["settled"], s
    assert s["lost"] == 0 and s["audit_rows"] == s["audit_request_ids"], s
    assert s["audit_conflicting"] == 0 and s["audit_disagrees"] == 0, s
