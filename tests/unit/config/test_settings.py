"""Settings.from_env: every PDX_* variable read once, and a bad value named with what it accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams import config
from streams.errors import ConfigError, UserError


def test_defaults_point_at_the_local_dev_services() -> None:
    cfg = config.Settings.from_env({})
    assert cfg.kafka_bootstrap == "127.0.0.1:9092"
    assert cfg.clickhouse_url == "http://127.0.0.1:8123"
    assert cfg.audit_sink and cfg.ready_file is None
    assert cfg.worker_id  # host-pid


def test_values_come_from_the_given_environment(tmp_path: Path) -> None:
    cfg = config.Settings.from_env(
        {
            config.ENV_WORKER_ID: "w9",
            config.ENV_AUDIT_SINK: "off",
            config.ENV_AUDIT_BATCH_MAX: "10",
            config.ENV_READY_FILE: str(tmp_path / "ready"),
            config.ENV_CLICKHOUSE_HTTP_PORT: "18123",
        }
    )
    assert (cfg.worker_id, cfg.audit_sink, cfg.audit_batch_max) == ("w9", False, 10)
    assert cfg.ready_file == tmp_path / "ready"
    assert cfg.clickhouse_url == "http://127.0.0.1:18123"
    assert cfg.replace(worker_id="w10").worker_id == "w10"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({config.ENV_REQUEST_PARTITIONS: "0"}, "PDX_REQUEST_PARTITIONS=0 is out of range"),
        ({config.ENV_KAFKA_PORT: "70000"}, "between 1 and 65535"),
        ({config.ENV_AUDIT_SINK: "maybe"}, "PDX_AUDIT_SINK='maybe' is not one of on, off"),
        ({config.ENV_PRODUCER_LINGER_MS: "x" * 5000}, r"is not an integer"),
    ],
)
def test_bad_values_are_config_errors_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        config.Settings.from_env(env)
    assert isinstance(err.value, UserError)  # the CLI prints it as one line
    assert len(str(err.value)) < 200  # quotes a short prefix of a huge value, never all of it


def test_request_limits_default_to_safe_sizes() -> None:
    limits = config.Settings.from_env({}).request_limits
    assert limits == config.RequestLimits() == config.DEFAULT_REQUEST_LIMITS
    assert (limits.max_message_bytes, limits.max_string_chars) == (65536, 4096)
    assert (limits.max_list_items, limits.max_map_entries) == (64, 64)


def test_request_limits_come_from_the_environment_and_survive_replace() -> None:
    cfg = config.Settings.from_env(
        {
            config.ENV_REQUEST_MAX_BYTES: "1048576",
            config.ENV_REQUEST_MAX_STRING: " 1024 ",
            config.ENV_REQUEST_MAX_LIST: "8",
            config.ENV_REQUEST_MAX_MAP: "32",
        }
    )
    assert cfg.request_limits == config.RequestLimits(1048576, 1024, 8, 32)
    assert cfg.replace(worker_id="w2").request_limits == cfg.request_limits
    tighter = config.RequestLimits(max_message_bytes=4096)
    assert cfg.replace(request_limits=tighter).request_limits.max_message_bytes == 4096
    with pytest.raises(AttributeError):
        cfg.request_limits.max_list_items = 1  # type: ignore[misc]  # frozen, like Settings


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({config.ENV_REQUEST_MAX_BYTES: "100"}, "PDX_REQUEST_MAX_BYTES=100 is out of range: it must be between 1024"),
        ({config.ENV_REQUEST_MAX_BYTES: "64k"}, "PDX_REQUEST_MAX_BYTES='64k' is not an integer"),
        ({config.ENV_REQUEST_MAX_STRING: "0"}, "PDX_REQUEST_MAX_STRING=0 is out of range"),
        ({config.ENV_REQUEST_MAX_STRING: "9" * 4000}, r"PDX_REQUEST_MAX_STRING='9999.*chars\) is out of range"),
        ({config.ENV_REQUEST_MAX_LIST: "-1"}, "PDX_REQUEST_MAX_LIST=-1 is out of range"),
        ({config.ENV_REQUEST_MAX_MAP: "lots"}, "PDX_REQUEST_MAX_MAP='lots' is not an integer"),
        ({config.ENV_REQUEST_MAX_MAP: "x" * 5000}, "PDX_REQUEST_MAX_MAP=.* is not an integer"),
    ],
)
def test_bad_request_limits_are_config_errors_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        config.Settings.from_env(env)
    assert len(str(err.value)) < 200
