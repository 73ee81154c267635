"""The ClickHouse cluster configurations without a server: compose's `clickhouse-cluster` profile (no Docker here)
and the config chserver writes for a local cluster, both well-formed and agreeing with each other's names."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from streams import config as settings
from streams.devservices import chserver

ROOT = settings.REPO_ROOT
PROFILE = "clickhouse-cluster"


def _services() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]


def _mounted(service: dict, target: str) -> Path:
    for volume in service["volumes"]:
        src, dst = volume.split(":")[:2]
        if dst == target:
            return ROOT / src
    raise AssertionError(f"nothing mounted at {target}")


def test_the_profile_has_two_nodes_a_keeper_and_a_cluster_migration() -> None:
    services = _services()
    in_profile = {name for name, s in services.items() if PROFILE in s.get("profiles", ())}
    assert in_profile == {"clickhouse-keeper", "clickhouse-01", "clickhouse-02", "pdx-init-cluster"}
    assert services["clickhouse-01"]["image"] == services["clickhouse-02"]["image"] == settings.CLICKHOUSE_IMAGE
    init = services["pdx-init-cluster"]["environment"]
    assert init[settings.ENV_CLICKHOUSE_URL].startswith("http://clickhouse-01:")
    assert {k for k in init} <= {v for k, v in vars(settings).items() if k.startswith("ENV_")}
    # the default stack does not change: no service outside the profile depends on the cluster
    for name, s in services.items():
        if name not in in_profile:
            assert not set(s.get("depends_on") or ()) & in_profile, name


def test_the_cluster_xml_names_the_nodes_the_keeper_and_the_cluster_pdx_migrates() -> None:
    services = _services()
    cluster_name = services["pdx-init-cluster"]["environment"][settings.ENV_CLICKHOUSE_CLUSTER]
    shards = []
    for node in ("clickhouse-01", "clickhouse-02"):
        cluster = ET.parse(_mounted(services[node], "/etc/clickhouse-server/config.d/cluster.xml")).getroot()
        macros = ET.parse(_mounted(services[node], "/etc/clickhouse-server/config.d/macros.xml")).getroot()
        hosts = [r.findtext("host") for r in cluster.iter("replica")]
        assert cluster.find(f"remote_servers/{cluster_name}") is not None
        assert hosts == ["clickhouse-01", "clickhouse-02"]
        assert cluster.findtext("zookeeper/node/host") == "clickhouse-keeper"
        assert cluster.find("distributed_ddl/path") is not None
        assert macros.findtext("macros/replica") == node
        shards.append(macros.findtext("macros/shard"))
    assert shards == ["1", "2"]
    keeper = ET.parse(_mounted(services["clickhouse-keeper"], "/etc/clickhouse-keeper/keeper_config.xml")).getroot()
    port = ET.parse(ROOT / "compose/clickhouse-cluster/config.d/cluster.xml").getroot().findtext("zookeeper/node/port")
    assert keeper.findtext("keeper_server/tcp_port") == port


def test_chserver_writes_a_well_formed_cluster_config() -> None:
    nodes = [chserver.ClusterNode(1, 9001, "pdx_admin", "p<&>w"), chserver.ClusterNode(2, 9002, "pdx_admin", "x")]
    text = chserver.config_xml(8123, 9001, Path("/tmp/u.xml"), cluster=("pdx_c", nodes),
                               macros={"shard": "1", "replica": "node1"})
    root = ET.fromstring(text)
    assert [s.findtext("replica/port") for s in root.iterfind("remote_servers/pdx_c/shard")] == ["9001", "9002"]
    assert root.findtext("remote_servers/pdx_c/shard/replica/password") == "p<&>w"
    assert root.findtext("macros/shard") == "1" and root.findtext("tcp_port") == "9001"
    plain = ET.fromstring(chserver.config_xml(8123, 9000, Path("/tmp/u.xml")))
    assert plain.find("remote_servers") is None and plain.find("macros") is None
