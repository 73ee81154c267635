"""`pdx dev up --brokers N`: ports, bootstrap, state and server.properties of a multi-broker cluster (no process
started)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams import config as settings
from streams.devservices.services import DevStack, Ports, _cluster_properties, _kafka_properties
from streams.errors import UserError


def test_one_broker_is_what_it_always_was(tmp_path: Path) -> None:
    ports = Ports(9092, 9093, 8123, 9000)
    assert ports.brokers == 1 and ports.kafka_nodes() == [(1, 9092, 9093)]
    assert ports.env()[settings.ENV_KAFKA_BOOTSTRAP] == "127.0.0.1:9092"
    text = _kafka_properties(ports, tmp_path)
    assert "node.id=1\ncontroller.quorum.voters=1@127.0.0.1:9093\n" in text
    assert "offsets.topic.replication.factor=1\n" in text


def test_three_brokers_have_distinct_ports_and_one_bootstrap_of_all() -> None:
    ports = Ports.free(brokers=3)
    nodes = ports.kafka_nodes()
    assert [n for n, _, _ in nodes] == [1, 2, 3]
    used = [p for _, a, b in nodes for p in (a, b)] + [ports.clickhouse_http, ports.clickhouse_tcp]
    assert len(set(used)) == len(used)
    assert ports.env()[settings.ENV_KAFKA_BOOTSTRAP] == ",".join(f"127.0.0.1:{a}" for _, a, _ in nodes)
    assert ports.with_brokers(1).kafka_nodes() == nodes[:1]
    assert ports.with_brokers(3) == ports  # known nodes keep their ports
    with pytest.raises(UserError, match="--brokers 9"):
        ports.with_brokers(9)


def test_cluster_state_round_trips(tmp_path: Path) -> None:
    stack = DevStack(tmp_path, settings.load())
    ports = Ports(1, 2, 3, 4, [(5, 6), (7, 8)])
    stack.save_ports(ports)
    assert stack.saved_ports() == ports and stack.ports().brokers == 3
    assert stack.kafka_pids() == {1: None, 2: None, 3: None}
    assert stack.node_pid_file(1) == stack.pid_file("kafka")  # node 1 is where a single node always was
    assert stack.node_pid_file(2) == tmp_path / "kafka" / "node-2" / "kafka.pid"
    assert stack.down(("kafka",)) == []


def test_cluster_properties_form_one_quorum(tmp_path: Path) -> None:
    ports = Ports(9092, 9093, 8123, 9000, [(9094, 9095), (9096, 9097)])
    texts = {n: _cluster_properties(ports, n, tmp_path / f"n{n}") for n in (1, 2, 3)}
    voters = "controller.quorum.voters=1@127.0.0.1:9093,2@127.0.0.1:9095,3@127.0.0.1:9097\n"
    for n, text in texts.items():
        assert f"node.id={n}\n" in text and voters in text
        assert f"log.dirs={tmp_path / f'n{n}'}\n" in text
        assert "offsets.topic.replication.factor=3\n" in text and "transaction.state.log.min.isr=2\n" in text
    assert re.search(r"^listeners=PLAINTEXT://127\.0\.0\.1:9096,CONTROLLER://127\.0\.0\.1:9097$", texts[3], re.M)


def test_secure_cluster_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--secure runs one broker only"):
        DevStack(tmp_path, settings.load()).up(("kafka",), Ports(1, 2, 3, 4), secure_mode=True, brokers=3)


def test_changing_the_broker_count_of_a_running_kafka_is_refused(tmp_path: Path) -> None:
    import os

    stack = DevStack(tmp_path, settings.load())
    stack.save_ports(Ports(1, 2, 3, 4))
    stack.pid_file("kafka").parent.mkdir(parents=True)
    stack.pid_file("kafka").write_text(f"{os.getpid()}\n")  # "running": this test's own process
    with pytest.raises(UserError, match=r"already runs with 1 broker\(s\).*not 3.*pdx dev down kafka"):
        stack.up(("kafka",), Ports(1, 2, 3, 4), brokers=3)
