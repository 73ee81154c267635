"""Errors a person sees are one clear line with what to do — never a traceback (no services needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

from streams import config as settings
from streams.contracts import signing
from streams.devservices.procs import free_port

_KEYS_DIR = tempfile.mkdtemp(prefix="pdx-cli-keys-")  # signing keys, so commands get as far as Kafka


def _pdx(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, settings.ENV_KAFKA_BOOTSTRAP: f"127.0.0.1:{free_port()}",
           settings.ENV_CLICKHOUSE_URL: f"http://127.0.0.1:{free_port()}", settings.ENV_KEYS_DIR: _KEYS_DIR}
    signing.ensure_dev_keys(settings.Settings.from_env(env))
    return subprocess.run([sys.executable, "-m", "streams.cli.main", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize("args", [
    ("worker",),
    ("check", "agent-1", "db:connect", "--resource-id", "db", "--resource-type", "database"),
    ("policy", "publish", str(settings.POLICIES_DIR)),
    ("inventory", "suspend", "agent-1"),
    ("approve", "--identity", "a", "--action", "x", "--resource", "r"),
])
def test_unreachable_kafka_is_one_clear_line(args: tuple[str, ...]) -> None:
    result = _pdx(*args)
    assert result.returncode == 2, result.stderr
    assert "cannot reach Kafka at 127.0.0.1:" in result.stderr and "pdx dev up" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_ttl_is_one_clear_line() -> None:
    result = _pdx("approve", "--identity", "a", "--action", "x", "--resource", "r", "--ttl=-5m")
    assert result.returncode == 2 and "must be positive" in result.stderr and "Traceback" not in result.stderr
