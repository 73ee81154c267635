"""Unit tests of the dev-services helpers (no services started)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from streams import config as settings
from streams.devservices import procs
from streams.devservices.services import DevStack, Ports, _check_ports
from streams.errors import ConfigError, UserError
from streams.kafka.topics import topic_specs


def test_topic_specs_copartition_and_compaction() -> None:
    specs = {s.name: s for s in topic_specs(6, 3)}
    assert set(specs) == set(settings.ALL_TOPICS)
    assert specs[settings.TOPIC_REQUESTS].partitions == specs[settings.TOPIC_INVENTORY].partitions == 6
    assert specs[settings.TOPIC_APPROVALS].partitions == 6
    assert specs[settings.TOPIC_DECISIONS].partitions == 3
    for name in settings.COMPACTED_TOPICS:
        assert specs[name].config["cleanup.policy"] == "compact"
    assert "cleanup.policy" not in specs[settings.TOPIC_REQUESTS].config


def test_topic_specs_reject_zero_partitions() -> None:
    with pytest.raises(UserError):
        topic_specs(0, 1)


def test_port_in_use_names_the_holder() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert procs.port_in_use(port)
        with pytest.raises(UserError, match=f"port {port} is already in use by pid"):
            _check_ports("kafka", (port,))
    assert not procs.port_in_use(port)


def test_settings_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(settings.ENV_KAFKA_PORT, "19999")
    monkeypatch.delenv(settings.ENV_KAFKA_BOOTSTRAP, raising=False)
    assert settings.load().kafka_bootstrap == "127.0.0.1:19999"
    monkeypatch.setenv(settings.ENV_KAFKA_BOOTSTRAP, "broker:1")
    assert settings.load().kafka_bootstrap == "broker:1"
    monkeypatch.setenv(settings.ENV_KAFKA_PORT, "not-a-number")
    with pytest.raises(ConfigError, match=r"PDX_KAFKA_PORT=.* is not an integer"):
        settings.load()


def test_state_roundtrip_and_status_of_nothing(tmp_path: Path) -> None:
    stack = DevStack(tmp_path, settings.load())
    assert stack.saved_ports() is None
    ports = Ports(1, 2, 3, 4)
    stack.save_ports(ports)
    assert stack.saved_ports() == ports
    assert stack.running_pid("kafka") is None
    assert stack.down(("kafka", "clickhouse")) == []


def test_cluster_ids_never_look_like_options() -> None:
    from streams.devservices.services import new_cluster_id

    ids = [new_cluster_id() for _ in range(2000)]
    assert all(not i.startswith("-") and len(i) == 22 for i in ids)
