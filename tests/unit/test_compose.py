"""compose.yaml must agree with streams/config.py: images, ports, service names and variable names."""

from __future__ import annotations

import re

import yaml

from streams import config as settings


def _compose() -> dict:
    return yaml.safe_load((settings.REPO_ROOT / "compose.yaml").read_text())


def test_images_match_pinned_versions() -> None:
    services = _compose()["services"]
    assert services["kafka"]["image"] == settings.KAFKA_IMAGE
    assert services["clickhouse"]["image"] == settings.CLICKHOUSE_IMAGE


def test_default_ports_are_published() -> None:
    services = _compose()["services"]
    assert f"{settings.DEFAULT_KAFKA_PORT}:{settings.DEFAULT_KAFKA_PORT}" in services["kafka"]["ports"]
    ch_ports = services["clickhouse"]["ports"]
    assert f"{settings.DEFAULT_CLICKHOUSE_HTTP_PORT}:8123" in ch_ports
    assert f"{settings.DEFAULT_CLICKHOUSE_TCP_PORT}:9000" in ch_ports


def test_pdx_services_use_known_env_vars_pointing_at_compose_services() -> None:
    services = _compose()["services"]
    known = {v for k, v in vars(settings).items() if k.startswith("ENV_")}
    for name in ("pdx-worker", "pdx-init"):
        env = services[name]["environment"]
        assert set(env) <= known, f"{name} sets variables settings.py does not know: {set(env) - known}"
        kafka_host = env[settings.ENV_KAFKA_BOOTSTRAP].split(":")[0]
        ch_host = re.match(r"https?://([^:/]+)", env[settings.ENV_CLICKHOUSE_URL]).group(1)  # type: ignore[union-attr]
        assert kafka_host in services and ch_host in services


def test_worker_waits_for_init_and_init_creates_topics() -> None:
    services = _compose()["services"]
    assert "pdx-init" in services["pdx-worker"]["depends_on"]
    assert "pdx topics create" in " ".join(services["pdx-init"]["command"])
    assert services["pdx-worker"]["command"] == ["pdx", "worker"]


def test_grafana_mounts_the_shipped_provisioning() -> None:
    grafana = _compose()["services"]["grafana"]
    for volume in grafana["volumes"]:
        host = volume.split(":")[0]
        assert (settings.REPO_ROOT / host).is_dir(), f"{host} does not exist in the repo"
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]


def test_the_metrics_profile_scrapes_the_workers_metrics_port() -> None:
    services = _compose()["services"]
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["metrics"]
    host, _, container = prometheus["volumes"][0].partition(":")
    scrape = yaml.safe_load((settings.REPO_ROOT / host).read_text())
    target = scrape["scrape_configs"][0]["dns_sd_configs"][0]
    assert target["names"] == ["pdx-worker"]
    assert str(target["port"]) == services["pdx-worker"]["environment"][settings.ENV_METRICS_PORT]
    assert container.startswith("/etc/prometheus/prometheus.yml")
