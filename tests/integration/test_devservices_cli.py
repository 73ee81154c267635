"""`pdx dev` and `pdx topics create` as a user runs them (real processes, own state dir and ports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams import config as settings

pytestmark = pytest.mark.integration


def _pdx(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli.main", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=180,
        check=False,
    )


def test_topics_create_is_idempotent(services: object, kafka_bootstrap: str) -> None:
    first = _pdx("topics", "create", "--request-partitions", "3", "--decision-partitions", "2")
    assert first.returncode == 0, first.stderr
    second = _pdx("topics", "create", "--request-partitions", "3", "--decision-partitions", "2")
    assert second.returncode == 0, second.stderr
    for topic in settings.ALL_TOPICS:
        assert f"{topic}: " in second.stdout
        assert "exists" in second.stdout.split(f"{topic}: ")[1].splitlines()[0]


def test_dev_up_status_down_one_service(tmp_path: Path) -> None:
    """ClickHouse alone: up, up again (says running), status, down leaves no process behind."""
    state = str(tmp_path / "st")
    up = _pdx("dev", "up", "clickhouse", "--free-ports", "--state-dir", state)
    assert up.returncode == 0, up.stderr
    pid = int((tmp_path / "st" / "clickhouse" / "clickhouse.pid").read_text())
    again = _pdx("dev", "up", "clickhouse", "--state-dir", state)
    assert again.returncode == 0 and "already running" in again.stderr
    status = _pdx("dev", "status", "clickhouse", "--json", "--state-dir", state)
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)[0]["healthy"] is True
    whole = _pdx("dev", "status", "--state-dir", state)
    assert whole.returncode == 1  # kafka is not running in this state dir
    down = _pdx("dev", "down", "--state-dir", state)
    assert down.returncode == 0
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    assert _pdx("dev", "status", "clickhouse", "--state-dir", state).returncode == 1


def test_port_in_use_is_a_clear_error(tmp_path: Path, clickhouse_url: str) -> None:
    port = clickhouse_url.rsplit(":", 1)[1]
    result = _pdx("dev", "up", "clickhouse", "--clickhouse-http-port", port, "--state-dir", str(tmp_path / "x"))
    assert result.returncode == 2
    assert f"port {port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr
